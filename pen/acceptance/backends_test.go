package acceptance

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// The two client addresses of Pen's testsuite.
const (
	ip1 = "127.0.0.1"
	ip2 = "127.0.0.2"
)

// ---- HTTP backends -------------------------------------------------------

// seenRequest is what an HTTP backend saw of one request.
type seenRequest struct {
	Method     string
	URI        string
	Header     http.Header
	Body       string
	RemoteAddr string
}

// httpBackend answers every request with its name, like the Apache vhosts
// of Pen's testsuite ("100", "101", "Emergency", "Abuse").
type httpBackend struct {
	name string
	host string
	port int
	mu   sync.Mutex
	seen []seenRequest
}

func startHTTPBackend(t *testing.T, name, host string) *httpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", hostPort(host, 0))
	if err != nil {
		t.Fatalf("backend %s: %v", name, err)
	}
	b := &httpBackend{name: name, host: host, port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			b.mu.Lock()
			b.seen = append(b.seen, seenRequest{r.Method, r.RequestURI, r.Header.Clone(), string(body), r.RemoteAddr})
			b.mu.Unlock()
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, b.name)
		}),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// spec is the backend as a pen server spec: host:port, [v6]:port.
func (b *httpBackend) spec() string { return hostPort(b.host, b.port) }

func (b *httpBackend) requests() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenRequest(nil), b.seen...)
}

// dialFrom opens a TCP connection to addr from the local address from
// ("" lets the kernel choose).
func dialFrom(from, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return d.Dial("tcp", addr)
}

// fetch sends one HTTP/1.0 GET from the local address from to addr and
// returns every byte of the reply until pen closes the connection.
func fetch(from, addr string) ([]byte, error) {
	c, err := dialFrom(from, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\nUser-Agent: pen-acceptance\r\n\r\n", addr); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

// httpGet is curl -s: one HTTP/1.0 GET from the local address from, and
// the body of the reply. Like curl, it stops reading once the body
// announced by Content-Length has arrived, so it does not depend on pen
// passing the backend's close on (TestHalfClose checks that).
func httpGet(from, addr string) (string, error) {
	c, err := dialFrom(from, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\nUser-Agent: pen-acceptance\r\n\r\n", addr); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	if _, err := br.Peek(1); err != nil {
		if err == io.EOF || isReset(err) {
			return "", fmt.Errorf("empty reply (connection closed without a response): %v", err)
		}
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", fmt.Errorf("bad HTTP reply: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// mustGet fetches through pen and fails the test on any error.
func mustGet(t *testing.T, from, addr string) string {
	t.Helper()
	body, err := httpGet(from, addr)
	if err != nil {
		t.Fatalf("GET http://%s/ from %s: %v", addr, from, err)
	}
	return body
}

// expectGet checks that a request from from through addr is answered by want.
func expectGet(t *testing.T, step, from, addr, want string) {
	t.Helper()
	if got := mustGet(t, from, addr); got != want {
		t.Fatalf("%s: request from %s answered by %q, want %q", step, from, got, want)
	}
}

// isReset reports whether err means the peer reset the connection.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ---- DNS backends --------------------------------------------------------

// dnsBackend is a DNS server that answers every A query with one address,
// like one view of the split-horizon bind in Pen's testsuite.
type dnsBackend struct {
	answer  string
	port    int
	queries atomic.Int64
}

func startDNSBackend(t *testing.T, answer string) *dnsBackend {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &dnsBackend{answer: answer, port: pc.LocalAddr().(*net.UDPAddr).Port}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		b.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.ParseIP(answer).To4(),
				})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return b
}

func (b *dnsBackend) spec() string { return hostPort("127.0.0.1", b.port) }

// digShort is `dig +short +retry=0 @server example.com` from the local
// address from: the first A record, or an error (dig's exit status 9 is a
// timeout error here). Every call uses a new client socket, so a new port.
func digShort(from, server string, timeout time.Duration) (string, error) {
	c := &dns.Client{
		Net:     "udp",
		Timeout: timeout,
		Dialer:  &net.Dialer{Timeout: timeout, LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}},
	}
	m := new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return "", err
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String(), nil
		}
	}
	return "", fmt.Errorf("reply without an A record: %v", r)
}

// mustDig queries through pen and fails the test on an error.
func mustDig(t *testing.T, from, server string) string {
	t.Helper()
	a, err := digShort(from, server, 3*time.Second)
	if err != nil {
		t.Fatalf("DNS query to %s from %s: %v", server, from, err)
	}
	return a
}

// ---- TCP echo backend ----------------------------------------------------

// echoBackend echoes every byte back on each connection.
type echoBackend struct {
	port int
}

