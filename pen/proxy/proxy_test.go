package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/internal/testenv"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
)

// harness runs a loop configured by command lines.
type harness struct {
	t    *testing.T
	in   *config.Interp
	tb   *balance.Table
	loop *Loop
	addr string
	// settings are the loop's settings, changed by reconfigure.
	settings Settings
	log      bytes.Buffer
	mu       sync.Mutex
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (h *harness) logText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.log.String()
}

func start(t *testing.T, listen string, tweak func(*Settings), lines ...string) *harness {
	t.Helper()
	h := &harness{t: t}
	log := diag.New(lockedWriter{&h.mu, &h.log})
	h.in = config.New(config.Default(), config.Process{}, log)
	for _, l := range lines {
		if _, err := h.in.Exec(l, config.FromFlag); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	c := h.in.Config()
	h.tb = balance.New()
	h.tb.Configure(c)
	loop, err := New(h.tb, log)
	if err != nil {
		t.Fatal(err)
	}
	h.loop = loop
	s := Settings{UDP: c.UDP, ConnMax: c.ConnMax, PendingMax: c.PendingMax, MultiAccept: c.MultiAccept,
		Timeout: time.Duration(c.Timeout) * time.Second, IdleTimeout: time.Duration(c.IdleTimeout) * time.Second,
		UDPTimeout: 30 * time.Second, FastClose: c.FastClose, HTTP: c.HTTP, Dummy: c.Dummy}
	if tweak != nil {
		tweak(&s)
	}
	h.settings = s
	var l config.Listen
	if strings.Contains(listen, "/") {
		l.Path = listen
	} else {
		l.Addr = netip.MustParseAddrPort(listen)
	}
	if err := loop.Configure(s, &l, 128); err != nil {
		t.Fatal(err)
	}
	h.addr = loop.ListenAddr()
	done := make(chan error, 1)
	go func() { done <- loop.Run() }()
	t.Cleanup(func() {
		loop.Stop()
		if err := <-done; err != nil {
			t.Errorf("loop: %v", err)
		}
		if t.Failed() {
			t.Logf("pen log:\n%s", h.logText())
		}
	})
	return h
}

func network(addr string) string {
	if strings.Contains(addr, "/") {
		return "unix"
	}
	return "tcp"
}

func (h *harness) dial() net.Conn {
	h.t.Helper()
	c, err := net.DialTimeout(network(h.addr), h.addr, 5*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// Real servers behind pen, shared with the other test packages.
var (
	tcpServer = testenv.TCPServer
	echo      = testenv.Echo
	port      = testenv.Port
)

func TestEchoIntegrity(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := h.dial()
			defer c.Close()
			data := make([]byte, 8<<20+i*12345)
			rand.New(rand.NewSource(int64(i))).Read(data)
			go func() {
				c.Write(data)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Errorf("conn %d: %v", i, err)
				return
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				t.Errorf("conn %d: %d bytes back, want %d, content differs", i, len(got), len(data))
			}
		}(i)
	}
	wg.Wait()
	st := h.tb.ServerStates()[0]
	if st.Sent < 6*8<<20 || st.Received < 6*8<<20 {
		t.Errorf("byte counters: %+v", st)
	}
}

func TestHalfClose(t *testing.T) {
	// The server answers only after the client has finished sending.
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes", len(b))
	})
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c := h.dial()
	defer c.Close()
	c.Write(bytes.Repeat([]byte("x"), 100000))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 100000 bytes" {
		t.Errorf("got %q, %v", got, err)
	}
}

// sendUrgent sends b with MSG_OOB: its last byte is TCP urgent data.
func sendUrgent(t *testing.T, c net.Conn, b string) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), []byte(b), unix.MSG_OOB, nil)
		return serr != unix.EAGAIN
	}); err != nil || serr != nil {
		t.Fatalf("send urgent: %v %v", err, serr)
	}
}

