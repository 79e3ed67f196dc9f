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

// udp_kernel is on by default and not written then; no udp_kernel is
// written and read back; udp_kernel turns it on again.
func TestUDPKernelSetting(t *testing.T) {
	in := newTest(t)
	if in.Config().NoUDPKernel {
		t.Fatal("udp_kernel is off by default")
	}
	file := filepath.Join(t.TempDir(), "pen.cfg")
	if got := string(in.Render(file)); strings.Contains(got, "udp_kernel") {
		t.Errorf("write with the default names udp_kernel:\n%s", got)
	}
	if _, err := in.Exec("udp_kernel now", FromControl); err == nil {
		t.Error("udp_kernel with an argument accepted")
	}
	exec(t, in, "no udp_kernel")
	if err := in.Write(file); err != nil {
		t.Fatal(err)
	}
	again := newTest(t)
	if _, err := again.ExecFile(file, FromFile); err != nil {
		t.Fatal(err)
	}
	if !again.Config().NoUDPKernel {
		t.Errorf("no udp_kernel not read back from:\n%s", again.Render(file))
	}
	exec(t, again, "udp_kernel")
	if again.Config().NoUDPKernel {
		t.Error("udp_kernel left it off")
	}
}
