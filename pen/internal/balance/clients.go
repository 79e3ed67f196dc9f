package balance

import (
	"net/netip"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// Pen's store_client walks the whole client table for every connection:
// a known client is found by comparing addresses slot by slot, and a new
// one takes the first slot that is free or whose client has not been
// seen for the tracking time, else the slot used longest ago (the lowest
// such slot when several were last used in the same second). pen finds a
// known client in a map and keeps two heaps for a new one, so that the
// choice costs O(log n) under the table's lock instead of a walk of
// clients_max slots (measured, every connection from a new client with
// the table full, two cores: 4.9 µs a connection at 2,048 slots, 39 µs
// at 20,000; the table takes up to 1,048,576).
//
// The slots chosen are Pen's. Pen frees a slot whose client has not been
// seen for the tracking time when its walk passes the slot: a new
// client's walk passes them all, and so pen frees them all when a new
// client comes. A known client's walk frees those before its slot, which
// pen leaves for the next new client; the difference shows only in
// recent and the status page.

// clientHeaps orders the client table's slots. Under Table.mu, with the
// slots it orders.
type clientHeaps struct {
	used slotHeap // slots in use, the one used longest ago first (by last, then slot)
	free slotHeap // free slots, the lowest first
}

// slotHeap is a binary min-heap of client table slots that knows where
// each slot is in it, so that a slot whose key changed can be moved.
type slotHeap struct {
	h    []int32
	pos  []int32 // pos[slot]: the slot's place in h, -1 when not in it
	less func(a, b int32) bool
}

func (s *slotHeap) grow(n int) {
	for len(s.pos) < n {
		s.pos = append(s.pos, -1)
	}
}

func (s *slotHeap) len() int { return len(s.h) }

func (s *slotHeap) min() int32 { return s.h[0] }

func (s *slotHeap) push(i int32) {
	s.pos[i] = int32(len(s.h))
	s.h = append(s.h, i)
	s.up(len(s.h) - 1)
}

func (s *slotHeap) pop() int32 {
	i := s.h[0]
	s.remove(i)
	return i
}

func (s *slotHeap) remove(i int32) {
	k := int(s.pos[i])
	last := len(s.h) - 1
	if k != last {
		s.swap(k, last)
	}
	s.h = s.h[:last]
	s.pos[i] = -1
	if k != last {
		s.fixAt(k)
	}
}

// fix restores the order after slot i's key changed.
func (s *slotHeap) fix(i int32) { s.fixAt(int(s.pos[i])) }

func (s *slotHeap) fixAt(k int) {
	if !s.down(k) {
		s.up(k)
	}
}

func (s *slotHeap) swap(a, b int) {
	s.h[a], s.h[b] = s.h[b], s.h[a]
	s.pos[s.h[a]] = int32(a)
	s.pos[s.h[b]] = int32(b)
}

func (s *slotHeap) up(k int) {
	for k > 0 {
		p := (k - 1) / 2
		if !s.less(s.h[k], s.h[p]) {
			return
		}
		s.swap(k, p)
		k = p
	}
}

func (s *slotHeap) down(k0 int) bool {
	k := k0
	for {
		c := 2*k + 1
		if c >= len(s.h) {
			break
		}
		if r := c + 1; r < len(s.h) && s.less(s.h[r], s.h[c]) {
			c = r
		}
		if !s.less(s.h[c], s.h[k]) {
			break
		}
		s.swap(k, c)
		k = c
	}
	return k > k0
}

// growClients makes the client table n slots long; it only grows, as in
// Pen.
func (t *Table) growClients(n int) {
	old := len(t.clients)
	if n <= old {
		return
	}
	t.heaps.used.grow(n)
	t.heaps.free.grow(n)
	for i := old; i < n; i++ {
		t.clients = append(t.clients, &client{server: NoServer})
		t.heaps.free.push(int32(i))
	}
}

// storeClient finds or makes the client's slot (Pen's store_client).
func (t *Table) storeClient(addr netip.Addr) int {
	now := t.unix()
	h := &t.heaps
	if len(t.clients) == 0 {
		t.growClients(config.DefaultClientsMax) // used before Configure
	}
	if i, ok := t.byAddr[addr]; ok {
		c := t.clients[i]
		switch {
		case c.last == 0:
			// Freed and not yet given to another client: Pen finds
			// the client in its old slot; it comes back as new.
			h.free.remove(int32(i))
			h.used.push(int32(i))
			c.reset()
		case t.tracking > 0 && c.last+t.tracking < now:
			// Expired: Pen kept the old server here; a returning
			// client after the tracking time is a new client.
			c.reset()
		}
		if c.last != now {
			c.last = now
			h.used.fix(int32(i))
		}
		c.connects++
		return i
	}
	if t.tracking > 0 {
		for h.used.len() > 0 && t.clients[h.used.min()].last+t.tracking < now {
			t.freeClient(int(h.used.min()))
		}
	}
	if h.free.len() == 0 {
		t.freeClient(int(h.used.min()))
	}
	i := int(h.free.pop())
	c := t.clients[i]
	if j, ok := t.byAddr[c.addr]; ok && j == i {
		delete(t.byAddr, c.addr) // the slot's client before
	}
	c.reset()
	c.addr, c.last, c.connects = addr, now, 1
	t.byAddr[addr] = i
	h.used.push(int32(i))
	return i
}

// freeClient frees slot i, which is in use. Its client keeps the slot
// until another one takes it, as in Pen.
func (t *Table) freeClient(i int) {
	t.clients[i].last = 0
	t.heaps.used.remove(int32(i))
	t.heaps.free.push(int32(i))
}

// reset forgets what the slot knows of its client.
func (c *client) reset() {
	c.server = NoServer
	c.connects = 0
	c.sent.Store(0)
	c.received.Store(0)
}
