package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
	"github.com/pen-lb/pen-appliance/pen/splice"
)

func needKernelRelay(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "the in-kernel relay needs root (CAP_BPF and CAP_NET_ADMIN) to load its BPF program")
	}
	if _, err := getKernelRelay(); err != nil {
		testenv.Skip(t, "BPF sockhash and sk_skb programs are not available: "+err.Error())
	}
}

// relayModes runs f with the sockmap relay alone (splicing unavailable)
// and with splicing, which takes connections whose peers are on this
// host.
func relayModes(t *testing.T, f func(t *testing.T, splicing bool)) {
	t.Run("sockmap", func(t *testing.T) {
		noSplicing(t)
		f(t, false)
	})
	t.Run("splice", func(t *testing.T) {
		if _, err := splice.Get(); err != nil {
			testenv.Skip(t, "splicing is not available: "+err.Error())
		}
		f(t, true)
	})
}

// handedOver reports whether n connections are with the kernel, spliced
// when splicing.
func handedOver(h *harness, splicing bool, n int) func() bool {
	return func() bool {
		st := h.loop.Stats()
		return st.Relayed == n && (!splicing || st.Spliced == n)
	}
}

// lines asks n questions on c and checks each answer.
func lines(t *testing.T, c net.Conn, r *bufio.Reader, prefix string, n int) {
	t.Helper()
	for i := range n {
		q := fmt.Sprintf("%s %d\n", prefix, i)
		if _, err := io.WriteString(c, q); err != nil {
			t.Fatalf("write: %v", err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != q {
			t.Fatalf("%q answered %q, %v", q, got, err)
		}
	}
}

// A relayed connection carries data both ways without the loop (50 MB
// compared by hash), the counts of servers see every byte, a half-close
// reaches the server after everything sent before it, and the server's
// last bytes and its close reach the client.
func TestKernelRelay(t *testing.T) {
	needKernelRelay(t)
	relayModes(t, func(t *testing.T, splicing bool) {
		be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
		h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice, s.Relay = true, true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
		c := h.dial()
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		r := bufio.NewReader(c)
		lines(t, c, r, "before", 3)
		waitFor(t, handedOver(h, splicing, 1), "the hand-over to the kernel")
		lines(t, c, r, "relayed", 100)

		const size = 50 << 20
		src := make([]byte, size)
		rand.NewChaCha8([32]byte{1}).Read(src)
		want := sha256.Sum256(src)
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(src)
			if err == nil {
				// Half-close: the echo server answers everything, then ends.
				err = c.(*net.TCPConn).CloseWrite()
			}
			errc <- err
		}()
		hash := sha256.New()
		n, err := io.Copy(hash, r)
		if err != nil || n != size {
			t.Fatalf("read back %d bytes of %d: %v", n, size, err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(hash.Sum(nil), want[:]) {
			t.Fatal("the data came back changed")
		}
		waitFor(t, func() bool { return h.loop.Stats().Active == 0 }, "the connection to close")
		var asked int64
		for i := range 3 {
			asked += int64(len(fmt.Sprintf("before %d\n", i)))
		}
		for i := range 100 {
			asked += int64(len(fmt.Sprintf("relayed %d\n", i)))
		}
		st := h.tb.ServerStates()[0]
		if st.Sent != uint64(asked+size) || st.Received != uint64(asked+size) {
			t.Errorf("servers counts %d bytes sent, %d received; want %d both", st.Sent, st.Received, asked+size)
		}
		if h.loop.Stats().Relayed != 0 {
			t.Errorf("still %d relayed connections", h.loop.Stats().Relayed)
		}
	})
}

// The server closes first: its last answer and the close reach the client.
func TestKernelRelayServerCloses(t *testing.T) {
	needKernelRelay(t)
	relayModes(t, func(t *testing.T, splicing bool) {
		be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			r := bufio.NewReader(c)
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == "bye\n" {
					io.WriteString(c, strings.Repeat("x", 1<<20)+"\n")
					c.Close()
					return
				}
				io.WriteString(c, l)
			}
		})
		h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice, s.Relay = true, true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
		c := h.dial()
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		lines(t, c, r, "q", 3)
		waitFor(t, handedOver(h, splicing, 1), "the hand-over to the kernel")
		io.WriteString(c, "bye\n")
		last, err := r.ReadString('\n')
		if err != nil || len(last) != 1<<20+1 {
			t.Fatalf("last answer: %d bytes, %v", len(last), err)
		}
		if _, err := r.ReadByte(); err != io.EOF {
			t.Errorf("after the server's close: %v, want EOF", err)
		}
		c.Close()
		waitFor(t, func() bool { return h.loop.Stats().Active == 0 }, "the connection to close")
	})
}

