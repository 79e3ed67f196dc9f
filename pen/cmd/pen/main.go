// Binary pen is a TCP and UDP load balancer compatible with Ulric
// Eriksson's Pen: the same command line, configuration file and control
// protocol, plus an admin web UI and Prometheus metrics (admin_listen).
// See the README and docs/ADMIN.md for usage.
package main

import (
	"os"

	"github.com/pen-lb/pen-appliance/pen/daemon"
	"github.com/pen-lb/pen-appliance/webui"
)

func main() {
	d := daemon.New()
	webui.Attach(d)
	os.Exit(d.Main(os.Args[1:]))
}
