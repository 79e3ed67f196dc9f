package acceptance

// Pen's bugs listed in PEN-REFERENCE §7 that can be seen from outside:
// each test checks the behaviour the manual promises, not Pen's. (Pen bug
// #52 is TestUDPRepliesReachTheirClient; the blocking control socket is
// TestSilentControlClientDoesNotStallProxy.)

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDeniedClientNotSentToEmergency: a client denied by client_acl when
// no abuse server (-B) is set must not be served, not even by the
// emergency server (Pen compares with -1 and sends it to -e).
func TestDeniedClientNotSentToEmergency(t *testing.T) {
	begin(t, 30*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	emerg := startHTTPBackend(t, "Emergency", "127.0.0.1")
	port := freePort(t, "tcp")
	startPen(t, penOpts{TCP: port}, "-e", emerg.spec(), "-O", "acl 1 permit "+ip1, "-O", "client_acl 1", lst(port), b100.spec())
	addr := lst(port)
	expectGet(t, "permitted client", ip1, addr, "100")
	raw, err := fetch(ip2, addr)
	if len(raw) != 0 || (err != nil && !isReset(err)) {
		t.Errorf("client denied by client_acl without -B: got %q (error %v), want the connection dropped", raw, err)
	}
	if n := len(emerg.requests()); n != 0 {
		t.Errorf("the emergency server got %d requests from a denied client", n)
	}
}

// TestServerZeroCanBeRemoved: `server N address 0.0.0.0` takes a server
// out of the rotation, server 0 included.
func TestServerZeroCanBeRemoved(t *testing.T) {
	begin(t, 30*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	b101 := startHTTPBackend(t, "101", "127.0.0.1")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port}, "-r", lst(port), b100.spec(), b101.spec())
	addr := lst(port)
	if h1, h2 := mustGet(t, ip1, addr), mustGet(t, ip1, addr); h1 == h2 {
		t.Fatalf("round-robin before the change: %q then %q", h1, h2)
	}
	p.ctl("server 0 address 0.0.0.0")
	for i := 0; i < 4; i++ {
		expectGet(t, "server 0 removed, request "+strconv.Itoa(i), ip1, addr, "101")
	}
	if len(b100.requests()) != 1 {
		t.Errorf("removed server 0 got %d requests in all, want only the one before it was removed", len(b100.requests()))
	}
}

// TestTrackingTimeExpires: after -T seconds without a visit a returning
// client is balanced afresh instead of keeping its old server (§4.1).
func TestTrackingTimeExpires(t *testing.T) {
	begin(t, 30*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	b101 := startHTTPBackend(t, "101", "127.0.0.1")
	b102 := startHTTPBackend(t, "102", "127.0.0.1")
	port := freePort(t, "tcp")
	startPen(t, penOpts{TCP: port}, "-T", "2", lst(port), b100.spec(), b101.spec(), b102.spec())
	addr := lst(port)
	first := mustGet(t, ip1, addr)
	expectGet(t, "within the tracking time", ip1, addr, first)
	other := mustGet(t, ip2, addr)
	if other == first {
		t.Fatalf("two new clients both went to %q", first)
	}
	time.Sleep(3500 * time.Millisecond)
	again := mustGet(t, ip1, addr)
	t.Logf("client %s: %q before expiry, %q after (client %s got %q)", ip1, first, again, ip2, other)
	if again == first {
		t.Errorf("after the -T 2 tracking time expired, %s still went to its old server %q; want a fresh round-robin choice", ip1, first)
	}
}

// TestACLMaskedOnEntry: an IPv4 ACL entry is masked when it is added, so
// `acl 1 permit 127.0.0.1 255.0.0.0` permits all of 127/8 (Pen never
// matches it).
func TestACLMaskedOnEntry(t *testing.T) {
	begin(t, 30*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	abuse := startHTTPBackend(t, "Abuse", "127.0.0.1")
	port := freePort(t, "tcp")
	startPen(t, penOpts{TCP: port}, "-B", abuse.spec(), "-O", "acl 1 permit 127.0.0.1 255.0.0.0", "-O", "client_acl 1", lst(port), b100.spec())
	addr := lst(port)
	expectGet(t, "127.0.0.1 with acl 1 permit 127.0.0.1 255.0.0.0", ip1, addr, "100")
	expectGet(t, "127.0.0.2 with acl 1 permit 127.0.0.1 255.0.0.0", ip2, addr, "100")
}

// TestMalformedCommandsDoNotCrash: commands that crash Pen (missing
// arguments) must leave pen running, and conn_max grows the connection
// table (Pen grows the client table instead).
func TestMalformedCommandsDoNotCrash(t *testing.T) {
	begin(t, 30*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port}, lst(port), b100.spec())
	for _, c := range []string{"source", "no acl", "ssl_client_renegotiation_interval", "server", "acl", "acl 1", "acl 1 permit", "include", "write"} {
		// Refused with a reason: penctl exits 1 and says why.
		r := runPenctlStatus(t, p.Ctl, strings.Fields(c)...)
		if r.Code != 1 || r.Stdout != "" || r.Stderr == "" {
			t.Errorf("penctl %q: exit %d, stdout %q, stderr %q; want exit 1 with a reason on stderr", c, r.Code, r.Stdout, r.Stderr)
		} else {
			t.Logf("penctl %q: %q", c, r.Stderr)
		}
		time.Sleep(50 * time.Millisecond)
		if p.exited() {
			t.Fatalf("pen died after the command %q (%v)", c, p.waitErr)
		}
	}
	p.expectCtl("conn_max 1000", "1000\n")
	p.expectCtl("conn_max", "1000\n")
	p.expectCtl("clients_max", "2048\n")
	expectGet(t, "after malformed commands", ip1, lst(port), "100")
}
