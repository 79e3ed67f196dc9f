package proxy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func testTLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pen.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"pen.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func TestTLSTermination(t *testing.T) {
	heads := make(chan string, 4)
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		var head strings.Builder
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(l)
			if l == "\r\n" {
				break
			}
		}
		heads <- head.String()
		body := strings.Repeat("z", 1<<20)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	})
	cfg := testTLSConfig(t)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = cfg; s.HTTP = true },
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c, err := tls.Dial("tcp", h.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: pen.test\r\n\r\n")
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(got), strings.Repeat("z", 1<<20)) {
		t.Errorf("response: %d bytes", len(got))
	}
	head := <-heads
	if !strings.Contains(head, "X-Forwarded-Proto: https\r\n") || !strings.Contains(head, "X-Forwarded-For: 127.0.0.1\r\n") {
		t.Errorf("head through TLS:\n%s", head)
	}
	c.Close()
	// The slot is released once the connection ends.
	deadline := time.Now().Add(3 * time.Second)
	for h.loop.Stats().Active != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("TLS connection still in the table: %+v", h.loop.Conns())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := h.tb.ServerStates()[0]; st.Received < 1<<20 || st.Total != 1 {
		t.Errorf("server counters: %+v", st)
	}
	// A plain-text client gets nothing and does not hold a slot.
	p := h.dial()
	io.WriteString(p, "GET / HTTP/1.0\r\n\r\n")
	p.SetReadDeadline(time.Now().Add(15 * time.Second))
	io.ReadAll(p)
	p.Close()
}

// A refused handshake (here: a client without the certificate the server
// requires) is logged at the default level, one line per interval with
// the number refused in between.
func TestTLSRefusedHandshakeLogged(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	cfg := testTLSConfig(t)
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = x509.NewCertPool()
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = cfg }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	r := &h.loop.refusedTLS
	r.mu.Lock()
	r.every = time.Hour
	r.mu.Unlock()
	refuse := func() {
		t.Helper()
		c, err := tls.Dial("tcp", h.addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "x")
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
	const line = "TLS handshake with 127.0.0.1 refused: tls: client didn't provide a certificate"
	for i := 0; i < 5; i++ {
		refuse()
	}
	waitLog := func(want string) {
		t.Helper()
		for i := 0; !strings.Contains(h.logText(), want); i++ {
			if i == 100 {
				t.Fatalf("log has no %q:\n%s", want, h.logText())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog(line)
	// A front logs its refusal before it gives its slot back: once no
	// slot is in use, all five are counted.
	waitIdle := func() {
		t.Helper()
		for i := 0; h.loop.Stats().Active != 0; i++ {
			if i == 100 {
				t.Fatalf("refused handshakes hold %d slots", h.loop.Stats().Active)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitIdle()
	if n := strings.Count(h.logText(), "refused"); n != 1 {
		t.Errorf("%d lines for 5 refused handshakes within the interval, want 1:\n%s", n, h.logText())
	}
	// The interval passes.
	r.mu.Lock()
	r.last = r.last.Add(-2 * time.Hour)
	r.mu.Unlock()
	refuse()
	waitLog(line + " (4 more refused since the last report)")
	waitIdle()
}

func dialTLS(t *testing.T, h *harness) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// A TLS client that is done sending (close_notify) still gets the whole
// answer, as a plain client that half-closes does.
func TestTLSHalfClose(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes", len(b))
	})
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = testTLSConfig(t) }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c := dialTLS(t, h)
	defer c.Close()
	c.Write(bytes.Repeat([]byte("x"), 100000))
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 100000 bytes" {
		t.Errorf("got %q, %v", got, err)
	}
}

// With tcp_fastclose up, pen closes the slot as soon as the server is
// done; a TLS client still gets every byte the server sent.
func TestTLSFastCloseDelivers(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { c.Write(body) })
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = testTLSConfig(t) },
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)), "tcp_fastclose up")
	for i := 0; i < 5; i++ {
		c := dialTLS(t, h)
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("client %d: %d of %d bytes, %v", i, len(got), len(body), err)
		}
	}
}

// close N ends a TLS connection at once, and is not taken for a refused
// handshake.
func TestTLSCloseCommand(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = testTLSConfig(t) }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c := dialTLS(t, h)
	defer c.Close()
	io.WriteString(c, "x")
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	conns := h.loop.Conns().Conns
	if len(conns) != 1 {
		t.Fatalf("connection table: %+v", conns)
	}
	h.loop.CloseConn(conns[0].Slot)
	begin := time.Now()
	if n, err := c.Read(make([]byte, 1)); err == nil || time.Since(begin) > 3*time.Second {
		t.Errorf("after close: read %d bytes, %v, after %v", n, err, time.Since(begin))
	}
	// A client still in its handshake is closed quietly too.
	raw, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for i := 0; len(h.loop.Conns().Conns) == 0; i++ {
		if i == 100 {
			t.Fatal("the client has no slot")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.loop.CloseConn(h.loop.Conns().Conns[0].Slot)
	raw.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := raw.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Errorf("client in its handshake after close: read %d bytes, %v", n, err)
	}
	time.Sleep(50 * time.Millisecond)
	if strings.Contains(h.logText(), "refused") {
		t.Errorf("close N logged as a refused handshake:\n%s", h.logText())
	}
}