// The idle timeout closes a relayed connection that is quiet, and not one
// whose bytes the kernel moves.
func TestKernelRelayIdleTimeout(t *testing.T) {
	needKernelRelay(t)
	relayModes(t, func(t *testing.T, splicing bool) {
		be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
		h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice, s.Relay = true, true; s.IdleTimeout = 2 * time.Second },
			fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
		quiet, busy := h.dial(), h.dial()
		defer quiet.Close()
		defer busy.Close()
		qr, br := bufio.NewReader(quiet), bufio.NewReader(busy)
		quiet.SetDeadline(time.Now().Add(20 * time.Second))
		busy.SetDeadline(time.Now().Add(20 * time.Second))
		lines(t, quiet, qr, "q", 3)
		lines(t, busy, br, "b", 3)
		waitFor(t, handedOver(h, splicing, 2), "the hand-over to the kernel")
		end := time.Now().Add(5 * time.Second)
		for time.Now().Before(end) {
			lines(t, busy, br, "busy", 1)
			time.Sleep(200 * time.Millisecond)
		}
		if _, err := qr.ReadByte(); err != io.EOF {
			t.Errorf("the quiet connection: %v, want EOF: closed by the idle timeout", err)
		}
		lines(t, busy, br, "still", 1)
	})
}

// noSplicing makes splicing unavailable for the test.
func noSplicing(t *testing.T) {
	save := getSplicer
	getSplicer = func() (*splice.Splicer, error) { return nil, errors.New("off for this test") }
	t.Cleanup(func() { getSplicer = save })
}

// needSplicing skips unless splicing is available (it does not load the
// sockmap relay, which some tests replace).
func needSplicing(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "splicing needs root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW)")
	}
	if _, err := splice.Get(); err != nil {
		testenv.Skip(t, "splicing is not available: "+err.Error())
	}
}

// replaceLoadRelay has the sockmap relay loaded afresh by load for the
// rest of the test, and puts everything back afterwards.
func replaceLoadRelay(t *testing.T, load func() (*kernelRelay, error)) {
	relayMu.Lock()
	saveTried, saveKern, saveErr, saveLoad := relayTried, relayKern, relayErr, loadRelay
	relayTried, relayKern, relayErr = false, nil, nil
	loadRelay = load
	relayMu.Unlock()
	t.Cleanup(func() {
		relayMu.Lock()
		relayTried, relayKern, relayErr, loadRelay = saveTried, saveKern, saveErr, saveLoad
		relayMu.Unlock()
	})
}

// Without BPF, connections stay in the loop and one line says why.
func TestKernelRelayFallBack(t *testing.T) {
	noSplicing(t)
	replaceLoadRelay(t, func() (*kernelRelay, error) { return nil, errors.New("operation not permitted") })
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice, s.Relay = true, true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	for range 3 {
		c := h.dial()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		lines(t, c, bufio.NewReader(c), "q", 5)
		c.Close()
	}
	if h.loop.Stats().Relayed != 0 {
		t.Error("a connection was handed over without BPF")
	}
	log := h.logText()
	if n := strings.Count(log, "kernel_relay: BPF is not available (operation not permitted); pen relays every connection itself"); n != 1 {
		t.Errorf("the fall-back was logged %d times, want once:\n%s", n, log)
	}
}

// A stream is handed over in the middle, at a pause, and arrives whole
// and in order: the server streams from the start, in small writes (pen
// reads them without splice); the client's second line, sent mid-stream,
// makes the connection eligible.
func TestKernelRelayMidStream(t *testing.T) {
	needKernelRelay(t)
	relayModes(t, func(t *testing.T, splicing bool) {
		const size = 64 << 20
		src := make([]byte, size)
		rand.NewChaCha8([32]byte{2}).Read(src)
		want := sha256.Sum256(src)
		be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			go io.Copy(io.Discard, c)
			const piece = 4 << 10
			for off := 0; off < size; off += piece {
				if _, err := c.Write(src[off : off+piece]); err != nil {
					return
				}
				if off < size/4 {
					time.Sleep(20 * time.Microsecond) // a trickle until it is relayed
				}
			}
		})
		h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice, s.Relay = true, true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
		c := h.dial()
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		io.WriteString(c, "first\n")
		hash := sha256.New()
		relayed, asked := false, false
		buf := make([]byte, 64<<10)
		var n, at int
		for {
			m, err := c.Read(buf)
			hash.Write(buf[:m])
			n += m
			if !relayed && handedOver(h, splicing, 1)() {
				relayed, at = true, n
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d bytes: %v", n, err)
			}
			if !asked && n >= 1<<20 {
				asked = true
				io.WriteString(c, "second\n")
			}
		}
		if n != size || !bytes.Equal(hash.Sum(nil), want[:]) {
			t.Fatalf("%d bytes of %d arrived, equal: %v", n, size, bytes.Equal(hash.Sum(nil), want[:]))
		}
		if !relayed || at >= size {
			t.Errorf("not handed to the kernel mid-stream (relayed %v after %d of %d bytes)", relayed, at, size)
		}
		t.Logf("handed over after %d of %d bytes", at, size)
		c.Close()
		waitFor(t, func() bool { return h.loop.Stats().Active == 0 }, "the connection to close")
		if st := h.tb.ServerStates()[0]; st.Received != size {
			t.Errorf("servers counts %d bytes received, want %d", st.Received, size)
		}
	})
}

