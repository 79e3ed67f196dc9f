package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// TCPServer listens on network ("tcp" or "unix") and addr (use port 0, or
// a path in a temporary directory) and runs handle on a goroutine for
// every connection, closing the connection when handle returns. The
// listener and every connection still open are closed when the test ends,
// so that no handler outlives it.
func TCPServer(t testing.TB, network, addr string, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards open and closed
	open := map[net.Conn]struct{}{}
	closed := false
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		closed = true
		for c := range open {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			open[c] = struct{}{}
			mu.Unlock()
			go func() {
				defer func() {
					c.Close()
					mu.Lock()
					delete(open, c)
					mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	return ln
}

// Echo sends back every byte it reads until the client half-closes.
func Echo(c net.Conn) { io.Copy(c, c) }

// EchoServer is a TCP echo server on 127.0.0.1; it returns its address.
func EchoServer(t testing.TB) string {
	t.Helper()
	return TCPServer(t, "tcp", "127.0.0.1:0", Echo).Addr().String()
}

// Port is the TCP port a listener is bound to.
func Port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }
