package webui

import (
	"slices"
	"sync"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/metrics"
)

// The dashboard's live chart: one sample per second for ten minutes.
const (
	SampleInterval = time.Second
	SampleWindow   = 10 * time.Minute
	// MaxSampled bounds the servers the sampler follows (the first slots);
	// with the window that bounds its memory.
	MaxSampled = 64
)

// Sampler keeps, per server, a ring of recent samples of its connections
// and throughput, for the dashboard's chart. It follows servers by their
// identity (config.Server.ID), so a server's history stays with it when
// slots move. Memory is bounded: MaxSampled servers times the window; it
// holds nothing per client.
type Sampler struct {
	cfg   metrics.Config
	state State
	every time.Duration
	n     int // samples per ring

	mu     sync.Mutex
	tick   int64 // samples taken
	times  []int64
	series map[uint64]*series
	stop   chan struct{}
	done   chan struct{}
	// observe, if set, sees every sample's configuration and server
	// states (the servers' state history, history.go).
	observe func(now time.Time, c *config.Config, states []config.ServerState)
}

type series struct {
	first   int64 // tick of its first sample
	slot    int
	address string
	conns   []int32
	sent    []float32 // bytes per second to the server
	recv    []float32 // and from it
	lastS   uint64
	lastR   uint64
	seen    int64 // last tick it was sampled
}

// NewSampler samples state every interval and keeps window of history.
func NewSampler(cfg metrics.Config, state State, every, window time.Duration) *Sampler {
	n := int(window / every)
	return &Sampler{cfg: cfg, state: state, every: every, n: n, times: make([]int64, n), series: map[uint64]*series{}}
}

// Start samples until Stop; it does nothing if already running.
func (sm *Sampler) Start() {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.stop != nil || sm.state == nil {
		return
	}
	sm.stop, sm.done = make(chan struct{}), make(chan struct{})
	go sm.run(sm.stop, sm.done)
}

// Stop ends sampling; the history is kept.
func (sm *Sampler) Stop() {
	sm.mu.Lock()
	stop, done := sm.stop, sm.done
	sm.stop, sm.done = nil, nil
	sm.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

func (sm *Sampler) run(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(sm.every)
	defer t.Stop()
	sm.Sample(time.Now())
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			sm.Sample(now)
		}
	}
}

// Sample takes one sample at now.
func (sm *Sampler) Sample(now time.Time) {
	c := sm.cfg.Config()
	states := sm.state.Servers()
	if sm.observe != nil {
		sm.observe(now, c, states)
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	tick := sm.tick
	sm.tick++
	i := int(tick % int64(sm.n))
	sm.times[i] = now.Unix()
	secs := float32(sm.every.Seconds())
	for slot, sv := range c.Servers {
		if slot >= MaxSampled || slot >= len(states) || sv.Unused() {
			continue
		}
		st := states[slot]
		id := sv.ID()
		se := sm.series[id]
		if se == nil {
			se = &series{first: tick, conns: make([]int32, sm.n), sent: make([]float32, sm.n), recv: make([]float32, sm.n),
				lastS: st.Sent, lastR: st.Received}
			sm.series[id] = se
		}
		se.slot, se.address, se.seen = slot, metrics.Address(sv), tick
		se.conns[i] = int32(st.Conns)
		se.sent[i] = float32(delta(st.Sent, se.lastS)) / secs
		se.recv[i] = float32(delta(st.Received, se.lastR)) / secs
		se.lastS, se.lastR = st.Sent, st.Received
	}
	for id, se := range sm.series {
		if se.seen != tick { // the server is gone
			delete(sm.series, id)
		}
	}
}

func delta(now, before uint64) uint64 {
	if now < before {
		return 0
	}
	return now - before
}

// Samples is the chart's data: Times holds the sample times (Unix
// seconds, oldest first); each server's arrays end at the last sample and
// may be shorter than Times when the server is newer than the window.
type Samples struct {
	Interval float64         `json:"interval"`
	Times    []int64         `json:"times"`
	Servers  []ServerSamples `json:"servers"`
}

// ServerSamples is one server's history.
type ServerSamples struct {
	Slot    int       `json:"slot"`
	Address string    `json:"address"`
	Conns   []int32   `json:"conns"`
	Sent    []float32 `json:"sent"` // bytes/s to the server
	Recv    []float32 `json:"recv"` // bytes/s from the server
}

// Snapshot copies the history out.
func (sm *Sampler) Snapshot() Samples {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	count := min(sm.tick, int64(sm.n))
	start := sm.tick - count
	out := Samples{Interval: sm.every.Seconds(), Times: []int64{}, Servers: []ServerSamples{}}
	for t := start; t < sm.tick; t++ {
		out.Times = append(out.Times, sm.times[t%int64(sm.n)])
	}
	for _, se := range sm.series {
		from := max(start, se.first)
		ss := ServerSamples{Slot: se.slot, Address: se.address}
		for t := from; t < sm.tick; t++ {
			j := t % int64(sm.n)
			ss.Conns = append(ss.Conns, se.conns[j])
			ss.Sent = append(ss.Sent, se.sent[j])
			ss.Recv = append(ss.Recv, se.recv[j])
		}
		out.Servers = append(out.Servers, ss)
	}
	slices.SortFunc(out.Servers, func(a, b ServerSamples) int { return a.Slot - b.Slot })
	return out
}
