package config

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testResolver(_ context.Context, host string) (netip.Addr, error) {
	switch host {
	case "localhost", "backend1":
		return netip.MustParseAddr("127.0.0.1"), nil
	case "backend6":
		return netip.MustParseAddr("::1"), nil
	}
	return netip.Addr{}, errors.New("no such host")
}

var testNow = time.Date(2026, 11, 22, 1, 38, 6, 0, time.Local)

func newTest(t *testing.T) *Interp {
	t.Helper()
	in := New(Default(), Process{}, nil)
	in.SetResolver(testResolver)
	in.SetClock(func() time.Time { return testNow })
	return in
}

func exec(t *testing.T, in *Interp, line string) string {
	t.Helper()
	out, err := in.Exec(line, FromControl)
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return out
}

func TestReplies(t *testing.T) {
	in := newTest(t)
	for _, tc := range []struct{ cmd, want string }{
		{"blacklist", "30\n"},
		{"blacklist 10", "10\n"},
		{"timeout", "3\n"},
		{"tracking 20", "20\n"},
		{"client_acl", "0\n"},
		{"control_acl 3", "3\n"},
		{"debug", "0\n"},
		{"clients_max", "2048\n"},
		{"clients_max 2048", "2048\n"}, // before pen serves, the first size is exact
		{"clients_max 100", "2048\n"},  // and later ones only grow
		{"conn_max 1000", "1000\n"},
		{"tarpit_acl", "tarpit_acl = -1"},
		{"tarpit_acl 1", "tarpit_acl = 1"},
		{"idle_timeout", "Idle timeout: 0 seconds\n"},
		{"idle_timeout -5", "Idle timeout: 0 seconds\n"},
		{"idlers", "Idlers: 0/0\n"},
		{"mode", "no hash no roundrobin no stubborn no weight no prio\n"},
		{"roundrobin", ""},
		{"weight", ""},
		{"mode", "no hash roundrobin no stubborn weight no prio\n"},
		{"tcp_fastclose", "do_cmd: ignoring tcp_fastclose without argument\n"},
		{"control", "(null)\n"},
		{"listen", "\n"},
		{"log", ""},
		{"web_stats", ""},
		{"status", "Unable to create webstats\n"},
		{"exit", "Exit is not enabled; restart with -X flag\n"},
		{"connection 600000", "Connection 600000 out of range\n"},
		{"close 1000", "Connection 1000 out of range\n"},
		{"close 3", "Forcibly closing connection 3\n"},
		{"connection 2", "Connection 2:\nstate = 0\ndownfd = -1, upfd = -1\nclient = 0, server = 0\npend = 0\n"},
		{"# a comment", ""},
		{"", ""},
		{"server 0 address 127.0.0.1 port 100 max 10 hard 20 weight 3 prio 4", ""},
		{"server 2 address backend6 port 101", ""},
		{"servers", "0 addr 127.0.0.1 port 100 conn 0 max 10 hard 20 weight 3 prio 4 sx 0 rx 0\n" +
			"1 addr 0.0.0.0 port 0 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n" +
			"2 addr ::1 port 101 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n"},
		{"socket 7", "Socket 7 belongs to connection -1\n"},
	} {
		if got := exec(t, in, tc.cmd); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.cmd, got, tc.want)
		}
	}
}

