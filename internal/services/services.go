// Package services is the appliance's list of services: one pen per
// service, each with its own configuration file and control socket.
//
// It knows the layout on the appliance and nothing of load balancing:
//
//   - Dir/NAME/pen.cfg: the configuration of service NAME (Pen's -F file).
//   - Dir/NAME/stopped: present while the service is stopped by the admin;
//     it stays stopped across reboots.
//   - Run/NAME.ctl: the service's control socket (Pen's -C), a unix socket.
//   - Run/services.json: what the supervisor reports (State, one entry per
//     service), rewritten whenever a service changes state.
//
// The appliance's init runs a Supervisor; the admin UI (package webui)
// reads the states, talks to each pen through its control socket, and
// adds, renames, stops, starts and removes services by changing Dir,
// which the supervisor follows. Both sides import this package, neither
// imports the other.
package services

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pen-lb/pen-appliance/internal/atomicfile"
)

// Places on the appliance.
const (
	// DefaultDir holds one directory per service.
	DefaultDir = "/perm/pen/services"
	// DefaultRun holds the control sockets and the supervisor's report;
	// /tmp is a tmpfs on the appliance.
	DefaultRun = "/tmp/pen"
	// MainName is the service that an appliance's /perm/pen/pen.cfg
	// (today's single configuration) becomes.
	MainName = "main"
)

// File names inside a service's directory and the run directory.
const (
	ConfigName  = "pen.cfg"
	StoppedName = "stopped"
	StateName   = "services.json"
	// CertDir, inside a service's directory, holds the certificate and
	// key uploaded for it through the admin UI.
	CertDir = "tls"
)

// Environment variables the supervisor gives every pen it runs, so that
// pen's admin UI finds the other services.
const (
	EnvDir  = "PEN_SERVICES_DIR"
	EnvRun  = "PEN_SERVICES_RUN"
	EnvName = "PEN_SERVICE"
)

// MaxName bounds a service name: it becomes a directory name and part of
// a unix socket's path (at most 107 bytes).
const MaxName = 32

// ValidName refuses a name that is empty, too long, or holds anything but
// ASCII letters, digits, '-' and '_' (so no path separator, no "..", no
// space), or starts with '-' or '_'.
func ValidName(name string) error {
	if name == "" {
		return errors.New("a service needs a name")
	}
	if len(name) > MaxName {
		return fmt.Errorf("service name %.40q is longer than %d characters", name, MaxName)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case (r == '-' || r == '_') && i > 0:
		default:
			return fmt.Errorf("service name %q: use letters, digits, '-' and '_' only (starting with a letter or digit)", name)
		}
	}
	return nil
}

// Layout names the directories of one appliance (tests use temporary
// ones).
type Layout struct {
	Dir string // DefaultDir
	Run string // DefaultRun
}

// Default is the appliance's layout.
var Default = Layout{Dir: DefaultDir, Run: DefaultRun}

// FromEnv returns the layout and the service name that the supervisor
// gave this process; ok is false for a pen not run by the appliance.
func FromEnv() (l Layout, name string, ok bool) {
	l = Layout{Dir: os.Getenv(EnvDir), Run: os.Getenv(EnvRun)}
	name = os.Getenv(EnvName)
	if l.Dir == "" || l.Run == "" || ValidName(name) != nil {
		return Layout{}, "", false
	}
	return l, name, true
}

// Env is the environment the supervisor adds for service name.
func (l Layout) Env(name string) []string {
	return []string{EnvDir + "=" + l.Dir, EnvRun + "=" + l.Run, EnvName + "=" + name}
}

// ServiceDir is the directory of service name.
func (l Layout) ServiceDir(name string) string { return filepath.Join(l.Dir, name) }

// Config is the configuration file of service name.
func (l Layout) Config(name string) string { return filepath.Join(l.Dir, name, ConfigName) }

// Control is the control socket of service name.
func (l Layout) Control(name string) string { return filepath.Join(l.Run, name+".ctl") }

// Stopped reports whether service name is stopped by the admin.
func (l Layout) Stopped(name string) bool {
	_, err := os.Lstat(filepath.Join(l.Dir, name, StoppedName))
	return err == nil
}

