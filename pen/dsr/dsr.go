// Package dsr implements Direct Server Return and the scanner tarpit on
// raw Ethernet frames, as Pen's dsr_if and tarpit_acl do: an AF_PACKET
// socket on one interface answers ARP (or IPv6 neighbour discovery) for
// the virtual address (VIP), the frames sent to the VIP get only their
// Ethernet addresses rewritten and go to the chosen backend, which holds
// the VIP on its loopback and answers the client directly; SYNs to
// tarpitted addresses get a SYN/ACK and nothing more. docs/DSR.md says
// how to set up the network.
//
// The package asks its Pool which servers exist and which are usable (the
// engine adapts pen/balance to it) and knows nothing of the configuration
// syntax. Files: frame.go and frame6.go (Ethernet, IPv4, IPv6, TCP and UDP
// headers, checksums, neighbour discovery), arp.go (ARP answers, backend
// MAC learning), lookup.go (the consistent-hash table), tarpit.go (SYN/ACK
// and rate limit), filter.go (the socket's filter), socket_linux.go
// (batched AF_PACKET I/O with offload state carried across),
// fastpath_linux.go (forwarding in the kernel), stats.go (counters).
package dsr

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/bpf"
)

// Backend is one server as DSR sees it.
type Backend struct {
	Index  int        // the pool's number for it, passed back to Failed
	Addr   netip.Addr // servers of another family than the VIP's are not used
	Weight int        // share of the flows; 0 counts as 1, as in Pen
	Prio   int        // with Servers.Prio, only the lowest value in use takes flows
	Up     bool       // the pool would choose it: configured and not blacklisted
}

// Servers is the pool's view of its servers at one moment.
type Servers struct {
	List      []Backend
	Emergency *Backend // used only when no server in List can take flows
	Prio      bool     // prio mode: the lowest Prio among usable servers wins
}

// Pool is where the servers come from: the engine adapts pen/balance to it.
type Pool interface {
	// Servers returns the servers now. It is called a few times a second.
	Servers() Servers
	// Failed reports that a server did not answer ARP (or neighbour
	// solicitations): it is to be
	// treated as a failed connect is (blacklisted, shown as failed).
	Failed(index int)
}

// Config says what to forward.
type Config struct {
	Interface string     // the interface frames are read from and sent on
	VIP       netip.Addr // the virtual address, IPv4 or IPv6; invalid: tarpit only
	Port      uint16     // the VIP's port; 0 forwards every port
	UDP       bool       // forward UDP (Pen's -U) instead of TCP
	HashPort  bool       // place flows by client address and source port (Pen's -r)
	Pool      Pool
	// Tarpit reports whether an address is to be tarpitted; nil tarpits
	// nothing. The VIP, the interface's own addresses and the servers'
	// are never tarpitted, whatever it says.
	Tarpit func(netip.Addr) bool
	// TarpitNets, when not nil, are IPv4 networks that hold every
	// address Tarpit matches (at most 32): the socket's filter then lets
	// only SYNs to them reach pen. Without them, every SYN addressed to
	// the interface's MAC does, and Tarpit decides.
	TarpitNets []TarpitNet
	// ARPRefresh is how often a known backend MAC is asked again, by
	// ARP or neighbour solicitation (default 5 s, which bounds how long
	// a dead backend keeps its flows: a few seconds more). Three
	// unanswered requests in a row, a second apart, make the backend
	// count as failed.
	ARPRefresh time.Duration
	Logger     *slog.Logger // nil: discard
	// NoFastPath keeps all forwarding in user space, on the AF_PACKET
	// socket, even where the kernel would run the fast path.
	NoFastPath bool
}

// DefaultARPRefresh is how often a known backend MAC is asked again. Pen
// asked every 60 s; a dead backend's flows go nowhere until the next
// request goes unanswered, and one request per server every few seconds
// costs nothing.
const DefaultARPRefresh = 5 * time.Second

