package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/image"
	"github.com/pen-lb/pen-appliance/image/internal/progress"
	"github.com/pen-lb/pen-appliance/image/update"
)

// updateCmd is "penimage update": build an image for the appliance at
// -target (or take -image) and push it over gokrazy's update API.
func updateCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	fs.SetOutput(stderr)
	board := fs.String("board", "", "board: "+strings.Join(boards.Names(), ", ")+" (required unless -image is given)")
	target := fs.String("target", "", "the appliance's update API, http://HOST:9080")
	passwordFile := fs.String("password-file", "", "file holding the password of the appliance's update API (user gokrazy); or give it in -target's URL as http://gokrazy:PASSWORD@HOST:9080, or in $PENIMAGE_PASSWORD")
	imageFile := fs.String("image", "", "push this image file (penimage build output) instead of building one")
	config := fs.String("config", "", "default pen configuration to build into the image (the appliance keeps its own in /perm)")
	version := fs.String("version", "", "pen's version string in the new build (git describe by default)")
	kernelArgs := fs.String("kernel-args", "", "extra kernel arguments of the new build, separated by spaces, e.g. pen.trial_timeout=90s")
	kexec := fs.Bool("kexec", false, "reboot by kexec instead of through the firmware and boot loader")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the appliance to come back")
	watch := fs.Duration("watch", 90*time.Second, "how long to keep watching the new build once it answers, for a rollback by its trial boot (which decides within 60 s of boot by default); 0 returns as soon as it answers")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *target == "" || (*board == "" && *imageFile == "") || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: penimage update -target http://HOST:9080 (-board B [build flags] | -image FILE) [-password-file F]")
		fs.PrintDefaults()
		return errUsage
	}
	password, err := readPassword(*passwordFile)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	client := &http.Client{Timeout: 30 * time.Minute} // an upload over a slow link
	t, err := update.NewTarget(ctx, *target, password, client)
	if err != nil {
		return fmt.Errorf("contacting the appliance: %w", err)
	}
	st, err := t.Status(ctx)
	if err != nil {
		return fmt.Errorf("reading the appliance's status: %w", err)
	}
	if *board != "" {
		b, err := boards.Lookup(*board)
		if err != nil {
			return err
		}
		if err := update.CheckImage(st, &update.Image{Board: b.Name, GOARCH: b.GOARCH, BoardModels: b.Models, Hostname: st.Hostname}); err != nil {
			return err
		}
	}

	path := *imageFile
	if path == "" {
		tmp, err := os.MkdirTemp("", "penimage-update")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		path = filepath.Join(tmp, "update.img")
		fmt.Fprintf(stderr, "building for %s (hostname %s, the appliance's)\n", *board, st.Hostname)
		if err := build(ctx, buildArgs{board: *board, output: path, hostname: st.Hostname, password: password, config: *config, version: *version, kernelArgs: *kernelArgs}, io.Discard, stderr); err != nil {
			return err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	parts, err := image.ReadParts(f, fi.Size())
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if *board != "" && parts.Info.Board != *board {
		return fmt.Errorf("%s was built for board %s, not %s", path, parts.Info.Board, *board)
	}
	img := &update.Image{
		Root: parts.Root, RootSize: parts.Root.Size(),
		Boot: parts.Boot, BootSize: parts.Boot.Size(),
		MBR:   strings.NewReader(string(parts.MBR)),
		Board: parts.Board.Name, GOARCH: parts.Board.GOARCH, BoardModels: parts.Board.Models,
		Hostname:       parts.Info.Hostname,
		BuildTimestamp: parts.Info.Timestamp,
		Version:        parts.Info.Version,
	}
	fmt.Fprintf(stderr, "update: board %s, pen %s, build %s\n", img.Board, img.Version, img.BuildTimestamp)
	res, err := update.Update(ctx, t, img, update.Options{
		Progress: stderr,
		Kexec:    *kexec,
		Timeout:  *timeout,
		Watch:    *watch,
		NewMeter: func(label string, total int64) update.Meter {
			m := progress.New(stderr, label, total)
			m.Start()
			return m
		},
	})
	if errors.Is(err, update.ErrRolledBack) {
		fmt.Fprintf(stdout, "rolled back: %s runs its old build %s again; the new build %s (pen %s) did not pass its trial boot\n",
			t, res.After.BuildTimestamp, img.BuildTimestamp, img.Version)
		return errSilent
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "updated %s in %.0fs (uploads %.0fs, reboot and watch %.0fs): it runs pen %s, build %s (was build %s)\n",
		t, (res.Uploaded + res.Rebooted).Seconds(), res.Uploaded.Seconds(), res.Rebooted.Seconds(),
		res.Version, res.After.BuildTimestamp, res.Before.BuildTimestamp)
	return nil
}

// readPassword reads the update API's password from file, or from
// $PENIMAGE_PASSWORD, or returns "" (then the target URL must carry it).
func readPassword(file string) (string, error) {
	if file == "" {
		return os.Getenv("PENIMAGE_PASSWORD"), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return pw, nil
}
