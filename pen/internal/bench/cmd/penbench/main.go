// Binary penbench is the load and measurement tool behind `make bench`
// (scripts/bench.sh): it runs wrk and dnsperf against contenders, holds
// idle connections to measure a proxy's memory, serves echo and DNS
// backends, and prints the report. Run it without arguments for its
// commands.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/pen-lb/pen-appliance/pen/internal/bench"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("penbench: ")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		stop()
		log.Fatal(err)
	}
}
