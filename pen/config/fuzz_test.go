package config

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzExec checks that no command line panics, that a refused command
// changes nothing, and that whatever is accepted survives a write and
// re-read unchanged.
func FuzzExec(f *testing.F) {
	for _, s := range []string{
		"server 0 address 127.0.0.1 port 80 max 3 hard 4 weight 5 prio 6 acl 1",
		"acl 1 permit 10.0.0.0 255.0.0.0", "acl 2 deny ::1/64", "acl 3 permit country SE",
		"no acl 1", "blacklist 5", "tracking 10", "tarpit_acl -1", "tcp_fastclose up",
		"listen [::1]:8080", "emergency_server 127.0.0.1:99", "no server 0", "source 10.0.0.1",
		"ssl_option no_tlsv1", "log 127.0.0.1:514", "idle_timeout 5\r\n", "server 3 blacklist 0",
		"recent 60", "status", "servers", "mode", "pid", "state", "state x", "# comment", "no",
		"web_stats /x/\xff\x00x", "ssl_cert a\x01b", "log x\x7f", "ssl_ciphers A\u0085B", "server 0 address /s\x00",
		"dsr_if eth\x000", "ssl_ciphers HIGH:\t!aNULL\v",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		in := New(Default(), Process{}, nil)
		in.SetResolver(testResolver)
		in.SetClock(func() time.Time { return testNow })
		if strings.Contains(line, "include") || strings.Contains(line, "write") || strings.Contains(line, "status") {
			return // these touch files named by the input
		}
		before := in.Config()
		_, err := in.Exec(line, FromControl)
		if err != nil {
			if in.Config() != before {
				t.Fatalf("%q refused (%v) but changed the configuration", line, err)
			}
			return
		}
		out := in.Render("pen.cfg")
		if !utf8.Valid(out) {
			t.Fatalf("after %q, written config is not UTF-8:\n%q", line, out)
		}
		for _, r := range string(out) {
			if (r < 0x20 && r != '\n') || (r >= 0x7f && r < 0xa0) {
				t.Fatalf("after %q, written config holds control character %U:\n%q", line, r, out)
			}
		}
		again := New(Default(), Process{}, nil)
		again.SetResolver(testResolver)
		again.SetClock(func() time.Time { return testNow })
		if _, err := again.ExecLines("pen.cfg", out, FromFile); err != nil {
			t.Fatalf("after %q, written config does not read back: %v\n%s", line, err, out)
		}
		if got := again.Render("pen.cfg"); string(got) != string(out) {
			t.Fatalf("after %q, round trip differs:\n%s\n---\n%s", line, out, got)
		}
	})
}

func FuzzServerSpec(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "127.0.0.1:80", "[::1]:80:1:2:3:4", "/tmp/s", "localhost:http:1", "[::1", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := ParseServer(spec, 80, false, testResolver)
		if err != nil {
			return
		}
		if s.Port < 0 || s.Port > 65535 || s.Max < 0 || s.Hard < 0 || s.Weight < 0 || s.Prio < 0 {
			t.Fatalf("%q: out of range %+v", spec, s)
		}
		if s.Host.IsUnix() {
			return
		}
		back, err := ParseServer(s.Spec(), 80, false, testResolver)
		if err != nil || back != s {
			t.Fatalf("%q -> %q -> %+v, %v", spec, s.Spec(), back, err)
		}
	})
}

func FuzzListenSpec(f *testing.F) {
	for _, s := range []string{"8080", "1.2.3.4:80", ":::80", "::1:80", "[::1]:80", "/tmp/x", "localhost:http", ":", "[]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		l, err := ParseListen(spec, false, testResolver)
		if err != nil {
			return
		}
		if l.Path == "" && (!l.Addr.Addr().IsValid() || l.Addr.Port() == 0) {
			t.Fatalf("%q: accepted invalid %v", spec, l)
		}
	})
}
