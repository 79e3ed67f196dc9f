package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// TLS termination. The handshake blocks in crypto/tls, so a goroutine
// per client (the front) does it, on a duplicate of the client's
// descriptor that Go's poller watches, under a deadline. Then the front
// hands the connection to its loop and ends: the loop serves the client's
// socket like a plain client's, except that it reads and writes through
// the client's tls.Conn, which decrypts and encrypts in place. Everything
// a plain client has applies unchanged: the server choice and fail-over,
// connect, source binding, X-Forwarded-For (with X-Forwarded-Proto
// https), the request log, byte counts, half-close and timeouts.
//
// crypto/tls is driven without blocking through tlsSock, the net.Conn
// under the tls.Conn: once the loop has the connection, a read that would
// block returns errWouldBlock, a temporary net.Error, which crypto/tls
// passes up without recording it (a partial record stays in its buffer
// for the next read), and a write never blocks: what the socket does not
// take now is queued on the connection and flushed by the loop as any
// other queued data. Compared with a goroutine per client that relays
// through Go's poller, this saves two goroutine wake-ups per request and
// the memory of two parked goroutines and their buffers per idle client.
//
// Ownership: until the hand-over the front owns the tls.Conn and the
// duplicate descriptor; the loop owns the slot and the client's original
// descriptor, which it does not watch yet. They meet in two places: the
// front posts the hand-over (or the end of a failed handshake) to the
// loop (Loop.do), and the loop tells a front whose slot it closed during
// the handshake through closeFromLoop, which only sets deadlines (safe
// from any goroutine). After the hand-over the loop owns everything.

const (
	// handshakeTimeout bounds a TLS handshake.
	handshakeTimeout = 10 * time.Second
	// refusedLogEvery is the shortest time between two log lines about
	// refused handshakes; the ones in between are counted.
	refusedLogEvery = 10 * time.Second
)

// errWouldBlock is what a tlsSock read returns when the socket has no
// data now. crypto/tls keeps a read error only if it is not a temporary
// net.Error.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "the socket has no data now" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// tlsSock is the connection under a client's tls.Conn. During the
// handshake it uses hs, a duplicate of the client's descriptor in Go's
// poller (the front's); once the loop has taken the connection (loop
// set, by the loop goroutine, after the front has finished with it) it
// reads and writes the client's socket fd without blocking.
type tlsSock struct {
	hs     *os.File
	fd     int
	remote net.Addr
	loop   *Loop // nil during the handshake
	c      *conn
}

func (s *tlsSock) Read(p []byte) (int, error) {
	if s.loop == nil {
		return s.hs.Read(p)
	}
	n, errno := sysRead(s.fd, p)
	switch {
	case errno == unix.EAGAIN:
		return 0, errWouldBlock
	case errno != 0:
		return 0, errno
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes what the socket takes now and queues the rest on the
// connection, ahead of which nothing else is written.
func (s *tlsSock) Write(p []byte) (int, error) {
	if s.loop == nil {
		return s.hs.Write(p)
	}
	c := s.c
	if q := c.q[sideDown]; q != nil {
		q.add(p)
		return len(p), nil
	}
	w := 0
	if c.fl&fWriteDown != 0 {
		m, errno := sysWrite(s.fd, p)
		switch {
		case errno == unix.EAGAIN:
		case errno != 0:
			return 0, errno
		default:
			w = m
		}
	}
	if w < len(p) {
		c.fl &^= fWriteDown
		c.q[sideDown] = newQueuedBytes(p[w:])
	}
	return len(p), nil
}

// Close closes the handshake's duplicate; the loop closes fd itself.
func (s *tlsSock) Close() error {
	if s.hs != nil {
		return s.hs.Close()
	}
	return nil
}

func (s *tlsSock) LocalAddr() net.Addr  { return &net.TCPAddr{} }
func (s *tlsSock) RemoteAddr() net.Addr { return s.remote }

// The deadlines bound the handshake; the loop has timeouts of its own.
func (s *tlsSock) SetDeadline(t time.Time) error {
	if s.loop == nil {
		return s.hs.SetDeadline(t)
	}
	return nil
}

func (s *tlsSock) SetReadDeadline(t time.Time) error {
	if s.loop == nil {
		return s.hs.SetReadDeadline(t)
	}
	return nil
}

func (s *tlsSock) SetWriteDeadline(t time.Time) error {
	if s.loop == nil {
		return s.hs.SetWriteDeadline(t)
	}
	return nil
}

// tlsFront is the goroutine that does a client's handshake.
type tlsFront struct {
	loop *Loop
	slot int32
	gen  uint32 // the slot's generation when the front started
	peer netip.AddrPort
	sock *tlsSock
	tc   *tls.Conn
	// closed is set by the loop (closeFromLoop) when it has closed the
	// slot; a handshake that fails then was not refused.
	closed atomic.Bool
}

// startTLS starts the handshake of an accepted client on a front. The
// loop keeps fd as the client's socket but watches it only once the
// front has handed the connection over (handOver).
func (l *Loop) startTLS(c *conn, fd int) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		l.logFull("dup for a TLS client: %v", err)
		unix.Close(fd)
		l.closeConn(c)
		return
	}
	c.down = int32(fd)
	l.setFD(fd, c.slot)
	c.fl |= fTLS
	// crypto/tls writes whole records, and a handshake's flights and the
	// session ticket after it in writes of their own: with Nagle's
	// algorithm the ticket waits for the client's delayed ACK of the
	// flight before it (40 ms on Linux), and so does the first answer.
	// Go's own sockets set this too. A hint: refused, it only costs time.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	sock := &tlsSock{hs: os.NewFile(uintptr(dup), "tls-client"), fd: fd, remote: net.TCPAddrFromAddrPort(c.peer)}
	f := &tlsFront{loop: l, slot: c.slot, gen: c.gen, peer: c.peer, sock: sock, tc: tls.Server(sock, l.set.TLS)}
	// Set before the front runs, so that closeFromLoop's deadlines,
	// which come later, win.
	f.tc.SetDeadline(time.Now().Add(handshakeTimeout))
	c.tls = f
	go f.serve()
}

