// Binary pen is a TCP and UDP load balancer compatible with Ulric
// Eriksson's Pen: the same command line, configuration file and control
// protocol. See the README for usage.
package main

import (
	"os"

	"github.com/pen-lb/pen-appliance/pen/daemon"
)

func main() {
	os.Exit(daemon.New().Main(os.Args[1:]))
}
