package webui

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pen-lb/pen-appliance/pen/daemon"
	"github.com/pen-lb/pen-appliance/pen/metrics"
)

// Attach adds the admin UI and /metrics to the pen that d runs: once pen
// serves, the UI starts following the admin_* settings (it serves nothing
// while admin_listen is unset), and it closes when pen stops.
//
// The listeners are opened after pen has dropped its privileges (-u), so
// with -u the admin ports must be ones that user may bind (1024 and up);
// the appliance runs pen as root and uses 8443 and 8080.
func Attach(d *daemon.Daemon) {
	d.AfterStart(func(d *daemon.Daemon) error {
		reg := prometheus.NewRegistry()
		if err := metrics.Register(reg, metrics.EngineSource(d.Engine()), d.Interp()); err != nil {
			return err
		}
		s := New(Options{Interp: d.Interp(), State: EngineState(d.Engine()), Log: d.Log(), Gatherer: reg})
		s.Start()
		d.OnStop(s.Close)
		return nil
	})
}