// Frames per batch and the size of a receive buffer: the virtio header
// and a GSO super-frame of up to 64 KiB plus its Ethernet header.
const (
	batchSize = 32
	bufSize   = vnetHeaderLen + ethHeaderLen + 65536 + 64
	tickEvery = 200 * time.Millisecond
)

// DSR forwards frames on one interface. Run it with Run; read counters
// with Stats.
type DSR struct {
	cfg    Config
	ifi    *net.Interface
	mac    [6]byte
	ownIP  netip.Addr // the interface's first IPv4 address, or 0.0.0.0
	ownLL  netip.Addr // the interface's IPv6 link-local address, or ::
	own    map[netip.Addr]bool
	conn   *batchConn // frames of every type, or with the fast path those of the VIP's family
	arp    *batchConn // with the fast path, ARP frames; else nil (conn has them)
	fast   *fastPath  // nil: user space forwards the VIP's frames
	log    *slog.Logger
	neigh  *neighbours
	now    func() time.Time
	secret uint64

	table    atomic.Pointer[lookup]
	backends atomic.Pointer[map[netip.Addr]bool] // never tarpitted
	rebuild  chan struct{}

	mu       sync.Mutex // guards counters and sig
	counters map[serverKey]*serverCounters
	sig      []candidateSig

	stats counters
}

type serverKey struct {
	index int
	addr  netip.Addr
}

// target is a server in the lookup table.
type target struct {
	index int
	addr  netip.Addr
	mac   [6]byte
	ctr   *serverCounters
}

type candidateSig struct {
	index, weight int
	addr          netip.Addr
	mac           [6]byte
}

// New opens the interface's AF_PACKET socket with its filter. It needs
// CAP_NET_RAW.
func New(cfg Config) (*DSR, error) {
	if cfg.Pool == nil {
		return nil, errors.New("dsr: no server pool")
	}
	cfg.VIP = cfg.VIP.Unmap()
	if cfg.VIP.IsValid() && (cfg.VIP.IsUnspecified() || cfg.VIP.IsMulticast() || cfg.VIP.IsLinkLocalUnicast()) {
		return nil, fmt.Errorf("dsr: VIP %v cannot be forwarded to", cfg.VIP)
	}
	if !cfg.VIP.IsValid() && cfg.Tarpit == nil {
		return nil, errors.New("dsr: neither a VIP nor a tarpit")
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("dsr interface %q: %w", cfg.Interface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("dsr interface %s has no Ethernet address", ifi.Name)
	}
	var own []netip.Addr
	if addrs, err := ifi.Addrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				own = append(own, p.Addr().Unmap())
			}
		}
	}
	d := newDSR(cfg, ifi.Name, [6]byte(ifi.HardwareAddr), own)
	d.ifi = ifi
	if cfg.VIP.IsValid() && !cfg.NoFastPath {
		if d.fast, err = newFastPath(ifi, cfg, d.mac, d.log); err != nil {
			d.log.Warn("forwarding in user space: the kernel has no fast path", "op", "fastpath", "error", err)
			d.fast = nil
		}
	}
	prog, err := filter(cfg.VIP, cfg.Tarpit != nil, cfg.TarpitNets, d.fast != nil)
	if err == nil {
		err = d.listen(prog)
	}
	if err != nil {
		if d.fast != nil {
			d.fast.Close()
		}
		return nil, err
	}
	return d, nil
}

// ethAllTypes is ETH_P_ALL: a packet socket bound to it gets frames of
// every type.
const ethAllTypes = 0x0003

// listen opens the sockets. Without the fast path one socket takes every
// frame type. With it, the kernel hands a packet socket bound to all
// types (ETH_P_ALL) every frame before the fast path's hook sees it, and
// runs the socket's filter on it, for every forwarded frame; a socket
// bound to one type gets only what the hook passed on. So then pen binds
// one socket to the VIP's family (IPv4 or IPv6) and one to ARP, and the
// forwarded frames reach no socket at all.
func (d *DSR) listen(prog []bpf.RawInstruction) error {
	if d.fast == nil {
		c, err := listen(d.ifi, prog, ethAllTypes, d.cfg.VIP)
		d.conn = c
		return err
	}
	proto := etherTypeIPv4
	if d.cfg.VIP.Is6() {
		proto = etherTypeIPv6
	}
	c, err := listen(d.ifi, prog, proto, d.cfg.VIP)
	if err != nil {
		return err
	}
	a, err := listen(d.ifi, prog, etherTypeARP, d.cfg.VIP)
	if err != nil {
		c.Close()
		return err
	}
	d.conn, d.arp = c, a
	return nil
}

