package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// Every request of a handshake run is a full handshake: none resumes.
func TestHandshakesAreFull(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil) // only for its certificate
	srv.StartTLS()
	cert := srv.TLS.Certificates
	srv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: cert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var full, resumed atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				if tc.ConnectionState().DidResume {
					resumed.Add(1)
				} else {
					full.Add(1)
				}
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
			}()
		}
	}()
	h := Handshakes{Conns: 2, Duration: 500 * time.Millisecond, Want: "hello"}
	res, err := h.Run(context.Background(), ln.Addr().String())
	if err != nil || res.Done < 2 || res.PerSec() <= 0 {
		t.Fatalf("run: %+v, %v", res, err)
	}
	time.Sleep(50 * time.Millisecond)
	if resumed.Load() != 0 || full.Load() < res.Done {
		t.Errorf("%d full and %d resumed handshakes for %d requests", full.Load(), resumed.Load(), res.Done)
	}
	// A server that answers something else fails the run.
	bad := Handshakes{Conns: 1, Duration: 200 * time.Millisecond, Want: "other"}
	if _, err := bad.Run(context.Background(), ln.Addr().String()); err == nil {
		t.Error("a wrong answer was counted")
	}
	c, _ := net.Dial("tcp", ln.Addr().String())
	c.Close()
}
