package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"
)

// A TLS client served by the loop after its handshake: 8 MiB arrive whole
// both ways (the loop queues what the client cannot take yet), a
// half-close passes, and the server's counts see every byte.
func TestTLSLoopCounts(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = testTLSConfig(t) }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c := dialTLS(t, h)
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	const size = 8 << 20
	src := make([]byte, size)
	rand.NewChaCha8([32]byte{3}).Read(src)
	go func() {
		c.Write(src)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, src) {
		t.Fatalf("read back %d bytes of %d (%v), equal %v", len(got), size, err, sha256.Sum256(got) == sha256.Sum256(src))
	}
	if st := h.loop.Stats(); st.Accepted != 1 {
		t.Errorf("stats %+v", st)
	}
	waitFor(t, func() bool { return h.loop.Stats().Active == 0 }, "the connection to end")
	if st := h.tb.ServerStates()[0]; st.Sent != size || st.Received != size || st.Conns != 0 {
		t.Errorf("servers: %d sent, %d received, %d connections; want %d, %d, 0", st.Sent, st.Received, st.Conns, size, size)
	}
}

// The idle timeout ends a quiet TLS connection, not a busy one.
func TestTLSIdleTimeout(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = testTLSConfig(t); s.IdleTimeout = 2 * time.Second },
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	quiet, busy := dialTLS(t, h), dialTLS(t, h)
	defer quiet.Close()
	defer busy.Close()
	quiet.SetDeadline(time.Now().Add(20 * time.Second))
	busy.SetDeadline(time.Now().Add(20 * time.Second))
	qr, br := bufio.NewReader(quiet), bufio.NewReader(busy)
	lines(t, quiet, qr, "q", 1)
	lines(t, busy, br, "b", 1)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		lines(t, busy, br, "busy", 1)
		time.Sleep(200 * time.Millisecond)
	}
	quiet.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := qr.ReadByte(); err == nil || os.IsTimeout(err) {
		t.Errorf("the quiet connection is still open: %v", err)
	}
	lines(t, busy, br, "still", 1)
}

// heldWrites passes the first write (the ClientHello) and holds the rest
// until flush, so that a client's last handshake message and its first
// records reach pen in one segment.
type heldWrites struct {
	net.Conn
	writes int
	held   bytes.Buffer
}

func (h *heldWrites) Write(p []byte) (int, error) {
	h.writes++
	if h.writes == 1 {
		return h.Conn.Write(p)
	}
	return h.held.Write(p)
}

func (h *heldWrites) flush() error {
	_, err := h.Conn.Write(h.held.Bytes())
	return err
}

// A request that arrives with the client's Finished waits in the
// tls.Conn, where epoll does not see it: the loop reads it at the
// hand-over, and answers it.
func TestTLSRequestWithFinished(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = testTLSConfig(t) }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	raw, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	hw := &heldWrites{Conn: raw}
	c := tls.Client(hw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	msg := []byte("first request, sent with the handshake's last message")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if hw.writes < 3 {
		t.Fatalf("the client wrote %d times; want the ClientHello, the Finished and the request", hw.writes)
	}
	if err := hw.flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("no answer to the first request: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Errorf("answer %q, want %q", got, msg)
	}
}

// Many clients make many small exchanges at once: every answer is whole
// and in order (the loop reads a record at a time until a read would
// block, so nothing is left behind in a tls.Conn).
func TestTLSManyExchanges(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = testTLSConfig(t) }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			for j := range 200 {
				// Two records in one exchange.
				a, b := fmt.Sprintf("client %d request %d;", i, j), fmt.Sprintf("second part %d.", j)
				if _, err := io.WriteString(c, a); err != nil {
					errs <- err
					return
				}
				if _, err := io.WriteString(c, b); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(a)+len(b))
				if _, err := io.ReadFull(c, got); err != nil {
					errs <- fmt.Errorf("client %d exchange %d: %v", i, j, err)
					return
				}
				if string(got) != a+b {
					errs <- fmt.Errorf("client %d exchange %d: %q", i, j, got)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestTLSLoopWaitsInPollerDuringHandshakes: while a handshake is under
// way the loop waits through the Go runtime's poller (Loop.block); it
// still serves every event and wakes for its timers there, and once the
// handshakes are over it blocks in epoll_wait again.
func TestTLSLoopWaitsInPollerDuringHandshakes(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = testTLSConfig(t) }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	parked := func() (n int) {
		h.loop.do(func() { n = h.loop.parked })
		return n
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	exchange := func(what string) {
		t.Helper()
		msg := what + " exchange"
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("%s: %q, %v", what, got, err)
		}
	}
	// A client that connects and says nothing keeps a handshake going.
	stalled, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); handshaking.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled client's handshake did not start")
		}
	}
	p0 := parked()
	for i := range 20 {
		exchange(fmt.Sprintf("during a handshake %d", i))
		time.Sleep(5 * time.Millisecond) // the loop waits between them
	}
	p1 := parked()
	if p1 == p0 {
		t.Fatalf("the loop never waited in the poller during a handshake (%d waits)", p1)
	}
	// With nothing to do it wakes for its timers (a wait of at most a
	// second) and waits again.
	time.Sleep(2200 * time.Millisecond)
	if p2 := parked(); p2 < p1+2 {
		t.Fatalf("idle for 2.2 s during a handshake: %d waits in the poller, want at least 2 (deadlines not kept)", p2-p1)
	}
	stalled.Close()
	for deadline := time.Now().Add(5 * time.Second); handshaking.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled client's handshake did not end")
		}
	}
	time.Sleep(200 * time.Millisecond)
	exchange("after the handshakes") // the loop wakes and takes the new time
	p3 := parked()
	for i := range 10 {
		exchange(fmt.Sprintf("no handshake %d", i))
		time.Sleep(5 * time.Millisecond)
	}
	if p4 := parked(); p4 != p3 {
		t.Fatalf("the loop waited in the poller %d times with no handshake for 200 ms", p4-p3)
	}
	var inPoller bool
	h.loop.do(func() { inPoller = h.loop.epf != nil })
	if inPoller {
		t.Fatal("the loop's epoll descriptor is still in the runtime's poller")
	}
}
