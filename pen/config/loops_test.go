package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestLoopsCommand(t *testing.T) {
	in := newTest(t)
	for _, tc := range []struct{ cmd, want string }{
		{"loops", "0\n"},
		{"loops 1", "1\n"},
		{"loops 4", "4\n"},
		{"loops", "4\n"},
	} {
		if got := exec(t, in, tc.cmd); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.cmd, got, tc.want)
		}
	}
	for _, bad := range []string{"loops -1", "loops 257", "loops x"} {
		if _, err := in.Exec(bad, FromControl); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	file := filepath.Join(t.TempDir(), "pen.cfg")
	if err := in.Write(file); err != nil {
		t.Fatal(err)
	}
	again := newTest(t)
	if _, err := again.ExecFile(file, FromFile); err != nil {
		t.Fatal(err)
	}
	if n := again.Config().Loops; n != 4 {
		t.Errorf("read back: loops %d, want 4", n)
	}
	// The default (one loop per CPU) is not written.
	if got := string(newTest(t).Render(file)); strings.Contains(got, "loops") {
		t.Errorf("write with the default names loops:\n%s", got)
	}
}
