// Binary penimage builds the appliance's disk images, updates running
// appliances over the network and writes images to cards and disks:
//
//	penimage build -board pc -o images/pen-pc.img [-hostname H] [-password P] [-config pen.cfg] [-size 2G]
//	penimage update -target http://HOST:9080 (-board pc | -image FILE) [-password-file F]
//	penimage flash (-image FILE | -board pc) -o /dev/sdX
//
// Inside this module's source tree it cross-compiles the appliance's
// programs from the tree; installed with go install …/penimage@VERSION, it
// builds them from that module version, from any directory. See
// docs/APPLIANCE.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/image"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/version"
)

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: penimage build -board %s -o FILE [-hostname H] [-password P] [-config pen.cfg] [-size N] [-version V]\n", strings.Join(boards.Names(), "|"))
	fmt.Fprintf(w, "       penimage update -target http://HOST:9080 (-board B [build flags] | -image FILE) [-password-file F]\n")
	fmt.Fprintf(w, "       penimage flash (-image FILE | -board B [build flags]) -o DEVICE|FILE [-force-non-removable]\n")
	fmt.Fprintf(w, "       penimage --help | --version\n")
}

var (
	// errUsage: the usage was printed; exit 2.
	errUsage = errors.New("usage")
	// errSilent: the outcome was printed; exit 1.
	errSilent = errors.New("failed")
)

func main() {
	if len(os.Args) == 2 {
		switch os.Args[1] {
		case "--help", "-h", "help":
			usage(os.Stdout)
			fmt.Println("\nSee docs/APPLIANCE.md; penimage build -h, update -h and flash -h list the options.")
			return
		case "--version":
			fmt.Printf("penimage %s (pen compatible with Pen %s)\n", version.Version, version.Pen)
			return
		}
	}
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = buildCmd(os.Args[2:], os.Stdout, os.Stderr)
	case "update":
		err = updateCmd(os.Args[2:], os.Stdout, os.Stderr)
	case "flash":
		err = flashCmd(os.Args[2:], os.Stdout, os.Stderr)
	default:
		usage(os.Stderr)
		os.Exit(2)
	}
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, errSilent):
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "penimage:", err)
		os.Exit(1)
	}
}

// buildArgs are the build flags, shared by build, update and flash.
type buildArgs struct {
	board, output, hostname, password, config, size, version, kernelArgs string
}

func (a *buildArgs) flags(fs *flag.FlagSet, withIdentity bool) {
	fs.StringVar(&a.board, "board", "", "board: "+strings.Join(boards.Names(), ", "))
	fs.StringVar(&a.config, "config", "", "pen configuration file to install instead of the default; several files separated by commas, or a directory, for several services (the first file, or main.cfg, is service main; NAME.cfg is service NAME)")
	fs.StringVar(&a.version, "version", "", "pen's version string (git describe of the source tree by default)")
	fs.StringVar(&a.kernelArgs, "kernel-args", "", "extra kernel arguments, separated by spaces, e.g. pen.trial_timeout=90s")
	if withIdentity {
		fs.StringVar(&a.hostname, "hostname", image.DefaultHostname, "hostname of the appliance (the partition GUIDs derive from it; keep it for updates)")
		fs.StringVar(&a.password, "password", "", "password of gokrazy's status and update API (user gokrazy); random and printed when empty")
		fs.StringVar(&a.size, "size", "2G", "image size, e.g. 2G, 1800M, 8G")
	}
}

func buildCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var a buildArgs
	a.flags(fs, true)
	fs.StringVar(&a.output, "o", "", "image file to write")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if a.board == "" || a.output == "" || fs.NArg() > 0 {
		usage(stderr)
		return errUsage
	}
	// On Ctrl-C the build stops and removes its temporary files.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return build(ctx, a, stdout, stderr)
}

func build(ctx context.Context, a buildArgs, stdout, stderr io.Writer) error {
	b, err := boards.Lookup(a.board)
	if err != nil {
		return err
	}
	if a.size == "" {
		a.size = "2G"
	}
	n, err := image.ParseSize(a.size)
	if err != nil {
		return err
	}
	config := image.DefaultConfig
	var svcs map[string][]byte
	if a.config != "" {
		if config, svcs, err = image.LoadConfigs(a.config); err != nil {
			return err
		}
	}
	password := a.password
	generated := password == ""
	if generated {
		password = image.GeneratePassword()
	}
	src, err := findSource(ctx, stderr)
	if err != nil {
		return err
	}
	if a.version == "" && src.standalone {
		a.version = src.version
	}
	res, err := image.Build(ctx, image.Options{
		Board:      b,
		Output:     a.output,
		Hostname:   a.hostname,
		Password:   password,
		Config:     config,
		Services:   svcs,
		Size:       n,
		ModuleDir:  src.dir,
		Standalone: src.standalone,
		Version:    a.version,
		KernelArgs: strings.Fields(a.kernelArgs),
		Progress:   stderr,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %d bytes (%d MiB stored, sparse) in %.1fs\n", res.Output, res.Size, res.Stored>>20, res.Duration.Seconds())
	fmt.Fprintf(stdout, "kernel command line: %s\n", res.Cmdline)
	fmt.Fprintf(stdout, "%s; gokrazy status and update API: http://%s:%d/ (user gokrazy)\n", describePorts(config), a.hostname, image.GokrazyHTTPPort)
	if generated {
		fmt.Fprintf(stdout, "generated password: %s\n", password)
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