func startEchoBackend(t *testing.T) *echoBackend {
	t.Helper()
	return &echoBackend{port: testenv.Port(testenv.TCPServer(t, "tcp", "127.0.0.1:0", testenv.Echo))}
}

func (b *echoBackend) spec() string { return hostPort("127.0.0.1", b.port) }

// echoOnce writes msg on c and reads the same number of bytes back.
func echoOnce(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	n, err := io.ReadFull(c, buf)
	return string(buf[:n]), err
}

// ---- fixed-reply backend -------------------------------------------------

// fixedBackend reads a request up to the blank line, sends a fixed reply
// and closes: the byte counts pen reports can be predicted exactly.
type fixedBackend struct {
	port  int
	reply string
}

func startFixedBackend(t *testing.T, reply string) *fixedBackend {
	t.Helper()
	ln := testenv.TCPServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		var got []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(got, []byte("\r\n\r\n")) {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				return
			}
		}
		io.WriteString(c, reply)
	})
	return &fixedBackend{port: testenv.Port(ln), reply: reply}
}

func (b *fixedBackend) spec() string { return hostPort("127.0.0.1", b.port) }

// ---- streaming backend ---------------------------------------------------

const (
	streamChunk = 16 << 10
	streamTotal = 4 << 20 // bytes of payload per connection
	streamPause = 5 * time.Millisecond
)

// streamBackend sends, on every connection, a header line "NAME SEED\n" and
// then streamTotal pseudo-random bytes derived from SEED, at a bounded rate
// so that a transfer lasts more than a second. kill closes the listener and
// every connection at once, as if the process had died.
type streamBackend struct {
	t    *testing.T
	name string
	addr string
	mu   sync.Mutex
	ln   net.Listener
	conn map[net.Conn]bool
	next uint64
	dead bool
}

func startStreamBackend(t *testing.T, name string) *streamBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &streamBackend{t: t, name: name, addr: ln.Addr().String(), conn: map[net.Conn]bool{}}
	b.serve(ln)
	t.Cleanup(b.kill)
	return b
}

func (b *streamBackend) spec() string { return b.addr }

func (b *streamBackend) serve(ln net.Listener) {
	b.mu.Lock()
	b.ln = ln
	b.dead = false
	b.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			if b.dead {
				b.mu.Unlock()
				c.Close()
				return
			}
			b.next++
			seed := uint64(len(b.name))<<32 | b.next
			if b.name != "" {
				seed ^= uint64(b.name[0]) << 40
			}
			b.conn[c] = true
			b.mu.Unlock()
			go b.stream(c, seed)
		}
	}()
}

func (b *streamBackend) stream(c net.Conn, seed uint64) {
	defer func() {
		b.mu.Lock()
		delete(b.conn, c)
		b.mu.Unlock()
		c.Close()
	}()
	_ = c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	if _, err := fmt.Fprintf(c, "%s %d\n", b.name, seed); err != nil {
		return
	}
	src := streamSource(seed)
	buf := make([]byte, streamChunk)
	for sent := 0; sent < streamTotal; sent += len(buf) {
		src.Read(buf)
		if _, err := c.Write(buf); err != nil {
			return
		}
		time.Sleep(streamPause)
	}
}

// kill closes the listener and all connections.
func (b *streamBackend) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dead = true
	if b.ln != nil {
		b.ln.Close()
	}
	for c := range b.conn {
		c.Close()
	}
}

// revive listens again on the same address.
func (b *streamBackend) revive() {
	b.t.Helper()
	var ln net.Listener
	var err error
	ok := waitFor(5*time.Second, func() bool {
		ln, err = net.Listen("tcp", b.addr)
		return err == nil
	})
	if !ok {
		b.t.Fatalf("backend %s: listening again on %s: %v", b.name, b.addr, err)
	}
	b.serve(ln)
}

// streamSource is the deterministic byte stream for a seed.
func streamSource(seed uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return rand.NewChaCha8(key)
}

// streamSum is the SHA-256 of the full payload for a seed.
func streamSum(seed uint64) [32]byte {
	h := sha256.New()
	io.CopyN(h, streamSource(seed), streamTotal)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// ---- UDP echo backend ----------------------------------------------------

// udpEchoBackend answers every datagram with "NAME:" + the datagram.
type udpEchoBackend struct {
	name string
	port int
}

func startUDPEchoBackend(t *testing.T, name string) *udpEchoBackend {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return &udpEchoBackend{name: name, port: pc.LocalAddr().(*net.UDPAddr).Port}
}

func (b *udpEchoBackend) spec() string { return hostPort("127.0.0.1", b.port) }

// ---- misc ----------------------------------------------------------------

// readFileString returns the file's content or "" if it cannot be read.
func readFileString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

// lines splits text into lines without their newlines.
func lines(s string) []string {
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
