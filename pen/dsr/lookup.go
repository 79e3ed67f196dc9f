package dsr

import (
	"encoding/binary"
	"math"
	"net/netip"
)

// tableSize is the number of entries of the lookup table: a prime, as in
// Maglev, so that client keys spread evenly over it, and large enough that
// weights are honoured to within a few hundredths of a percent.
const tableSize = 65537

// candidate is a server that may take flows: it is available and its MAC
// is known.
type candidate struct {
	id     uint64 // stable identity for hashing: its address (not its slot)
	weight int
	target *target
}

// lookup maps a flow key to a server in one table read. It is built once
// per change of the server set and never written afterwards, so the
// forwarder reads it without a lock.
//
// The table is filled by weighted rendezvous hashing (highest random
// weight): entry e goes to the candidate with the smallest
// -ln(u(e, server)) / weight, u being a hash of the entry and the server
// in (0,1). Each server therefore holds weight/total of the entries, and
// an entry changes hands only when the change concerns its old or its new
// holder: removing, blacklisting or lowering the weight of one server
// moves only that server's flows, and adding one (or raising its weight)
// moves flows only to it. Maglev's own permutation fill is as fast to
// read but moves a few percent of other servers' flows on every change;
// filling by rendezvous costs tableSize*servers hash evaluations per
// rebuild (a few milliseconds for a handful of servers), which is paid
// only when the server set changes.
type lookup struct {
	slots   []uint16 // index into targets
	targets []*target
}

func buildLookup(cands []candidate) *lookup {
	if len(cands) == 0 {
		return &lookup{}
	}
	l := &lookup{slots: make([]uint16, tableSize), targets: make([]*target, len(cands))}
	inv := make([]float64, len(cands))
	for i, c := range cands {
		l.targets[i] = c.target
		w := c.weight
		if w <= 0 {
			w = 1 // Pen counts weight 0 as 1 here
		}
		inv[i] = 1 / float64(w)
	}
	if len(cands) == 1 {
		return l
	}
	for e := range uint64(tableSize) {
		best, bestScore := 0, math.Inf(1)
		for i, c := range cands {
			u := unit(mix64(c.id ^ mix64(e+0x9e3779b97f4a7c15)))
			score := -math.Log(u) * inv[i]
			if score < bestScore || (score == bestScore && c.id < cands[best].id) {
				best, bestScore = i, score
			}
		}
		l.slots[e] = uint16(best)
	}
	return l
}

// pick returns the server for a flow key, or nil when there is none.
func (l *lookup) pick(key uint64) *target {
	switch len(l.targets) {
	case 0:
		return nil
	case 1:
		return l.targets[0]
	}
	return l.targets[l.slots[mix64(key)%tableSize]]
}

// flowKey is the key a client's frames are placed by: its address, and
// with -r its source port as well, as Pen's hash does.
func flowKey(src netip.Addr, sport uint16, withPort bool) uint64 {
	var k uint64
	if src.Is4() {
		a := src.As4()
		k = uint64(binary.BigEndian.Uint32(a[:])) << 16
	} else {
		a := src.As16()
		k = mix64(binary.BigEndian.Uint64(a[:8])^mix64(binary.BigEndian.Uint64(a[8:]))) << 16
	}
	if withPort {
		k |= uint64(sport)
	}
	return k
}

// serverID is the identity a server is hashed by: its address, so that
// its flows stay with it when its slot number changes.
func serverID(a netip.Addr) uint64 {
	b := a.As16()
	return mix64(binary.BigEndian.Uint64(b[:8]) ^ mix64(binary.BigEndian.Uint64(b[8:])))
}

// mix64 is SplitMix64's finaliser: a fast bijective 64-bit mix.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// unit maps a hash to a float in (0,1), never 0 (whose logarithm is -Inf).
func unit(h uint64) float64 {
	return (float64(h>>11) + 0.5) / (1 << 53)
}
