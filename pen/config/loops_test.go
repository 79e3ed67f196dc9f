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
	exec(t, in, "kernel_relay")
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
	if c := again.Config(); c.Loops != 4 || !c.KernelRelay {
		t.Errorf("read back: loops %d, kernel_relay %v; want 4, on", c.Loops, c.KernelRelay)
	}
	// The defaults (one loop per CPU, no kernel relay) are not written.
	if got := string(newTest(t).Render(file)); strings.Contains(got, "loops") || strings.Contains(got, "kernel_relay") {
		t.Errorf("write with the defaults names loops or kernel_relay:\n%s", got)
	}
	exec(t, again, "no kernel_relay")
	if again.Config().KernelRelay {
		t.Error("no kernel_relay left it on")
	}
}
