package services

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Supervisor runs one pen per service of Layout and follows the services
// directory: a new service is started, a stopped or removed one is
// stopped (SIGTERM, then SIGKILL after StopTimeout), a renamed one is
// stopped under its old name and started under its new one. A pen that
// exits is started again after a pause that doubles from MinBackoff up to
// MaxBackoff while it keeps failing, and starts over at MinBackoff once
// a pen has run for Stable; meanwhile the service is reported Failing.
// Every service has its own process, so one that fails or is
// reconfigured leaves the others alone.
type Supervisor struct {
	Layout Layout
	Binary string   // /user/pen
	Env    []string // added to every pen's environment (firmware state)
	// Home, if set, is every pen's $HOME and working directory, made if
	// missing (/perm/home/pen, as gokrazy's supervisor gave pen), so that
	// relative file names in a configuration mean what they meant.
	Home string
	Logf func(format string, args ...any)
	// Stdout and Stderr receive the pens' output (the console); nil
	// discards it. The last lines of standard error are also kept for
	// State.LastExit.
	Stdout, Stderr *os.File

	Scan        time.Duration // how often Dir is read; 1 s if 0
	MinBackoff  time.Duration // 1 s if 0
	MaxBackoff  time.Duration // 30 s if 0
	Stable      time.Duration // 10 s if 0
	StopTimeout time.Duration // 5 s if 0

	mu    sync.Mutex
	procs map[string]*proc
	dirty chan struct{}
}

// Args are pen's arguments for service name: stay in the foreground,
// read and write its configuration file, and answer on its control
// socket.
func (l Layout) Args(name string) []string {
	return []string{"-f", "-F", l.Config(name), "-C", l.Control(name)}
}

type proc struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	st     State // guarded by Supervisor.mu
}

func (s *Supervisor) defaults() {
	if s.Scan == 0 {
		s.Scan = time.Second
	}
	if s.MinBackoff == 0 {
		s.MinBackoff = time.Second
	}
	if s.MaxBackoff == 0 {
		s.MaxBackoff = 30 * time.Second
	}
	if s.Stable == 0 {
		s.Stable = 10 * time.Second
	}
	if s.StopTimeout == 0 {
		s.StopTimeout = 5 * time.Second
	}
	if s.Logf == nil {
		s.Logf = func(string, ...any) {}
	}
}

// Run supervises until ctx ends, then stops every pen and returns.
func (s *Supervisor) Run(ctx context.Context) error {
	s.defaults()
	if err := os.MkdirAll(s.Layout.Run, 0o700); err != nil {
		return fmt.Errorf("services: %w", err)
	}
	s.mu.Lock()
	s.procs = map[string]*proc{}
	s.dirty = make(chan struct{}, 1)
	s.mu.Unlock()
	t := time.NewTicker(s.Scan)
	defer t.Stop()
	for {
		s.reconcile(ctx)
		s.report()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			procs := s.procs
			s.mu.Unlock()
			for _, p := range procs {
				p.cancel()
			}
			for _, p := range procs {
				<-p.done
			}
			return nil
		case <-t.C:
		case <-s.dirty:
		}
	}
}

// States returns what Run last reported, sorted by name.
func (s *Supervisor) States() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	var list []State
	for _, p := range s.procs {
		list = append(list, p.st)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list
}

// PID returns the process of service name's pen.
func (s *Supervisor) PID(name string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.procs[name]; p != nil && p.st.PID != 0 {
		return p.st.PID, nil
	}
	return 0, fmt.Errorf("service %s: pen is not running", name)
}