// TestEarlyEnd: a client that ends before pen has placed it (its bytes
// and its FIN both in the socket when pen first reads, or its FIN alone)
// still gets its bytes to the server and the server's EOF, and the
// server's answer comes back; pen takes the EOF from a short read after
// a FIN without reading again, and must not do so when urgent data made
// the read stop short: the bytes after the urgent mark arrive too (the
// urgent byte itself is dropped, as a read without SO_OOBINLINE does).
func TestEarlyEnd(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		b, _ := io.ReadAll(c)
		if string(b) == "urgent please" {
			// The same towards the client: bytes, urgent data, bytes
			// and the FIN, in one go.
			io.WriteString(c, "abc")
			sendUrgent(t, c, "defX")
			io.WriteString(c, "ghi")
			return
		}
		fmt.Fprintf(c, "got %q", b)
	})
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	cases := []struct {
		name string
		send func(c net.Conn)
		want string
	}{
		{"bytes and FIN", func(c net.Conn) { io.WriteString(c, "hello") }, `got "hello"`},
		{"FIN alone", func(net.Conn) {}, `got ""`},
		{"urgent data", func(c net.Conn) {
			io.WriteString(c, "abc")
			sendUrgent(t, c, "defX")
			io.WriteString(c, "ghi")
		}, `got "abcdefghi"`},
		{"urgent data from the server", func(c net.Conn) { io.WriteString(c, "urgent please") }, "abcdefghi"},
	}
	for _, tc := range cases {
		// Each case runs a few times: what pen finds in the socket
		// depends on how the client's and pen's steps interleave. Every
		// other run holds the loop until the client has sent everything
		// and its FIN, so that pen's first read finds them all.
		for i := 0; i < 20; i++ {
			release := make(chan struct{})
			if i%2 == 0 {
				held := make(chan struct{})
				go h.loop.do(func() { close(held); <-release })
				<-held
			}
			c := h.dial()
			tc.send(c)
			c.(*net.TCPConn).CloseWrite()
			close(release)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(got) != tc.want {
				t.Fatalf("%s, run %d: got %q (%v), want %q", tc.name, i, got, err, tc.want)
			}
		}
	}
}

// TestCountsAfterFailover: the bytes a client sends before its server is
// connected count for the server that gets them, not for one whose
// connect failed first (Pen reads a client only once its server is
// connected, so it counts them there). The loop is held until the client
// has sent everything, so that pen reads it all before it connects.
func TestCountsAfterFailover(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		b, _ := io.ReadAll(c)
		c.Write(b)
	})
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := port(dead)
	dead.Close() // nothing listens there now: the connect is refused
	// Round-robin starts at server 1, the dead one; pen fails over to 0.
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", deadPort))
	release, held := make(chan struct{}), make(chan struct{})
	go h.loop.do(func() { close(held); <-release })
	<-held
	c := h.dial()
	io.WriteString(c, "ping")
	c.(*net.TCPConn).CloseWrite()
	close(release)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	c.Close()
	if string(got) != "ping" {
		t.Fatalf("echo through pen: %q (%v)", got, err)
	}
	st := h.tb.ServerStates()
	if st[1].Failures != 1 {
		t.Fatalf("server 1 failures %d: the connection did not try it first", st[1].Failures)
	}
	if st[0].Sent != 4 || st[1].Sent != 0 {
		t.Errorf("bytes sent: server 0 %d, server 1 %d; want 4 and 0", st[0].Sent, st[1].Sent)
	}
	if cl := h.tb.ClientStates(); len(cl) != 1 || cl[0].Received != 4 || cl[0].Sent != 4 {
		t.Errorf("client states %+v, want 4 bytes each way", cl)
	}
}

// TestSmallWritesNotDelayed: pen delays the last ACK of the handshake
// with a server so that it rides on the client's first bytes (dial). A
// server that answers in two small writes with Nagle's algorithm on sends
// the second only once the first is acknowledged: quick ACKs must be back
// on by then (quickAgain), or the answer waits 40 ms or more for a
// delayed ACK.
func TestSmallWritesNotDelayed(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		c.(*net.TCPConn).SetNoDelay(false)
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			io.WriteString(c, "first half, ")
			io.WriteString(c, "second half\n")
		}
	})
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	var slowest time.Duration
	for i := 0; i < 10; i++ {
		// The loop is held until the request is there, so that pen
		// takes it with the connect (and delays the handshake's ACK).
		release := make(chan struct{})
		held := make(chan struct{})
		go h.loop.do(func() { close(held); <-release })
		<-held
		c := h.dial()
		start := time.Now()
		io.WriteString(c, "hello\n")
		close(release)
		got, err := bufio.NewReader(c).ReadString('\n')
		took := time.Since(start)
		c.Close()
		if err != nil || got != "first half, second half\n" {
			t.Fatalf("connection %d: %q, %v", i, got, err)
		}
		slowest = max(slowest, took)
	}
	if slowest > 30*time.Millisecond {
		t.Errorf("the slowest answer took %v; a delayed ACK would explain 40 ms or more", slowest)
	}
	t.Logf("slowest answer: %v", slowest)
}

