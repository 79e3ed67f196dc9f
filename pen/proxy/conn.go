package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
	"github.com/pen-lb/pen-appliance/pen/internal/httpstream"
	"github.com/pen-lb/pen-appliance/pen/splice"
)

// A connection's life: a slot in the table, a client placed on a server
// (connect, fail-over, source binding), the events of its sockets, and
// the end of it.

// Connection states, Pen's bits.
const (
	stateUnused     = config.StateUnused
	stateInProgress = config.StateInProgress
	stateConnected  = config.StateConnected
	stateClosedUp   = config.StateClosedUp   // the server sent EOF
	stateClosedDown = config.StateClosedDown // the client sent EOF
	stateHalfDead   = config.StateHalfDead   // UDP: no traffic since the last sweep
)

// conn flags.
const (
	fReadDown   uint32 = 1 << iota // client socket may have data
	fReadUp                        // server socket may have data
	fWriteDown                     // client socket may take data
	fWriteUp                       // server socket may take data
	fShutUp                        // shutdown(SHUT_WR) sent to the server
	fShutDown                      // shutdown(SHUT_WR) sent to the client
	fBuffered                      // client->server data goes through user space
	fQueued                        // on the ready list
	fIdler                         // upstream connection with no client
	fDummy                         // answered by the built-in dummy server
	fUDP                           // a UDP flow
	fTLS                           // the client speaks TLS: read and written through c.tc once its handshake is done (tls.go)
	fUnixUp                        // the server is a unix socket
	fHupDown                       // the client has shut down its side
	fHupUp                         // the server has shut down its side
	fSpliceUp                      // client->server moves by splice (bulk)
	fSpliceDown                    // server->client moves by splice (bulk)
	fEarly                         // the upstream socket delays ACKs until the first write
	fNoRelay                       // not to be handed to the kernel (again)
	fFlushing                      // on the flushing list: a shutdown waits for the kernel relay
	fNotified                      // TLS: close_notify sent to the client
	fFinDown                       // the client's FIN has arrived, with no error
	fFinUp                         // the server's FIN has arrived, with no error
	fUrgent                        // a peer sent TCP urgent data: reads may stop short of the end
)

// watched is what pen asks epoll about a connection's sockets: EPOLLPRI
// only so that urgent data (rare, and never forwarded as such) is noticed,
// since a read stops short at its mark (see copyBuffered).
const watched = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLPRI | unix.EPOLLET

// conn is one slot of the connection table. The loop goroutine owns it
// and everything it holds; a TLS front knows only its slot and gen.
type conn struct {
	slot    int32
	gen     uint32
	down    int32 // client socket, -1 if none
	up      int32 // server socket, -1 if none
	state   uint8
	fl      uint32
	t       int64 // last activity, unix seconds
	start   int64 // connect started, unix milliseconds
	sess    *balance.Conn
	q       [2]*queued // [sideDown]: waiting for the client; [sideUp]: for the server
	rw      *httpstream.Rewriter
	peer    netip.AddrPort // client address; zero for a unix client
	local   netip.Addr     // UDP: the address the client sent to
	tls     *tlsFront      // the goroutine doing this client's TLS handshake, or nil
	tc      *tls.Conn      // the TLS client, once its handshake is done
	epoch   uint64         // UDP: balancer epoch when the flow's server was last checked
	logged  bool           // the request log has a line for this connection
	turns   uint8          // reads from the client, counted up to relayAfter
	spTries uint8          // attempts to splice the connection (kernel.go)
	early   int32          // bytes read from the client before a server was connected, not yet counted (countEarly)
	kr      *relayState    // the kernel relays the connection (kernel.go)
	sp      *splice.Pair   // the kernel splices the connection's segments (kernel.go)
	uk      *ukFlow        // the kernel carries the UDP flow (udpkernel.go)
}

