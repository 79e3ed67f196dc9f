package proxy

import (
	"math/bits"
	"sync/atomic"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// slots is the connection table's numbering, shared by the loops of a
// Group: a slot number belongs to one connection of one loop at a time,
// so that `connection N` and `close N` name one connection however many
// loops there are, and conn_max bounds them all together. A loop keeps the
// connections it serves in its own table (Loop.conns), indexed by slot.
//
// Taking and giving back a slot is a compare-and-swap on one word of a
// bitmap, with no lock; the lowest free slot is taken first, as Pen does.
type slots struct {
	bits [config.MaxTable / 64]atomic.Uint64 // 1 = in use
	used atomic.Int64                        // slots in use, every loop
	last atomic.Int64                        // the slot taken last (Pen reports it)
}

// take marks the lowest free slot below n as used and returns it, or -1
// when every one is in use.
func (s *slots) take(n int) int32 {
	n = min(n, config.MaxTable)
	for w := 0; w*64 < n; w++ {
		for {
			v := s.bits[w].Load()
			if v == ^uint64(0) {
				break
			}
			b := bits.TrailingZeros64(^v)
			i := w*64 + b
			if i >= n {
				return -1
			}
			if s.bits[w].CompareAndSwap(v, v|1<<b) {
				s.used.Add(1)
				s.last.Store(int64(i))
				return int32(i)
			}
		}
	}
	return -1
}

// give frees slot i.
func (s *slots) give(i int32) {
	s.bits[i/64].And(^(uint64(1) << (i % 64)))
	s.used.Add(-1)
}