// sockets lists the open sockets.
func (d *DSR) sockets() []*batchConn {
	if d.arp != nil {
		return []*batchConn{d.conn, d.arp}
	}
	return []*batchConn{d.conn}
}

// neighConn is the socket that carries neighbour messages for the VIP's
// family: ARP for IPv4, neighbour discovery (ICMPv6) for IPv6.
func (d *DSR) neighConn() *batchConn {
	if d.arp != nil && !d.cfg.VIP.Is6() {
		return d.arp
	}
	return d.conn
}

// newDSR makes a DSR with no socket: New adds one, tests call handle.
func newDSR(cfg Config, name string, mac [6]byte, own []netip.Addr) *DSR {
	if cfg.ARPRefresh <= 0 {
		cfg.ARPRefresh = DefaultARPRefresh
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &DSR{
		cfg:      cfg,
		mac:      mac,
		ownIP:    netip.IPv4Unspecified(),
		ownLL:    netip.IPv6Unspecified(),
		own:      map[netip.Addr]bool{},
		log:      log.With("iface", name),
		neigh:    newNeighbours(cfg.ARPRefresh),
		now:      time.Now,
		rebuild:  make(chan struct{}, 1),
		counters: map[serverKey]*serverCounters{},
	}
	var seed [8]byte
	rand.Read(seed[:])
	d.secret = binary.LittleEndian.Uint64(seed[:])
	for _, ip := range own {
		d.own[ip] = true
		if ip.Is4() && d.ownIP.IsUnspecified() {
			d.ownIP = ip
		}
		if ip.Is6() && ip.IsLinkLocalUnicast() && d.ownLL.IsUnspecified() {
			d.ownLL = ip.WithZone("")
		}
	}
	empty := map[netip.Addr]bool{}
	d.backends.Store(&empty)
	d.table.Store(&lookup{})
	return d
}

// Run forwards frames until ctx ends or a socket fails, then closes the
// sockets.
func (d *DSR) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.control(ctx)
	}()
	socks := d.sockets()
	errc := make(chan error, len(socks))
	for _, c := range socks {
		go func() { errc <- d.readLoop(c) }()
	}
	var err error
	left := len(socks)
	select {
	case <-ctx.Done():
	case err = <-errc:
		left--
	}
	cancel()
	for _, c := range socks {
		c.Close()
	}
	for range left {
		<-errc // the close ended it
	}
	wg.Wait()
	if d.fast != nil {
		d.fast.Close()
	}
	return err
}