// conn is the front's slot, or nil once the loop has closed it. Loop
// goroutine only.
func (f *tlsFront) conn() *conn {
	l := f.loop
	if int(f.slot) >= len(l.conns) {
		return nil
	}
	c := l.conns[f.slot]
	if c == nil || c.gen != f.gen || c.state == stateUnused || c.tls != f {
		return nil
	}
	return c
}

// closeFromLoop is called by the loop when it closes the slot of a
// client whose handshake is under way (close N, Stop): the handshake
// ends at once. Safe from any goroutine while the front runs.
func (f *tlsFront) closeFromLoop() {
	f.closed.Store(true)
	f.tc.SetDeadline(time.Now())
}

// handshaking counts the TLS handshakes under way in the process, and
// handshakeSeen is when one last began or ended (Unix milliseconds). Each
// front updates both from its goroutine; the loops only read them, to
// choose how they block (Loop.block).
var (
	handshaking   atomic.Int32
	handshakeSeen atomic.Int64
)

func (f *tlsFront) serve() {
	l := f.loop
	handshaking.Add(1)
	handshakeSeen.Store(time.Now().UnixMilli())
	err := f.tc.Handshake()
	handshakeSeen.Store(time.Now().UnixMilli())
	handshaking.Add(-1)
	// The front is done with the duplicate either way: after a
	// handshake the loop reads and writes the original descriptor.
	f.sock.hs.Close()
	if err != nil {
		if f.closed.Load() {
			return // pen closed it; the client refused nothing
		}
		l.refusedTLS.log(l.log, f.peer, err)
		l.do(func() {
			if c := f.conn(); c != nil {
				l.closeConn(c)
			}
		})
		return
	}
	l.do(func() {
		if c := f.conn(); c != nil {
			l.handOver(c, f)
		}
	})
}

// handOver takes a client whose handshake is done: from now on the loop
// reads and writes it through its tls.Conn.
func (l *Loop) handOver(c *conn, f *tlsFront) {
	c.tls = nil
	f.sock.hs = nil
	f.sock.loop, f.sock.c = l, c
	c.tc = f.tc
	// The client's first request may have come with its last handshake
	// message and wait in the tls.Conn, where epoll does not see it.
	c.fl |= fReadDown | fWriteDown
	l.serveClient(c)
}

// tlsRead reads decrypted client data into the loop's buffer. A short
// read says nothing about what is left: crypto/tls returns a record at a
// time and may hold more, so the client counts as drained only once a read
// would block.
func (l *Loop) tlsRead(c *conn) (int, syscall.Errno) {
	n, err := c.tc.Read(l.buf)
	switch {
	case n > 0:
		return n, 0 // an EOF that came with it (close_notify) is kept by the tls.Conn
	case err == errWouldBlock:
		return 0, unix.EAGAIN
	case err == io.EOF:
		return 0, 0
	}
	l.log.Debugf(2, "TLS read from %s: %v", config.ClientName(c.peer.Addr()), err)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return 0, errno
	}
	return 0, unix.EPROTO
}

// tlsWrite encrypts data for the client; tlsSock writes it or queues it.
func (l *Loop) tlsWrite(c *conn, data []byte) bool {
	if _, err := c.tc.Write(data); err != nil {
		l.log.Debugf(2, "TLS write to %s: %v", config.ClientName(c.peer.Addr()), err)
		return false
	}
	return true
}

// tlsCloseNotify tells the client that the server is done (close_notify)
// before its side is shut down; the alert may be queued. It reports
// whether the shutdown must wait for the queue.
func (l *Loop) tlsCloseNotify(c *conn) bool {
	if c.fl&fNotified != 0 {
		return false
	}
	c.fl |= fNotified
	c.tc.CloseWrite()
	return c.q[sideDown] != nil
}

// refusedLog logs refused TLS handshakes at the default level, at most
// one line per refusedLogEvery; the line says how many more were refused
// since the previous one. Every refusal is logged at debug level 1.
// Safe for concurrent use.
type refusedLog struct {
	mu         sync.Mutex    // guards every field
	every      time.Duration // 0: refusedLogEvery
	last       time.Time
	suppressed int
}

func (r *refusedLog) log(log *diag.Logger, peer netip.AddrPort, err error) {
	client := config.ClientName(peer.Addr())
	if log.Enabled(1) {
		log.Debugf(1, "TLS handshake with %s refused: %v", client, err)
		return
	}
	r.mu.Lock()
	now := time.Now()
	every := r.every
	if every == 0 {
		every = refusedLogEvery
	}
	if !r.last.IsZero() && now.Sub(r.last) < every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	msg := describeHandshakeError(err)
	if n > 0 {
		log.Printf("TLS handshake with %s refused: %s (%d more refused since the last report)", client, msg, n)
		return
	}
	log.Printf("TLS handshake with %s refused: %s", client, msg)
}

// describeHandshakeError names the usual reasons in words an operator
// knows.
func describeHandshakeError(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "no handshake within " + handshakeTimeout.String()
	case errors.Is(err, io.EOF):
		return "the client closed the connection during the handshake"
	}
	return err.Error()
}
