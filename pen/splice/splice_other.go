//go:build !linux

package splice

import (
	"errors"
	"time"
)

// Splicer is not available outside Linux.
type Splicer struct{}

// Pair is not available outside Linux.
type Pair struct{}

// Status is what Poll reports.
type Status struct {
	FromClient, FromServer uint64
	Over                   bool
	Done                   bool
}

// Get reports that splicing needs Linux.
func Get() (*Splicer, error) { return nil, errors.New("splicing needs Linux") }

// Splice is never reached outside Linux.
func (s *Splicer) Splice(down, up int, toUp, toDown []byte) (*Pair, error) {
	return nil, errors.New("splicing needs Linux")
}

// Poll is never reached outside Linux.
func (p *Pair) Poll(now time.Time) Status { return Status{Done: true} }

// Close is never reached outside Linux.
func (p *Pair) Close() {}

// Pump is never reached outside Linux.
func (p *Pair) Pump(now time.Time) bool { return false }

// Pending is never reached outside Linux.
func (p *Pair) Pending() bool { return false }

// Release is never reached outside Linux.
func (p *Pair) Release() {}

// Over is never reached outside Linux.
func (p *Pair) Over() bool { return true }
