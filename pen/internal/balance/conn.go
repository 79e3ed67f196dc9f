package balance

import (
	"net/netip"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// Conn is one client connection's dealings with the table: which server
// it was first given, which one it is trying now, and what it counts
// against.
//
// Ownership: a Conn belongs to one goroutine at a time, the one that
// serves the connection (the proxy's loop); its methods must not be
// called concurrently. Fields that the table also reads or writes (the
// client slot's server, a server's count going up) change only under
// Table.mu; target and cfg change only in the owner's calls, so Sent,
// Received, ServerHost, Connected and Close use them without the lock.
//
// The lock is taken once per connection, by Place (or by Open and First),
// to choose the server; Connected and Close are atomic operations on the
// server's counters.
type Conn struct {
	t         *Table
	client    int // client table slot; -1 for an idler
	cl        *client
	addr      netip.AddrPort
	initial   int
	cur       int            // Pen's conns[].server: the server tried last
	target    *Server        // the server this connection counts against
	cfg       *config.Server // target's configuration when it was chosen (never written)
	emergency bool           // the emergency server has been tried
	done      bool           // nothing left to try
	reason    Reason
}

// Open registers a new client connection (Pen's store_client). addr is
// the client's address and port; the zero AddrPort stands for a unix
// socket client.
func (t *Table) Open(addr netip.AddrPort) *Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.open(addr)
}

func (t *Table) open(addr netip.AddrPort) *Conn {
	a := addr.Addr().Unmap()
	addr = netip.AddrPortFrom(a, addr.Port())
	i := t.storeClient(a)
	return &Conn{t: t, client: i, cl: t.clients[i], addr: addr, initial: NoServer, cur: NoServer}
}

// Place is Open followed by First under one taking of the lock: the
// per-connection work of the event loops.
func (t *Table) Place(addr netip.AddrPort) (*Conn, Target, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.open(addr)
	tg, ok := c.first()
	return c, tg, ok
}

// OpenIdler registers an upstream connection with no client (Pen's
// idlers): it is placed by round-robin with failover.
func (t *Table) OpenIdler() *Conn {
	return &Conn{t: t, client: -1, initial: NoServer, cur: NoServer}
}

// Client is the client table slot of the connection (-1 for an idler).
func (c *Conn) Client() int { return c.client }

// Server is the index of the server the connection is using or trying,
// as the table numbers it now (a change of configuration may have moved
// the slot).
func (c *Conn) Server() int {
	if c.target == nil {
		return NoServer
	}
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	return c.target.Index
}

// ServerHost is the address of the server the connection is using, as it
// was configured when the connection chose it, or "0.0.0.0" (Pen's word
// in the request log) when it has none.
func (c *Conn) ServerHost() string {
	if c.target == nil {
		return "0.0.0.0"
	}
	return c.cfg.Host.String()
}

// Reason says why First or Next found nothing.
func (c *Conn) Reason() Reason { return c.reason }

// First chooses the server for the connection (Pen's initial_server
// followed by try_server, and failover when that server cannot take the
// connection). ok is false when the connection must be closed; Reason
// says why.
func (c *Conn) First() (Target, bool) {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	return c.first()
}

func (c *Conn) first() (Target, bool) {
	t := c.t
	c.initial = t.initial(c)
	if c.initial == NoServer && c.reason == ReasonACL {
		c.done = true
		return Target{}, false
	}
	c.cur = c.initial
	if t.try(c, c.initial) {
		return Target{c.cur, *c.cfg}, true
	}
	return c.failover()
}

// Failed reports that connecting to the current server failed (at once,
// asynchronously or by timeout): the server is blacklisted. Call Next for
// another one.
func (c *Conn) Failed() {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := c.target; s != nil {
		s.status.Store(t.unix())
		s.failures.Add(1)
		s.release()
		c.target = nil
	}
	t.epoch.Add(1)
}

// Usable reports whether the connection's server is still in the table
// and not blacklisted.
func (c *Conn) Usable() bool {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	s := c.target
	return s != nil && t.server(s.Index) == s && t.available(s)
}

