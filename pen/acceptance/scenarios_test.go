package acceptance

// Pen's testsuite.sh scenarios (PEN-REFERENCE §8), with Go HTTP and DNS
// servers in place of the Apache vhosts and the split-horizon bind, and
// 127.0.0.1 / 127.0.0.2 as the two client addresses.

import (
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Scenario 1: TCP with IP-based client tracking.
func TestScenario1TCPClientTracking(t *testing.T) {
	begin(t, 60*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	b101 := startHTTPBackend(t, "101", "127.0.0.1")
	port := freePort(t, "tcp")
	startPen(t, penOpts{Control: true, TCP: port}, strconv.Itoa(port), b100.spec(), b101.spec())
	addr := lst(port)

	h1a := mustGet(t, ip1, addr)
	h1b := mustGet(t, ip1, addr)
	h2a := mustGet(t, ip2, addr)
	h2b := mustGet(t, ip2, addr)
	t.Logf("IP1: %q %q; IP2: %q %q", h1a, h1b, h2a, h2b)
	if h1a == "" || h1b != h1a {
		t.Errorf("tracked client %s: got %q then %q, want the same backend twice", ip1, h1a, h1b)
	}
	if h2a == "" || h2a == h1a || h2b != h2a {
		t.Errorf("tracked client %s: got %q then %q, want the other backend than %q twice", ip2, h2a, h2b, h1a)
	}
	// §4.2: round-robin starts at server 1, so the first new client gets "101".
	if h1a != "101" {
		t.Errorf("first client's backend = %q, want %q (Pen's first round-robin pick is server 1)", h1a, "101")
	}
}

// Scenario 2: TCP without client tracking (-r).
func TestScenario2TCPRoundRobin(t *testing.T) {
	begin(t, 60*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	b101 := startHTTPBackend(t, "101", "127.0.0.1")
	port := freePort(t, "tcp")
	startPen(t, penOpts{Control: true, TCP: port}, "-r", strconv.Itoa(port), b100.spec(), b101.spec())
	addr := lst(port)

	h1a := mustGet(t, ip1, addr)
	h1b := mustGet(t, ip1, addr)
	h2a := mustGet(t, ip2, addr)
	h2b := mustGet(t, ip2, addr)
	t.Logf("IP1: %q %q; IP2: %q %q", h1a, h1b, h2a, h2b)
	if h1a == "" || h1b == h1a {
		t.Errorf("%s: got %q then %q, want alternating backends", ip1, h1a, h1b)
	}
	if h2a != h1a {
		t.Errorf("first request from %s went to %q, want %q (the same as the first from %s)", ip2, h2a, h1a, ip1)
	}
	if h2b == h2a {
		t.Errorf("%s: got %q then %q, want alternating backends", ip2, h2a, h2b)
	}
	if h1a != "101" {
		t.Errorf("first round-robin pick = %q, want %q (server 1)", h1a, "101")
	}
}

// Scenario 3: UDP with IP-based client tracking (-U).
func TestScenario3UDPClientTracking(t *testing.T) {
	begin(t, 60*time.Second)
	view1 := startDNSBackend(t, "1.1.1.1")
	view2 := startDNSBackend(t, "2.2.2.2")
	port := freePort(t, "udp")
	startPen(t, penOpts{UDP: port}, "-U", strconv.Itoa(port), view1.spec(), view2.spec())
	addr := lst(port)

	h1a := mustDig(t, ip1, addr)
	h1b := mustDig(t, ip1, addr)
	h1c := mustDig(t, ip1, addr)
	h2a := mustDig(t, ip2, addr)
	h2b := mustDig(t, ip2, addr)
	t.Logf("IP1: %s %s %s; IP2: %s %s", h1a, h1b, h1c, h2a, h2b)
	if h1b != h1a || h1c != h1a {
		t.Errorf("tracked UDP client %s: answers %s %s %s, want the same backend every time", ip1, h1a, h1b, h1c)
	}
	if h2a == h1a || h2b != h2a {
		t.Errorf("tracked UDP client %s: answers %s %s, want the other backend than %s twice", ip2, h2a, h2b, h1a)
	}
	if h1a != "2.2.2.2" {
		t.Errorf("first client's answer = %s, want 2.2.2.2 (Pen's first round-robin pick is server 1)", h1a)
	}
}

// Scenario 4: UDP without client tracking (-Ur).
func TestScenario4UDPRoundRobin(t *testing.T) {
	begin(t, 60*time.Second)
	view1 := startDNSBackend(t, "1.1.1.1")
	view2 := startDNSBackend(t, "2.2.2.2")
	port := freePort(t, "udp")
	startPen(t, penOpts{UDP: port}, "-Ur", strconv.Itoa(port), view1.spec(), view2.spec())
	addr := lst(port)

	h1a := mustDig(t, ip1, addr)
	h1b := mustDig(t, ip1, addr)
	h2a := mustDig(t, ip2, addr)
	h2b := mustDig(t, ip2, addr)
	t.Logf("IP1: %s %s; IP2: %s %s", h1a, h1b, h2a, h2b)
	if h1b == h1a {
		t.Errorf("%s: answers %s then %s, want alternating views", ip1, h1a, h1b)
	}
	if h2a != h1a {
		t.Errorf("first answer to %s = %s, want %s (the same as the first to %s)", ip2, h2a, h1a, ip1)
	}
	if h2b == h2a {
		t.Errorf("%s: answers %s then %s, want alternating views", ip2, h2a, h2b)
	}
}

// Scenario 5: UDP failover (issue #19): three pen -U relays behind pen -Ur;
// blacklisting takes relays out of the rotation, and all three blacklisted
// means no answer at all.
func TestScenario5UDPFailover(t *testing.T) {
	begin(t, 90*time.Second)
	var dnss [3]*dnsBackend
	var relays [3]string
	for i := range relays {
		dnss[i] = startDNSBackend(t, "1.1.1.1")
		rp := freePort(t, "udp")
		startPen(t, penOpts{Name: "relay" + strconv.Itoa(i), UDP: rp}, "-U", lst(rp), dnss[i].spec())
		relays[i] = lst(rp)
		if a := mustDig(t, ip1, relays[i]); a != "1.1.1.1" {
			t.Fatalf("relay %d answered %s, want 1.1.1.1", i, a)
		}
	}
	port := freePort(t, "udp")
	p := startPen(t, penOpts{Control: true, UDP: port}, "-Ur", strconv.Itoa(port), relays[0], relays[1], relays[2])
	addr := lst(port)

	if a := mustDig(t, ip1, addr); a != "1.1.1.1" {
		t.Fatalf("first result %s, want 1.1.1.1", a)
	}
	p.ctl("server 1 blacklist 30")
	if a := mustDig(t, ip1, addr); a != "1.1.1.1" {
		t.Fatalf("with server 1 blacklisted: %s, want 1.1.1.1", a)
	}
	p.ctl("server 2 blacklist 30")
	if a := mustDig(t, ip1, addr); a != "1.1.1.1" {
		t.Fatalf("with servers 1 and 2 blacklisted: %s, want 1.1.1.1", a)
	}
	// Only server 0 is left: every query must go through relay 0.
	before := [3]int64{dnss[0].queries.Load(), dnss[1].queries.Load(), dnss[2].queries.Load()}
	for i := 0; i < 4; i++ {
		if a := mustDig(t, ip1, addr); a != "1.1.1.1" {
			t.Fatalf("with servers 1 and 2 blacklisted, query %d: %s", i, a)
		}
	}
	for i := 1; i < 3; i++ {
		if n := dnss[i].queries.Load() - before[i]; n != 0 {
			t.Errorf("blacklisted server %d still got %d of 4 queries", i, n)
		}
	}
	if n := dnss[0].queries.Load() - before[0]; n != 4 {
		t.Errorf("server 0 got %d of 4 queries, want all 4", n)
	}

	p.ctl("server 0 blacklist 30")
	if a, err := digShort(ip1, addr, 2*time.Second); err == nil {
		t.Fatalf("all servers blacklisted: got answer %s, want no answer (dig exit status 9)", a)
	} else {
		t.Logf("all servers blacklisted: no answer as expected (%v)", err)
	}
	p.ctl("server 0 blacklist 0")
	if a := mustDig(t, ip1, addr); a != "1.1.1.1" {
		t.Fatalf("after whitelisting server 0: %s, want 1.1.1.1", a)
	}
}

// Scenario 6: emergency server (-e) when every server is blacklisted.
func TestScenario6EmergencyServer(t *testing.T) {
	begin(t, 60*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	b101 := startHTTPBackend(t, "101", "127.0.0.1")
	emerg := startHTTPBackend(t, "Emergency", "127.0.0.1")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port},
		"-r", "-e", emerg.spec(), strconv.Itoa(port), b100.spec(), b101.spec()+":0:0:101")
	addr := lst(port)

	h1, h2 := mustGet(t, ip1, addr), mustGet(t, ip1, addr)
	if h1 == "" || h1 == h2 || h1 == "Emergency" || h2 == "Emergency" {
		t.Fatalf("round-robin: got %q then %q, want 100 and 101 alternating", h1, h2)
	}
	p.ctl("server 0 blacklist 100")
	expectGet(t, "server 0 blacklisted, first", ip1, addr, "101")
	expectGet(t, "server 0 blacklisted, second", ip1, addr, "101")
	p.ctl("server 1 blacklist 100")
	expectGet(t, "both blacklisted", ip1, addr, "Emergency")
	expectGet(t, "both blacklisted, again", ip1, addr, "Emergency")
	p.ctl("server 0 blacklist 0")
	expectGet(t, "server 0 whitelisted, first", ip1, addr, "100")
	expectGet(t, "server 0 whitelisted, second", ip1, addr, "100")
	p.ctl("server 1 blacklist 0")
	h1, h2 = mustGet(t, ip1, addr), mustGet(t, ip1, addr)
	if h1 == h2 || h1 == "Emergency" || h2 == "Emergency" {
		t.Fatalf("both whitelisted: got %q then %q, want 100 and 101 alternating", h1, h2)
	}
}

// Scenario 7: abuse server (-B) for clients denied by client_acl, and a
// server ACL that drops the connection.
func TestScenario7AbuseServer(t *testing.T) {
	begin(t, 60*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	abuse := startHTTPBackend(t, "Abuse", "127.0.0.1")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port}, "-B", abuse.spec(), strconv.Itoa(port), b100.spec())
	addr := lst(port)

	p.ctl("acl 1 permit " + ip1)
	p.ctl("client_acl 1")
	expectGet(t, "permitted client", ip1, addr, "100")
	expectGet(t, "denied client", ip2, addr, "Abuse")
	p.ctl("client_acl 0")
	expectGet(t, "client_acl 0", ip2, addr, "100")
	p.ctl("server 0 acl 1")
	expectGet(t, "server 0 acl 1, permitted client", ip1, addr, "100")
	raw, err := fetch(ip2, addr)
	if len(raw) != 0 || (err != nil && !isReset(err)) {
		t.Fatalf("server 0 acl 1, denied client: got %q (error %v), want the connection dropped with an empty reply", raw, err)
	}
	p.mustBeAlive()
}

// Scenario 9: IPv6 clients to an IPv4 backend, listen spec ":::PORT"; the
// other IPv6 listen forms are checked too.
func TestScenario9IPv6ToIPv4(t *testing.T) {
	begin(t, 60*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	for _, form := range []string{":::%d", "::1:%d", "[::1]:%d"} {
		t.Run(form, func(t *testing.T) {
			begin(t, 30*time.Second)
			port := freePort(t, "tcp")
			spec := fmt.Sprintf(form, port)
			startPen(t, penOpts{TCP: port}, spec, b100.spec())
			expectGet(t, "curl -6 [::1]", "::1", hostPort("::1", port), "100")
		})
	}
}

// Scenario 10: IPv4 clients to an IPv6 backend.
func TestScenario10IPv4ToIPv6(t *testing.T) {
	begin(t, 60*time.Second)
	b100 := startHTTPBackend(t, "100", "::1")
	port := freePort(t, "tcp")
	startPen(t, penOpts{TCP: port}, lst(port), b100.spec())
	expectGet(t, "curl -4", ip1, lst(port), "100")
}

// Scenario 11: HUP re-reads the -F file (options after the positional
// listen port, as glibc getopt allows).
func TestScenario11HUPRereadsConfig(t *testing.T) {
	begin(t, 60*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	b101 := startHTTPBackend(t, "101", "127.0.0.1")
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "autotest.cfg")
	writeFile(t, cfg, "server 0 address 127.0.0.1 port "+strconv.Itoa(b100.port)+"\n")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{TCP: port, Dir: dir}, "-p", filepath.Join(dir, "autotest.pid"), strconv.Itoa(port), "-F", cfg)
	addr := lst(port)
	expectGet(t, "before HUP", ip1, addr, "100")

	writeFile(t, cfg, "server 0 address 127.0.0.1 port "+strconv.Itoa(b101.port)+"\n")
	p.signal(syscall.SIGHUP)
	var last string
	if !waitFor(6*time.Second, func() bool {
		last = mustGet(t, ip1, addr)
		return last == "101"
	}) {
		t.Fatalf("after HUP with port %d in the file: still answered by %q, want %q", b101.port, last, "101")
	}
	p.mustBeAlive()
}