func TestUnixAndIPv6(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "be.sock")
	tcpServer(t, "unix", sock, func(c net.Conn) { io.WriteString(c, "unix backend") })
	h := start(t, filepath.Join(dir, "pen.sock"), nil, "server 0 address "+sock)
	c := h.dial()
	if got, _ := io.ReadAll(c); string(got) != "unix backend" {
		t.Errorf("unix listener to unix backend: %q", got)
	}
	c.Close()

	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, "v4 backend") })
	if _, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback")
	}
	h6 := start(t, "[::1]:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c = h6.dial()
	if got, _ := io.ReadAll(c); string(got) != "v4 backend" {
		t.Errorf("IPv6 listener to IPv4 backend: %q", got)
	}
	c.Close()
	be6 := tcpServer(t, "tcp", "[::1]:0", func(c net.Conn) { io.WriteString(c, "v6 backend") })
	h4 := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address ::1 port %d", port(be6)))
	c = h4.dial()
	if got, _ := io.ReadAll(c); string(got) != "v6 backend" {
		t.Errorf("IPv4 listener to IPv6 backend: %q", got)
	}
	c.Close()
}

func TestXForwardedForKeepAlive(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			var head strings.Builder
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			if strings.Contains(head.String(), "Content-Length: 5") {
				io.CopyN(io.Discard, r, 5)
			}
			mu.Lock()
			seen = append(seen, head.String())
			mu.Unlock()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)), "http")
	c := h.dial()
	defer c.Close()
	r := bufio.NewReader(c)
	reqs := []string{
		"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"DELETE /c HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
	}
	for _, req := range reqs {
		io.WriteString(c, req)
		resp := make([]byte, len("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		if _, err := io.ReadFull(r, resp); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("backend saw %d requests", len(seen))
	}
	for i, want := range []string{"X-Forwarded-For: 127.0.0.1\r\n", "X-Forwarded-For: 127.0.0.1\r\n", "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n"} {
		if !strings.Contains(seen[i], want) || !strings.Contains(seen[i], "X-Forwarded-Proto: http\r\n") {
			t.Errorf("request %d head:\n%s\nwant %q", i, seen[i], want)
		}
	}
}

func TestConnTableFull(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.ConnMax = 2 }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	a, b := h.dial(), h.dial()
	for _, c := range []net.Conn{a, b} {
		io.WriteString(c, "x")
		buf := make([]byte, 1)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	c := h.dial()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("third client read %d bytes, want a closed connection", n)
	}
	c.Close()
	if st := h.loop.Stats(); st.RefusedFull != 1 {
		t.Errorf("refused: %+v", st)
	}
	if !strings.Contains(h.logText(), "Connection table full (2 slots)") {
		t.Errorf("no reason logged: %s", h.logText())
	}
	a.Close()
	time.Sleep(100 * time.Millisecond)
	d := h.dial()
	io.WriteString(d, "y")
	if _, err := io.ReadFull(d, make([]byte, 1)); err != nil {
		t.Errorf("after a slot freed: %v", err)
	}
	d.Close()
	b.Close()
}

func TestIdleTimeout(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)), "idle_timeout 1")
	c := h.dial()
	io.WriteString(c, "x")
	io.ReadFull(c, make([]byte, 1))
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err != io.EOF || time.Since(start) > 3*time.Second {
		t.Errorf("idle connection: %v after %v", err, time.Since(start))
	}
}

func TestConnectFailover(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := port(dead)
	dead.Close() // nothing listens there now: connects are refused
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, "alive") })
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", deadPort))
	// Round-robin starts at server 1, the dead one.
	for i := 0; i < 3; i++ {
		c := h.dial()
		if got, _ := io.ReadAll(c); string(got) != "alive" {
			t.Errorf("connection %d: %q", i, got)
		}
		c.Close()
	}
	if st := h.tb.ServerStates()[1]; st.Until.IsZero() || st.Failures == 0 {
		t.Errorf("dead server not blacklisted: %+v", st)
	}
}

func TestConnectTimeout(t *testing.T) {
	// A listener with a backlog of one that never accepts drops SYNs once
	// full: a connect to it hangs.
	stuckPort := blackhole(t)
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, "alive") })
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", stuckPort), "timeout 1")
	c := h.dial()
	begin := time.Now()
	got, _ := io.ReadAll(c)
	if string(got) != "alive" {
		t.Errorf("got %q after %v", got, time.Since(begin))
	}
	if d := time.Since(begin); d < 900*time.Millisecond || d > 4*time.Second {
		t.Errorf("failover after connect timeout took %v", d)
	}
	if !strings.Contains(h.logText(), "blacklisting server 1 because of connect timeout") {
		t.Errorf("log: %s", h.logText())
	}
}

