package proxy

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRequestLogFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "req.log")
	l, err := OpenRequestLog(f)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Unix(1795318875, 0)
	l.Request(netip.MustParseAddr("192.0.2.7"), when, "10.0.0.1", []byte("GET / HTTP/1.1"))
	l.Request(netip.Addr{}, when, "/run/app.sock", []byte("PING"))
	l.Flush()
	// Rotation: the file is moved away and HUP reopens it.
	os.Rename(f, f+".1")
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Request(netip.MustParseAddr("::1"), when, "10.0.0.2", []byte("HEAD /x HTTP/1.0"))
	l.Close()
	old, _ := os.ReadFile(f + ".1")
	if got, want := string(old), "192.0.2.7 1795318875 10.0.0.1 GET / HTTP/1.1\nunix 1795318875 /run/app.sock PING\n"; got != want {
		t.Errorf("log:\n%q\nwant\n%q", got, want)
	}
	cur, _ := os.ReadFile(f)
	if got, want := string(cur), "::1 1795318875 10.0.0.2 HEAD /x HTTP/1.0\n"; got != want {
		t.Errorf("after reopen: %q, want %q", got, want)
	}
}

func TestRequestLogUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l, err := OpenRequestLog(pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Request(netip.MustParseAddr("192.0.2.7"), time.Now(), "10.0.0.1", []byte("GET / HTTP/1.1"))
	pc.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 2048)
	n, _, err := pc.ReadFrom(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b[:n]), "+ 192.0.2.7 10.0.0.1 GET / HTTP/1.1\n"; got != want {
		t.Errorf("penlogd datagram %q, want %q", got, want)
	}
}
