package acceptance

// The control protocol: penctl over TCP and unix sockets, Pen's replies
// byte for byte (PEN-REFERENCE §2, §3.4, §3.5), `write` and the files it
// produces, and the rule that root needs -u for a control port.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestControlReplies checks the exact reply of each query command.
func TestControlReplies(t *testing.T) {
	begin(t, 90*time.Second)
	const request = "GET /count HTTP/1.0\r\nHost: acceptance\r\n\r\n"
	const reply = "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"
	bA := startFixedBackend(t, reply)
	bB := startFixedBackend(t, reply)
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port}, lst(port), bA.spec()+":10:20:3:4", bB.spec())

	// The wire reply and penctl's output are the same bytes; tarpit_acl has no newline.
	raw, err := rawControl("unix", p.Ctl, "", "tarpit_acl")
	if err != nil {
		t.Fatalf("raw control request: %v", err)
	}
	if raw != "tarpit_acl = -1" {
		t.Errorf("raw reply to tarpit_acl = %q, want %q", raw, "tarpit_acl = -1")
	}
	p.expectCtl("tarpit_acl", "tarpit_acl = -1")
	p.expectCtl("tarpit_acl 4", "tarpit_acl = 4")
	p.expectCtl("tarpit_acl", "tarpit_acl = 4")
	// Out-of-range ACL numbers are refused and change nothing (Pen would
	// silently use ACL 0; see docs/COMPATIBILITY.md).
	p.expectCtlRefused("tarpit_acl 10", "tarpit_acl: acl 10 outside (-1,9)\n")
	p.expectCtl("tarpit_acl", "tarpit_acl = 4")
	p.expectCtl("tarpit_acl -1", "tarpit_acl = -1")

	servers := func(sxB, rxB int) string {
		return fmt.Sprintf("0 addr 127.0.0.1 port %d conn 0 max 10 hard 20 weight 3 prio 4 sx 0 rx 0\n"+
			"1 addr 127.0.0.1 port %d conn 0 max 0 hard 0 weight 0 prio 0 sx %d rx %d\n", bA.port, bB.port, sxB, rxB)
	}
	p.expectCtl("servers", servers(0, 0))
	p.expectCtl("mode", "no hash no roundrobin no stubborn no weight no prio\n")
	p.expectCtl("blacklist", "30\n")
	p.expectCtl("blacklist 12", "12\n")
	p.expectCtl("blacklist", "12\n")
	p.expectCtl("timeout", "3\n")
	p.expectCtl("tracking", "0\n")
	p.expectCtl("tracking 5", "5\n")
	p.expectCtl("tracking", "5\n")
	p.expectCtl("client_acl", "0\n")
	p.expectCtl("client_acl 3", "3\n")
	p.expectCtlRefused("client_acl 12", "client_acl: acl 12 outside (0,9)\n")
	p.expectCtl("client_acl", "3\n")
	p.expectCtl("control_acl", "0\n")
	p.expectCtl("debug", "0\n")
	p.expectCtl("clients_max", "2048\n")
	p.expectCtl("conn_max", "500\n")
	p.expectCtl("idle_timeout", "Idle timeout: 0 seconds\n")
	p.expectCtl("idle_timeout 7", "Idle timeout: 7 seconds\n")
	p.expectCtl("idle_timeout -5", "Idle timeout: 0 seconds\n")
	p.expectCtl("idlers", "Idlers: 0/0\n")
	p.expectCtl("pid", fmt.Sprintf("%d\n", p.pid()))
	p.expectCtl("control", p.Ctl+"\n")
	p.expectCtl("listen", lst(port)+"\n")
	p.expectCtl("status", "Unable to create webstats\n")
	p.expectCtl("web_stats", "")
	p.expectCtl("log", "")
	p.expectCtlRefused("xyz", "do_cmd: ignoring command starting with 'xyz'\n")
	p.expectCtlRefused("xyz abc def", "do_cmd: ignoring command starting with 'xyz'\n")
	p.expectCtlRefused("block", "do_cmd: ignoring command starting with 'block'\n")
	p.expectCtlRefused("delayed_forward", "do_cmd: ignoring command starting with 'delayed_forward'\n")
	p.expectCtl("#comment", "")
	p.expectCtlRefused("no such_thing", "do_cmd: ignoring command starting with 'no such_thing'\n")
	p.expectCtl("tcp_fastclose", "do_cmd: ignoring tcp_fastclose without argument\n")
	p.expectCtl("roundrobin", "")
	p.expectCtl("hash", "")
	p.expectCtl("mode", "hash roundrobin no stubborn no weight no prio\n")
	p.expectCtl("stubborn", "")
	p.expectCtl("weight", "")
	p.expectCtl("prio", "")
	p.expectCtl("mode", "hash roundrobin stubborn weight prio\n")
	for _, c := range []string{"no hash", "no roundrobin", "no stubborn", "no weight", "no prio"} {
		p.expectCtl(c, "")
	}
	p.expectCtl("mode", "no hash no roundrobin no stubborn no weight no prio\n")
	p.expectCtl("client_acl 0", "0\n")

	// Byte counters: one request through pen; the first client goes to server 1.
	c, err := dialFrom(ip1, lst(port))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, request)
	got := make([]byte, len(reply))
	_, err = io.ReadFull(c, got)
	c.Close()
	if string(got) != reply {
		t.Fatalf("reply through pen = %q (%v), want %q", got, err, reply)
	}
	want := servers(len(request), len(reply))
	var last string
	if !waitFor(3*time.Second, func() bool { last = p.ctl("servers"); return last == want }) {
		t.Errorf("servers after one request:\n got %q\nwant %q", last, want)
	}
	wantRecent := fmt.Sprintf("127.0.0.1 connects 1 sx %d rx %d\n", len(reply), len(request))
	if !waitFor(3*time.Second, func() bool { last = p.ctl("recent"); return last == wantRecent }) {
		t.Errorf("recent after one request:\n got %q\nwant %q", last, wantRecent)
	}

	// connection N and close N on a live connection.
	held, err := dialFrom(ip1, lst(port))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	io.WriteString(held, "GET /held HTTP/1.0\r\n") // no blank line: the backend keeps waiting
	liveRe := regexp.MustCompile(`^Connection (\d+):\nstate = 2\ndownfd = \d+, upfd = \d+\nclient = 0, server = 1\npend = -?\d+\n$`)
	slot := -1
	var dump string
	waitFor(3*time.Second, func() bool {
		for i := 0; i < 8; i++ {
			out := p.ctl("connection " + strconv.Itoa(i))
			if strings.Contains(out, "state = 2\n") {
				slot, dump = i, out
				return true
			}
		}
		return false
	})
	if slot < 0 {
		t.Fatalf("no connection in state 2 among slots 0..7 while one client is connected; connection 0 = %q", p.ctl("connection 0"))
	}
	if !liveRe.MatchString(dump) {
		t.Errorf("connection %d:\n got %q\nwant the form %q", slot, dump, liveRe)
	}
	unused := (slot + 5) % 8
	unusedRe := regexp.MustCompile(fmt.Sprintf(`^Connection %d:\nstate = 0\ndownfd = -1, upfd = -1\nclient = -?\d+, server = -?\d+\npend = -?\d+\n$`, unused))
	if out := p.ctl("connection " + strconv.Itoa(unused)); !unusedRe.MatchString(out) {
		t.Errorf("connection %d (unused):\n got %q\nwant the form %q", unused, out, unusedRe)
	}
	p.expectCtl("connection 500", "Connection 500 out of range\n")
	p.expectCtl("connection -1", "Connection -1 out of range\n")
	p.expectCtl("close 500", "Connection 500 out of range\n")
	p.expectCtl("close "+strconv.Itoa(slot), fmt.Sprintf("Forcibly closing connection %d\n", slot))
	_ = held.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := held.Read(make([]byte, 100)); err == nil || isTimeout(err) {
		t.Errorf("after close %d the client connection is still open (read %d bytes, %v)", slot, n, err)
	}
	if !waitFor(3*time.Second, func() bool { return strings.Contains(p.ctl("connection "+strconv.Itoa(slot)), "state = 0\n") }) {
		t.Errorf("connection %d after close: %q, want state 0", slot, p.ctl("connection "+strconv.Itoa(slot)))
	}
	p.expectCtl("exit", "") // -X is set; pen stops
	if !p.waitExit(5 * time.Second) {
		t.Errorf("pen did not exit after the exit command with -X")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestExitCommand: `exit` needs -X; with it pen exits cleanly.
func TestExitCommand(t *testing.T) {
	begin(t, 60*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")

	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, NoX: true, TCP: port}, lst(port), b.spec())
	p.expectCtl("exit", "Exit is not enabled; restart with -X flag\n")
	time.Sleep(200 * time.Millisecond)
	p.mustBeAlive()
	expectGet(t, "after a refused exit", ip1, lst(port), "100")

	port2 := freePort(t, "tcp")
	q := startPen(t, penOpts{Control: true, TCP: port2}, lst(port2), b.spec())
	if !waitFor(5*time.Second, func() bool { return fileExists(q.Pidfile) }) {
		t.Fatalf("pidfile %s was not written", q.Pidfile)
	}
	q.expectCtl("exit", "")
	if !q.waitExit(5 * time.Second) {
		t.Fatalf("pen -X did not exit after the exit command")
	}
	if code := q.exitCode(); code != 0 {
		t.Errorf("exit status after the exit command = %d, want 0", code)
	}
	if fileExists(q.Pidfile) {
		t.Errorf("pidfile %s still exists after a clean exit", q.Pidfile)
	}
}

