package webui

import (
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/dsr"
	"github.com/pen-lb/pen-appliance/pen/metrics"
	"github.com/pen-lb/pen-appliance/pen/proxy"
)

// RuntimeStatus is the "runtime" part of the state command's reply
// (config.State): what State reads from the engine, so that the admin UI
// of one pen can show and export another pen's servers and counters
// (the appliance's services) from its control socket alone.
type RuntimeStatus struct {
	Serving   bool                 `json:"serving"`
	Servers   []config.ServerState `json:"servers"`
	Emergency *config.ServerState  `json:"emergency,omitempty"`
	Abuse     *config.ServerState  `json:"abuse,omitempty"`
	Tracked   int                  `json:"tracked_clients"`
	ACLDenied []uint64             `json:"acl_denied"`
	Stats     proxy.Stats          `json:"stats"`
	DSR       *dsr.Stats           `json:"dsr,omitempty"` // while DSR runs (dsr_if)
}

// runtimeStatus reads st for the configuration c.
func runtimeStatus(st State, c *config.Config) RuntimeStatus {
	r := RuntimeStatus{
		Serving: st.Serving(),
		Servers: st.Servers(),
		Tracked: st.TrackedClients(),
		Stats:   st.Stats(),
	}
	r.Emergency, r.Abuse = st.SpecialStates()
	if ds, ok := st.(metrics.DSRSource); ok {
		if d, ok := ds.DSRStats(); ok {
			r.DSR = &d
		}
	}
	r.ACLDenied = make([]uint64, len(c.ACLs))
	for i := range c.ACLs {
		r.ACLDenied[i] = st.ACLDenied(i)
	}
	return r
}
