// Package appliance implements the appliance's init process, the program
// the kernel starts as /gokrazy/init: it boots the gokrazy runtime (which
// mounts /perm, configures the loopback interface and serves its status and
// update API), gives pen its configuration on first boot, supervises
// gokrazy's own dhcp, ntp, randomd and heartbeat, and runs one pen per
// service (package services; /perm/pen/pen.cfg is service "main").
//
// Files and ports (see docs/APPLIANCE.md):
//
//   - /etc/pen/pen.cfg: the default configuration baked into the root file
//     system by the image builder.
//   - /perm/pen/pen.cfg: the configuration of service "main", copied from
//     the default on first boot and kept across updates.
//   - /etc/pen/services/NAME.cfg: further default services, and
//     /perm/pen/services/NAME/pen.cfg the services pen runs (package
//     services).
//   - /etc/http-port.txt: moves gokrazy's HTTP server to port 9080, so that
//     pen owns ports 80 and 443.
//   - /perm/appliance/firmware.json: the trial boot's state (package
//     firmware); /perm/appliance/trial-timeout and trial-boots, or
//     pen.trial_timeout= and pen.trial_boots= on the kernel command line,
//     its settings.
//
// Every boot of a build that is not the last one known good is a trial
// (see package firmware): Run watches pen's health (Health) until the
// trial's deadline and either makes the build the good one or points the
// boot partition back at the previous root and reboots.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/gokrazy/gokrazy"
	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/internal/atomicfile"
	"github.com/pen-lb/pen-appliance/internal/firmware"
	"github.com/pen-lb/pen-appliance/internal/services"
	"github.com/pen-lb/pen-appliance/pen/version"
)

// Paths on the appliance.
const (
	// DefaultConfig is pen's configuration as the image was built with.
	DefaultConfig = "/etc/pen/pen.cfg"
	// PermDir is where the persistent partition is mounted.
	PermDir = "/perm"
	// PenBinary is the load balancer.
	PenBinary = "/user/pen"
	// PenHome is pen's $HOME and working directory, as gokrazy's
	// supervisor gives /user/pen.
	PenHome = "/perm/home/pen"
	// SystemDir holds gokrazy's system services and this program.
	SystemDir = "/gokrazy"
	// DefaultServices holds the image's further default services, one
	// NAME.cfg per service, installed on the first boot with services.
	DefaultServices = "/etc/pen/services"
)

// PermConfig returns the path of pen's persistent configuration below
// permDir.
func PermConfig(permDir string) string {
	return filepath.Join(permDir, "pen", "pen.cfg")
}