// TestOptionCommandsReplyOnStdout: -O/-o run a command at start-up and
// print its reply on standard output.
func TestOptionCommandsReplyOnStdout(t *testing.T) {
	begin(t, 30*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{TCP: port}, "-O", "blacklist 7", "-o", "mode", "-O", "tarpit_acl 3", lst(port), b.spec())
	expectGet(t, "after -O commands", ip1, lst(port), "100")
	// Pen's stdout may be block-buffered; it is complete once pen has exited.
	p.signal(syscall.SIGTERM)
	if !p.waitExit(5 * time.Second) {
		t.Fatalf("pen did not exit after TERM")
	}
	want := "7\nno hash no roundrobin no stubborn no weight no prio\ntarpit_acl = 3"
	if got := p.stdout.String(); got != want {
		t.Errorf("stdout of pen -O 'blacklist 7' -o mode -O 'tarpit_acl 3':\n got %q\nwant %q", got, want)
	}
}

// TestPenctlTCPAndUnix: penctl reaches pen through `-C addr:port` and
// through `-C /path`; control_acl guards the TCP port but not the unix one.
func TestPenctlTCPAndUnix(t *testing.T) {
	begin(t, 60*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	wantServers := fmt.Sprintf("0 addr 127.0.0.1 port %d conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n", b.port)

	t.Run("tcp", func(t *testing.T) {
		begin(t, 30*time.Second)
		port, cport := freePort(t, "tcp"), freePort(t, "tcp")
		args := []string{"-p", "pen.pid", "-C", lst(cport), "-X"}
		if asRoot() {
			args = append([]string{"-u", "nobody"}, args...)
		}
		p := startPen(t, penOpts{TCP: port, CtlTCP: cport}, append(args, lst(port), b.spec())...)
		target := lst(cport)
		if got := penctl(t, target, "servers"); got != wantServers {
			t.Errorf("penctl %s servers:\n got %q\nwant %q", target, got, wantServers)
		}
		if got := penctl(t, target, "pid"); got != fmt.Sprintf("%d\n", p.pid()) {
			t.Errorf("penctl %s pid = %q, want %q", target, got, fmt.Sprintf("%d\n", p.pid()))
		}
		if got := penctl(t, target, "control"); got != target+"\n" {
			t.Errorf("penctl %s control = %q, want %q", target, got, target+"\n")
		}
		// Only 127.0.0.2 may use the control port now.
		penctl(t, target, "acl 3 permit "+ip2)
		if got := penctl(t, target, "control_acl 3"); got != "3\n" {
			t.Errorf("control_acl 3 = %q, want %q", got, "3\n")
		}
		if got, err := runPenctl(target, "blacklist"); got != "" {
			t.Errorf("penctl from 127.0.0.1 with control_acl 3 got %q (%v), want no reply", got, err)
		}
		if got, err := rawControl("tcp", target, ip2, "blacklist"); err != nil || got != "30\n" {
			t.Errorf("control from 127.0.0.2 with control_acl 3 = %q (%v), want %q", got, err, "30\n")
		}
		if got, err := rawControl("tcp", target, ip2, "control_acl 0"); err != nil || got != "0\n" {
			t.Errorf("control_acl 0 from 127.0.0.2 = %q (%v), want %q", got, err, "0\n")
		}
		if got := penctl(t, target, "blacklist"); got != "30\n" {
			t.Errorf("penctl after control_acl 0 = %q, want %q", got, "30\n")
		}
		expectGet(t, "proxying with a TCP control port", ip1, lst(port), "100")
	})

	t.Run("unix", func(t *testing.T) {
		begin(t, 30*time.Second)
		port := freePort(t, "tcp")
		p := startPen(t, penOpts{Control: true, TCP: port}, lst(port), b.spec())
		if got := penctl(t, p.Ctl, "servers"); got != wantServers {
			t.Errorf("penctl %s servers:\n got %q\nwant %q", p.Ctl, got, wantServers)
		}
		// A unix control client always passes control_acl.
		p.ctl("acl 4 permit 10.0.0.1")
		p.expectCtl("control_acl 4", "4\n")
		p.expectCtl("blacklist", "30\n")
		p.expectCtl("control_acl 0", "0\n")
		// Only the first line of a request counts.
		if got, err := rawControl("unix", p.Ctl, "", "blacklist\nblacklist 99"); err != nil || got != "30\n" {
			t.Errorf("two lines in one request = %q (%v), want only the first answered: %q", got, err, "30\n")
		}
		p.expectCtl("blacklist", "30\n")
		expectGet(t, "proxying with a unix control socket", ip1, lst(port), "100")
	})
}

// TestSilentControlClientDoesNotStallProxy: a control client that connects
// and sends nothing must not block proxying (Pen blocks its whole loop,
// PEN-REFERENCE §7), and the control socket must recover.
func TestSilentControlClientDoesNotStallProxy(t *testing.T) {
	begin(t, 60*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port}, lst(port), b.spec())
	silent, err := net.DialTimeout("unix", p.Ctl, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	body, err := httpGet(ip1, lst(port))
	if err != nil || body != "100" {
		t.Fatalf("proxying while a control client is silent: %q, %v", body, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("proxying while a control client is silent took %v", d)
	}
	got, err := runPenctl(p.Ctl, "blacklist")
	if err != nil || got != "30\n" {
		t.Errorf("penctl while another control client is silent = %q (%v), want %q", got, err, "30\n")
	}
}

// TestControlPortRefusedAsRoot: as root without -u, pen does not open the
// control port, says why, and proxies anyway.
func TestControlPortRefusedAsRoot(t *testing.T) {
	begin(t, 60*time.Second)
	if !asRoot() {
		t.Skip("the refusal only applies to root")
	}
	b := startHTTPBackend(t, "100", "127.0.0.1")
	const msg = "Won't open control port running as root; use -u to run as different user"
	for _, kind := range []string{"unix", "tcp"} {
		t.Run(kind, func(t *testing.T) {
			begin(t, 30*time.Second)
			dir := sharedDir(t)
			port := freePort(t, "tcp")
			ctl := filepath.Join(dir, "pen.ctl")
			var cport int
			if kind == "tcp" {
				cport = freePort(t, "tcp")
				ctl = lst(cport)
			}
			p := startPen(t, penOpts{TCP: port, Dir: dir}, "-p", filepath.Join(dir, "pen.pid"), "-C", ctl, "-X", lst(port), b.spec())
			expectGet(t, "proxying without a control port", ip1, lst(port), "100")
			if !waitFor(3*time.Second, func() bool { return strings.Contains(p.output(), msg) }) {
				t.Errorf("pen's log does not say %q", msg)
			}
			if kind == "unix" && listeningUnix(ctl) {
				t.Errorf("control socket %s is open although pen runs as root without -u", ctl)
			}
			if kind == "tcp" && listeningTCP(cport) {
				t.Errorf("control port %d is open although pen runs as root without -u", cport)
			}
			if out, err := runPenctl(ctl, "servers"); err == nil && out != "" {
				t.Errorf("penctl %s servers answered %q although no control port should be open", ctl, out)
			}
		})
	}
}

// TestWriteRoundTrip: configure pen with -O and penctl, `write` the
// configuration, check Pen's layout, restart pen from the file alone and
// compare the replies.
func TestWriteRoundTrip(t *testing.T) {
	begin(t, 90*time.Second)
	bA := startHTTPBackend(t, "A", "127.0.0.1")
	bB := startHTTPBackend(t, "B", "127.0.0.1")
	dir := sharedDir(t)
	web := filepath.Join(dir, "stats.html")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port, Dir: dir},
		"-O", "acl 1 permit 127.0.0.1",
		"-O", "acl 1 deny 10.0.0.0 255.0.0.0",
		"-o", "acl 2 deny 2001:db8::/32",
		lst(port), bA.spec()+":10:20:3:4", bB.spec()+":0:0:5:1")
	for _, c := range []string{
		"blacklist 45", "tracking 120", "timeout 4", "client_acl 1",
		"roundrobin", "stubborn", "weight", "prio", "http", "tcp_nodelay", "tcp_fastclose both",
		"server 1 acl 2", "web_stats " + web,
		"idle_timeout 33", "pending_max 7", "tarpit_acl 2", "keepalive",
	} {
		p.ctl(c)
	}
	queries := []string{"servers", "mode", "blacklist", "tracking", "timeout", "client_acl", "idle_timeout", "tarpit_acl", "web_stats"}
	before := map[string]string{}
	for _, q := range queries {
		before[q] = p.ctl(q)
	}
	wantMode := "no hash roundrobin stubborn weight prio\n"
	if before["mode"] != wantMode {
		t.Errorf("mode before write = %q, want %q", before["mode"], wantMode)
	}

	file := filepath.Join(dir, "written.cfg")
	p.expectCtl("write "+file, "")
	if !waitFor(3*time.Second, func() bool { return strings.HasSuffix(readFileString(file), "\n") }) {
		t.Fatalf("write %s produced no file", file)
	}
	written := readFileString(file)
	t.Logf("written configuration:\n%s", written)
	got := lines(written)

	if !regexp.MustCompile(`^# Generated by pen \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$`).MatchString(got[0]) {
		t.Errorf("line 1 = %q, want \"# Generated by pen YYYY-MM-DD HH:MM:SS\"", got[0])
	}
	line2 := "# pen -f -X -p '" + p.Pidfile + "'"
	if asRoot() {
		line2 += " -u 'nobody'"
	}
	line2 += " -F '" + file + "' -C " + p.Ctl + " " + lst(port)
	if len(got) < 2 || got[1] != line2 {
		t.Errorf("line 2:\n got %q\nwant %q", got[1], line2)
	}
	want := []string{"no acl 0", "no acl 1",
		"acl 1 permit 127.0.0.1 255.255.255.255",
		"acl 1 deny 10.0.0.0 255.0.0.0",
		"no acl 2",
		"acl 2 deny 2001:db8::/32"}
	for i := 3; i < 10; i++ {
		want = append(want, "no acl "+strconv.Itoa(i))
	}
	want = append(want,
		"no ascii",
		"blacklist 45",
		"client_acl 1",
		"control_acl 0",
		"debug 0",
		"no hash",
		"http",
		"no log",
		"roundrobin",
		fmt.Sprintf("server 0 acl 0 address 127.0.0.1 port %d max 10 hard 20 weight 3 prio 4", bA.port),
		fmt.Sprintf("server 1 acl 2 address 127.0.0.1 port %d max 0 hard 0 weight 5 prio 1", bB.port),
		"stubborn",
		"tcp_fastclose both",
		"tcp_nodelay",
		"timeout 4",
		"tracking 120",
		"web_stats "+web,
		"weight",
		"prio",
	)
	for i, w := range want {
		if 2+i >= len(got) {
			t.Errorf("written file ends after %d lines; want line %d = %q", len(got), 3+i, w)
			break
		}
		if got[2+i] != w {
			t.Errorf("line %d = %q, want %q", 3+i, got[2+i], w)
		}
	}
	// After Pen's own lines come the settings Pen forgets to write.
	extra := map[string]bool{}
	if len(got) > 2+len(want) {
		for _, l := range got[2+len(want):] {
			extra[l] = true
		}
	}
	for _, l := range []string{"idle_timeout 33", "pending_max 7", "tarpit_acl 2", "keepalive"} {
		if !extra[l] {
			t.Errorf("the written file has no line %q after Pen's settings", l)
		}
	}

	// Restart from the file alone (the listen port is not in it).
	p.kill()
	dir2 := sharedDir(t)
	cfg := filepath.Join(dir2, "pen.cfg")
	writeFile(t, cfg, written)
	q := startPen(t, penOpts{Control: true, TCP: port, Dir: dir2}, "-F", cfg, lst(port))
	for _, cmd := range queries {
		q.expectCtl(cmd, before[cmd])
	}
}