func TestUnknownAndBad(t *testing.T) {
	in := newTest(t)
	before := in.Config()
	_, err := in.Exec("xyz 1 2", FromControl)
	if err == nil || err.Error() != "do_cmd: ignoring command starting with 'xyz'" {
		t.Errorf("unknown command: %v", err)
	}
	for _, bad := range []string{
		"acl 10 permit 1.2.3.4",
		"acl 1 permit 1.2.3.400",
		"acl 1 allow 1.2.3.4",
		"client_acl 12",
		"server -1 address 1.2.3.4",
		"server 0 port 70000",
		"server 0 address no.such.host",
		"server 0 weight",
		"server 0 colour blue",
		"timeout 0",
		"source",
		"no acl",
		"listen [::1]:99999",
		"tarpit_acl 11",
		"no server 5",
	} {
		if _, err := in.Exec(bad, FromControl); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	if in.Config() != before {
		t.Errorf("a refused command changed the configuration")
	}
}

func TestTransaction(t *testing.T) {
	in := newTest(t)
	cfg := "blacklist 5\nserver 0 address 127.0.0.1 port 80\nacl 1 permit 10.0.0.0 255.0.0.0\nacl 1 deny bogus\n"
	_, err := in.ExecLines("pen.cfg", []byte(cfg), FromFile)
	var le *LineError
	if !errors.As(err, &le) || le.Line != 4 || le.File != "pen.cfg" {
		t.Fatalf("got %v, want an error at pen.cfg:4", err)
	}
	if !strings.HasPrefix(err.Error(), "pen.cfg:4: acl: ") {
		t.Errorf("error text %q", err)
	}
	if c := in.Config(); c.Blacklist != 30 || len(c.Servers) != 0 || len(c.ACLs[1]) != 0 {
		t.Errorf("failed file was partly applied: %+v", c)
	}
}

func TestACLMaskedOnEntry(t *testing.T) {
	in := newTest(t)
	exec(t, in, "acl 2 permit 127.0.0.1 255.0.0.0")
	l := in.Config().ACLs[2]
	if !l.Match(netip.MustParseAddr("127.9.9.9"), nil) {
		t.Errorf("127.9.9.9 should match 127.0.0.1/255.0.0.0")
	}
	if l.Match(netip.MustParseAddr("10.0.0.1"), nil) {
		t.Errorf("10.0.0.1 should be denied (opposite of the last entry)")
	}
}

func TestServerSpec(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Server
	}{
		{"127.0.0.1", Server{Host: Host{IP: netip.MustParseAddr("127.0.0.1")}, Port: 8080}},
		{"127.0.0.1:101:0:0:101", Server{Host: Host{IP: netip.MustParseAddr("127.0.0.1")}, Port: 101, Weight: 101}},
		{"[::1]:100:1:2:3:4", Server{Host: Host{IP: netip.MustParseAddr("::1")}, Port: 100, Max: 1, Hard: 2, Weight: 3, Prio: 4}},
		{"backend1:http", Server{Host: Host{IP: netip.MustParseAddr("127.0.0.1")}, Port: 80}},
		{"/run/app.sock", Server{Host: Host{Path: "/run/app.sock"}, Port: 1}},
	} {
		got, err := ParseServer(tc.spec, 8080, false, testResolver)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.spec, got, tc.want)
		}
	}
	for _, bad := range []string{"", "::1:80", "[::1", "[1.2.3.4]:80", "h:1:2:3:4:5:6", "127.0.0.1:x:1", "127.0.0.1:80:-1"} {
		if _, err := ParseServer(bad, 80, false, testResolver); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestListenSpec(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"8080", "0.0.0.0:8080"},
		{"1.2.3.4:8080", "1.2.3.4:8080"},
		{":::8080", "[::]:8080"},
		{"::1:8080", "[::1]:8080"},
		{"[::1]:8080", "[::1]:8080"},
		{":8080", "0.0.0.0:8080"},
		{"localhost:http", "127.0.0.1:80"},
		{"/tmp/pen.sock", "/tmp/pen.sock"},
	} {
		l, err := ParseListen(tc.spec, false, testResolver)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if l.String() != tc.want {
			t.Errorf("%q: got %s, want %s", tc.spec, l, tc.want)
		}
	}
	for _, bad := range []string{"", "0", "70000", "[::1]:0", "nohost.invalid:80", "1.2.3.4:"} {
		if _, err := ParseListen(bad, false, testResolver); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

const penLayout = `# Generated by pen 2026-11-22 01:38:06
# pen -f -X -c 4096 -e 127.0.0.1:102 -x 1000 -F '/etc/pen.cfg' -C /run/pen.ctl 8080
no acl 0
no acl 1
acl 1 permit 10.0.0.0 255.0.0.0
acl 1 deny 2001:db8::/32
acl 1 permit country SE
no acl 2
no acl 3
no acl 4
no acl 5
no acl 6
no acl 7
no acl 8
no acl 9
no ascii
blacklist 10
client_acl 1
control_acl 0
debug 0
no hash
http
no log
roundrobin
server 0 acl 0 address 127.0.0.1 port 100 max 0 hard 0 weight 0
server 1 acl 1 address 127.0.0.1 port 101 max 5 hard 6 weight 101
no stubborn
tcp_fastclose both
no tcp_nodelay
timeout 3
tracking 0
no web_stats
weight
no prio
`

func TestWriteLayout(t *testing.T) {
	in := newTest(t)
	em, _ := ParseServer("127.0.0.1:102", 8080, false, testResolver)
	in.SetProcess(Process{Foreground: true, ExitEnabled: true, ConfigFile: "/etc/pen.cfg",
		CLI: CLI{Listen: "8080", Control: "/run/pen.ctl", Emergency: &em}})
	for _, l := range []string{
		"listen 8080", "control /run/pen.ctl", "emergency_server 127.0.0.1:102", "clients_max 4096", "conn_max 1000",
		"acl 1 permit 10.0.0.1 255.0.0.0", "acl 1 deny 2001:db8::1/32", "acl 1 permit country se",
		"blacklist 10", "client_acl 1", "http", "roundrobin", "weight", "tcp_fastclose both",
		"server 0 address 127.0.0.1 port 100", "server 1 address 127.0.0.1 port 101 max 5 hard 6 weight 101 acl 1",
		"idle_timeout 60", "pending_max 20", "keepalive", "tarpit_acl 1", "server 1 prio 7",
	} {
		exec(t, in, l)
	}
	got := string(in.Render("/etc/pen.cfg"))
	if !strings.HasPrefix(got, penLayout) {
		t.Fatalf("Pen part of write differs:\n%s\nwant prefix:\n%s", got, penLayout)
	}
	extra := got[len(penLayout):]
	for _, want := range []string{"\nserver 1 prio 7\n", "\nidle_timeout 60\n", "\npending_max 20\n", "\nkeepalive\n", "\ntarpit_acl 1\n", "\nclients_max 4096\n"} {
		if !strings.Contains(extra, want) {
			t.Errorf("extras lack %q:\n%s", want, extra)
		}
	}
	if strings.Contains(extra, "listen ") || strings.Contains(extra, "emergency_server") || strings.Contains(extra, "\ncontrol ") {
		t.Errorf("extras repeat what the command line sets:\n%s", extra)
	}

	// Round trip: the file read into a fresh pen restores the same state.
	dir := t.TempDir()
	file := filepath.Join(dir, "pen.cfg")
	if err := in.Write(file); err != nil {
		t.Fatal(err)
	}
	again := newTest(t)
	again.SetProcess(in.Process())
	if err := again.Update(FromFlag, func(c *Config) error {
		c.Listen, c.Control, c.Emergency = "8080", "/run/pen.ctl", &em
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := again.ExecFile(file, FromFile); err != nil {
		t.Fatal(err)
	}
	if a, b := string(in.Render(file)), string(again.Render(file)); a != b {
		t.Errorf("round trip differs:\n%s\n---\n%s", a, b)
	}
	fi, _ := os.Stat(file)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode())
	}
}

func TestNoServerRemoves(t *testing.T) {
	in := newTest(t)
	exec(t, in, "server 0 address 127.0.0.1 port 100")
	exec(t, in, "server 1 address 127.0.0.1 port 101")
	exec(t, in, "server 2 address 127.0.0.1 port 102")
	id2 := in.Config().Servers[2].ID()
	exec(t, in, "no server 1")
	c := in.Config()
	if len(c.Servers) != 2 || c.Servers[1].Port != 102 || c.Servers[1].ID() != id2 {
		t.Errorf("after no server 1: %+v", c.Servers)
	}
}

func TestInclude(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.cfg")
	os.WriteFile(a, []byte("include "+a+"\n"), 0o644)
	in := newTest(t)
	if _, err := in.Exec("include "+a, FromControl); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Errorf("self-include: %v", err)
	}
}