// SetStopped stops (true) or starts (false) service name; the supervisor
// follows within its scan interval.
func (l Layout) SetStopped(name string, stopped bool) error {
	if err := ValidName(name); err != nil {
		return err
	}
	p := filepath.Join(l.Dir, name, StoppedName)
	if !stopped {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if _, err := os.Stat(l.Config(name)); err != nil {
		return fmt.Errorf("no service %q", name)
	}
	return atomicfile.WriteFile(p, []byte("stopped from the admin UI\n"), 0o644)
}

// List returns the names of the services: the directories of Dir with a
// valid name that hold a pen.cfg, sorted.
func (l Layout) List() ([]string, error) {
	entries, err := os.ReadDir(l.Dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() || ValidName(e.Name()) != nil {
			continue
		}
		if _, err := os.Stat(l.Config(e.Name())); err == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Create makes service name with the configuration text cfg and further
// files (paths relative to the service's directory; the key of a
// certificate among them, so every file is readable by root alone). It
// builds the directory aside and moves it into place, so the supervisor
// never sees a half-made service; check, if not nil, runs on the
// directory aside first and may refuse it. It refuses a name in use.
func (l Layout) Create(name string, cfg []byte, files map[string][]byte, check func(dir string) error) error {
	if err := ValidName(name); err != nil {
		return err
	}
	dir := l.ServiceDir(name)
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("a service named %q exists already", name)
	}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(l.Dir, ".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := atomicfile.WriteFile(filepath.Join(tmp, ConfigName), cfg, 0o600); err != nil {
		return err
	}
	for rel, data := range files {
		p := filepath.Join(tmp, rel)
		if !strings.HasPrefix(p, tmp+string(filepath.Separator)) {
			return fmt.Errorf("%s: not inside the service's directory", rel)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(p, data, 0o600); err != nil {
			return err
		}
	}
	if check != nil {
		if err := check(tmp); err != nil {
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("a service named %q exists already", name)
	}
	return os.Rename(tmp, dir)
}

// Rename renames service from to to. The supervisor stops the pen of the
// old name and starts one under the new name (with a new control socket).
func (l Layout) Rename(from, to string) error {
	if err := ValidName(from); err != nil {
		return err
	}
	if err := ValidName(to); err != nil {
		return err
	}
	if _, err := os.Lstat(l.ServiceDir(to)); err == nil {
		return fmt.Errorf("a service named %q exists already", to)
	}
	return os.Rename(l.ServiceDir(from), l.ServiceDir(to))
}

// Remove deletes service name and its files.
func (l Layout) Remove(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	dir := l.ServiceDir(name)
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("no service %q", name)
	}
	// Out of the supervisor's sight first, then deleted.
	gone := filepath.Join(l.Dir, ".removed-"+name)
	os.RemoveAll(gone)
	if err := os.Rename(dir, gone); err != nil {
		return err
	}
	return os.RemoveAll(gone)
}

// The states of a service.
const (
	Running = "running" // pen runs
	Failing = "failing" // pen exited and is restarted with back-off
	Stopped = "stopped" // stopped by the admin
)

// State is what the supervisor reports of one service.
type State struct {
	Name  string `json:"name"`
	State string `json:"state"`
	PID   int    `json:"pid,omitempty"`
	// Since is when the service entered State.
	Since time.Time `json:"since"`
	// Restarts counts the pen processes started after one exited.
	Restarts int `json:"restarts"`
	// LastExit says how the last pen process ended, with the last lines
	// it wrote to its standard error.
	LastExit string `json:"last_exit,omitempty"`
	// NextStart is when a failing service is started again.
	NextStart time.Time `json:"next_start,omitzero"`
	Config    string    `json:"config"`
	Control   string    `json:"control"`
}

// ReadStates reads the supervisor's report; a missing report is an empty
// one.
func (l Layout) ReadStates() (map[string]State, error) {
	data, err := os.ReadFile(filepath.Join(l.Run, StateName))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]State{}, nil
	}
	if err != nil {
		return nil, err
	}
	var list []State
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", StateName, err)
	}
	m := make(map[string]State, len(list))
	for _, s := range list {
		m[s.Name] = s
	}
	return m, nil
}

func (l Layout) writeStates(list []State) error {
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(l.Run, StateName), append(data, '\n'), 0o644)
}

// Migrate turns an appliance with one configuration into one with
// services, once: when Dir does not exist yet, it is made with service
// MainName whose pen.cfg is a symbolic link to single (/perm/pen/pen.cfg),
// so that the file stays where an older build (after a rollback) looks
// for it and is kept unchanged; then every file NAME.cfg of defaults (the
// image's further default services, /etc/pen/services) becomes service
// NAME. A Dir that exists is left alone (services the admin removed stay
// removed).
func (l Layout) Migrate(single, defaults string) error {
	if _, err := os.Stat(l.Dir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp := l.Dir + ".new"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, MainName), 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(single); err == nil {
		rel, err := filepath.Rel(filepath.Join(tmp, MainName), single)
		if err != nil {
			rel = single
		}
		if err := os.Symlink(rel, filepath.Join(tmp, MainName, ConfigName)); err != nil {
			return err
		}
	} else {
		os.Remove(filepath.Join(tmp, MainName))
	}
	entries, _ := os.ReadDir(defaults)
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".cfg")
		if !ok || !e.Type().IsRegular() || ValidName(name) != nil || name == MainName {
			continue
		}
		data, err := os.ReadFile(filepath.Join(defaults, e.Name()))
		if err != nil {
			return err
		}
		if err := os.Mkdir(filepath.Join(tmp, name), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(tmp, name, ConfigName), data, 0o644); err != nil {
			return err
		}
	}
	return os.Rename(tmp, l.Dir)
}
