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
	"io"
	"os"
	"strings"
	"time"

	"github.com/pen-lb/pen-appliance/pen/control"
	"github.com/pen-lb/pen-appliance/pen/version"
)

// timeout bounds connecting, sending and waiting for the whole answer.
const timeout = 30 * time.Second

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: penctl host:port|/path command [args...]
       penctl --help | --version

Sends one command to pen's control port (pen -C) and prints the reply.
Exits 1, with pen's reason on standard error, when the command was refused,
failed, or was applied but could not be saved to the configuration file.
`)
}

func main() {
	if len(os.Args) == 2 {
		switch os.Args[1] {
		case "--help", "-h":
			usage(os.Stdout)
			return
		case "--version":
			fmt.Printf("penctl %s (compatible with Pen %s)\n", version.Version, version.Pen)
			return
		}
	}
	if len(os.Args) < 3 {
		usage(os.Stderr)
		os.Exit(1)
	}
	out, err := control.Request(os.Args[1], strings.Join(os.Args[2:], " "), timeout)
	os.Stdout.Write(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "penctl: %v\n", err)
		os.Exit(1)
	}
}