func (c *conn) report() config.ConnState {
	st := config.ConnState{Slot: int(c.slot), State: int(c.state), DownFD: int(c.down), UpFD: int(c.up), Client: 0, Server: 0, Pend: 0}
	if c.state == stateUnused {
		st.DownFD, st.UpFD = -1, -1
		return st
	}
	if c.sess != nil {
		st.Client, st.Server = c.sess.Client(), c.sess.Server()
	}
	if c.q[sideDown] != nil {
		st.PendingDown = c.q[sideDown].len()
	}
	if c.q[sideUp] != nil {
		st.PendingUp = c.q[sideUp].len()
	}
	return st
}

// newConn takes a free slot, or returns nil when the table is full.
func (l *Loop) newConn() *conn {
	slot := l.slots.take(len(l.conns))
	if slot < 0 {
		return nil
	}
	c := l.conns[slot]
	if c == nil {
		c = &conn{slot: slot}
		l.conns[slot] = c
	}
	gen := c.gen + 1
	*c = conn{slot: slot, gen: gen, down: -1, up: -1, t: l.now, state: stateConnected}
	l.active.Add(1)
	return c
}

// addClient places a newly accepted client (Pen's add_client).
func (l *Loop) addClient(fd int, peer netip.AddrPort) {
	if !l.roomForClient() {
		l.refusedFull.Add(1)
		unix.Close(fd)
		return
	}
	c := l.newConn()
	if c == nil {
		l.refusedFull.Add(1)
		l.logFull("Connection table full (%d slots), can't store connection. Try restarting with -x %d", len(l.conns), 2*len(l.conns))
		unix.Close(fd)
		return
	}
	c.peer = peer
	c.fl |= fWriteDown
	if l.set.TLS != nil && !l.set.Dummy {
		// The loop serves the client once a front has done its
		// handshake (startTLS, then handOver and serveClient).
		l.startTLS(c, fd)
		return
	}
	c.down = int32(fd)
	l.setFD(fd, c.slot)
	l.serveClient(c)
}

// serveClient starts serving a client whose socket is c.down: it watches
// the socket, chooses a server and connects to it.
func (l *Loop) serveClient(c *conn) {
	fd := int(c.down)
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{
		Events: watched, Fd: c.slot, Pad: int32(c.gen << 1)}); err != nil {
		// Never watched, the client would never be served.
		l.logFull("epoll_ctl(add client socket): %v; closing the client", err)
		l.closeConn(c)
		return
	}
	if l.set.HTTP || l.set.Dump || l.set.Log != nil {
		c.fl |= fBuffered
		if l.set.HTTP {
			proto := "http"
			if c.fl&fTLS != 0 {
				proto = "https"
			}
			c.rw = l.newRewriter()
			c.rw.Reset(config.ClientName(c.peer.Addr()), proto)
		}
	}
	if l.set.Dummy {
		c.fl |= fDummy
		c.state = stateConnected | stateClosedUp
		return
	}
	var tg balance.Target
	var ok bool
	c.sess, tg, ok = l.tb.Place(c.peer)
	if !ok {
		l.refused(c)
		return
	}
	// Most clients have sent their first bytes by the time they are
	// accepted: take them now, so that they go out with the connect.
	c.fl |= fReadDown
	if _, ok := l.copyBuffered(c, sideUp, fd, -1, fReadDown, fWriteUp, stateClosedDown); !ok {
		l.closeConn(c)
		return
	}
	if !l.connect(c, tg, true) {
		l.refused(c)
	}
}

func (l *Loop) refused(c *conn) {
	if c.fl&fIdler != 0 {
		l.closeConn(c) // no client was refused
		return
	}
	if c.sess.Reason() == balance.ReasonACL {
		l.refusedACL.Add(1)
		l.log.Debugf(1, "initial_server: denied by acl")
	} else {
		l.refusedNone.Add(1)
		l.log.Debugf(1, "No server found for %s, giving up", config.ClientName(c.peer.Addr()))
	}
	l.closeConn(c)
}

