// Package balance implements Pen's server selection: the server table with
// connection counts and blacklisting, the client table that remembers which
// server each client used, and the choice of a server for a new connection
// and of the next one when a connect fails (tracking, round-robin, hash,
// weight, prio, stubborn, emergency and abuse servers, server ACLs).
//
// The algorithms follow Pen 0.35.0 step by step, including its indexing
// (round-robin starts at server 1, the hash reads the address in host byte
// order), except where Pen has a bug: a client denied by client_acl with no
// abuse server is refused rather than sent to the emergency server, an
// expired client entry loses its server affinity, weight mode with every
// weight 0 falls back to least connections, and connection counts include
// connects in progress so that limits hold while connects are pending.
package balance

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pen-lb/pen-appliance/pen/acl"
	"github.com/pen-lb/pen-appliance/pen/config"
)

// Server indices with a special meaning, as in Pen.
const (
	NoServer        = config.NoServer
	AbuseServer     = config.AbuseServer
	EmergencyServer = config.EmergencyServer
)

// Server is the running state of one server slot. It lives as long as
// the slot keeps its identity, across configuration changes.
//
// Ownership: Index, Cfg and pub belong to the Table and are read and
// written only under Table.mu (Configure rewrites Index and Cfg in place
// while connections use the server). The data path never reads them: it
// gets a copy of the configuration in Target, and a Conn keeps pub, a copy
// that is never written once made (Configure makes a new one), so its
// owner may read it without the lock.
//
// conns and status are atomic so that the event loops of every core can
// end connections and report them connected without the lock; they are
// increased (a new connection) and set (blacklisting) only under
// Table.mu, so a decision taken under the lock (max, hard, weight) sees a
// count that can only have fallen since. The byte and event counters are
// atomic too: the data path adds to them without the lock, reports read
// them.
type Server struct {
	Index int // slot, or EmergencyServer / AbuseServer; under Table.mu
	Cfg   config.Server
	pub   *config.Server // a copy of Cfg, never written; replaced with Cfg

	conns    atomic.Int64 // connections now
	status   atomic.Int64 // Pen's status: unix time of the last failure, 0 if none
	sent     atomic.Uint64
	received atomic.Uint64
	total    atomic.Uint64
	failures atomic.Uint64
}

// Target is where a connection should go: the server's slot and a copy of
// its configuration taken when it was chosen, which later changes to the
// table do not touch.
type Target struct {
	Index int
	Cfg   config.Server
}

// client is one slot of the client table.
type client struct {
	addr     netip.Addr // invalid = unix-socket client
	last     int64      // unix seconds; 0 = free slot
	server   int
	connects int64
	sent     atomic.Uint64 // to the client (Pen's csx)
	received atomic.Uint64 // from the client (crx)
}

// Reason says why a connection got no server.
type Reason uint8

const (
	_          Reason = iota
	ReasonACL         // denied by client_acl and no abuse server
	ReasonNone        // no server could take it
)

func (r Reason) String() string {
	switch r {
	case ReasonACL:
		return "acl"
	case ReasonNone:
		return "no_server"
	}
	return "unknown"
}

// Table is the balancer. It is safe for concurrent use: every field below
// mu is guarded by it, except the atomic counters (aclDenied, epoch) and
// now, which is set before the table is used.
type Table struct {
	mu        sync.Mutex
	servers   []*Server
	emergency *Server
	abuse     *Server
	clients   []*client          // Pen's client table, in slot order
	byAddr    map[netip.Addr]int // the slot of each client in it
	heaps     clientHeaps        // its slots by age, and the free ones
	rrLast    int
	current   int

	hash, roundRobin, stubborn, weight, prio bool
	blacklist, tracking                      int64
	clientACL                                int
	acls                                     [acl.Lists]acl.List
	country                                  acl.CountryFunc

	aclDenied [acl.Lists]atomic.Uint64
	epoch     atomic.Uint64 // bumped whenever a server may have become unusable

	now func() time.Time
}

// New returns an empty table with Pen's defaults; call Configure, which
// makes the client table clients_max slots long (-c sets the exact size
// at start-up, as in Pen; it grows afterwards).
func New() *Table { return newTable(0) }

