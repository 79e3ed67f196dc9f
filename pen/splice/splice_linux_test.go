//go:build linux

package splice

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("splicing needs root (CAP_NET_ADMIN, CAP_BPF); CI runs as root")
		}
		t.Skip("splicing needs root (CAP_NET_ADMIN, CAP_BPF)")
	}
}

func fdOf(t *testing.T, c net.Conn) (*os.File, int) {
	t.Helper()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	return f, int(f.Fd())
}

// pairThrough sets up client -> middle -> server over loopback and
// returns the three ends: the client's conn, the middle's two conns
// (accepted from the client, dialled to the server), the server's conn.
func pairThrough(t *testing.T, network, addr string) (client, down, up, server net.Conn) {
	t.Helper()
	ls, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	lm, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	client, err = net.Dial(network, lm.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if down, err = lm.Accept(); err != nil {
		t.Fatal(err)
	}
	if up, err = net.Dial(network, ls.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if server, err = ls.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); down.Close(); up.Close(); server.Close() })
	return
}

func relayOnce(t *testing.T, from, to net.Conn, n int) {
	t.Helper()
	buf := make([]byte, n)
	from.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(from, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := to.Write(buf); err != nil {
		t.Fatal(err)
	}
}

func TestSpliceCarriesBothWays(t *testing.T) {
	needRoot(t)
	s, err := Get()
	if err != nil {
		t.Fatalf("splicer: %v", err)
	}
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			client, down, up, server := pairThrough(t, tc.network, tc.addr)
			carryBothWays(t, s, client, down, up, server, func(f func() error) error { return f() })
		})
	}
}

// carryBothWays splices down and up mid-conversation, with bytes held
// by the middle and bytes waiting in its socket, then carries 20 MB each
// way at once, a half-close each way, and checks what the pair counted.
// in runs f where the middle's sockets are (its network namespace).
func carryBothWays(t *testing.T, s *Splicer, client, down, up, server net.Conn, in func(func() error) error, afterSplice ...func()) {
	// One exchange through the middle, in user space.
	client.Write([]byte("hello"))
	relayOnce(t, down, up, 5)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 5)
	if _, err := io.ReadFull(server, b); err != nil || string(b) != "hello" {
		t.Fatalf("server read %q, %v", b, err)
	}
	server.Write([]byte("world"))
	relayOnce(t, up, down, 5)
	if _, err := io.ReadFull(client, b); err != nil || string(b) != "world" {
		t.Fatalf("client read %q, %v", b, err)
	}
	// The client sends more before the splice: the middle holds part of
	// it (read, not written), the rest waits in its socket.
	client.Write([]byte("pending-one|pending-two"))
	held := make([]byte, 12)
	down.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(down, held); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	fd, dfd := fdOf(t, down)
	fu, ufd := fdOf(t, up)
	defer fd.Close()
	defer fu.Close()
	var p *Pair
	if err := in(func() (err error) { p, err = s.Splice(dfd, ufd, held, nil, 0); return }); err != nil {
		t.Fatalf("splice: %v", err)
	}
	for _, f := range afterSplice {
		f()
	}
	// Whatever pen's sockets send from now on must not reach the peers:
	// these bytes would sit in the middle of the streams.
	for _, fd := range []int{dfd, ufd} {
		if _, err := unix.Write(fd, []byte("LEAK")); err != nil {
			t.Fatal(err)
		}
	}
	before := [2]uint64{}
	for i, fd := range []int{dfd, ufd} {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = ti.Bytes_received
	}
	want := "pending-one|pending-two"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(server, got); err != nil || string(got) != want {
		t.Fatalf("server read %q, %v; want %q", got, err, want)
	}

	// 20 MB each way at once, compared by hash.
	const size = 20 << 20
	data := make([]byte, size)
	rand.Read(data)
	sum := sha256.Sum256(data)
	errs := make(chan error, 4)
	send := func(c net.Conn) {
		_, err := c.Write(data)
		errs <- err
	}
	recv := func(c net.Conn, name string) {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		_, err := io.CopyN(h, c, size)
		if err == nil && !bytes.Equal(h.Sum(nil), sum[:]) {
			err = io.ErrUnexpectedEOF
			t.Errorf("%s: the data differs", name)
		}
		errs <- err
	}
	go send(client)
	go send(server)
	go recv(server, "server")
	go recv(client, "client")
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Half-close: the client is done, the server answers and closes.
	client.(*net.TCPConn).CloseWrite()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := server.Read(b); err != io.EOF {
		t.Fatalf("server read %d bytes, %v after the client's FIN", n, err)
	}
	server.Write([]byte("bye"))
	server.Close()
	rest, err := io.ReadAll(client)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("client read %q, %v", rest, err)
	}
	// The pair counts what moved and ends.
	var from [2]uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := p.Poll(time.Now())
		from[0] += st.FromClient
		from[1] += st.FromServer
		if st.Over {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pair did not end (moved %v)", from)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Once over, the counts are final, and the entries stay a while for
	// a FIN or an acknowledgment sent again.
	if st := p.Poll(time.Now()); st.FromClient+st.FromServer != 0 || st.Done || p.Settled(time.Now()) {
		t.Errorf("after the end: %+v, settled %v; want nothing more counted, not yet settled", st, p.Settled(time.Now()))
	}
	// Nothing reached the middle's sockets once they were spliced.
	for i, fd := range []int{dfd, ufd} {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if ti.Bytes_received != before[i] {
			t.Errorf("socket %d received %d bytes after the splice", i, ti.Bytes_received-before[i])
		}
	}
	p.Release()
	// Counted: what reached a peer beyond what the middle had written
	// to it: from the client the 23 bytes the middle held or that waited
	// in its socket, then size; from the server size, then 3.
	if from[0] != size+23 || from[1] != size+3 {
		t.Errorf("counted %d bytes from the client and %d from the server, want %d and %d", from[0], from[1], size+23, size+3)
	}
}

// Poll runs once a second for every spliced connection: it allocates
// nothing, and the pair keeps no TCP_INFO once spliced.
func TestPollAllocatesNothing(t *testing.T) {
	needRoot(t)
	s, err := Get()
	if err != nil {
		t.Fatalf("splicer: %v", err)
	}
	client, down, up, server := pairThrough(t, "tcp4", "127.0.0.1:0")
	client.Write([]byte("ping\n"))
	relayOnce(t, down, up, 5)
	relayOnce(t, server, server, 5)
	relayOnce(t, up, down, 5)
	_, dfd := fdOf(t, down)
	_, ufd := fdOf(t, up)
	p, err := s.Splice(dfd, ufd, nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	if p.sd[0].info != nil || p.sd[1].info != nil {
		t.Error("the pair keeps its sockets' TCP_INFO")
	}
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { p.Poll(now) }); n != 0 {
		t.Errorf("%v allocations per Poll, want 0", n)
	}
	// And it still reads the entries: what the client sends now is
	// counted.
	client.Write([]byte("pong\n"))
	relayOnce(t, server, server, 5)
	var from uint64
	for i := 0; from < 5 && i < 100; i++ {
		time.Sleep(20 * time.Millisecond)
		from += p.Poll(time.Now()).FromClient
	}
	if from != 5 {
		t.Errorf("counted %d bytes from the client after the splice, want 5", from)
	}
}
