package balance

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// penClients is Pen's store_client as Pen 0.35.0 writes it: one walk of
// the whole table per connection. The one change is pen's: a client that
// comes back after the tracking time (its slot expired or freed) starts
// again with no server and no counts.
type penClients struct {
	slots    []penSlot
	tracking int64
}

type penSlot struct {
	used     bool // Pen's ss_family != 0: the slot has held a client
	addr     netip.Addr
	last     int64
	connects int64
	server   int
}

func (p *penClients) store(addr netip.Addr, now int64) int {
	empty, oldest := -1, -1
	i := 0
	for ; i < len(p.slots); i++ {
		s := &p.slots[i]
		if s.used && s.addr == addr {
			break
		}
		if p.tracking > 0 && s.last+p.tracking < now {
			s.last = 0
		}
		if empty != -1 {
			continue
		}
		if s.last == 0 {
			empty = i
			continue
		}
		if oldest == -1 || s.last < p.slots[oldest].last {
			oldest = i
		}
	}
	if i == len(p.slots) {
		i = empty
		if i == -1 {
			i = oldest
		}
		p.slots[i] = penSlot{used: true, addr: addr, server: NoServer}
	} else if s := &p.slots[i]; s.last == 0 || p.tracking > 0 && s.last+p.tracking < now {
		s.connects, s.server = 0, NoServer
	}
	s := &p.slots[i]
	s.last = now
	s.connects++
	return i
}

// live reports whether slot s holds a client that has not expired, the
// slots that Pen's and pen's tables must agree on.
func live(last, tracking, now int64) bool {
	return last != 0 && (tracking == 0 || last+tracking >= now)
}

// TestClientTableAsPen runs the same connections through pen's client
// table and Pen's walk: each connection must get the slot Pen gives it,
// and the slots must hold the same clients, times, counts and servers.
func TestClientTableAsPen(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		size := 1 + r.IntN(9)
		tracking := []int64{0, 0, 1, 3, 8}[r.IntN(5)]
		pool := 1 + r.IntN(3*size)
		tb := newTable(size)
		tb.tracking = tracking
		now := int64(1_800_000_000)
		tb.SetClock(func() time.Time { return time.Unix(now, 0) })
		ref := &penClients{slots: make([]penSlot, size), tracking: tracking}
		for step := range 400 {
			switch r.IntN(10) {
			case 0:
				now += r.Int64N(tracking + 3)
			case 1:
				if size < 40 && r.IntN(15) == 0 {
					size += r.IntN(4)
					tb.growClients(size)
					for len(ref.slots) < size {
						ref.slots = append(ref.slots, penSlot{})
					}
				}
			}
			n := r.IntN(pool)
			addr := netip.AddrFrom4([4]byte{10, 0, byte(n >> 8), byte(n)})
			if n == 0 {
				addr = netip.Addr{} // a unix socket client
			}
			got, want := tb.storeClient(addr), ref.store(addr, now)
			if got != want {
				t.Fatalf("seed %d step %d: %v got slot %d, Pen's walk gives %d", seed, step, addr, got, want)
			}
			server := r.IntN(4)
			tb.clients[got].server, ref.slots[want].server = server, server
			for i, s := range ref.slots {
				c := tb.clients[i]
				a, b := live(c.last, tracking, now), live(s.last, tracking, now)
				if a != b || a && (c.addr != s.addr || c.last != s.last || c.connects != s.connects || c.server != s.server) {
					t.Fatalf("seed %d step %d: slot %d is {%v %d %d %d} live %v, Pen's {%v %d %d %d} live %v",
						seed, step, i, c.addr, c.last, c.connects, c.server, a, s.addr, s.last, s.connects, s.server, b)
				}
			}
		}
		if err := tb.heaps.check(tb); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

// check verifies the heaps' invariants: every slot is in exactly one of
// them, in used exactly when it holds a client, and each is in order.
func (h *clientHeaps) check(t *Table) error {
	for i, c := range t.clients {
		inUsed, inFree := h.used.pos[i] >= 0, h.free.pos[i] >= 0
		if inUsed == inFree || inUsed != (c.last != 0) {
			return fmt.Errorf("slot %d (last %d): in used %v, in free %v", i, c.last, inUsed, inFree)
		}
	}
	for _, s := range []*slotHeap{&h.used, &h.free} {
		for k, i := range s.h {
			if int(s.pos[i]) != k {
				return fmt.Errorf("slot %d at %d, pos says %d", i, k, s.pos[i])
			}
			if k > 0 && s.less(i, s.h[(k-1)/2]) {
				return fmt.Errorf("slot %d at %d is less than its parent", i, k)
			}
		}
	}
	return nil
}