// control keeps the server set, the neighbour table and the lookup table
// in step: every tick, and at once when an ARP reply changed a MAC.
func (d *DSR) control(ctx context.Context) {
	out := newBatch(batchSize, 0)
	const slot = vnetHeaderLen + ndFrameLen // the larger of ARP and ND
	buf := make([]byte, batchSize*slot)
	frame := func(i int) []byte {
		b := buf[i*slot : (i+1)*slot]
		clear(b[:vnetHeaderLen])
		return b
	}
	if d.cfg.VIP.Is4() {
		// Announce the VIP so that neighbours' caches point at us.
		f := frame(0)
		gratuitousARP(f[vnetHeaderLen:], d.mac, d.cfg.VIP)
		d.neighConn().send(out, [][]byte{f[:vnetHeaderLen+arpFrameLen]})
	}
	if d.cfg.VIP.Is6() {
		f := frame(0)
		g := naReply(f[vnetHeaderLen:], d.mac, [6]byte{}, d.cfg.VIP, netip.Addr{})
		d.neighConn().send(out, [][]byte{f[:vnetHeaderLen+len(g)]})
	}
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		now := d.now()
		s := d.cfg.Pool.Servers()
		addrs, all := map[netip.Addr]bool{}, map[netip.Addr]bool{}
		for _, b := range servers(s) {
			all[b.Addr.Unmap()] = true
			if d.family(b.Addr) {
				addrs[b.Addr] = true
			}
		}
		d.backends.Store(&all)
		d.neigh.track(addrs, now)
		ask, failed := d.neigh.due(now)
		var frames [][]byte
		for _, a := range ask {
			if len(frames) == batchSize {
				d.sendARP(out, frames)
				frames = frames[:0]
			}
			f := frame(len(frames))
			if a.Is4() {
				arpRequest(f[vnetHeaderLen:], d.mac, d.ownIP, a)
				frames = append(frames, f[:vnetHeaderLen+arpFrameLen])
			} else {
				r := nsRequest(f[vnetHeaderLen:], d.mac, d.ownLL, a)
				frames = append(frames, f[:vnetHeaderLen+len(r)])
			}
		}
		d.sendARP(out, frames)
		for _, a := range failed {
			for _, b := range servers(s) {
				if b.Addr == a {
					d.log.Warn("server does not answer ARP: failed", "op", "arp", "backend", a, "server", b.Index)
					d.cfg.Pool.Failed(b.Index)
				}
			}
		}
		if len(failed) > 0 {
			s = d.cfg.Pool.Servers()
		}
		d.update(s)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.rebuild:
		}
	}
}

func (d *DSR) sendARP(out *batch, frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	n, failed, _ := d.neighConn().send(out, frames)
	d.stats.arpRequests.Add(uint64(n))
	d.stats.dropped[DropSendError].Add(uint64(failed))
}

// servers lists the pool's servers and its emergency server.
func servers(s Servers) []Backend {
	if s.Emergency == nil {
		return s.List
	}
	return append(slices.Clip(s.List), *s.Emergency)
}

