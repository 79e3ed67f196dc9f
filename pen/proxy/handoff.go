package proxy

import (
	"net/netip"
	"sync"

	"github.com/pen-lb/pen-appliance/pen/balance"
)

// Handoff is a client connection that the loop accepted and gave a slot
// in the connection table, but that another goroutine serves (TLS
// termination, which needs blocking reads). The server keeps the slot
// until it calls Done; the close command calls the function given to
// OnClose.
type Handoff struct {
	loop *Loop
	slot int32
	gen  uint32

	FD   int            // the client's socket; owned by the server from now on
	Peer netip.AddrPort // the client
	Sess *balance.Conn  // the client's dealings with the balancer

	mu      sync.Mutex
	onClose func()
	closed  bool
	upFD    int
}

// Slot is the connection's number in the table.
func (h *Handoff) Slot() int { return int(h.slot) }

// OnClose sets what closes the connection when the close command (or
// shutdown) asks for it.
func (h *Handoff) OnClose(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onClose = f
	if h.closed && f != nil {
		go f()
	}
}

// SetUpstream records the server socket for the connection command.
func (h *Handoff) SetUpstream(fd int) {
	h.loop.do(func() {
		if c := h.conn(); c != nil {
			c.up = int32(fd)
			h.loop.setFD(fd, c.slot)
		}
	})
}

// Done releases the slot; the server has closed both sockets.
func (h *Handoff) Done() {
	h.loop.do(func() {
		if c := h.conn(); c != nil {
			c.ext = nil
			h.loop.closeConn(c)
		}
	})
}

func (h *Handoff) conn() *conn {
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
func (h *Handoff) closeFromLoop() {
	h.mu.Lock()
	f := h.onClose
	h.closed = true
	h.mu.Unlock()
	if f != nil {
		go f()
	}
}