func TestAdminAndAutowrite(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pen.cfg")
	in := newTest(t)
	in.SetProcess(Process{ConfigFile: file})
	for _, tc := range []struct{ cmd, want string }{
		{"admin_acl", "-1\n"},
		{"admin_acl 3", "3\n"},
		{"admin_listen [::]:8443", "[::]:8443\n"},
		{"admin_redirect 8080", "8080\n"},
		{"admin_tls /perm/pen/admin.crt /perm/pen/admin.key", ""},
		{"admin_password_file /perm/gokr-pw.txt", ""},
		{"autowrite", ""},
	} {
		if got := exec(t, in, tc.cmd); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.cmd, got, tc.want)
		}
	}
	if _, err := in.Exec("admin_acl 10", FromControl); err == nil {
		t.Error("admin_acl 10 accepted")
	}
	if _, err := in.Exec("admin_listen 70000", FromControl); err == nil {
		t.Error("admin_listen 70000 accepted")
	}
	exec(t, in, "blacklist 7")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("autowrite wrote nothing: %v", err)
	}
	for _, want := range []string{"\nblacklist 7\n", "\nadmin_listen [::]:8443\n", "\nadmin_tls /perm/pen/admin.crt /perm/pen/admin.key\n", "\nautowrite\n", "\nadmin_acl 3\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("written file lacks %q", want)
		}
	}
	if n := in.ChangesBy()[FromControl]; n < 7 {
		t.Errorf("changes by control: %d", n)
	}
	exec(t, in, "no autowrite")
	exec(t, in, "blacklist 9")
	data, _ = os.ReadFile(file)
	if strings.Contains(string(data), "blacklist 9") {
		t.Error("wrote after no autowrite")
	}
}