// newTable returns a table with a client table of n slots.
func newTable(n int) *Table {
	t := &Table{byAddr: map[netip.Addr]int{}, now: time.Now, blacklist: config.DefaultBlacklist}
	t.heaps.used.less = func(a, b int32) bool {
		la, lb := t.clients[a].last, t.clients[b].last
		return la < lb || la == lb && a < b
	}
	t.heaps.free.less = func(a, b int32) bool { return a < b }
	t.growClients(n)
	return t
}

// SetClock replaces the clock (tests).
func (t *Table) SetClock(now func() time.Time) { t.now = now }

// SetCountry sets the country lookup used by country ACL entries.
func (t *Table) SetCountry(f acl.CountryFunc) {
	t.mu.Lock()
	t.country = f
	t.mu.Unlock()
}

func (t *Table) unix() int64 { return t.now().Unix() }

// Configure makes the table follow c. Server slots keep their running
// state when the configuration keeps their identity (config.Server.ID).
func (t *Table) Configure(c *config.Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.epoch.Add(1)
	old := map[uint64]*Server{}
	for _, s := range t.servers {
		if s.Cfg.ID() != 0 {
			old[s.Cfg.ID()] = s
		}
	}
	servers := make([]*Server, len(c.Servers))
	for i, cs := range c.Servers {
		var s *Server
		if cs.ID() != 0 {
			s = old[cs.ID()]
		} else if i < len(t.servers) && t.servers[i].Cfg.ID() == 0 {
			s = t.servers[i]
		}
		if s == nil {
			s = &Server{}
		}
		s.set(i, cs)
		servers[i] = s
	}
	if len(servers) != len(t.servers) {
		// Slots moved: client affinities by index would now point at
		// other servers, so remap them by identity.
		newIndex := map[*Server]int{}
		for i, s := range servers {
			newIndex[s] = i
		}
		for _, cl := range t.clients {
			if cl.server >= 0 {
				if cl.server < len(t.servers) {
					if ni, ok := newIndex[t.servers[cl.server]]; ok {
						cl.server = ni
						continue
					}
				}
				cl.server = NoServer
			}
		}
	}
	t.servers = servers
	t.emergency = special(t.emergency, c.Emergency, EmergencyServer)
	t.abuse = special(t.abuse, c.Abuse, AbuseServer)
	t.hash, t.roundRobin, t.stubborn, t.weight, t.prio = c.Hash, c.RoundRobin, c.Stubborn, c.Weight, c.Prio
	t.blacklist, t.tracking = int64(c.Blacklist), int64(c.Tracking)
	t.clientACL = c.ClientACL
	t.acls = c.ACLs
	t.growClients(c.ClientsMax)
}

func special(cur *Server, cs *config.Server, idx int) *Server {
	if cs == nil {
		return nil
	}
	if cur == nil || (cur.Cfg.ID() != cs.ID()) {
		cur = &Server{}
	}
	cur.set(idx, *cs)
	return cur
}

// set gives the server its slot and configuration. Under Table.mu.
func (s *Server) set(index int, cfg config.Server) {
	pub := cfg
	s.Index, s.Cfg, s.pub = index, cfg, &pub
}

// ServerStates reports the server slots for the servers command.
func (t *Table) ServerStates() []config.ServerState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]config.ServerState, len(t.servers))
	for i, s := range t.servers {
		out[i] = t.state(s)
	}
	return out
}

// SpecialStates reports the emergency and abuse servers (nil when unset).
func (t *Table) SpecialStates() (emergency, abuse *config.ServerState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.emergency != nil {
		s := t.state(t.emergency)
		emergency = &s
	}
	if t.abuse != nil {
		s := t.state(t.abuse)
		abuse = &s
	}
	return
}

func (t *Table) state(s *Server) config.ServerState {
	st := config.ServerState{
		Conns:    int(s.conns.Load()),
		Sent:     s.sent.Load(),
		Received: s.received.Load(),
		Total:    s.total.Load(),
		Failures: s.failures.Load(),
	}
	if status := s.status.Load(); status != 0 {
		st.Failed = time.Unix(status, 0)
		until := status + t.blacklist
		if until > t.unix() {
			st.Until = time.Unix(until, 0)
		}
	}
	return st
}

