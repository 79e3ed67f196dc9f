package dsr

import (
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
)

// counters are the forwarder's totals; the data path adds to them
// without a lock.
type counters struct {
	received    atomic.Uint64
	batches     atomic.Uint64
	forwarded   atomic.Uint64
	dropped     [numReasons]atomic.Uint64
	arpAnswered atomic.Uint64
	arpRequests atomic.Uint64
	arpLearnt   atomic.Uint64
	tarpitSYNs  atomic.Uint64
	tarpitAddrs atomic.Uint64
	rebuilds    atomic.Uint64
}

// serverCounters count what was forwarded to one server. They outlive
// table rebuilds, so a server's totals keep growing while it comes and
// goes.
type serverCounters struct {
	frames atomic.Uint64
	bytes  atomic.Uint64
	slot   uint8 // the fast path's counter slot (the last is shared)
}

// Stats is a snapshot of the counters, for /metrics and the dashboard.
type Stats struct {
	Received    uint64            // frames read from the interface
	Batches     uint64            // receive calls that returned frames
	Forwarded   uint64            // frames sent on to a server
	Dropped     map[Reason]uint64 // frames not forwarded, by reason
	ARPAnswered uint64            // ARP requests for the VIP or a tarpitted address answered
	ARPRequests uint64            // ARP requests sent for server MACs
	ARPLearnt   uint64            // replies to them taken in
	TarpitSYNs  uint64            // SYNs answered by the tarpit
	TarpitAddrs uint64            // distinct tarpitted addresses that got SYNs
	Rebuilds    uint64            // lookup table rebuilds
	FastPath    bool              // the kernel forwards the VIP's frames (see fastpath_linux.go)
	Servers     []ServerStats     // every server that was ever in the table
	Neighbours  []NeighbourState  // servers' MACs as learnt by ARP
}

// ServerStats is what was forwarded to one server.
type ServerStats struct {
	Index   int
	Addr    netip.Addr
	MAC     net.HardwareAddr // as in the lookup table now; nil when not in it
	InTable bool             // taking flows now
	Frames  uint64
	Bytes   uint64 // IPv4 bytes (headers included)
}

// Stats returns the counters now.
func (d *DSR) Stats() Stats {
	s := Stats{
		Received:    d.stats.received.Load(),
		Batches:     d.stats.batches.Load(),
		Forwarded:   d.stats.forwarded.Load(),
		Dropped:     map[Reason]uint64{},
		ARPAnswered: d.stats.arpAnswered.Load(),
		ARPRequests: d.stats.arpRequests.Load(),
		ARPLearnt:   d.stats.arpLearnt.Load(),
		TarpitSYNs:  d.stats.tarpitSYNs.Load(),
		TarpitAddrs: d.stats.tarpitAddrs.Load(),
		Rebuilds:    d.stats.rebuilds.Load(),
		Neighbours:  d.neigh.states(),
	}
	for r := Reason(1); r < numReasons; r++ {
		if n := d.stats.dropped[r].Load(); n > 0 {
			s.Dropped[r] = n
		}
	}
	var fast [fastCounters]fastCounter
	if d.fast != nil {
		s.FastPath = true
		fast = d.fast.counters()
	}
	inTable := map[serverKey][6]byte{}
	for _, t := range d.table.Load().targets {
		inTable[serverKey{t.index, t.addr}] = t.mac
	}
	d.mu.Lock()
	for k, c := range d.counters {
		ss := ServerStats{Index: k.index, Addr: k.addr, Frames: c.frames.Load() + fast[c.slot].Frames, Bytes: c.bytes.Load() + fast[c.slot].Bytes}
		s.Forwarded += fast[c.slot].Frames
		if mac, ok := inTable[k]; ok {
			ss.InTable = true
			ss.MAC = append(net.HardwareAddr(nil), mac[:]...)
		}
		s.Servers = append(s.Servers, ss)
	}
	d.mu.Unlock()
	slices.SortFunc(s.Servers, func(a, b ServerStats) int { return a.Index - b.Index })
	slices.SortFunc(s.Neighbours, func(a, b NeighbourState) int { return a.Addr.Compare(b.Addr) })
	return s
}