// A download that pen moves by splice stays with pen, pauses included:
// splice measured about twice the relay's rate for bulk data.
func TestKernelRelayLeavesBulk(t *testing.T) {
	needKernelRelay(t)
	noSplicing(t)
	const size = 128 << 20
	chunk := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{3}).Read(chunk)
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		for off := 0; off < size; off += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice, s.Relay = true, true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c := h.dial()
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 64<<10)
	var n int
	for {
		m, err := c.Read(buf)
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		if h.loop.Stats().Relayed != 0 {
			t.Fatalf("a splice download was handed to the kernel after %d bytes", n)
		}
		if n < size/2 && n%(8<<20) < len(buf) {
			time.Sleep(20 * time.Millisecond) // pauses: pen's splice waits for the client
		}
	}
	if n != size {
		t.Fatalf("%d bytes of %d arrived", n, size)
	}
}

// A download is spliced as soon as it shows itself bulk, arrives whole
// and in order, and servers counts every byte once; pen's CPU stays
// far below what relaying it costs.
func TestSpliceTakesBulk(t *testing.T) {
	needSplicing(t)
	const size = 256 << 20
	chunk := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{4}).Read(chunk)
	hc := sha256.New()
	for off := 0; off < size; off += len(chunk) {
		hc.Write(chunk)
	}
	want := hc.Sum(nil)
	be := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
		for off := 0; off < size; off += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
		c.Close()
	})
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice, s.Relay = true, true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c := h.dial()
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(c, "GET\n")
	hash := sha256.New()
	buf := make([]byte, 256<<10)
	var n, at int
	spliced := false
	for {
		m, err := c.Read(buf)
		hash.Write(buf[:m])
		n += m
		if !spliced && h.loop.Stats().Spliced == 1 {
			spliced, at = true, n
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
	}
	if n != size || !bytes.Equal(hash.Sum(nil), want) {
		t.Fatalf("%d bytes of %d arrived, equal: %v", n, size, bytes.Equal(hash.Sum(nil), want))
	}
	if !spliced || at > size/4 {
		t.Errorf("spliced %v after %d of %d bytes, want within the first quarter", spliced, at, size)
	}
	t.Logf("spliced after %d of %d bytes", at, size)
	c.Close()
	waitFor(t, func() bool { return h.loop.Stats().Active == 0 }, "the connection to close")
	st := h.tb.ServerStates()[0]
	if st.Received != size || st.Sent != 4 {
		t.Errorf("servers counts %d bytes received and %d sent, want %d and 4", st.Received, st.Sent, size)
	}
}

// Splicing alone (kernel_relay splice, pen's default): a keep-alive
// connection is spliced after its first requests; when the client ends
// it, the slot and the server's count are free again at once (the
// splicer reports the FINs), not at the next look once a second, and
// well before the pair has settled. Three clients in turn, each spliced.
func TestSpliceAlone(t *testing.T) {
	needSplicing(t)
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice = true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	for i := range 3 {
		c := h.dial()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(c)
		lines(t, c, r, "before", 3)
		waitFor(t, handedOver(h, true, 1), "the splice")
		lines(t, c, r, "spliced", 50)
		c.Close()
		closed := time.Now()
		for h.loop.Stats().Active != 0 || h.tb.ServerStates()[0].Conns != 0 {
			if time.Since(closed) > 5*time.Second {
				t.Fatalf("client %d: the slot is not free 5 s after the close", i)
			}
			time.Sleep(time.Millisecond)
		}
		// The regular look comes once a second: only the report of
		// the FINs is this quick every time.
		if took := time.Since(closed); took > 300*time.Millisecond {
			t.Errorf("client %d: the slot was freed %v after the close; want it at once", i, took)
		} else {
			t.Logf("client %d: the slot was freed %v after the close", i, took)
		}
		if st := h.loop.Stats(); st.Relayed != 0 || st.Spliced != 0 {
			t.Errorf("after the close: %d relayed, %d spliced; want 0", st.Relayed, st.Spliced)
		}
	}
}

