// Binary penctl sends one command to a running pen's control socket and
// prints the reply, as Pen's penctl does: penctl host:port command... or
// penctl /path/to/socket command...
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pen-lb/pen-appliance/pen/control"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: penctl host:port|/path command [args...]")
		os.Exit(1)
	}
	out, err := control.Request(os.Args[1], strings.Join(os.Args[2:], " "), 30*time.Second)
	os.Stdout.Write(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "penctl: %v\n", err)
		os.Exit(1)
	}
}
