package engine

import (
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// An HTTP health check takes a server out while its health URL fails,
// clients go to the other server meanwhile, and the first passing probe
// brings it back; a TCP check of a closed port keeps that server out.
func TestHealthChecks(t *testing.T) {
	f := start(t)
	var status atomic.Int64
	status.Store(200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	c := f.cfg.Clone()
	c.RoundRobin = true
	web := server(t, ln.Addr().String())
	web.Check = config.Check{Kind: "http", Path: "/health", Status: 200, Interval: 1}
	c.SetServer(1, web)
	dead := server(t, closedAddr)
	dead.Check = config.Check{Kind: "tcp", Interval: 1}
	c.SetServer(2, dead)
	if err := f.eng.Apply(c); err != nil {
		t.Fatal(err)
	}
	waitUntil := func(what string, cond func(h map[uint64]HealthResult, st []config.ServerState) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(f.eng.Health(), f.eng.Servers()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v", what, f.eng.Health())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	up := func(st []config.ServerState, i int) bool { return !st[i].Until.After(time.Now()) }
	waitUntil("the first probes", func(h map[uint64]HealthResult, st []config.ServerState) bool {
		return h[web.ID()].Probes > 0 && h[dead.ID()].Probes > 0
	})
	if h := f.eng.Health(); !h[web.ID()].OK || h[dead.ID()].OK || h[dead.ID()].Err == "" {
		t.Errorf("first probes: %+v", h)
	}
	if st := f.eng.Servers(); !up(st, 1) || up(st, 2) {
		t.Errorf("server 1 should be up and server 2 out: %+v", st)
	}
	// Server 1's health URL fails: it goes out, clients reach only A.
	status.Store(503)
	waitUntil("server 1 out", func(h map[uint64]HealthResult, st []config.ServerState) bool { return !up(st, 1) })
	if e := f.eng.Health()[web.ID()].Err; e != "HTTP 503, want 200" {
		t.Errorf("failure: %q", e)
	}
	for i := 0; i < 4; i++ {
		f.serves(fmt.Sprint("client ", i), c.Listen, "A")
	}
	status.Store(200)
	waitUntil("server 1 back", func(h map[uint64]HealthResult, st []config.ServerState) bool { return up(st, 1) })
	// No check: the checker stops, and a server it had taken out comes back.
	c = c.Clone()
	c.Servers[2].Check = config.Check{}
	if err := f.eng.Apply(c); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.eng.Health()[dead.ID()]; ok || !up(f.eng.Servers(), 2) {
		t.Errorf("after no check: %+v %+v", f.eng.Health(), f.eng.Servers())
	}
}