// TestConnectTimeoutNotEarly: a connect begun just before a second ticks
// over is given its whole timeout, even when other traffic makes the loop
// look at its timers right after the tick. Comparing whole seconds, as
// Pen does, gave it up after about 100 ms and blacklisted its server.
func TestConnectTimeoutNotEarly(t *testing.T) {
	stuckPort := blackhole(t)
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, "alive") })
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", stuckPort), "timeout 1")
	// 50 ms before a second ticks over.
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(1950 * time.Millisecond).Sub(now))
	c := h.dial() // round-robin starts at server 1, the stuck one
	defer c.Close()
	begin := time.Now()
	// Just after the tick another client keeps the loop busy.
	time.Sleep(100 * time.Millisecond)
	c2 := h.dial()
	defer c2.Close()
	for h.tb.ServerStates()[1].Failures == 0 {
		if time.Since(begin) > 5*time.Second {
			t.Fatal("the stuck server was never blacklisted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(begin); d < 950*time.Millisecond {
		t.Errorf("the connect was given up and its server blacklisted after %v, with timeout 1", d)
	}
	if got, _ := io.ReadAll(c); string(got) != "alive" {
		t.Errorf("the client got %q after the failover", got)
	}
}

func TestBackendDiesMidStream(t *testing.T) {
	stream := func(c net.Conn) {
		buf := make([]byte, 4096)
		for i := 0; ; i++ {
			for j := range buf {
				buf[j] = byte(i + j)
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	var mu sync.Mutex
	var victims []net.Conn
	victim := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		mu.Lock()
		victims = append(victims, c)
		mu.Unlock()
		stream(c)
	})
	survivor := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		io.CopyN(c, bytes.NewReader(bytes.Repeat([]byte("s"), 2<<20)), 2<<20)
	})
	h := start(t, "127.0.0.1:0", nil, "roundrobin",
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(survivor)),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", port(victim)))
	var conns []net.Conn
	for i := 0; i < 4; i++ {
		conns = append(conns, h.dial()) // 1, 0, 1, 0
	}
	time.Sleep(200 * time.Millisecond)
	// Kill the victim: its listener and every connection.
	victim.Close()
	mu.Lock()
	for _, c := range victims {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	mu.Unlock()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			defer c.Close()
			got, err := io.ReadAll(c)
			if i%2 == 1 { // on the survivor
				if err != nil || len(got) != 2<<20 || strings.Trim(string(got), "s") != "" {
					t.Errorf("survivor connection %d: %d bytes, %v", i, len(got), err)
				}
			}
		}(i, c)
	}
	wg.Wait()
	// New connections find the survivor.
	for i := 0; i < 2; i++ {
		c := h.dial()
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		if n != 2<<20 {
			t.Errorf("new connection %d after the victim died got %d bytes", i, n)
		}
	}
	if st := h.tb.ServerStates()[1]; st.Until.IsZero() {
		t.Errorf("dead server not blacklisted: %+v", st)
	}
}

func TestDummy(t *testing.T) {
	h := start(t, "127.0.0.1:0", nil, "dummy")
	c := h.dial()
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	got, _ := io.ReadAll(c)
	if string(got) != dummyReply {
		t.Errorf("dummy: %q", got)
	}
}

func TestFastClose(t *testing.T) {
	// The server sends and closes; the client never closes. With
	// tcp_fastclose up, pen closes the client side as soon as the server
	// is done.
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, "bye") })
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)), "tcp_fastclose up")
	c := h.dial()
	got, err := io.ReadAll(c)
	if string(got) != "bye" || err != nil {
		t.Errorf("%q %v", got, err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := h.loop.Stats().Active; n != 0 {
		t.Errorf("%d connections still open with fastclose up", n)
	}
}

// udpServer answers every datagram on 127.0.0.1 with name + what it got.
func udpServer(t *testing.T, name string) *net.UDPConn {
	t.Helper()
	return udpServerAt(t, name, net.IPv4(127, 0, 0, 1))
}

// udpServerAt is udpServer on ip; where ip is IPv6 and cannot be had,
// the test is skipped (a host without IPv6 loopback).
func udpServerAt(t *testing.T, name string, ip net.IP) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil && ip.To4() == nil {
		testenv.Skip(t, "no IPv6 loopback: "+err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFromUDP(b)
			if err != nil {
				return
			}
			pc.WriteToUDP(append([]byte(name+":"), b[:n]...), a)
		}
	}()
	return pc
}

