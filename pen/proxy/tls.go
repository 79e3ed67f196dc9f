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
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// TLS termination. crypto/tls reads and writes block, so a goroutine per
// client (the front) does the handshake and then only decrypts and
// encrypts: it relays between the client's TLS connection and one end of
// a socket pair. The loop serves the other end of the pair as the
// client's socket, exactly as it serves a plain client: the same server
// choice and fail-over, connect, source binding, X-Forwarded-For (with
// X-Forwarded-Proto https), request log, byte counts and timeouts.
//
// Ownership: the loop owns the slot, its balancer session and its end of
// the pair, as for any client. The front owns the client's socket (inside
// its tls.Conn) and its end of the pair. They meet in two places only:
// the front asks the loop to start (or to drop) the connection by posting
// to it (Loop.do), and the loop tells the front that it closed the slot
// through closeFromLoop, which only sets deadlines on the front's
// connection (safe from any goroutine).

const (
	// handshakeTimeout bounds a TLS handshake.
	handshakeTimeout = 10 * time.Second
	// drainTimeout bounds how long a front whose slot the loop closed
	// may take to deliver the server's last bytes to the client.
	drainTimeout = 10 * time.Second
	// refusedLogEvery is the shortest time between two log lines about
	// refused handshakes; the ones in between are counted.
	refusedLogEvery = 10 * time.Second
)

// fileConn is a net.Conn on a socket the loop made, without duplicating
// the descriptor.
type fileConn struct {
	*os.File
	local, remote net.Addr
}

func (c *fileConn) LocalAddr() net.Addr  { return c.local }
func (c *fileConn) RemoteAddr() net.Addr { return c.remote }

func (c *fileConn) CloseWrite() error {
	rc, err := c.File.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	return serr
}

// The direct path. When the loop need not see the client's bytes (no
// X-Forwarded-For, request log or dump), the socket pair serves only until
// the server's connect completes: then the loop hands the server's socket
// to the front (handToFront) and forgets it and its end of the pair, and
// the front relays between the client's TLS connection and the server by
// itself, through Go's poller. That saves, per request and direction, a
// write and a read on the pair and a wake-up of the loop. The loop keeps
// the slot and the balancer's session: the front counts the bytes in
// atomics, which the loop adds to the server's counts once a second and
// at the close (and which keep the connection from the idle timeout), and
// the front ends the slot through the loop when both directions are done;
// close N and the idle timeout end the front through closeFromLoop.

// copyBufs holds the fronts' copy buffers: a client that makes one
// request per connection would otherwise allocate two for each.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// tlsFront is the goroutine side of a TLS client.
type tlsFront struct {
	loop  *Loop
	slot  int32
	gen   uint32 // the slot's generation when the front started
	peer  netip.AddrPort
	tc    *tls.Conn // the client; the front's
	plain *fileConn // the front's end of the pair

	// closed is set by the loop (closeFromLoop) when it has closed the
	// slot; the front reads it when a read of the client fails.
	closed atomic.Bool

	// The direct path.
	direct  bool             // set by the loop in serveClient, before the front reads it
	fast    config.FastClose // tcp_fastclose when the client started
	upc     chan int         // the server's socket from the loop, or -1: no server
	mu      sync.Mutex       // guards up
	up      *fileConn        // the server, once handed over
	sent    atomic.Uint64    // client to server, counted by the front
	recv    atomic.Uint64    // server to client
	counted [2]uint64        // sent and recv already added to the counts; the loop's
}

// startTLS gives the accepted client fd to a new front. The loop keeps
// the other end of a socket pair as the client's socket, but serves it
// only when the front reports the handshake done (serveClient).
func (l *Loop) startTLS(c *conn, fd int) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.log.Printf("socketpair for a TLS client: %v", err)
		unix.Close(fd)
		l.closeConn(c)
		return
	}
	c.down = int32(pair[0])
	l.setFD(pair[0], c.slot)
	c.fl |= fTLS
	// crypto/tls writes whole records, and a handshake's flights and the
	// session ticket after it in writes of their own: with Nagle's
	// algorithm the ticket waits for the client's delayed ACK of the
	// flight before it (40 ms on Linux), and so does the first answer.
	// Go's own sockets set this too. A hint: refused, it only costs time.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	raw := &fileConn{File: os.NewFile(uintptr(fd), "tls-client"), remote: net.TCPAddrFromAddrPort(c.peer), local: &net.TCPAddr{}}
	f := &tlsFront{loop: l, slot: c.slot, gen: c.gen, peer: c.peer,
		tc:    tls.Server(raw, l.set.TLS),
		plain: &fileConn{File: os.NewFile(uintptr(pair[1]), "tls-plain"), local: &net.UnixAddr{}, remote: &net.UnixAddr{}},
		upc:   make(chan int, 1), fast: l.set.FastClose}
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
	if c == nil || c.gen != f.gen || c.state == stateUnused {
		return nil
	}
	return c
}