// Next chooses another server after Failed (Pen's failover_server). ok is
// false when there is none and the connection must be closed.
func (c *Conn) Next() (Target, bool) {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	return c.failover()
}

// Connected reports that the connection to the current server is up: a
// blacklisted server is reinstated (as in Pen). No lock: the status is
// written only when it changes, so that loops on several cores do not
// write the same memory for every connection.
func (c *Conn) Connected() {
	if s := c.target; s != nil {
		if s.status.Load() != 0 {
			s.status.Store(0)
		}
		s.total.Add(1)
	}
}

// Close releases the connection's place on its server. No lock.
func (c *Conn) Close() {
	if s := c.target; s != nil {
		s.release()
		c.target = nil
	}
	c.done = true
}

// Sent counts n bytes read from the client and sent to the server.
func (c *Conn) Sent(n int) {
	if s := c.target; s != nil {
		s.sent.Add(uint64(n))
	}
	if c.cl != nil {
		c.cl.received.Add(uint64(n))
	}
}

// Received counts n bytes read from the server and sent to the client.
func (c *Conn) Received(n int) {
	if s := c.target; s != nil {
		s.received.Add(uint64(n))
	}
	if c.cl != nil {
		c.cl.sent.Add(uint64(n))
	}
}

// initial is Pen's initial_server.
func (t *Table) initial(c *Conn) int {
	if c.client >= 0 && !t.acls[t.clientACL].Match(c.addr.Addr(), t.country) {
		t.aclDenied[t.clientACL].Add(1)
		if t.abuse == nil {
			c.reason = ReasonACL
			return NoServer
		}
		return AbuseServer
	}
	if c.client < 0 {
		return t.byRoundRobin()
	}
	if !t.roundRobin {
		if s := c.cl.server; s != NoServer && s != EmergencyServer && s != AbuseServer {
			return s
		}
	}
	switch {
	case t.prio:
		return t.byPrio()
	case t.weight:
		return t.byWeight()
	case t.hash:
		return hashIndex(c.addr, len(t.servers), t.roundRobin)
	}
	return t.byRoundRobin()
}

// try is the checking half of Pen's try_server: whether server i may take
// the connection. On success the connection counts against it and the
// client is tracked to it; connecting is the caller's job.
func (t *Table) try(c *Conn, i int) bool {
	s := t.server(i)
	if s == nil || s.Cfg.Unused() || s.Cfg.Drain || t.blacklisted(s) { // a draining server takes no new connections
		return false
	}
	sticky := c.cl != nil && c.cl.server == i
	if n := int(s.conns.Load()); s.Cfg.Max != 0 && n >= s.Cfg.Max && (!sticky || n >= s.Cfg.Hard) {
		return false
	}
	if c.client >= 0 && !t.acls[s.Cfg.ACL].Match(c.addr.Addr(), t.country) {
		t.aclDenied[s.Cfg.ACL].Add(1)
		return false
	}
	s.conns.Add(1)
	c.target, c.cfg = s, s.pub
	c.cur = i
	if c.cl != nil {
		c.cl.server = i
	}
	t.current = i
	return true
}

// failover is Pen's failover_server, resumable: each call continues the
// walk from the server tried last up to the initial one, then tries the
// emergency server once.
func (c *Conn) failover() (Target, bool) {
	t := c.t
	if c.done || t.stubborn || c.cur == AbuseServer || c.cur == EmergencyServer {
		return c.give()
	}
	n := len(t.servers)
	if n > 1 && c.cur != NoServer && c.initial != NoServer {
		for {
			next := (c.cur + 1) % n
			c.cur = next
			if t.try(c, next) {
				return Target{next, *c.cfg}, true
			}
			if next == c.initial%n {
				break
			}
		}
	}
	if !c.emergency {
		c.emergency = true
		c.cur = EmergencyServer
		if t.try(c, EmergencyServer) {
			return Target{EmergencyServer, *c.cfg}, true
		}
	}
	return c.give()
}

func (c *Conn) give() (Target, bool) {
	c.done = true
	if c.reason == 0 {
		c.reason = ReasonNone
	}
	return Target{}, false
}
