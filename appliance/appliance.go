// Package appliance implements the appliance's init process, the program
// the kernel starts as /gokrazy/init: it boots the gokrazy runtime (which
// mounts /perm, configures the loopback interface and serves its status and
// update API), gives pen its configuration on first boot, and supervises
// pen together with gokrazy's own dhcp, ntp, randomd and heartbeat.
//
// Files and ports (see docs/APPLIANCE.md):
//
//   - /etc/pen/pen.cfg: the default configuration baked into the root file
//     system by the image builder.
//   - /perm/pen/pen.cfg: the configuration pen runs with, copied from the
//     default on first boot and kept across updates.
//   - /etc/http-port.txt: moves gokrazy's HTTP server to port 9080, so that
//     pen owns ports 80 and 443.
package appliance

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/gokrazy/gokrazy"

	"github.com/pen-lb/pen-appliance/internal/atomicfile"
)

// Paths on the appliance.
const (
	// DefaultConfig is pen's configuration as the image was built with.
	DefaultConfig = "/etc/pen/pen.cfg"
	// PermDir is where the persistent partition is mounted.
	PermDir = "/perm"
	// PenBinary is the load balancer.
	PenBinary = "/user/pen"
	// SystemDir holds gokrazy's system services and this program.
	SystemDir = "/gokrazy"
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

	cmds, err := Commands("/", config)
	if err != nil {
		// Without pen the appliance still boots, so that it can be
		// inspected and updated over the network.
		log.Print(err)
	}
	services := make([]*gokrazy.Service, len(cmds))
	for i, cmd := range cmds {
		log.Printf("supervising %q", cmd.Args)
		services[i] = gokrazy.NewService(cmd)
	}
	if err := gokrazy.SuperviseServices(services); err != nil {
		return fmt.Errorf("supervising services: %w", err)
	}
	select {} // the supervisor and HTTP server run in the background
}
