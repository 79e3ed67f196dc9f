package daemon

import (
	"io"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

func newTestLog(w io.Writer) *diag.Logger { return diag.New(w) }

func newInterp(d *Daemon) *config.Interp { return config.New(config.Default(), d.proc, d.log) }
