// Binary init is the appliance's init process, installed as /gokrazy/init
// by the image builder, which sets buildTimestamp at link time.
package main

import (
	"log"

	"github.com/pen-lb/pen-appliance/appliance"
)

// buildTimestamp is set with -ldflags "-X main.buildTimestamp=...".
var buildTimestamp = "unknown"

func main() {
	log.Fatal(appliance.Run(buildTimestamp))
}