// reconcile starts the services that should run and stops the others.
func (s *Supervisor) reconcile(ctx context.Context) {
	names, err := s.Layout.List()
	if err != nil && !os.IsNotExist(err) {
		s.Logf("services: %v", err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = !s.Layout.Stopped(n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, p := range s.procs {
		run, listed := want[name]
		if run && p.st.State != Stopped {
			continue
		}
		if !listed || !run {
			if p.st.State != Stopped {
				s.Logf("services: stopping %s", name)
				p.cancel()
				p.st.State, p.st.Since, p.st.PID, p.st.NextStart = Stopped, time.Now(), 0, time.Time{}
			}
			if !listed {
				delete(s.procs, name)
				go func() { <-p.done }()
			}
		}
	}
	for name, run := range want {
		p := s.procs[name]
		if p != nil && (p.st.State != Stopped || !run) {
			continue
		}
		if p != nil {
			// Started again once the old process is gone, so that the
			// new one can bind the same ports.
			select {
			case <-p.done:
			default:
				continue
			}
		}
		np := &proc{name: name, done: make(chan struct{}), st: State{
			Name: name, State: Stopped, Since: time.Now(),
			Config: s.Layout.Config(name), Control: s.Layout.Control(name),
		}}
		if p != nil {
			np.st.Restarts, np.st.LastExit = p.st.Restarts, p.st.LastExit
		}
		s.procs[name] = np
		if !run {
			close(np.done)
			np.cancel = func() {}
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		np.cancel = cancel
		go s.loop(pctx, np)
	}
}

// loop runs one service's pen until ctx ends, restarting it with
// back-off.
func (s *Supervisor) loop(ctx context.Context, p *proc) {
	defer close(p.done)
	backoff := s.MinBackoff
	failed := false
	for ctx.Err() == nil {
		start := time.Now()
		cmd := exec.Command(s.Binary, s.Layout.Args(p.name)...)
		cmd.Env = append(append(os.Environ(), s.Env...), s.Layout.Env(p.name)...)
		tail := &tailBuffer{max: 2048}
		if s.Stderr != nil {
			cmd.Stderr = multiWriter{s.Stderr, tail}
		} else {
			cmd.Stderr = tail
		}
		if s.Stdout != nil {
			cmd.Stdout = s.Stdout
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if s.Home != "" {
			if err := os.MkdirAll(s.Home, 0o755); err == nil {
				cmd.Dir = s.Home
				cmd.Env = append(cmd.Env, "HOME="+s.Home)
			}
		}
		err := cmd.Start()
		if err == nil {
			s.set(p, func(st *State) {
				st.PID, st.NextStart = cmd.Process.Pid, time.Time{}
				if !failed {
					st.State, st.Since = Running, start
				}
			})
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			stable := time.NewTimer(s.Stable)
			for done := false; !done; {
				select {
				case err = <-waited:
					done = true
				case <-stable.C:
					if failed {
						failed = false
						backoff = s.MinBackoff
						s.set(p, func(st *State) { st.State, st.Since = Running, time.Now() })
						s.Logf("services: %s runs again", p.name)
					}
				case <-ctx.Done():
					cmd.Process.Signal(syscall.SIGTERM)
					select {
					case err = <-waited:
					case <-time.After(s.StopTimeout):
						syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
						err = <-waited
					}
					done = true
				}
			}
			stable.Stop()
			if ctx.Err() != nil {
				s.set(p, func(st *State) { st.PID = 0 })
				return
			}
		}
		ran := time.Since(start)
		if ran >= s.Stable {
			backoff = s.MinBackoff
		}
		why := "exited"
		if err != nil {
			why = err.Error()
		}
		if t := strings.TrimSpace(tail.String()); t != "" {
			why += ": " + t
		}
		next := time.Now().Add(backoff)
		s.Logf("services: %s: pen %s after %v; starting it again in %v", p.name, firstLine(why), ran.Round(time.Millisecond), backoff)
		failed = true
		s.set(p, func(st *State) {
			if st.State != Failing {
				st.Since = time.Now()
			}
			st.State, st.PID, st.LastExit, st.NextStart = Failing, 0, why, next
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.MaxBackoff)
		s.set(p, func(st *State) { st.Restarts++ })
	}
}

func (s *Supervisor) set(p *proc, f func(*State)) {
	s.mu.Lock()
	f(&p.st)
	s.mu.Unlock()
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// report writes the states to Run/services.json.
func (s *Supervisor) report() {
	if err := s.Layout.writeStates(s.States()); err != nil {
		s.Logf("services: %v", err)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
		if i := bytes.IndexByte(t.b, '\n'); i >= 0 {
			t.b = t.b[i+1:]
		}
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

type multiWriter struct {
	f *os.File
	t *tailBuffer
}

func (m multiWriter) Write(p []byte) (int, error) {
	m.f.Write(p)
	return m.t.Write(p)
}
