package webui

import (
	"sync"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// history follows each server's state (by its identity, so it stays
// with the server when slots move) as the sampler and the pages see it:
// since when it is in its current state and its last state changes.
// Memory is bounded: MaxSampled servers are followed (the first slots),
// historyLen changes each.
type history struct {
	mu      sync.Mutex
	servers map[uint64]*serverHistory
}

const historyLen = 12

type serverHistory struct {
	state string
	since time.Time
	known bool // since is when the change was seen; else when watching began
	seen  time.Time
	// changes, oldest first: the state entered and when.
	changes []stateChange
}

type stateChange struct {
	State string
	At    time.Time
}

func newHistory() *history { return &history{servers: map[uint64]*serverHistory{}} }

// stateOf is the state a page shows for a server: "unused", "draining"
// (server N drain 1: no new connections), "blacklisted",
// "untried" (in use, and nobody has connected to it yet: no connection
// made and no failure) or "up".
func stateOf(sv config.Server, st config.ServerState, now time.Time) string {
	switch {
	case sv.Unused():
		return "unused"
	case sv.Drain:
		return "draining"
	case !st.Until.IsZero() && st.Until.After(now):
		return "blacklisted"
	case st.Total == 0 && st.Failures == 0 && st.Conns == 0:
		return "untried"
	}
	return "up"
}

// observe notes the servers' states at now.
func (h *history) observe(now time.Time, c *config.Config, states []config.ServerState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	live := map[uint64]bool{}
	for i, sv := range c.Servers {
		if i >= MaxSampled {
			break
		}
		var st config.ServerState
		if i < len(states) {
			st = states[i]
		}
		id := sv.ID()
		live[id] = true
		state := stateOf(sv, st, now)
		sh := h.servers[id]
		if sh == nil {
			h.servers[id] = &serverHistory{state: state, since: now, seen: now, changes: []stateChange{{state, now}}}
			continue
		}
		sh.seen = now
		if sh.state == state {
			continue
		}
		at := now
		switch {
		case state == "blacklisted" && !st.Failed.IsZero() && st.Failed.Before(now) && st.Failed.After(sh.since):
			at = st.Failed // a failed connect blacklisted it
		case sh.state == "blacklisted" && !st.Until.IsZero() && st.Until.Before(now) && st.Until.After(sh.since):
			at = st.Until // the blacklisting ran out
		}
		sh.state, sh.since, sh.known = state, at, true
		sh.changes = append(sh.changes, stateChange{state, at})
		if len(sh.changes) > historyLen {
			sh.changes = sh.changes[len(sh.changes)-historyLen:]
		}
	}
	for id := range h.servers {
		if !live[id] {
			delete(h.servers, id)
		}
	}
}

// get returns a server's current state's start (and whether it was seen
// to begin) and its recent changes.
func (h *history) get(id uint64) (since time.Time, known bool, changes []stateChange) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sh := h.servers[id]
	if sh == nil {
		return time.Time{}, false, nil
	}
	return sh.since, sh.known, append([]stateChange(nil), sh.changes...)
}