// With splicing alone, a connection that cannot be spliced (here the
// client on IPv4 and the server on IPv6) or a machine without splicing
// keeps every connection in pen: the sockmap relay is never loaded, and
// one line says why when splicing is not available.
func TestSpliceAloneLeavesTheRest(t *testing.T) {
	replaceLoadRelay(t, func() (*kernelRelay, error) {
		t.Error("the sockmap relay was loaded with splicing alone")
		return nil, errors.New("not in this test")
	})
	run := func(t *testing.T, listen, server string) *harness {
		be := tcpServer(t, "tcp", server, echo)
		h := start(t, listen, func(s *Settings) { s.Splice = true }, fmt.Sprintf("server 0 address %s port %d", be.Addr().(*net.TCPAddr).IP, port(be)))
		for range 3 {
			c := h.dial()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			lines(t, c, r, "q", 5)
			time.Sleep(50 * time.Millisecond) // quiet: a hand-over would happen now
			lines(t, c, r, "r", 5)
			c.Close()
		}
		if st := h.loop.Stats(); st.Relayed != 0 {
			t.Errorf("%d connections handed to the kernel", st.Relayed)
		}
		return h
	}
	t.Run("not-eligible", func(t *testing.T) {
		needSplicing(t)
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			testenv.Skip(t, "no IPv6 loopback: "+err.Error())
		}
		ln.Close()
		h := run(t, "127.0.0.1:0", "[::1]:0")
		if log := h.logText(); strings.Contains(log, "kernel_relay") {
			t.Errorf("the log speaks of kernel_relay:\n%s", log)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		noSplicing(t)
		h := run(t, "127.0.0.1:0", "127.0.0.1:0")
		log := h.logText()
		if n := strings.Count(log, "kernel_relay: splicing segments is not available (off for this test); pen carries every connection itself"); n != 1 {
			t.Errorf("the fall-back was logged %d times, want once:\n%s", n, log)
		}
	})
	// Once for the process, not once per loop.
	t.Run("unavailable-loops", func(t *testing.T) {
		noSplicing(t)
		be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
		h := startGroup(t, 2, "127.0.0.1:0", func(s *Settings) { s.Splice = true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
		for i := 0; ; i++ {
			busy := 0
			for _, l := range h.g.all() {
				if l.Stats().Accepted > 0 {
					busy++
				}
			}
			if busy == 2 && i >= 4 {
				break
			}
			if i == 64 {
				t.Fatal("64 clients, and a loop has served none")
			}
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			lines(t, c, r, "q", 3)
			time.Sleep(20 * time.Millisecond)
			lines(t, c, r, "r", 3)
			c.Close()
		}
		h.mu.Lock()
		log := h.log.String()
		h.mu.Unlock()
		if n := strings.Count(log, "kernel_relay: splicing segments is not available"); n != 1 {
			t.Errorf("the fall-back was logged %d times by two loops, want once:\n%s", n, log)
		}
	})
}

// A client reaching a dual-stack listener ([::]) over IPv4 has an
// IPv4-mapped address on pen's side but sends IPv4 on the wire: it is
// spliced as IPv4, and what it sends arrives whole both ways.
func TestSpliceDualStackListener(t *testing.T) {
	needSplicing(t)
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		testenv.Skip(t, "no dual-stack listener here: "+err.Error())
	}
	ln.Close()
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "[::]:0", func(s *Settings) { s.Splice = true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	_, p, _ := net.SplitHostPort(h.addr)
	c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", p), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	lines(t, c, r, "before", 3)
	waitFor(t, handedOver(h, true, 1), "the splice")
	const size = 8 << 20
	src := make([]byte, size)
	rand.NewChaCha8([32]byte{4}).Read(src)
	go func() {
		c.Write(src)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, src) {
		t.Fatalf("read back %d of %d bytes (equal: %v): %v", len(got), size, bytes.Equal(got, src), err)
	}
}

// A splice that fails at a quiet moment is tried again at a later one
// (the next event on the connection that finds it quiet): here the first
// attempt finds no splicer, a later one splices, and the connection
// carries on.
func TestSpliceRetriedLater(t *testing.T) {
	needKernelRelay(t)
	real, err := splice.Get()
	if err != nil {
		testenv.Skip(t, "splicing is not available: "+err.Error())
	}
	save := getSplicer
	var calls atomic.Int32
	getSplicer = func() (*splice.Splicer, error) {
		if calls.Add(1) == 1 {
			return nil, errors.New("not this time")
		}
		return real, nil
	}
	t.Cleanup(func() { getSplicer = save })
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.Splice = true }, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	c := h.dial()
	defer c.Close()
	r := bufio.NewReader(c)
	for i := 0; h.loop.Stats().Spliced == 0; i++ {
		if i == 8 {
			t.Fatalf("not spliced after %d exchanges (%d attempts)", i+2, calls.Load())
		}
		lines(t, c, r, fmt.Sprintf("line %d", i), 1)
		time.Sleep(20 * time.Millisecond)
	}
	if n := calls.Load(); n < 2 {
		t.Errorf("spliced after %d attempts; the first one fails", n)
	}
	lines(t, c, r, "spliced", 5)
}
