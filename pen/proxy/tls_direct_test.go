package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// A TLS client whose bytes pen need not see is relayed by its front
// straight to the server: data arrives whole both ways, a half-close
// passes, and the server's counts see every byte.
func TestTLSDirectCounts(t *testing.T) {
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

// The idle timeout ends a quiet direct TLS connection, not a busy one.
func TestTLSDirectIdleTimeout(t *testing.T) {
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
