package webui

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// MaxConns bounds the connections the admin UI holds open, on all its
// listeners together. Every connection is a descriptor that pen's clients
// and servers need too: without a bound, idle connections to the admin
// port (20,000 of them, from anyone, before any login) would use up the
// descriptors and stop pen accepting clients. 64 is ample for a few
// browsers (about 6 connections each) and a Prometheus server.
const MaxConns = 64

// connLimit keeps the admin connections within max. A connection that
// arrives when all max are open takes the place of an idle one (it has no
// request in progress: just accepted, or kept alive between requests),
// chosen from the client address that holds the most connections, the
// longest idle first, so that one client flooding the port only pushes
// out its own connections. When every connection is busy with a request,
// the new one is closed at once.
type connLimit struct {
	max int

	mu      sync.Mutex // guards open, perAddr and the fields of every limitedConn marked so
	open    map[*limitedConn]struct{}
	perAddr map[netip.Addr]int // open connections per client address (invalid: unix socket)
	// Connections admitted, and closed at once because all were busy:
	// together, every connection accepted (tests wait for them).
	accepted, refused uint64
}

func newConnLimit(max int) *connLimit {
	return &connLimit{max: max, open: map[*limitedConn]struct{}{}, perAddr: map[netip.Addr]int{}}
}

// limitedConn is an admitted connection; closing it gives its place back.
type limitedConn struct {
	net.Conn
	lim  *connLimit
	addr netip.Addr

	// Guarded by lim.mu.
	busy  bool      // a request is being read or answered
	since time.Time // when it last became idle
	gone  bool      // closed or evicted: no longer counted
}

func (c *limitedConn) Close() error {
	c.lim.forget(c)
	return c.Conn.Close()
}

func remoteAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// admit counts c in, making room if need be; it returns nil if c was
// closed instead.
func (l *connLimit) admit(c net.Conn) *limitedConn {
	lc := &limitedConn{Conn: c, lim: l, addr: remoteAddr(c), since: time.Now()}
	l.mu.Lock()
	var victim *limitedConn
	if len(l.open) >= l.max {
		victim = l.victimLocked()
		if victim == nil {
			l.refused++
			l.mu.Unlock()
			c.Close()
			return nil
		}
		l.forgetLocked(victim)
	}
	l.open[lc] = struct{}{}
	l.perAddr[lc.addr]++
	l.accepted++
	l.mu.Unlock()
	if victim != nil {
		// Its server goroutine sees the error and ends; the descriptor
		// is free now.
		victim.Conn.Close()
	}
	return lc
}

// victimLocked picks the idle connection to close: of the client address
// with the most connections, the one idle longest.
func (l *connLimit) victimLocked() *limitedConn {
	var v *limitedConn
	for c := range l.open {
		if c.busy {
			continue
		}
		if v == nil || l.perAddr[c.addr] > l.perAddr[v.addr] ||
			(l.perAddr[c.addr] == l.perAddr[v.addr] && c.since.Before(v.since)) {
			v = c
		}
	}
	return v
}

func (l *connLimit) forget(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(c)
}

func (l *connLimit) forgetLocked(c *limitedConn) {
	if c.gone {
		return
	}
	c.gone = true
	delete(l.open, c)
	if l.perAddr[c.addr]--; l.perAddr[c.addr] <= 0 {
		delete(l.perAddr, c.addr)
	}
}

// connState is the http.Server's ConnState hook: it tells busy
// connections from idle ones.
func (l *connLimit) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateActive:
		lc.busy = true
	case http.StateIdle:
		lc.busy, lc.since = false, time.Now()
	case http.StateHijacked, http.StateClosed:
		l.forgetLocked(lc)
	}
}

// count is the number of connections counted in.
func (l *connLimit) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

// limitListener admits the connections of a listener through a connLimit.
//
// Accept errors go back to http.Server.Serve, which sleeps (5 ms doubling
// up to 1 s) after a temporary error such as EMFILE or ENFILE instead of
// trying again at once; this wrapper adds no loop of its own on errors.
type limitListener struct {
	net.Listener
	lim *connLimit
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.lim.admit(c); lc != nil {
			return lc, nil
		}
	}
}
