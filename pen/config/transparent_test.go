package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestTransparentRoutingCommands(t *testing.T) {
	in := newTest(t)
	for _, tc := range []struct{ cmd, want string }{
		{"transparent_table", "736\n"},
		{"transparent_priority", "7360\n"},
		{"transparent_table 1000", "1000\n"},
		{"transparent_priority 500", "500\n"},
		{"transparent_table", "1000\n"},
		{"transparent_priority", "500\n"},
	} {
		if got := exec(t, in, tc.cmd); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.cmd, got, tc.want)
		}
	}
	for _, bad := range []string{
		"transparent_table 0", "transparent_table 254", "transparent_table 252", "transparent_table -1",
		"transparent_table 2147483648", "transparent_table x",
		"transparent_priority 0", "transparent_priority 32766", "transparent_priority 40000",
	} {
		if _, err := in.Exec(bad, FromControl); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if c := in.Config(); c.TransparentTable != 1000 || c.TransparentPriority != 500 {
		t.Errorf("after refused commands: table %d, priority %d; want 1000, 500", c.TransparentTable, c.TransparentPriority)
	}

	// write saves them, and they read back.
	file := filepath.Join(t.TempDir(), "pen.cfg")
	if err := in.Write(file); err != nil {
		t.Fatal(err)
	}
	again := newTest(t)
	if _, err := again.ExecFile(file, FromFile); err != nil {
		t.Fatal(err)
	}
	if c := again.Config(); c.TransparentTable != 1000 || c.TransparentPriority != 500 {
		t.Errorf("read back: table %d, priority %d; want 1000, 500", c.TransparentTable, c.TransparentPriority)
	}
	// The defaults are not written: a file stays as it was for pens
	// that never set them.
	got := string(newTest(t).Render(file))
	if strings.Contains(got, "transparent_") {
		t.Errorf("write with the defaults names them:\n%s", got)
	}
}
