package update_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/pen-lb/pen-appliance/image/update"
)

// The steps of an update one by one, in the order the device needs them:
// root, boot, MBR boot code, then switch and reboot. Update does all of
// this and waits for the device to come back.
func Example() {
	ctx := context.Background()
	client := &http.Client{Timeout: 10 * time.Minute}
	t, err := update.NewTarget(ctx, "http://pen:9080", os.Getenv("GOKRAZY_PASSWORD"), client)
	if err != nil {
		log.Fatal(err)
	}
	for _, part := range []struct{ dest, file string }{
		{"root", "root.squashfs"},
		{"boot", "boot.fat"},
		{"mbr", "mbr.bin"}, // 446 bytes
	} {
		f, err := os.Open(part.file)
		if err != nil {
			log.Fatal(err)
		}
		err = t.StreamTo(ctx, part.dest, f) // checks the device's digest
		f.Close()
		if err != nil {
			log.Fatal(err) // never switch after a failed upload
		}
	}
	if err := t.Switch(ctx); err != nil {
		log.Fatal(err)
	}
	if err := t.Reboot(ctx, false); err != nil {
		log.Fatal(err)
	}
}