// connect starts connecting c to tg (if ok), failing over as long as
// connects fail at once (Pen's try_server and failover_server). It reports
// whether a connect is under way; if not, the caller ends c.
func (l *Loop) connect(c *conn, tg balance.Target, ok bool) bool {
	for ok {
		err := l.dial(c, tg)
		if err == nil {
			return true
		}
		var le localError
		if errors.As(err, &le) {
			// Pen itself is short of something (descriptors, memory):
			// the server is not to blame and another would fail alike.
			if errors.Is(le.err, unix.EMFILE) || errors.Is(le.err, unix.ENFILE) {
				if l.releaseSettling(le.err) {
					continue // the same server again, with descriptors now
				}
				l.outOfDescriptors(le.err)
			} else {
				l.logFull("can't connect client %s to server %d: %v", config.ClientName(c.peer.Addr()), tg.Index, le.err)
			}
			return false
		}
		l.log.Printf("blacklisting server %d because connect error %v", tg.Index, err)
		c.sess.Failed()
		tg, ok = c.sess.Next()
	}
	return false
}

// localError is a failure of pen's own resources, not of the server.
type localError struct{ err error }

func (e localError) Error() string { return e.err.Error() }

// dial opens the upstream socket and starts the connect. It returns an
// error only when the connect failed at once; a localError when pen could
// not even try.
func (l *Loop) dial(c *conn, tg balance.Target) error {
	s := tg.Cfg
	fam := unix.AF_UNIX
	if s.Host.IsUnix() {
		c.fl |= fUnixUp
	} else {
		fam = family(s.Host.IP)
		c.fl &^= fUnixUp
	}
	typ := unix.SOCK_STREAM
	if c.fl&fUDP != 0 {
		typ = unix.SOCK_DGRAM
	}
	fd, err := sysSocket(fam, typ)
	if err != nil {
		return localError{fmt.Errorf("socket: %w", err)}
	}
	if fam != unix.AF_UNIX && typ == unix.SOCK_STREAM {
		// The options the configuration asks for; on a fresh TCP socket
		// they cannot fail short of a kernel without them, but if they
		// do the connection still works, so say so and go on.
		if l.set.NoDelay {
			l.setOpt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, "TCP_NODELAY")
		}
		if l.set.Keepalive {
			l.setOpt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE")
		}
	}
	early := c.q[sideUp] != nil && typ == unix.SOCK_STREAM && fam != unix.AF_UNIX
	if early {
		// Data goes out as soon as the connect completes: let the
		// handshake's last ACK ride on it instead of a packet of its own.
		// Quick ACKs come back on after that first write (quickAgain),
		// or the server's later segments would wait for delayed ACKs.
		// TCP_QUICKACK is a hint: if the kernel refuses it, only that
		// one ACK travels alone, so the result is not checked.
		sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
		c.fl |= fEarly
	}
	if fam != unix.AF_UNIX {
		l.bindSource(c, fd, fam)
	} else if typ == unix.SOCK_DGRAM {
		// A unix datagram server can only answer a bound socket.
		if err := unix.Bind(fd, &unix.SockaddrUnix{}); err != nil {
			unix.Close(fd)
			return localError{fmt.Errorf("bind for a unix datagram server: %w", err)}
		}
	}
	c.start = l.nowMs
	if fam == unix.AF_UNIX {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: s.Host.Path})
	} else {
		err = sysConnect(fd, fam, s.Addr())
	}
	switch err {
	case nil:
		if err := l.attachUp(c, fd); err != nil {
			return err
		}
		l.connected(c)
		return nil
	case unix.EINPROGRESS:
		if early {
			// A connect to this host is often complete already: send
			// what the client sent without waiting for the event.
			q := c.q[sideUp]
			before := q.len()
			done, errno := q.flush(fd)
			if q.len() < before {
				l.countEarly(c) // the server took bytes: it is connected
			}
			switch {
			case errno != 0 && errno != unix.EAGAIN:
				unix.Close(fd)
				return errno
			case done:
				q.release(l)
				c.q[sideUp] = nil
				quickAgain(c, fd)
			}
		}
		if err := l.attachUp(c, fd); err != nil {
			return err
		}
		c.state = stateInProgress
		l.pending = append(l.pending, c.slot)
		l.pendingN.Add(1)
		return nil
	}
	unix.Close(fd)
	return err
}

