package webui

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestListenersFollowConfig runs the real listeners: HTTPS with a
// certificate generated on first use, the redirect, and moving both when
// the configuration changes at run time.
func TestListenersFollowConfig(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	cert, key := filepath.Join(h.dir, "tls", "admin.crt"), filepath.Join(h.dir, "tls", "admin.key")
	// Placeholder ports (see placeholderBind): each listener binds
	// port 0 and the test uses the address it got.
	h.exec("admin_listen 127.0.0.1:2")
	h.exec("admin_redirect 127.0.0.1:3")
	h.exec("admin_tls " + cert + " " + key)
	h.s.Start()
	defer h.s.Close()

	a1, r1 := h.s.AdminAddr(), h.s.RedirectAddr()
	if ap, err := netip.ParseAddrPort(a1); err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == 0 {
		t.Fatalf("admin listener on %q", a1)
	}
	if r1 == "" || r1 == a1 {
		t.Fatalf("redirect listener on %q", r1)
	}
	_, p1, _ := net.SplitHostPort(a1)
	_, rp, _ := net.SplitHostPort(r1)
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key: %v %v", fi, err)
	}
	pemData, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemData)
	crt, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := crt.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(crt)
	c := &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(u string) (*http.Response, string, error) {
		r, err := c.Get(u)
		if err != nil {
			return nil, "", err
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r, string(b), nil
	}
	r, body, err := get("https://" + a1 + "/healthz")
	if err != nil || r.StatusCode != http.StatusOK || body != "ok\n" {
		t.Fatalf("GET /healthz over TLS: %v %q", err, body)
	}
	// Plain HTTP on the redirect port goes to the HTTPS port.
	r, _, err = get("http://localhost:" + rp + "/servers?x=1")
	if err != nil || r.StatusCode != http.StatusTemporaryRedirect ||
		r.Header.Get("Location") != "https://localhost:"+p1+"/servers?x=1" {
		t.Fatalf("redirect: %v %v %q", err, r.StatusCode, r.Header.Get("Location"))
	}
	if _, err := os.Stat(cert); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(cert)

	// Move the admin listener; the old port closes.
	h.exec("admin_listen 127.0.0.1:4")
	waitFor(t, "the admin listener to move", func() bool { return h.s.AdminAddr() != a1 })
	a2 := h.s.AdminAddr()
	_, p2, _ := net.SplitHostPort(a2)
	if _, _, err := get("https://" + a2 + "/healthz"); err != nil {
		t.Errorf("new port: %v", err)
	}
	waitFor(t, "the old port to close", func() bool {
		_, _, err := get("https://" + a1 + "/healthz")
		return err != nil
	})
	r, _, _ = get("http://" + r1 + "/")
	if r == nil || !strings.Contains(r.Header.Get("Location"), ":"+p2+"/") {
		t.Errorf("redirect does not follow the move: %v", r)
	}
	if after, _ := os.ReadFile(cert); string(after) != string(before) {
		t.Error("certificate regenerated although it exists")
	}

	// Without admin_tls the same listener serves plain HTTP.
	h.exec("no admin_tls")
	waitFor(t, "plain HTTP", func() bool {
		r, _, err := get("http://" + a2 + "/healthz")
		return err == nil && r.StatusCode == http.StatusOK
	})

	// A port that is taken is reported and retried; the old listener
	// keeps serving meanwhile.
	busy := h.s.AdminAddr()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	h.exec("admin_listen " + taken.Addr().String())
	waitFor(t, "the bind error", func() bool { return h.s.ListenerError() != nil })
	if !strings.Contains(h.s.ListenerError().Error(), "address already in use") {
		t.Errorf("error: %v", h.s.ListenerError())
	}
	if h.s.AdminAddr() != busy {
		t.Errorf("admin listener moved to %q after a failed bind", h.s.AdminAddr())
	}

	// Turning the listener off closes both.
	h.exec("no admin_listen")
	waitFor(t, "the listeners to close", func() bool { return h.s.AdminAddr() == "" && h.s.RedirectAddr() == "" })
}