func udpAsk(t *testing.T, c *net.UDPConn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2048)
	n, err := c.Read(b)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b[:n])
}

func TestUDPFlows(t *testing.T) {
	a := udpServer(t, "A")
	b := udpServer(t, "B")
	h := start(t, "0.0.0.0:0", nil, "udp", "roundrobin",
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", a.LocalAddr().(*net.UDPAddr).Port),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", b.LocalAddr().(*net.UDPAddr).Port))
	_, p, _ := net.SplitHostPort(h.addr)
	pen := netip.MustParseAddrPort("127.0.0.2:" + p) // to the wildcard listener: answers must come from 127.0.0.2
	// Many clients at once: every answer goes to the client that asked.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(pen))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			first := ""
			for j := 0; j < 5; j++ {
				msg := fmt.Sprintf("client %d query %d", i, j)
				got := udpAsk(t, c, msg)
				if !strings.HasSuffix(got, ":"+msg) {
					t.Errorf("client %d got %q for %q", i, got, msg)
					return
				}
				if first == "" {
					first = got[:1]
				} else if got[:1] != first {
					t.Errorf("client %d: flow moved from %s to %s", i, first, got[:1])
				}
			}
		}(i)
	}
	wg.Wait()
	// Blacklisting the server of a flow moves that flow.
	c, _ := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(pen))
	defer c.Close()
	was := udpAsk(t, c, "x")[:1]
	idx := 0
	if was == "B" {
		idx = 1
	}
	h.tb.Blacklist(idx, time.Minute)
	if now := udpAsk(t, c, "y"); now[:1] == was {
		t.Errorf("flow stayed on blacklisted server %s: %q", was, now)
	}
}

func TestUDPUnixBackend(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "dns.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		b := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFromUnix(b)
			if err != nil {
				return
			}
			pc.WriteToUnix(append([]byte("unix:"), b[:n]...), a)
		}
	}()
	h := start(t, "127.0.0.1:0", nil, "udp", "server 0 address "+sock)
	c, err := net.Dial("udp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := udpAsk(t, c.(*net.UDPConn), "ping"); got != "unix:ping" {
		t.Errorf("got %q", got)
	}
}

// blackhole returns a port where connects hang: a listener with a backlog
// of one, filled, that never accepts.
func blackhole(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	p := sa.(*unix.SockaddrInet4).Port
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return p // full: this connect hung
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("could not fill the backlog")
	return 0
}

// signalStorm sends SIGURG, the signal the Go runtime preempts with, to
// every thread of the process every 100 µs until the test ends: system
// calls that stop short when a signal is pending then do so often.
func signalStorm(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		pid := unix.Getpid()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Microsecond):
			}
			tasks, _ := os.ReadDir("/proc/self/task")
			for _, task := range tasks {
				if tid, err := strconv.Atoi(task.Name()); err == nil {
					unix.Tgkill(pid, tid, unix.SIGURG)
				}
			}
		}
	}()
}

// TestSpliceDownloads moves large downloads through pen's splice path
// while every thread of the process keeps receiving SIGURG, the signal
// the Go runtime preempts with. A splice into the client's socket stops
// short when a signal is pending, with room left in the socket; pen once
// took that for a full socket and waited for an EPOLLOUT edge that never
// came, and the download stalled.
func TestSpliceDownloads(t *testing.T) {
	const size = 256 << 20
	signalStorm(t)
	chunk := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(chunk)
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		for left := size; left > 0; left -= len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	want := sha256.New()
	for left := size; left > 0; left -= len(chunk) {
		want.Write(chunk)
	}
	for i := 0; i < 4; i++ {
		c := h.dial()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		got := sha256.New()
		n, err := io.Copy(got, c)
		c.Close()
		if err != nil || n != size {
			t.Fatalf("download %d: %d of %d bytes, %v", i, n, size, err)
		}
		if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatalf("download %d: content differs", i)
		}
	}
	if st := h.tb.ServerStates()[0]; st.Received < 4*size {
		t.Errorf("byte counters: %+v", st)
	}
}

