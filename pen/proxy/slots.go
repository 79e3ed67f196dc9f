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
// bitmap, with no lock. As in Pen's store_conn, a new connection takes
// the first free slot from the one taken last on, going round to 0 at the
// end of the table.
type slots struct {
	bits [config.MaxTable / 64]atomic.Uint64 // 1 = in use
	used atomic.Int64                        // slots in use, every loop
	last atomic.Int64                        // the slot taken last (Pen reports it)
}

// take marks the first free slot below n, from the slot taken last on,
// as used and returns it, or -1 when every one is in use.
func (s *slots) take(n int) int32 {
	n = min(n, config.MaxTable)
	if n <= 0 {
		return -1
	}
	start := int(s.last.Load())
	if start < 0 || start >= n {
		start = 0
	}
	words := (n + 63) / 64
	w0, b0 := start/64, uint(start%64)
	// The word of start twice: its bits from start on first, and those
	// below start last, after the rest of the table.
	for k := 0; k <= words; k++ {
		w := (w0 + k) % words
		mask := ^uint64(0)
		switch k {
		case 0:
			mask <<= b0
		case words:
			mask = 1<<b0 - 1
		}
		if w == words-1 && n%64 != 0 {
			mask &= 1<<uint(n%64) - 1
		}
		for {
			v := s.bits[w].Load()
			free := ^v & mask
			if free == 0 {
				break
			}
			b := bits.TrailingZeros64(free)
			if s.bits[w].CompareAndSwap(v, v|1<<b) {
				i := w*64 + b
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
