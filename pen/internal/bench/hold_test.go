package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startEcho runs an EchoServer on a loopback port for the test.
func startEcho(t *testing.T) (*EchoServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &EchoServer{}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// startServer runs handle on every connection to a loopback port.
func startServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPayloadDistinct(t *testing.T) {
	if bytes.Equal(Payload(1), Payload(2)) || !bytes.HasSuffix(Payload(7), []byte("\n")) {
		t.Errorf("Payload(1) = %q, Payload(2) = %q", Payload(1), Payload(2))
	}
}

func TestHolderAgainstEcho(t *testing.T) {
	srv, addr := startEcho(t)
	for _, sources := range []int{0, 4} {
		hd := Holder{Target: addr, Sources: sources, Parallel: 8}
		held, err := hd.Open(context.Background(), 200)
		if err != nil {
			t.Fatalf("sources %d: Open: %v", sources, err)
		}
		if held.Len() != 200 {
			t.Errorf("sources %d: %d connections held, want 200", sources, held.Len())
		}
		waitFor(t, "the server to see 200 connections", func() bool { return srv.Conns() == 200 })
		if sources > 1 {
			seen := map[string]bool{}
			for _, c := range held.conns {
				ip, _, _ := net.SplitHostPort(c.LocalAddr().String())
				seen[ip] = true
			}
			if len(seen) != sources {
				t.Errorf("connections came from %d addresses, want %d: %v", len(seen), sources, seen)
			}
		}
		held.Close()
		if held.Len() != 0 {
			t.Errorf("%d connections left after Close", held.Len())
		}
		waitFor(t, "the server to see the connections closed", func() bool { return srv.Conns() == 0 })
	}
}

func TestHolderRecheck(t *testing.T) {
	_, addr := startEcho(t)
	held, err := Holder{Target: addr}.Open(context.Background(), 30)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := (RSSRun{}).recheck(held); err != nil {
		t.Errorf("recheck: %v", err)
	}
}

func TestHolderFailures(t *testing.T) {
	wrong := startServer(t, func(c net.Conn) {
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Write(bytes.ToUpper(buf[:n]))
		io.Copy(io.Discard, c)
	})
	// Reads the line (so that closing sends a FIN, not a reset) and hangs up.
	closer := startServer(t, func(c net.Conn) { c.Read(make([]byte, 64)) })
	silent := startServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name, addr, want string
	}{
		{"wrong echo", wrong, "echo differs"},
		{"closed at once", closer, "closed by the other side"},
		{"no echo", silent, "timeout"},
		{"refused", refused, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hd := Holder{Target: tc.addr, Parallel: 4, Timeout: 300 * time.Millisecond}
			held, err := hd.Open(context.Background(), 20)
			if held != nil {
				t.Error("Open returned connections with its error")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open error = %v, want one containing %q", err, tc.want)
			}
			if tc.name == "wrong echo" && !errors.Is(err, errMismatch) {
				t.Errorf("Open error = %v, want errMismatch", err)
			}
		})
	}
}

func TestHolderTooManySources(t *testing.T) {
	if _, err := (Holder{Target: "127.0.0.1:1", Sources: 300}).Open(context.Background(), 1); err == nil {
		t.Error("Open with 300 sources succeeded")
	}
}

func TestHolderCancel(t *testing.T) {
	_, addr := startEcho(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (Holder{Target: addr}).Open(ctx, 10); err == nil {
		t.Error("Open with a cancelled context succeeded")
	}
}

func TestEchoServerCloseEndsServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &EchoServer{}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the connection to be accepted", func() bool { return s.Conns() == 1 })
	s.Close()
	ln.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after Close")
	}
}

// With Exchanges, each connection sends its line and reads it back that
// many times before it is held.
func TestHolderExchanges(t *testing.T) {
	var lines atomic.Int64
	addr := startServer(t, func(c net.Conn) {
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			lines.Add(int64(bytes.Count(buf[:n], []byte("\n"))))
			c.Write(buf[:n])
		}
	})
	held, err := Holder{Target: addr, Parallel: 4, Exchanges: 3}.Open(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if got := lines.Load(); got != 30 {
		t.Errorf("the server saw %d lines from 10 connections of 3 exchanges, want 30", got)
	}
}
