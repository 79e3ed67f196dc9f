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
	if c := again.Config(); c.Loops != 4 || c.KernelRelay != RelayAll {
		t.Errorf("read back: loops %d, kernel_relay %v; want 4, %v", c.Loops, c.KernelRelay, RelayAll)
	}
	// The defaults (one loop per CPU, splicing) are not written.
	if got := string(newTest(t).Render(file)); strings.Contains(got, "loops") || strings.Contains(got, "kernel_relay") {
		t.Errorf("write with the defaults names loops or kernel_relay:\n%s", got)
	}
}

// kernel_relay splice is the default; kernel_relay adds the sockmap
// relay, no kernel_relay turns both off; each is written and read back,
// and a bad argument changes nothing.
func TestKernelRelaySetting(t *testing.T) {
	in := newTest(t)
	if m := in.Config().KernelRelay; m != RelaySplice || !m.Splice() || m.Sockmap() {
		t.Fatalf("default kernel_relay %v, want splicing alone", m)
	}
	for _, tc := range []struct {
		cmd           string
		want          RelayMode
		written       string
		splice, relay bool
	}{
		{"no kernel_relay", RelayOff, "no kernel_relay\n", false, false},
		{"kernel_relay", RelayAll, "kernel_relay\n", true, true},
		{"kernel_relay splice", RelaySplice, "", true, false},
	} {
		exec(t, in, tc.cmd)
		m := in.Config().KernelRelay
		if m != tc.want || m.Splice() != tc.splice || m.Sockmap() != tc.relay {
			t.Errorf("%q: mode %v (splice %v, sockmap %v), want %v", tc.cmd, m, m.Splice(), m.Sockmap(), tc.want)
		}
		file := filepath.Join(t.TempDir(), "pen.cfg")
		got := string(in.Render(file))
		if tc.written != "" && !strings.Contains(got, "\n"+tc.written) || tc.written == "" && strings.Contains(got, "kernel_relay") {
			t.Errorf("%q: write gave\n%s\nwant the line %q", tc.cmd, got, tc.written)
		}
		if err := in.Write(file); err != nil {
			t.Fatal(err)
		}
		again := newTest(t)
		if _, err := again.ExecFile(file, FromFile); err != nil {
			t.Fatal(err)
		}
		if m := again.Config().KernelRelay; m != tc.want {
			t.Errorf("%q read back as %v", tc.cmd, m)
		}
	}
	exec(t, in, "kernel_relay")
	for _, bad := range []string{"kernel_relay sockmap", "kernel_relay splice now", "kernel_relay on"} {
		if _, err := in.Exec(bad, FromControl); err == nil || !strings.Contains(err.Error(), "splice") {
			t.Errorf("%q: %v, want an error naming what is accepted", bad, err)
		}
		if m := in.Config().KernelRelay; m != RelayAll {
			t.Errorf("%q changed the mode to %v", bad, m)
		}
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
