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
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/image"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/version"
)

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: penimage build -board %s -o FILE [-hostname H] [-password P] [-config pen.cfg] [-size N]\n", strings.Join(boards.Names(), "|"))
	fmt.Fprintf(w, "       penimage --help | --version\n")
}

func main() {
	if len(os.Args) == 2 {
		switch os.Args[1] {
		case "--help", "-h", "help":
			usage(os.Stdout)
			fmt.Println("\nSee docs/APPLIANCE.md; penimage build -h lists the build options.")
			return
		case "--version":
			fmt.Printf("penimage %s (pen compatible with Pen %s)\n", version.Version, version.Pen)
			return
		}
	}
	if len(os.Args) < 2 || os.Args[1] != "build" {
		usage(os.Stderr)
		os.Exit(2)
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
		usage(os.Stderr)
		os.Exit(2)
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
	config := image.DefaultConfig
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
	fmt.Printf("%s; gokrazy status and update API: http://%s:%d/ (user gokrazy)\n", describePorts(config), hostname, image.GokrazyHTTPPort)
	if generated {
		fmt.Printf("generated password: %s\n", password)
	}
	return nil
}

// describePorts says where pen listens with the configuration cfg: the
// listen address and the admin UI's. It reads the settings line by line
// instead of running the configuration, which would resolve server names
// and read files of the build machine; the last setting of each wins, as
// when pen runs the file.
func describePorts(cfg []byte) string {
	var listen, admin, redirect string
	var udp, adminTLS bool
	for _, line := range strings.Split(string(cfg), "\n") {
		w := config.Split(line)
		if len(w) == 0 || strings.HasPrefix(w[0], "#") {
			continue
		}
		arg := ""
		if len(w) > 1 {
			arg = w[1]
		}
		switch w[0] {
		case "listen":
			if arg != "" {
				listen = arg
			}
		case "udp":
			udp = true
		case "admin_listen":
			if arg != "" {
				admin = arg
			}
		case "admin_redirect":
			if arg != "" {
				redirect = arg
			}
		case "admin_tls":
			adminTLS = arg != ""
		case "no":
			switch arg {
			case "listen":
				listen = ""
			case "udp":
				udp = false
			case "admin_listen":
				admin = ""
			case "admin_redirect":
				redirect = ""
			case "admin_tls":
				adminTLS = false
			}
		}
	}
	proto := "TCP"
	if udp {
		proto = "UDP"
	}
	var parts []string
	if listen == "" {
		parts = append(parts, "pen: no listen address in the configuration (pen will not start)")
	} else {
		parts = append(parts, fmt.Sprintf("pen: %s %s", proto, where(listen)))
	}
	if admin != "" {
		scheme := "http"
		if adminTLS {
			scheme = "https"
		}
		ui := fmt.Sprintf("admin UI: %s %s", scheme, where(admin))
		if redirect != "" {
			ui += fmt.Sprintf(" (http %s redirects there)", where(redirect))
		}
		parts = append(parts, ui)
	}
	return strings.Join(parts, "; ")
}

// where phrases a listen spec: "port 80", "on 10.0.0.1:80", "on /path".
func where(spec string) string {
	if !strings.ContainsAny(spec, ":/") {
		return "port " + spec
	}
	return "on " + spec
}
