// Binary penimage builds the appliance's disk images:
//
//	penimage build -board pc -o images/pen-pc.img [-hostname H] [-password P] [-config pen.cfg] [-size 2G]
//
// It runs inside this module's source tree, where it cross-compiles the
// appliance's programs. See docs/APPLIANCE.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/image"
)

func usage() {
	fmt.Fprintf(os.Stderr, "usage: penimage build -board %s -o FILE [-hostname H] [-password P] [-config pen.cfg] [-size N]\n", strings.Join(boards.Names(), "|"))
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] != "build" {
		usage()
	}
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	board := fs.String("board", "", "board: "+strings.Join(boards.Names(), ", "))
	output := fs.String("o", "", "image file to write")
	hostname := fs.String("hostname", image.DefaultHostname, "hostname of the appliance (the partition GUIDs derive from it; keep it for updates)")
	password := fs.String("password", "", "password of gokrazy's status and update API (user gokrazy); random and printed when empty")
	config := fs.String("config", "", "pen configuration file to install instead of the default")
	size := fs.String("size", "2G", "image size, e.g. 2G, 1800M, 8G")
	fs.Parse(os.Args[2:])
	if *board == "" || *output == "" || fs.NArg() > 0 {
		usage()
	}
	if err := run(*board, *output, *hostname, *password, *config, *size); err != nil {
		fmt.Fprintln(os.Stderr, "penimage:", err)
		os.Exit(1)
	}
}

func run(boardName, output, hostname, password, configPath, size string) error {
	b, err := boards.Lookup(boardName)
	if err != nil {
		return err
	}
	n, err := image.ParseSize(size)
	if err != nil {
		return err
	}
	var config []byte
	if configPath != "" {
		if config, err = os.ReadFile(configPath); err != nil {
			return err
		}
	}
	generated := password == ""
	if generated {
		password = image.GeneratePassword()
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(gomod)), "go.mod") {
		return fmt.Errorf("run penimage inside the pen appliance source tree (go env GOMOD: %v)", err)
	}
	// On Ctrl-C the build stops and removes its temporary files.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := image.Build(ctx, image.Options{
		Board:     b,
		Output:    output,
		Hostname:  hostname,
		Password:  password,
		Config:    config,
		Size:      n,
		ModuleDir: filepath.Dir(strings.TrimSpace(string(gomod))),
		Progress:  os.Stderr,
	})
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s: %d bytes (%d MiB stored, sparse) in %.1fs\n", res.Output, res.Size, res.Stored>>20, res.Duration.Seconds())
	fmt.Printf("kernel command line: %s\n", res.Cmdline)
	fmt.Printf("pen: ports 80 and 443; gokrazy status and update API: http://%s:%d/ (user gokrazy)\n", hostname, image.GokrazyHTTPPort)
	if generated {
		fmt.Printf("generated password: %s\n", password)
	}
	return nil
}