// closeFromLoop is called by the loop when it closes the slot (both sides
// are done, tcp_fastclose, idle timeout, close N, Stop). The server's last
// bytes may still be in the pair: the front delivers them within
// drainTimeout. What the client sends now has nowhere to go, so the read
// of the client ends at once. The deadlines are safe to set from the
// loop goroutine while the front reads and writes.
func (f *tlsFront) closeFromLoop() {
	f.closed.Store(true)
	now := time.Now()
	f.tc.SetReadDeadline(now)
	f.tc.SetWriteDeadline(now.Add(drainTimeout))
	select {
	case f.upc <- -1: // no server was handed over: the front stops waiting
	default:
	}
	f.mu.Lock()
	if f.up != nil {
		// As the loop closes a server's socket: what the front has
		// read is still written to the client, nothing more is read.
		f.up.SetDeadline(now)
	}
	f.mu.Unlock()
}

func (f *tlsFront) serve() {
	l := f.loop
	defer f.plain.Close()
	defer f.tc.Close()
	if err := f.tc.Handshake(); err != nil {
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
	f.tc.SetDeadline(time.Time{})
	started := false
	l.do(func() {
		if c := f.conn(); c != nil {
			started = true
			l.serveClient(c)
		}
	})
	if !started {
		return
	}
	if f.direct {
		f.serveDirect()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The server's answers go to the client encrypted.
		if f.copy(f.tc, f.plain, false) {
			f.tc.CloseWrite() // close_notify: the server is done
		}
	}()
	if f.copy(f.plain, f.tc, true) {
		f.plain.CloseWrite() // the loop reads EOF and shuts the server's side
	}
	<-done
}

// copy moves bytes from src to dst until src ends. It reports whether src
// ended cleanly (EOF). On an error both connections close, which ends the
// other direction too; except when the client's side fails because the
// loop has closed the slot: then the other direction still delivers what
// the server sent before.
func (f *tlsFront) copy(dst io.Writer, src io.Reader, fromClient bool) bool {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		switch {
		case err == io.EOF:
			return true
		case err == nil:
			continue
		case !(fromClient && f.closed.Load()):
			f.abort()
		}
		return false
	}
}

func (f *tlsFront) abort() {
	f.tc.Close()
	f.plain.Close()
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

// handToFront gives the server's socket of a direct TLS connection to its
// front, and closes the loop's end of the pair (loop goroutine).
func (l *Loop) handToFront(c *conn) {
	unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, int(c.up), nil)
	fd := int(c.up)
	l.clearFD(fd)
	l.clearFD(int(c.down))
	unix.Close(int(c.down))
	c.up, c.down = -1, -1
	c.tls.upc <- fd
	l.direct.Add(1)
}

// directCount adds the bytes a direct front moved since the last count to
// the server's and the client's counts; it reports whether any moved.
func (l *Loop) directCount(c *conn) bool {
	f := c.tls
	s, r := f.sent.Load(), f.recv.Load()
	moved := false
	if d := s - f.counted[0]; d > 0 {
		c.sess.Sent(int(d))
		f.counted[0] = s
		moved = true
	}
	if d := r - f.counted[1]; d > 0 {
		c.sess.Received(int(d))
		f.counted[1] = r
		moved = true
	}
	return moved
}

// serveDirect relays between the client and the server's socket that the
// loop hands over, then ends the slot.
func (f *tlsFront) serveDirect() {
	l := f.loop
	fd := <-f.upc
	if fd < 0 {
		return // the loop ended the slot before a server was connected
	}
	up := &fileConn{File: os.NewFile(uintptr(fd), "tls-upstream"), local: &net.TCPAddr{}, remote: &net.TCPAddr{}}
	defer up.Close()
	f.mu.Lock()
	f.up = up
	f.mu.Unlock()
	if f.closed.Load() {
		return
	}
	abort := func() {
		f.tc.Close()
		up.Close()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if f.copyCounting(f.tc, up, &f.recv) {
			if f.fast&config.FastClose(stateClosedUp) != 0 {
				abort()
				return
			}
			f.tc.CloseWrite() // close_notify: the server is done
			return
		}
		abort()
	}()
	if f.copyCounting(up, f.tc, &f.sent) {
		if f.fast&config.FastClose(stateClosedDown) != 0 {
			abort()
		} else {
			up.CloseWrite()
		}
	} else if !f.closed.Load() {
		abort()
	}
	<-done
	l.do(func() {
		if c := f.conn(); c != nil {
			l.closeConn(c)
		}
	})
}

// copyCounting moves bytes from src to dst until src ends, counting them
// in n; it reports whether src ended cleanly (EOF).
func (f *tlsFront) copyCounting(dst io.Writer, src io.Reader, n *atomic.Uint64) bool {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		m, err := src.Read(buf)
		if m > 0 {
			if _, werr := dst.Write(buf[:m]); werr != nil {
				return false
			}
			n.Add(uint64(m))
		}
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
}