// bindSource binds the upstream socket to the source address, or to the
// client's address in transparent mode (Pen's spoof_bind).
func (l *Loop) bindSource(c *conn, fd, fam int) {
	switch {
	case l.set.Source.IsValid():
		src := l.set.Source
		if family(src) != fam {
			l.log.Debugf(1, "source %s does not fit the server's address family", src)
			return
		}
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(src, 0), fam)); err != nil {
			l.log.Printf("bind: %v", err)
		}
	case l.set.Transparent && c.peer.Addr().IsValid():
		cl := c.peer.Addr()
		if family(cl) != fam {
			l.log.Printf("No transparency for incompatible families")
			return
		}
		if fam == unix.AF_INET {
			if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1); err != nil {
				l.log.Printf("setsockopt: %v", err)
				return
			}
		} else if err := unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1); err != nil {
			l.log.Printf("setsockopt: %v", err)
			return
		}
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(cl, 0), fam)); err != nil {
			l.log.Printf("bind: %v", err)
		}
	}
}

// attachUp makes fd the connection's server socket and watches it. If it
// cannot be watched, nothing would ever move on it: fd is closed and the
// error (a localError) returned.
func (l *Loop) attachUp(c *conn, fd int) error {
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: watched, Fd: c.slot, Pad: int32(c.gen<<1 | sideUp)}); err != nil {
		unix.Close(fd)
		return localError{fmt.Errorf("epoll_ctl(add server socket): %w", err)}
	}
	c.up = int32(fd)
	l.setFD(fd, c.slot)
	return nil
}

// setOpt sets a socket option that the configuration asks for and logs
// when the kernel refuses it.
func (l *Loop) setOpt(fd, level, opt, value int, name string) {
	if err := sysSetsockoptInt(fd, level, opt, value); err != nil {
		l.logFull("setsockopt(%s): %v", name, err)
	}
}

func (l *Loop) dropPending(c *conn) {
	for i, s := range l.pending {
		if s == c.slot {
			l.pending = append(l.pending[:i], l.pending[i+1:]...)
			l.pendingN.Add(-1)
			return
		}
	}
}

func (l *Loop) connected(c *conn) {
	if c.state == stateInProgress {
		l.dropPending(c)
	}
	c.state = stateConnected
	c.fl |= fWriteUp
	c.t = l.now
	c.sess.Connected()
	l.countEarly(c)
	l.work(c)
	if c.state != stateUnused && c.fl&fEarly != 0 {
		quickAgain(c, int(c.up))
	}
}

// countEarly counts the bytes the client sent before a server was
// connected against the server that gets them: the one connected now, not
// one whose connect failed before (Pen reads a client only once its
// server is connected, so it counts them there too).
func (l *Loop) countEarly(c *conn) {
	if c.early > 0 {
		c.sess.Sent(int(c.early))
		c.early = 0
	}
}

// quickAgain turns quick ACKs back on once the first data has carried
// the handshake's ACK.
func quickAgain(c *conn, fd int) {
	c.fl &^= fEarly
	// A hint, as in dial: refused, later ACKs are merely delayed.
	sysSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
}

// connectFailed handles a connect that failed after EINPROGRESS or timed
// out: blacklist and fail over (Pen's check_if_connected / check_if_timeout).
func (l *Loop) connectFailed(c *conn) {
	l.dropPending(c)
	l.dropUp(c)
	c.state = stateConnected
	c.sess.Failed()
	if tg, ok := c.sess.Next(); !l.connect(c, tg, ok) {
		l.refused(c)
	}
}

func (l *Loop) dropUp(c *conn) {
	l.ukRemove(c)
	if c.up >= 0 {
		l.clearFD(int(c.up))
		sysClose(int(c.up))
		c.up = -1
	}
	c.fl &^= fReadUp | fWriteUp | fHupUp | fFinUp
}