// EnsureConfig returns the configuration file pen should run with. When
// permDir holds no pen/pen.cfg yet, it copies defaultPath there first,
// atomically. If that fails (for example because /perm could not be
// mounted and is read-only), it returns defaultPath together with the
// error, so that pen still starts with the image's default.
func EnsureConfig(permDir, defaultPath string) (string, error) {
	target := PermConfig(permDir)
	if _, err := os.Stat(target); err == nil {
		return target, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return defaultPath, fmt.Errorf("checking %s: %w", target, err)
	}
	data, err := os.ReadFile(defaultPath)
	if err != nil {
		return defaultPath, fmt.Errorf("reading default configuration: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return defaultPath, fmt.Errorf("creating %s: %w", filepath.Dir(target), err)
	}
	if err := atomicfile.WriteFile(target, data, 0o644); err != nil {
		return defaultPath, fmt.Errorf("installing default configuration: %w", err)
	}
	return target, nil
}

// PenArgs returns pen's arguments: stay in the foreground (the supervisor
// expects that) and read configPath.
func PenArgs(configPath string) []string {
	return []string{"-f", "-F", configPath}
}

// Commands returns the programs to supervise, with paths below root: every
// system service in root/gokrazy except init itself, sorted by name, and
// then pen (if the image has it) running with configPath.
func Commands(root, configPath string) ([]*exec.Cmd, error) {
	entries, err := os.ReadDir(filepath.Join(root, SystemDir))
	if err != nil {
		return nil, fmt.Errorf("listing system services: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && e.Name() != "init" {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var cmds []*exec.Cmd
	for _, name := range names {
		cmds = append(cmds, exec.Command(filepath.Join(root, SystemDir, name)))
	}
	pen := filepath.Join(root, PenBinary)
	if _, err := os.Stat(pen); err != nil {
		return cmds, fmt.Errorf("pen is missing: %w", err)
	}
	cmds = append(cmds, exec.Command(pen, PenArgs(configPath)...))
	return cmds, nil
}

// Run is the init process. It returns only on failure; the caller exits,
// and the kernel then panics and, with panic=10, reboots.
func Run(buildTimestamp string) error {
	log.SetFlags(log.LstdFlags | log.Lshortfile)
	log.Printf("pen appliance, build timestamp %s", buildTimestamp)
	if err := gokrazy.Boot(buildTimestamp); err != nil {
		return fmt.Errorf("booting: %w", err)
	}
	host, _ := os.Hostname()
	log.Printf("hostname %q, model %q", host, gokrazy.Model())

	config, err := EnsureConfig(PermDir, DefaultConfig)
	if err != nil {
		log.Printf("pen configuration: %v", err)
	}
	log.Printf("pen configuration: %s", config)

	// One pen per service (package services), unless /perm is unusable:
	// then the one pen of the image's default configuration, supervised
	// by gokrazy as the system services are.
	health := &Health{Config: config, Binary: PenBinary, ProcDir: "/proc"}
	var sup *services.Supervisor
	if config == PermConfig(PermDir) {
		if err := services.Default.Migrate(config, DefaultServices); err != nil {
			log.Printf("services: %v; running pen with %s alone", err, config)
		} else {
			sup = &services.Supervisor{Layout: services.Default, Binary: PenBinary, Home: PenHome,
				Logf: log.Printf, Stdout: os.Stdout, Stderr: os.Stderr}
			health.PID = func() (int, error) { return sup.PID(services.MainName) }
		}
	}

	// The trial counts this boot before pen starts.
	trial, err := newTrial(buildTimestamp, health)
	if err != nil {
		log.Printf("firmware: no trial boot: %v", err)
	} else {
		go func() {
			if _, err := trial.Run(context.Background()); err != nil {
				log.Printf("firmware: %v", err)
			}
		}()
	}

	cmds, err := Commands("/", config)
	if err != nil {
		// Without pen the appliance still boots, so that it can be
		// inspected and updated over the network.
		log.Print(err)
	}
	var env []string
	if trial != nil {
		env = firmware.Env(firmware.StatePath, trial.Running)
	}
	if sup != nil {
		sup.Env = env
		if len(cmds) > 0 && cmds[len(cmds)-1].Path == PenBinary {
			cmds = cmds[:len(cmds)-1]
		}
	}
	procs := make([]*gokrazy.Service, len(cmds))
	for i, cmd := range cmds {
		if cmd.Path == PenBinary {
			cmd.Env = append(os.Environ(), env...)
		}
		log.Printf("supervising %q", cmd.Args)
		procs[i] = gokrazy.NewService(cmd)
	}
	if err := gokrazy.SuperviseServices(procs); err != nil {
		return fmt.Errorf("supervising services: %w", err)
	}
	if sup != nil {
		log.Printf("services: supervising a pen per service of %s", services.Default.Dir)
		if err := sup.Run(context.Background()); err != nil {
			log.Print(err) // the system services and gokrazy's API still run
		}
	}
	select {} // the supervisor and HTTP server run in the background
}

// newTrial prepares this boot's trial.
func newTrial(buildTimestamp string, health *Health) (*firmware.Trial, error) {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, err
	}
	root, err := firmware.ParseRoot(string(cmdline))
	if err != nil {
		return nil, err
	}
	timeoutFile, _ := os.ReadFile(filepath.Join(PermDir, firmware.TimeoutFile))
	bootsFile, _ := os.ReadFile(filepath.Join(PermDir, firmware.MaxBootsFile))
	settings, errs := firmware.ParseSettings(string(cmdline), string(timeoutFile), string(bootsFile))
	for _, err := range errs {
		log.Printf("firmware: %v", err)
	}
	return &firmware.Trial{
		StatePath:  firmware.StatePath,
		Running:    firmware.Build{Root: root.Partition, Version: version.Version, BuildTime: buildTimestamp},
		Settings:   settings,
		Interval:   time.Second,
		Stable:     5,
		Now:        time.Now,
		Healthy:    health.Probe,
		SwitchRoot: func(n int) error { return switchRoot(root, n) },
		Reboot:     reboot,
		Logf:       log.Printf,
	}, nil
}

// switchRoot re-points the boot partition's root= to partition n.
func switchRoot(root firmware.Root, n int) error {
	if root.GUID == "" {
		return errors.New("the kernel command line does not name the root by GPT GUID; cannot find the boot partition")
	}
	dev, err := firmware.FindBootPartition("/sys/block", "/dev", root.GUID)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := firmware.SwitchRoot(f, n); err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	return f.Close()
}

// reboot restarts the machine through its firmware (no kexec, so that the
// boot loader reads the rewritten command line), after flushing /perm.
func reboot() error {
	unix.Sync()
	time.Sleep(time.Second) // let the log reach the console
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}
