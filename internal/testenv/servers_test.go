package testenv

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestEchoServer(t *testing.T) {
	addr := EchoServer(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Errorf("echo: %q, %v", got, err)
	}
}

func TestTCPServerClosesConnectionsAtCleanup(t *testing.T) {
	var c net.Conn
	t.Run("server", func(t *testing.T) {
		served := make(chan struct{})
		ln := TCPServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			close(served)
			io.Copy(io.Discard, c)
		})
		var err error
		c, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatal("the handler never ran")
		}
	})
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the test ended the connection is still served: read %d, %v", n, err)
	}
}