// event handles one epoll event for a connection.
func (l *Loop) event(ev *unix.EpollEvent) {
	slot := ev.Fd
	if slot < 0 || int(slot) >= len(l.conns) {
		return
	}
	c := l.conns[slot]
	if c == nil || c.state == stateUnused || uint32(ev.Pad)>>1 != c.gen&0x7fffffff {
		return // stale: the slot was reused
	}
	side := ev.Pad & 1
	e := ev.Events
	c.t = l.now
	if c.fl&fUDP != 0 {
		l.udpEvent(c, e)
		return
	}
	rd := e&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
	wr := e&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0
	// After the peer's FIN no new edge comes: a short read must not be
	// taken to mean that the socket is drained, or the EOF is never read.
	hup := e&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
	// A FIN that came with no error: everything the peer sent is in the
	// socket before it (copyBuffered).
	fin := e&(unix.EPOLLRDHUP|unix.EPOLLERR) == unix.EPOLLRDHUP
	if e&unix.EPOLLPRI != 0 {
		c.fl |= fUrgent
	}
	if side == sideDown {
		if hup {
			c.fl |= fHupDown
		}
		if fin {
			c.fl |= fFinDown
		} else if e&unix.EPOLLERR != 0 {
			c.fl &^= fFinDown
		}
		if rd {
			c.fl |= fReadDown
		}
		if wr {
			c.fl |= fWriteDown
		}
	} else {
		if hup {
			c.fl |= fHupUp
		}
		if fin {
			c.fl |= fFinUp
		} else if e&unix.EPOLLERR != 0 {
			c.fl &^= fFinUp
		}
		if rd {
			c.fl |= fReadUp
		}
		if c.state == stateInProgress {
			// The event that completes a connect may also carry the
			// server's first bytes and even its FIN: keep those flags.
			if e&(unix.EPOLLERR|unix.EPOLLHUP) == 0 && e&unix.EPOLLOUT != 0 {
				l.connected(c) // writable without an error: connected
			} else if wr || rd {
				l.checkConnected(c)
			}
			return
		}
		if wr {
			c.fl |= fWriteUp
		}
	}
	if c.state == stateInProgress {
		return // client data waits until the server is there
	}
	l.work(c)
}

func (l *Loop) checkConnected(c *conn) {
	soerr, err := unix.GetsockoptInt(int(c.up), unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soerr == 0 {
		l.connected(c)
		return
	}
	if err == nil {
		err = syscall.Errno(soerr)
	}
	l.log.Printf("Connect failed: %v", err)
	l.log.Printf("blacklisting server %d because of connect failure", c.sess.Server())
	l.connectFailed(c)
}

// closeConn closes both sockets and frees the slot (Pen's close_conn).
func (l *Loop) closeConn(c *conn) {
	if c.state == stateUnused {
		return
	}
	if c.state == stateInProgress {
		l.dropPending(c)
	}
	if c.tls != nil {
		c.tls.closeFromLoop() // the handshake is under way: it ends
		c.tls = nil
	}
	c.tc = nil
	l.ukRemove(c)
	if c.sp != nil {
		l.spliceEnd(c) // the peers get a FIN unless they ended it; the sockets close silently
	}
	for _, fd := range []int32{c.up, c.down} {
		if fd >= 0 {
			l.clearFD(int(fd))
			sysClose(int(fd))
		}
	}
	if c.fl&fUDP != 0 {
		l.forgetFlow(c)
	}
	if c.fl&fIdler != 0 {
		l.idlers--
	}
	for i, q := range c.q {
		if q != nil {
			q.release(l)
			c.q[i] = nil
		}
	}
	if c.rw != nil {
		l.freeRewriter(c.rw)
		c.rw = nil
	}
	if c.kr != nil {
		l.relayEnd(c)
	}
	if c.sess != nil {
		c.sess.Close()
		c.sess = nil
	}
	c.up, c.down = -1, -1
	c.state = stateUnused
	c.fl = 0
	c.gen++
	l.active.Add(-1)
	l.slots.give(c.slot)
}
