package webui

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/daemon"
	"github.com/pen-lb/pen-appliance/pen/metrics"
)

// Attach adds the admin UI and /metrics to the pen that d runs: once pen
// serves, the UI starts following the admin_* settings (it serves nothing
// while admin_listen is unset), and it closes when pen stops.
//
// The listeners are opened before pen drops its privileges (-u), so the
// admin ports may be privileged ones; a listener moved later by a command
// is bound as the user pen then runs as.
func Attach(d *daemon.Daemon) {
	d.BeforeDrop(func(d *daemon.Daemon) error {
		snap := NewSnapshot(d.Interp())
		// On the appliance /metrics carries every service's pen, each
		// with its service label (services.go).
		gather, err := serviceMetrics(prometheus.NewRegistry(), metrics.EngineSource(d.Engine()), snap)
		if err != nil {
			return err
		}
		state := EngineState(d.Engine())
		d.Interp().SetStatus(func(c *config.Config) any { return runtimeStatus(state, c) })
		s := New(Options{Interp: d.Interp(), State: state, Log: d.Log(), Gatherer: gather, Config: snap})
		s.Start()
		d.OnStop(s.Close)
		return nil
	})
}
