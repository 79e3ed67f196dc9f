package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/pen-lb/pen-appliance/image"
)

// flashCmd is "penimage flash": write an image (given, or built now) to a
// block device or a file, read it back, and grow /perm to the target.
func flashCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flash", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var a buildArgs
	a.flags(fs, true)
	imageFile := fs.String("image", "", "image file to write (penimage build output); without it, build one with the build flags")
	target := fs.String("o", "", "block device (e.g. /dev/sdb, /dev/mmcblk0) or file to write")
	force := fs.Bool("force-non-removable", false, "allow a block device the kernel does not report as removable, USB, SD/MMC or loop (an internal disk): it is overwritten entirely")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *target == "" || (*imageFile == "") == (a.board == "") || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: penimage flash (-image FILE | -board B [build flags]) -o DEVICE|FILE [-force-non-removable]")
		fs.PrintDefaults()
		return errUsage
	}
	opts := image.FlashOptions{Progress: stderr, ForceNonRemovable: *force}
	// Refuse a wrong target before spending time on a build.
	if _, err := image.CheckFlashTarget(*target, opts); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	img := *imageFile
	if img == "" {
		tmp, err := os.MkdirTemp("", "penimage-flash")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		a.output = filepath.Join(tmp, "pen-"+a.board+".img")
		if err := build(ctx, a, stderr, stderr); err != nil {
			return err
		}
		img = a.output
	}
	res, err := image.Flash(ctx, img, *target, opts)
	if err != nil {
		return err
	}
	grown := "as built"
	if res.Grown {
		grown = "grown to the target"
	}
	fmt.Fprintf(stdout, "flashed %s: %d bytes written in %.1fs, read back and identical in %.1fs; /perm %d MiB (%s)\n",
		res.Target, res.Written, res.Write.Seconds(), res.Verify.Seconds(), res.PermSize>>20, grown)
	return nil
}