func TestEnsureCert(t *testing.T) {
	dir := t.TempDir()
	both := filepath.Join(dir, "both.pem")
	gen, err := EnsureCert(both, "", []string{"pen.example", "192.0.2.1"}, time.Now())
	if err != nil || !gen {
		t.Fatalf("EnsureCert: %v %v", gen, err)
	}
	if fi, _ := os.Stat(both); fi.Mode().Perm() != 0o600 {
		t.Errorf("combined file mode %v", fi.Mode().Perm())
	}
	c, err := tls.LoadX509KeyPair(both, both)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	if leaf.VerifyHostname("pen.example") != nil || leaf.VerifyHostname("192.0.2.1") != nil {
		t.Errorf("names: %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if gen, _ := EnsureCert(both, "", nil, time.Now()); gen {
		t.Error("regenerated an existing certificate")
	}
	// A key without its certificate (say, a power cut between the two
	// writes) is reused.
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if _, err := EnsureCert(cert, key, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	k1, _ := os.ReadFile(key)
	os.Remove(cert)
	if gen, err := EnsureCert(cert, key, nil, time.Now()); err != nil || !gen {
		t.Fatalf("regenerating the certificate: %v %v", gen, err)
	}
	if k2, _ := os.ReadFile(key); string(k1) != string(k2) {
		t.Error("key replaced")
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		t.Errorf("pair does not match: %v", err)
	}
}

func TestSamplerBounded(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	sm := NewSampler(h.in, EngineState(h.eng), time.Second, 5*time.Second)
	t0 := time.Unix(1e9, 0)
	for i := 0; i < 12; i++ {
		sm.Sample(t0.Add(time.Duration(i) * time.Second))
	}
	snap := sm.Snapshot()
	if len(snap.Times) != 5 || snap.Times[0] != t0.Unix()+7 || snap.Times[4] != t0.Unix()+11 {
		t.Fatalf("times %v", snap.Times)
	}
	if len(snap.Servers) != 2 || len(snap.Servers[0].Conns) != 5 || snap.Servers[1].Address != "127.0.0.1:10" {
		t.Fatalf("servers %+v", snap.Servers)
	}
	// A removed server's history goes; the next keeps its own under its
	// new slot number, and a new server starts short.
	h.exec("no server 0")
	h.exec("server 1 address 127.0.0.1 port 11")
	sm.Sample(t0.Add(12 * time.Second))
	snap = sm.Snapshot()
	if len(snap.Servers) != 2 || snap.Servers[0].Address != "127.0.0.1:10" || snap.Servers[0].Slot != 0 ||
		len(snap.Servers[0].Conns) != 5 || len(snap.Servers[1].Conns) != 1 {
		t.Fatalf("after removal: %+v", snap.Servers)
	}
	// Memory stays within MaxSampled servers.
	for i := 2; i < MaxSampled+20; i++ {
		h.exec(fmt.Sprintf("server %d address 127.0.0.1 port %d", i, 1000+i))
	}
	sm.Sample(t0.Add(13 * time.Second))
	if n := len(sm.Snapshot().Servers); n != MaxSampled {
		t.Errorf("sampling %d servers, want %d", n, MaxSampled)
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

// TestConnCap floods the real admin listener with idle connections, more
// than MaxConns, from one address: the admin UI holds at most MaxConns
// descriptors for them, still answers a real request, and keeps the
// kept-alive connection of a browser at another address.
func TestConnCap(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.s.Start()
	defer h.s.Close()
	addr := h.s.AdminAddr()
	if addr == "" {
		t.Fatalf("admin listener not open: %v", h.s.ListenerError())
	}
	// A browser at 127.0.0.2 with a kept-alive connection.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	browser, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Close()
	br := bufio.NewReader(browser)
	ask := func(what string) {
		t.Helper()
		browser.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(browser, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d", what, r.StatusCode)
		}
	}
	ask("browser before the flood")

	before := openFDs(t)
	const flood = MaxConns + 200
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := 0; i < flood; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	lim := h.s.lst.lim
	waitFor(t, "the flood to be accepted", func() bool {
		lim.mu.Lock()
		defer lim.mu.Unlock()
		return lim.accepted+lim.refused >= flood+1
	})
	if n := lim.count(); n > MaxConns {
		t.Errorf("%d admin connections open, more than %d", n, MaxConns)
	}
	// The test holds flood descriptors of its own; pen may hold at most
	// MaxConns more (and a few for the request below).
	if got, most := openFDs(t), before+flood+MaxConns+8; got > most {
		t.Errorf("%d descriptors open after %d idle connections, want at most %d (%d before)", got, flood, most, before)
	}
	// A new client is served, and so is the browser on the connection it
	// had: the flood pushed out only its own connections.
	c := &http.Client{Timeout: 10 * time.Second}
	r, err := c.Get("http://" + addr + "/login")
	if err != nil {
		t.Fatalf("GET /login during the flood: %v", err)
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("GET /login during the flood: HTTP %d", r.StatusCode)
	}
	ask("browser after the flood, same connection")
}

// TestIdleConnTimeout: a connection that sends no request, or only part
// of its headers, is closed after the header timeout.
func TestIdleConnTimeout(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.s.lst.headerTimeout = 300 * time.Millisecond
	h.s.Start()
	defer h.s.Close()
	addr := h.s.AdminAddr()
	for _, sent := range []string{"", "GET / HTTP/1.1\r\nHost: x\r\n"} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, sent)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || time.Since(start) > 5*time.Second {
			t.Errorf("after sending %q: connection not closed by the server: %v (%q)", sent, err, b)
		}
	}
	waitFor(t, "the closed connections to be forgotten", func() bool { return h.s.lst.lim.count() == 0 })
}

// countingListener counts Accept calls, failed ones included. While
// emfile is set, Accept fails as accept(2) does when the process is out of
// descriptors, and the connection stays queued in the kernel.
type countingListener struct {
	net.Listener
	calls  *atomic.Int64
	emfile *atomic.Bool
}

func (l countingListener) Accept() (net.Conn, error) {
	l.calls.Add(1)
	if l.emfile.Load() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", unix.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptBacksOff runs the admin listener out of descriptors (EMFILE):
// it tries again after a pause, not at once in a loop, and serves again
// when descriptors are free. The shortage is the listener's: lowering the
// test process's own limit would also fail whatever else the process
// opens at that moment, and free descriptors would end it early.
func TestAcceptBacksOff(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	var calls atomic.Int64
	var emfile atomic.Bool
	h.s.lst.bind = func(spec string) (net.Listener, error) {
		ln, err := placeholderBind(spec)
		if err != nil {
			return nil, err
		}
		return countingListener{ln, &calls, &emfile}, nil
	}
	// Out of descriptors from the first accept on: an Accept already
	// waiting in the kernel would take the connection below regardless.
	emfile.Store(true)
	restore := func() { emfile.Store(false) }
	defer restore()
	h.s.Start()
	defer h.s.Close()
	addr := h.s.AdminAddr()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		restore()
		t.Fatalf("dial while the listener is out of descriptors: %v", err)
	}
	defer c.Close()
	before := calls.Load()
	time.Sleep(2 * time.Second)
	n := calls.Load() - before
	restore()
	// net/http waits 5 ms after the first failure, doubling up to 1 s:
	// about 10 calls in 2 s. A loop that tried again at once would make
	// hundreds of thousands.
	if n < 2 || n > 30 {
		t.Errorf("%d accept calls in 2 s out of descriptors, want a few (a pause between them)", n)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("after descriptors are free again: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("after descriptors are free again: HTTP %d", r.StatusCode)
	}
}