func TestTarpitIf(t *testing.T) {
	in := newTest(t)
	exec(t, in, "acl 1 permit 198.18.0.128 255.255.255.240")
	exec(t, in, "tarpit_acl 1")
	exec(t, in, "tarpit_if eth1")
	if got := in.Config().TarpitIf; got != "eth1" {
		t.Errorf("tarpit_if = %q", got)
	}
	if text := string(in.Render("pen.cfg")); !strings.Contains(text, "tarpit_acl 1\n") || !strings.Contains(text, "tarpit_if eth1\n") {
		t.Errorf("write saves no tarpit_if:\n%s", text)
	}
	if _, err := in.Exec("tarpit_if", FromControl); err == nil {
		t.Error("tarpit_if without an interface accepted")
	}
	exec(t, in, "no tarpit_if")
	if text := string(in.Render("pen.cfg")); strings.Contains(text, "tarpit_if") {
		t.Errorf("no tarpit_if: still saved:\n%s", text)
	}
}

// TestTableSizesAtStartup: before pen serves, the first clients_max or
// conn_max (from -c/-x, -O or the -F file) sets the table's exact size,
// smaller than the default too, and later ones only grow it, as Pen's
// expand_clienttable and expand_conntable do from 0.
func TestTableSizesAtStartup(t *testing.T) {
	in := newTest(t)
	for _, tc := range []struct{ cmd, want string }{
		{"clients_max", "2048\n"},
		{"conn_max", "500\n"},
		{"clients_max 2", "2\n"},
		{"conn_max 3", "3\n"},
		{"clients_max 1", "2\n"},
		{"conn_max 2", "3\n"},
		{"clients_max 5", "5\n"},
		{"conn_max 4000", "4000\n"},
	} {
		if got := exec(t, in, tc.cmd); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.cmd, got, tc.want)
		}
	}
	// A refused command sizes nothing: the next one is still the first.
	in = newTest(t)
	if _, err := in.Exec("clients_max 0", FromFile); err == nil {
		t.Fatal("clients_max 0 accepted")
	}
	if got := exec(t, in, "clients_max 7"); got != "7\n" {
		t.Errorf("clients_max 7 after a refused one: got %q, want the exact size", got)
	}
}