// update rebuilds the lookup table when the usable servers, their
// weights or their MACs changed.
func (d *DSR) update(s Servers) {
	usable := func(b Backend) (candidateSig, bool) {
		if !b.Up || !d.family(b.Addr) {
			return candidateSig{}, false
		}
		mac, ok := d.neigh.mac(b.Addr)
		if !ok {
			return candidateSig{}, false
		}
		return candidateSig{index: b.Index, weight: max(b.Weight, 1), addr: b.Addr, mac: mac}, true
	}
	var sig []candidateSig
	prio := 0
	for _, b := range s.List {
		c, ok := usable(b)
		if !ok {
			continue
		}
		if s.Prio && len(sig) > 0 && b.Prio != prio {
			if b.Prio > prio {
				continue
			}
			sig = sig[:0]
		}
		prio = b.Prio
		sig = append(sig, c)
	}
	if len(sig) == 0 && s.Emergency != nil {
		if c, ok := usable(*s.Emergency); ok {
			sig = append(sig, c)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if slices.Equal(sig, d.sig) && d.sig != nil {
		return
	}
	cands := make([]candidate, len(sig))
	for i, c := range sig {
		k := serverKey{c.index, c.addr}
		ctr := d.counters[k]
		if ctr == nil {
			ctr = &serverCounters{slot: uint8(min(len(d.counters), fastCounters-1))}
			d.counters[k] = ctr
		}
		cands[i] = candidate{id: serverID(c.addr), weight: c.weight, target: &target{index: c.index, addr: c.addr, mac: c.mac, ctr: ctr}}
	}
	l := buildLookup(cands)
	d.table.Store(l)
	if d.fast != nil {
		if err := d.fast.load(l); err != nil {
			d.log.Error("fast path table not updated", "op", "rebuild", "error", err)
		}
	}
	if sig == nil {
		sig = []candidateSig{}
	}
	d.sig = sig
	d.stats.rebuilds.Add(1)
	d.log.Info("dsr servers", "op", "rebuild", "servers", len(sig))
}

// readLoop reads frames from c in batches and sends what they call for
// (forwarded frames, replies) back out through c, one sendmmsg per batch.
// One runs per socket; all they share is safe for that (counters are
// atomic, the neighbour table has a lock, and each has a readState of its
// own).
func (d *DSR) readLoop(c *batchConn) error {
	in := newBatch(batchSize, bufSize)
	out := newBatch(batchSize, 0)
	replies := make([]byte, batchSize*replySize)
	frames := make([][]byte, 0, batchSize)
	st := &readState{
		limit: newLimiter(32, 64, 10000, d.secret),
		hit:   map[netip.Addr]struct{}{},
	}
	for {
		n, err := c.recv(in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading frames on %s: %w", d.ifi.Name, err)
		}
		d.stats.batches.Add(1)
		d.stats.received.Add(uint64(n))
		now := d.now()
		frames = frames[:0]
		for i := range n {
			reply := replies[i*replySize:][:replySize]
			f, why := d.handle(in.bufs[i][:in.lens[i]], in.trunc[i], reply, st, now)
			if why != 0 {
				d.stats.dropped[why].Add(1)
			}
			if f != nil {
				frames = append(frames, f)
			}
		}
		if len(frames) > 0 {
			_, failed, _ := c.send(out, frames)
			d.stats.dropped[DropSendError].Add(uint64(failed))
		}
	}
}

// replySize is the room for one reply built while reading: a tarpit
// SYN/ACK, an ARP reply or a neighbour advertisement.
const replySize = vnetHeaderLen + ndFrameLen

// readState belongs to the reading goroutine.
type readState struct {
	limit *limiter
	hit   map[netip.Addr]struct{} // tarpitted addresses that got SYNs
}

const maxHit = 1 << 16

// handle decides on one frame (buf: virtio header and frame). It returns
// the frame to send, if any (buf itself, rewritten, or a reply built in
// reply), and why nothing is sent otherwise; (nil, 0) means the frame was
// taken in (an ARP reply we asked for).
func (d *DSR) handle(buf []byte, trunc bool, reply []byte, st *readState, now time.Time) ([]byte, Reason) {
	if trunc {
		return nil, DropTruncated
	}
	if len(buf) < vnetHeaderLen+ethHeaderLen {
		return nil, DropMalformed
	}
	f := buf[vnetHeaderLen:]
	var p ipFrame
	var why Reason
	switch etherType(f) {
	case etherTypeARP:
		return d.handleARP(f, reply, now)
	case etherTypeIPv4:
		p, why = parseIPv4(f)
	case etherTypeIPv6:
		if !d.cfg.VIP.Is6() {
			return nil, DropNotIPv4
		}
		p, why = parseIPv6(f)
		if why == 0 && p.proto == protoICMPv6 && p.dst != d.cfg.VIP {
			return d.handleND(f, p, reply, now)
		}
	default:
		return nil, DropNotIPv4
	}
	if why != 0 {
		return nil, why
	}
	if p.dst == d.cfg.VIP {
		if (d.cfg.UDP && p.proto != protoUDP) || (!d.cfg.UDP && p.proto != protoTCP) {
			return nil, DropNotOurs
		}
		if d.cfg.Port != 0 && !p.fragment && p.dport != d.cfg.Port {
			return nil, DropNotOurs
		}
		sport := p.sport
		if p.fragment {
			sport = 0
		}
		t := d.table.Load().pick(flowKey(p.src, sport, d.cfg.HashPort))
		if t == nil {
			return nil, DropNoServer
		}
		setMACs(f, t.mac, d.mac)
		t.ctr.frames.Add(1)
		t.ctr.bytes.Add(uint64(p.end - p.l3))
		d.stats.forwarded.Add(1)
		return buf, 0
	}
	if p.proto == protoTCP && d.tarpitted(p.dst) {
		if p.fragment || !isSYN(p.flags) {
			return nil, DropTarpit
		}
		if !st.limit.allow(p.src, now) {
			return nil, DropRateLimit
		}
		if _, ok := st.hit[p.dst]; !ok && len(st.hit) < maxHit {
			st.hit[p.dst] = struct{}{}
			d.stats.tarpitAddrs.Add(1)
		}
		clear(reply[:vnetHeaderLen])
		tarpitReply(reply[vnetHeaderLen:], f, p, d.mac, d.secret)
		d.stats.tarpitSYNs.Add(1)
		return reply[:vnetHeaderLen+tarpitReplyLen], 0
	}
	return nil, DropNotOurs
}

func (d *DSR) handleARP(f, reply []byte, now time.Time) ([]byte, Reason) {
	p, why := parseARP(f)
	if why != 0 {
		return nil, why
	}
	switch p.Operation {
	case 1: // request
		if !p.TargetIP.Is4() || !(p.TargetIP == d.cfg.VIP || d.tarpitted(p.TargetIP)) {
			return nil, DropARP
		}
		if mac := [6]byte(p.SenderHardwareAddr); mac[0]&1 != 0 {
			return nil, DropARP
		}
		clear(reply[:vnetHeaderLen])
		arpReply(reply[vnetHeaderLen:], d.mac, p)
		d.stats.arpAnswered.Add(1)
		return reply[:vnetHeaderLen+arpFrameLen], 0
	case 2: // reply
		used, changed := d.neigh.learn(p, d.mac, now)
		if !used {
			return nil, DropARP
		}
		d.stats.arpLearnt.Add(1)
		if changed {
			d.log.Info("server MAC learnt", "op", "arp", "backend", p.SenderIP, "mac", p.SenderHardwareAddr.String())
			select {
			case d.rebuild <- struct{}{}:
			default:
			}
		}
		return nil, 0
	}
	return nil, DropARP
}

// handleND answers neighbour solicitations for an IPv6 VIP and takes in
// advertisements that answer ours.
func (d *DSR) handleND(f []byte, p ipFrame, reply []byte, now time.Time) ([]byte, Reason) {
	m, why := parseND(f, p)
	if why != 0 {
		return nil, why
	}
	switch m.typ {
	case icmpNS:
		if m.target != d.cfg.VIP {
			return nil, DropARP
		}
		to := [6]byte(f[6:12])
		if m.hasLL {
			to = m.ll
		}
		if to[0]&1 != 0 {
			return nil, DropARP
		}
		clear(reply[:vnetHeaderLen])
		r := naReply(reply[vnetHeaderLen:], d.mac, to, d.cfg.VIP, p.src)
		d.stats.arpAnswered.Add(1)
		return reply[:vnetHeaderLen+len(r)], 0
	case icmpNA:
		if !m.hasLL || !m.target.Is6() || p.src.IsUnspecified() {
			return nil, DropARP
		}
		// An answer to our solicitation comes to our MAC, or to all
		// nodes when we asked from ::.
		if dst := [6]byte(f[0:6]); dst != d.mac && !(d.ownLL.IsUnspecified() && dst[0] == 0x33) {
			return nil, DropARP
		}
		used, changed := d.neigh.answered(m.target, m.ll, now)
		if !used {
			return nil, DropARP
		}
		d.stats.arpLearnt.Add(1)
		if changed {
			d.log.Info("server MAC learnt", "op", "nd", "backend", m.target, "mac", net.HardwareAddr(m.ll[:]).String())
			select {
			case d.rebuild <- struct{}{}:
			default:
			}
		}
		return nil, 0
	}
	return nil, DropARP
}

// family reports whether a server's address is of the VIP's family (IPv4
// for a tarpit alone).
func (d *DSR) family(a netip.Addr) bool {
	if d.cfg.VIP.Is6() {
		return a.Is6() && !a.Is4In6()
	}
	return a.Is4()
}

// tarpitted reports whether SYNs to ip get a tarpit reply.
func (d *DSR) tarpitted(ip netip.Addr) bool {
	if d.cfg.Tarpit == nil || !ip.Is4() || ip == d.cfg.VIP || d.own[ip] || (*d.backends.Load())[ip] {
		return false
	}
	return d.cfg.Tarpit(ip)
}
