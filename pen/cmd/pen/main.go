// Binary pen is a TCP and UDP load balancer compatible with Ulric
// Eriksson's Pen: the same command line, configuration file and control
// protocol.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "pen: not yet wired")
	os.Exit(1)
}
