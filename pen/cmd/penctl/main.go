// Binary penctl sends one command to a running pen's control socket and
// prints the reply, as Pen's penctl does: penctl host:port command... or
// penctl /path/to/socket command...
//
// Unlike Pen's, it exits with status 1 when the command was not run, failed
// or was applied but not saved, and prints pen's reason on standard error
// (see control.Request for how it learns that).
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pen-lb/pen-appliance/pen/control"
)

// timeout bounds connecting, sending and waiting for the whole answer.
const timeout = 30 * time.Second

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: penctl host:port|/path command [args...]")
		os.Exit(1)
	}
	out, err := control.Request(os.Args[1], strings.Join(os.Args[2:], " "), timeout)
	os.Stdout.Write(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "penctl: %v\n", err)
		os.Exit(1)
	}
}