// TestPipeSize: a privileged pen splices through 1 MiB pipes; an
// unprivileged one keeps the kernel's 64 KiB, since the kernel would count
// larger pipes against its user's pipe-user-pages-soft.
func TestPipeSize(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root: a privileged pen and an unprivileged child are compared")
	}
	if got := pooledPipeSize(); got != strconv.Itoa(pipeSize) {
		t.Errorf("privileged: pipe of %s bytes, want %d", got, pipeSize)
	}
	// A copy of this test binary that nobody may run.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "pen-pipe-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	exe := filepath.Join(dir, "proxy.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), pipeChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child as nobody: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "65536" {
		t.Errorf("unprivileged: pipe of %s bytes, want 65536", got)
	}
}

// TestSlowClientsBoundPipes: downloads to slow clients leave data in
// pen's pipes, which no socket's memory accounting sees: each time a
// client takes a little, pen refills its pipe from a full upstream socket
// and most of that waits. Past heldPipes such pipes a splice moves at
// most heldSplice bytes, so what the loop holds stays bounded however
// many clients are slow.
func TestSlowClientsBoundPipes(t *testing.T) {
	chunk := make([]byte, 1<<20)
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	const clients = 48
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	for range clients {
		c := h.dial()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			// Fast at first, so that the kernel grows the buffers of
			// the connection's sockets, then a little at a time.
			if _, err := io.CopyN(io.Discard, c, 16<<20); err != nil {
				return
			}
			buf := make([]byte, 16<<10)
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	// held reports the pipes holding data and the bytes in them.
	held := func() (pipes, bytes int) {
		h.loop.do(func() {
			for _, c := range h.loop.conns {
				if c == nil || c.state == stateUnused {
					continue
				}
				for _, q := range c.q {
					if q != nil && q.piped {
						pipes++
						bytes += q.inp
					}
				}
			}
			if pipes != h.loop.held {
				t.Errorf("the loop counts %d held pipes, its connections hold %d", h.loop.held, pipes)
			}
		})
		return
	}
	limit := heldPipes*pipeSize + (clients-heldPipes)*heldSplice
	most := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		p, b := held()
		if b > most {
			most = b
			t.Logf("%d slow downloads hold %d bytes in pen's pipes (limit %d)", p, b, limit)
		}
	}
	if most > limit {
		t.Errorf("%d bytes held in pipes, want at most %d", most, limit)
	}
}

// TestUDPLongBurst: a server answers one question with more datagrams
// than the loop reads from a flow in one turn (budget batches of
// udpBatch), all queued at once, then falls silent. Every one of them
// reaches the client: what is left after a turn is read in the next one,
// not when the server's next datagram happens to come.
func TestUDPLongBurst(t *testing.T) {
	const burst = 600
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	asked := make(chan struct{}, 1)
	go func() {
		b := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFromUDP(b)
			if err != nil {
				return
			}
			if string(b[:n]) != "burst" {
				pc.WriteToUDP(b[:n], a)
				continue
			}
			asked <- struct{}{}
			time.Sleep(100 * time.Millisecond) // the loop is held meanwhile
			for i := range burst {
				pc.WriteToUDP([]byte(strconv.Itoa(i)), a)
			}
		}
	}()
	h := start(t, "127.0.0.1:0", nil, "udp", fmt.Sprintf("server 0 address 127.0.0.1 port %d", udpPort(pc)))
	c, err := net.Dial("udp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl := c.(*net.UDPConn)
	cl.SetReadBuffer(1 << 20)
	if got := udpAsk(t, cl, "hello"); got != "hello" {
		t.Fatalf("the flow's first answer: %q", got)
	}
	// Room for the whole burst in pen's socket to the server.
	var bufErr error
	h.loop.do(func() {
		for _, fc := range h.loop.conns {
			if fc != nil && fc.state != stateUnused && fc.fl&fUDP != 0 && fc.up >= 0 {
				bufErr = unix.SetsockoptInt(int(fc.up), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
			}
		}
	})
	if bufErr != nil {
		testenv.Skip(t, "SO_RCVBUFFORCE needs CAP_NET_ADMIN: "+bufErr.Error())
	}
	if _, err := cl.Write([]byte("burst")); err != nil {
		t.Fatal(err)
	}
	<-asked
	// The loop is held while the server sends: the burst waits, whole,
	// in pen's socket.
	h.loop.do(func() { time.Sleep(400 * time.Millisecond) })
	got := 0
	b := make([]byte, 64)
	cl.SetReadDeadline(time.Now().Add(2 * time.Second))
	for got < burst {
		if _, err := cl.Read(b); err != nil {
			break
		}
		got++
	}
	if got != burst {
		t.Errorf("%d of %d datagrams of the burst reached the client", got, burst)
	}
}
