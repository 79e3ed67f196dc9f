package config

import (
	"net/netip"
	"time"
)

// Engine is the running load balancer as the command language sees it.
// The Interp holds its lock around every call, so an Engine sees one
// command at a time.
type Engine interface {
	// Apply makes the running state follow c. When c cannot be put into
	// effect (a listener that cannot be bound, say) it returns an error
	// and leaves the running state as it was.
	Apply(c *Config) error
	// Servers reports the state of server slots 0..len(c.Servers)-1.
	Servers() []ServerState
	// Blacklist blacklists server slot i for d (d = 0 reinstates it).
	Blacklist(i int, d time.Duration)
	// Clients reports the client table's used slots.
	Clients() []ClientState
	// Conns reports the connection table.
	Conns() ConnTable
	// Conn reports one slot of the connection table.
	Conn(i int) ConnState
	// CloseConn closes connection slot i.
	CloseConn(i int)
	// SocketConn returns the connection that owns file descriptor fd, or -1.
	SocketConn(fd int) int
	// IdlersActive is the number of idle upstream connections held now.
	IdlersActive() int
	// Current is the last server index a client was sent to (Pen's
	// "current").
	Current() int
	// Quit stops the load balancer (the exit command).
	Quit()
}

// ServerState is the running state of one server slot.
type ServerState struct {
	Conns     int       // connections now (Pen's c)
	Sent      uint64    // bytes from clients sent to the server (sx)
	Received  uint64    // bytes read from the server (rx)
	Failed    time.Time // last connect failure; zero if none (Pen's status)
	Until     time.Time // blacklisted until; zero or past = available
	Total     uint64    // connections made since start
	Failures  uint64    // connect failures since start
	Emergency bool      // slot is the emergency server (reported separately)
}

// ClientState is one used slot of the client table.
type ClientState struct {
	Slot     int
	Addr     netip.Addr // invalid for a unix-socket client
	Last     time.Time
	Server   int // last server, -3 none, -1 emergency, -2 abuse (Pen's indices)
	Connects int64
	Sent     uint64 // bytes sent to the client
	Received uint64 // bytes received from the client
}

// ConnTable summarises the connection table.
type ConnTable struct {
	Max, Used, Last int
	Conns           []ConnState // slots in use
}

// Connection states, Pen's conn.h bits.
const (
	StateUnused     = 0
	StateInProgress = 1
	StateConnected  = 2
	StateClosedUp   = 4
	StateClosedDown = 8
	StateHalfDead   = 16
)

// ConnState is one slot of the connection table.
type ConnState struct {
	Slot        int
	State       int
	DownFD      int // -1 when unused
	UpFD        int
	Client      int
	Server      int
	Pend        int // position in the pending-connect list, or -1
	PendingDown int // bytes waiting to be written to the client
	PendingUp   int // bytes waiting to be written to the server
}

// NoServer and the special server indices, as Pen numbers them.
const (
	NoServer        = -3
	AbuseServer     = -2
	EmergencyServer = -1
)
