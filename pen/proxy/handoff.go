package proxy

import (
	"net/netip"
	"sync"

	"github.com/pen-lb/pen-appliance/pen/balance"
)

// handoff is a client connection that the loop accepted and gave a slot
// in the connection table but that a goroutine of its own serves (TLS).
// The goroutine keeps the slot until it calls done; the close command
// reaches it through onClose.
type handoff struct {
	loop *Loop
	slot int32
	gen  uint32
	fd   int            // the client's socket, owned by the goroutine
	peer netip.AddrPort // the client
	sess *balance.Conn

	mu      sync.Mutex
	closer  func()
	closing bool
}

// onClose sets what closes the connection when the loop asks.
func (h *handoff) onClose(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closer = f
	if h.closing {
		go f()
	}
}

// setUpstream records the server socket for the connection command.
func (h *handoff) setUpstream(fd int) {
	h.loop.do(func() {
		if c := h.conn(); c != nil {
			c.up = int32(fd)
			h.loop.setFD(fd, c.slot)
		}
	})
}

// done releases the slot. The goroutine closes the sockets afterwards, so
// their numbers cannot be reused while the table still names them.
func (h *handoff) done() {
	h.loop.do(func() {
		if c := h.conn(); c != nil {
			c.ext = nil
			h.loop.closeConn(c)
		}
	})
}

func (h *handoff) conn() *conn {
	l := h.loop
	if int(h.slot) >= len(l.conns) {
		return nil
	}
	c := l.conns[h.slot]
	if c == nil || c.gen != h.gen || c.state == stateUnused {
		return nil
	}
	return c
}

// closeFromLoop is called by the loop when it closes the slot itself.
func (h *handoff) closeFromLoop() {
	h.mu.Lock()
	f := h.closer
	h.closing = true
	h.mu.Unlock()
	if f != nil {
		go f()
	}
}