// Blacklist blacklists server slot i for d, as "server N blacklist T"
// does: d = 0 reinstates it.
func (t *Table) Blacklist(i int, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i < 0 || i >= len(t.servers) {
		return
	}
	t.servers[i].status.Store(t.unix() + int64(d/time.Second) - t.blacklist)
	t.epoch.Add(1)
}

// Epoch changes whenever a server may have become unusable (blacklisted,
// removed, reconfigured), so that long-lived UDP flows know when to check
// their server with Conn.Usable.
func (t *Table) Epoch() uint64 { return t.epoch.Load() }

// Current is the last server a client was sent to.
func (t *Table) Current() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}

// ACLDenied reports how many clients ACL n has refused.
func (t *Table) ACLDenied(n int) uint64 { return t.aclDenied[n].Load() }

// TrackedClients is the number of used client table slots.
func (t *Table) TrackedClients() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, c := range t.clients {
		if c.last != 0 {
			n++
		}
	}
	return n
}

// ClientStates reports the used slots of the client table.
func (t *Table) ClientStates() []config.ClientState {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []config.ClientState
	for i, c := range t.clients {
		if c.last == 0 {
			continue
		}
		out = append(out, config.ClientState{
			Slot: i, Addr: c.addr, Last: time.Unix(c.last, 0), Server: c.server,
			Connects: c.connects, Sent: c.sent.Load(), Received: c.received.Load(),
		})
	}
	return out
}

func (t *Table) available(s *Server) bool {
	return !s.Cfg.Unused() && !s.Cfg.Drain && !t.blacklisted(s)
}

func (t *Table) blacklisted(s *Server) bool {
	status := s.status.Load()
	return status != 0 && t.unix()-status < t.blacklist
}

// hashIndex is Pen's pen_hash: the IPv4 address read in host (little-
// endian) byte order, with -r the port as stored in sin_port XORed in,
// modulo the number of server slots; IPv6 uses the last byte.
func hashIndex(a netip.AddrPort, n int, withPort bool) int {
	if n == 0 {
		n = 1
	}
	ip := a.Addr()
	switch {
	case ip.Is4():
		b := ip.As4()
		h := binary.LittleEndian.Uint32(b[:])
		if withPort {
			h ^= uint32(bits.ReverseBytes16(a.Port()))
		}
		return int(h % uint32(n))
	case ip.Is6():
		b := ip.As16()
		return int(b[15]) % n
	}
	return 0
}

// byRoundRobin is Pen's server_by_roundrobin: the next available server
// after the last one chosen, starting at server 1.
func (t *Table) byRoundRobin() int {
	n := len(t.servers)
	if n == 0 {
		return NoServer
	}
	start := t.rrLast % n
	i := start
	for {
		i = (i + 1) % n
		if t.available(t.servers[i]) {
			t.rrLast = i
			return i
		}
		if i == start {
			return NoServer
		}
	}
}

func (t *Table) byPrio() int {
	best := NoServer
	for i, s := range t.servers {
		if !t.available(s) {
			continue
		}
		if best == NoServer || s.Cfg.Prio < t.servers[best].Cfg.Prio {
			best = i
		}
	}
	return best
}

func (t *Table) byWeight() int {
	best, bestLoad := NoServer, 0
	for pass := 0; pass < 2 && best == NoServer; pass++ {
		for i, s := range t.servers {
			if !t.available(s) {
				continue
			}
			w := s.Cfg.Weight
			if w == 0 {
				if pass == 0 {
					continue
				}
				w = 1 // every weight is 0: least connections
			}
			load := 256 * int(s.conns.Load()) / w
			if best == NoServer || load < bestLoad {
				best, bestLoad = i, load
			}
		}
	}
	return best
}

func (t *Table) server(i int) *Server {
	switch {
	case i >= 0 && i < len(t.servers):
		return t.servers[i]
	case i == EmergencyServer:
		return t.emergency
	case i == AbuseServer:
		return t.abuse
	}
	return nil
}

// release takes one connection off s's count, never below 0.
func (s *Server) release() {
	for {
		n := s.conns.Load()
		if n <= 0 || s.conns.CompareAndSwap(n, n-1) {
			return
		}
	}
}
