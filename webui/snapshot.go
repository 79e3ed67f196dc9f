package webui

import (
	"sync/atomic"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// Snapshot is the running configuration as the interpreter last committed
// it, readable without the interpreter's lock. The interpreter holds its
// lock for the whole of a change, and a large one (an upload of 20,000
// lines) takes a while: /healthz, /metrics, the login page and the
// admin_acl check in front of every request read the Snapshot, so that
// they answer meanwhile (with the configuration before the change).
//
// It implements metrics.Config.
type Snapshot struct {
	in  *config.Interp
	cfg atomic.Pointer[config.Config] // written by the interpreter's change hook
}

// NewSnapshot follows in's configuration from now on.
func NewSnapshot(in *config.Interp) *Snapshot {
	s := &Snapshot{in: in}
	// The hook runs inside every commit, after the new configuration is
	// in place. It is added before the first read, so no change is
	// missed; a change committed between the two has already stored a
	// newer configuration than the one read, which must not overwrite it.
	in.AddOnChange(func(c *config.Config, _ config.Origin) { s.cfg.Store(c) })
	s.cfg.CompareAndSwap(nil, in.Config())
	return s
}

// Config returns the configuration; it must not be modified.
func (s *Snapshot) Config() *config.Config { return s.cfg.Load() }

// ChangesBy counts accepted changes per origin (the interpreter keeps
// these counters without its lock).
func (s *Snapshot) ChangesBy() map[config.Origin]uint64 { return s.in.ChangesBy() }
