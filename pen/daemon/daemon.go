// Package daemon is the pen process: Pen's command line, its start-up order
// (options and -O commands, the -F file, the positional listen address and
// servers, the control port, privileges, pidfile), running in the
// background, and Pen's signals: HUP re-reads the configuration file, USR1
// writes statistics, USR2 aborts, TERM closes everything cleanly and
// removes the pidfile.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/engine"
	"github.com/pen-lb/pen-appliance/pen/version"
)

// readyEnv names the file descriptor on which a pen started in the
// background tells its parent that it is serving (or why it is not).
const readyEnv = "PEN_READY_FD"

// minListenQueue is Pen's floor for -q: smaller values are raised to it,
// with Pen's message.
const minListenQueue = 50

// Daemon is one run of pen.
type Daemon struct {
	Stdout, Stderr io.Writer

	log      *diag.Logger
	in       *config.Interp
	eng      *engine.Engine
	proc     config.Process
	cfgFile  string
	ctrl     string
	abuse    string
	emerg    string
	ready    *os.File // background child: report readiness here
	early    []func(*Daemon) error
	hooks    []func(*Daemon) error
	stopHook func()
}

// New returns a Daemon writing to the process's standard output and error.
func New() *Daemon {
	return &Daemon{Stdout: os.Stdout, Stderr: os.Stderr}
}

// AfterStart registers f to run once pen serves; an error from f stops
// pen.
func (d *Daemon) AfterStart(f func(*Daemon) error) { d.hooks = append(d.hooks, f) }

// BeforeDrop registers f to run once the engine has opened its listeners
// but before pen changes root (-j) and user (-u), so that f can bind
// privileged ports too (the admin UI hooks in here); an error from f
// stops pen.
func (d *Daemon) BeforeDrop(f func(*Daemon) error) { d.early = append(d.early, f) }

// Interp is the command interpreter (after start).
func (d *Daemon) Interp() *config.Interp { return d.in }

// Engine is the running engine (after start).
func (d *Daemon) Engine() *engine.Engine { return d.eng }

// Log is the diagnostics logger (after start).
func (d *Daemon) Log() *diag.Logger { return d.log }

// Main runs pen with the command-line arguments args (without the program
// name) and returns the exit status.
func (d *Daemon) Main(args []string) int {
	if fd := os.Getenv(readyEnv); fd != "" {
		n, _ := strconv.Atoi(fd)
		d.ready = os.NewFile(uintptr(n), "ready")
		os.Unsetenv(readyEnv)
	}
	err := d.run(args)
	var ue *UsageError
	var ex exitCode
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		Usage(d.Stdout)
		return 0
	case errors.Is(err, errVersion):
		fmt.Fprintf(d.Stdout, "pen %s (compatible with Pen %s)\n", version.Version, version.Pen)
		return 0
	case errors.As(err, &ue):
		if ue.Msg != "" {
			fmt.Fprintf(d.Stderr, "pen: %s\n", ue.Msg)
		}
		Usage(d.Stdout)
		return 0
	case errors.As(err, &ex):
		return int(ex)
	}
	d.fail(err)
	if d.in != nil && d.in.Config().AbortOnErr {
		abort()
	}
	return 1
}

// abort ends pen with SIGABRT, as Pen's abort() does on USR2, and with
// abort_on_error on a fatal error instead of exiting with status 1: the
// runtime prints every goroutine's stack and the kernel writes a core
// dump where the system keeps them.
func abort() {
	debug.SetTraceback("crash")
	signal.Reset(syscall.SIGABRT)
	syscall.Kill(os.Getpid(), syscall.SIGABRT)
	select {} // the signal ends the process
}

// hasServers reports whether c gives clients anywhere to go: a server slot
// in use, or an emergency server.
func hasServers(c *config.Config) bool {
	if c.Emergency != nil && !c.Emergency.Unused() {
		return true
	}
	for _, s := range c.Servers {
		if !s.Unused() {
			return true
		}
	}
	return false
}

type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func (d *Daemon) fail(err error) {
	if d.ready != nil {
		fmt.Fprintf(d.ready, "%v\n", err)
		d.ready.Close()
		d.ready = nil
	}
	if d.log != nil && d.log.Writer() == nil {
		d.log.Printf("%v", err)
	}
	fmt.Fprintf(d.Stderr, "pen: %v\n", err)
}

func atoiFlag(c byte, s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("-%c: %q is not a number", c, s)
	}
	return n, nil
}

func (d *Daemon) run(args []string) error {
	opts, operands, err := getopt(args)
	if err != nil {
		return err
	}
	for _, o := range opts {
		if o.c == 'f' {
			d.proc.Foreground = true
		}
	}
	// Diagnostics go to standard error, except in the background process,
	// which has none: it logs to syslog as Pen does.
	if d.ready != nil && !d.proc.Foreground {
		d.log = diag.Syslog()
	} else {
		d.log = diag.New(d.Stderr)
	}
	d.in = config.New(config.Default(), d.proc, d.log)
	if err := d.options(opts); err != nil {
		return err
	}
	d.in.SetProcess(d.proc)
	if d.cfgFile != "" {
		// Pen logs a missing file and runs without it; pen refuses to
		// start, since it would run without the user's servers (and
		// autowrite would later replace the file with that state).
		out, err := d.in.ExecFile(d.cfgFile, config.FromFile)
		io.WriteString(d.Stdout, out)
		if err != nil {
			return err
		}
	}
	if d.in.Config().Listen == "" && len(operands) < 1 {
		return &UsageError{}
	}
	if err := d.positional(operands); err != nil {
		return err
	}
	if !hasServers(d.in.Config()) {
		d.log.Printf("warning: no servers are configured; clients will be refused until one is added (server N address A port P)")
	}
	if !d.proc.Foreground && d.ready == nil {
		return d.background(args)
	}
	return d.serve()
}

// options applies the options in command-line order; -O commands run as
// they come, as in Pen.
func (d *Daemon) options(opts []opt) error {
	set := func(f func(c *config.Config) error) error { return d.in.Update(config.FromFlag, f) }
	for _, o := range opts {
		var err error
		switch o.c {
		case 'B':
			d.abuse = o.arg
		case 'C':
			d.ctrl = o.arg
		case 'D':
			fmt.Fprint(d.Stderr, "Pen 0.26.0 removed the delayed forward feature,\nmaking the -D option obsolete\n")
		case 'F':
			d.cfgFile = o.arg
			d.proc.ConfigFile = o.arg
			d.in.SetProcess(d.proc)
		case 'H':
			err = set(func(c *config.Config) error { c.HTTP = true; return nil })
		case 'N':
			return &UsageError{}
		case 'O', 'o':
			out, e := d.in.Exec(o.arg, config.FromFlag)
			io.WriteString(d.Stdout, out)
			if e != nil {
				return fmt.Errorf("-%c '%s': %w", o.c, o.arg, e)
			}
		case 'P':
		case 'Q':
			fmt.Fprint(d.Stderr, "Since Pen 0.26.0, kqueue is already the default on supported systems,\nmaking the -Q option obsolete\n")
		case 'S':
			fmt.Fprint(d.Stderr, "As of 0.28.1 the server table is expanded dynamically,\nmaking the -S option obsolete\n")
		case 'n':
			fmt.Fprint(d.Stderr, "Pen 0.26.0 and up uses only nonblocking sockets,\nmaking the -n option obsolete\n")
		case 'T', 'b', 'c', 'x', 'm', 'q', 't':
			n, e := atoiFlag(o.c, o.arg)
			if e != nil {
				return e
			}
			err = d.numeric(o.c, n)
		case 'U':
			err = set(func(c *config.Config) error { c.UDP = true; return nil })
		case 'W':
			err = set(func(c *config.Config) error { c.Weight = true; return nil })
		case 'h':
			err = set(func(c *config.Config) error { c.Hash = true; return nil })
		case 'r':
			err = set(func(c *config.Config) error { c.RoundRobin = true; return nil })
		case 's':
			err = set(func(c *config.Config) error { c.Stubborn = true; return nil })
		case 'X':
			d.proc.ExitEnabled = true
			d.in.SetProcess(d.proc)
		case 'a':
			err = set(func(c *config.Config) error { c.ASCII = true; return nil })
		case 'd':
			err = set(func(c *config.Config) error { c.Debug++; return nil })
		case 'e':
			d.emerg = o.arg
		case 'f':
		case 'i':
			fmt.Fprint(d.Stderr, "Windows only\n")
			return exitCode(0)
		case 'j':
			d.proc.Chroot = o.arg
		case 'l':
			_, err = d.in.Exec("log "+o.arg, config.FromFlag)
		case 'p':
			d.proc.PidFile = o.arg
		case 'u':
			d.proc.User = o.arg
		case 'w':
			err = set(func(c *config.Config) error { c.WebStats = o.arg; return nil })
		case 'E':
			err = set(func(c *config.Config) error { c.TLS.Cert = o.arg; return nil })
		case 'K':
			err = set(func(c *config.Config) error { c.TLS.Key = o.arg; return nil })
		case 'G':
			err = set(func(c *config.Config) error { c.TLS.CAFile = o.arg; return nil })
		case 'A':
			err = set(func(c *config.Config) error { c.TLS.CADir = o.arg; return nil })
		case 'Z':
			err = set(func(c *config.Config) error { c.TLS.Compat = true; return nil })
		case 'R':
			err = set(func(c *config.Config) error { c.TLS.RequireClient = true; return nil })
		case 'L':
			switch o.arg {
			case "ssl23", "ssl2", "ssl3", "tls1":
				err = set(func(c *config.Config) error { c.TLS.Protocol = o.arg; return nil })
			default:
				fmt.Fprintf(d.Stderr, "protocol version %s not known\n", o.arg)
				return exitCode(1)
			}
		}
		if err != nil {
			return fmt.Errorf("-%c: %w", o.c, err)
		}
	}
	return nil
}

func (d *Daemon) numeric(c byte, n int) error {
	switch c {
	case 'c', 'x':
		// The table sizes go through their commands, which size a
		// table exactly the first time before pen serves and only grow
		// it after, as Pen's -c and -x do.
		cmd, table := "clients_max", "client"
		if c == 'x' {
			cmd, table = "conn_max", "connection"
		}
		if n < 1 {
			return fmt.Errorf("the %s table needs at least 1 slot", table)
		}
		_, err := d.in.Exec(fmt.Sprintf("%s %d", cmd, n), config.FromFlag)
		return err
	}
	return d.in.Update(config.FromFlag, func(cf *config.Config) error {
		switch c {
		case 'T':
			if n < 0 {
				return errors.New("tracking time must not be negative")
			}
			cf.Tracking = n
		case 'b':
			if n < 0 {
				return errors.New("blacklist time must not be negative")
			}
			cf.Blacklist = n
		case 'm':
			if n < 1 {
				fmt.Fprint(d.Stderr, "multi_accept bumped to 1\n")
				n = 1
			}
			cf.MultiAccept = n
		case 'q':
			if n < minListenQueue {
				fmt.Fprintf(d.Stderr, "listen_queue bumped to %d\n", minListenQueue)
				n = minListenQueue
			}
			cf.ListenQueue = n
		case 't':
			if n < 1 {
				return &UsageError{}
			}
			cf.Timeout = n
		}
		return nil
	})
}

// positional applies the listen address and the servers of the command
// line, after the -F file, as Pen's init does: they override slots the
// file set, and -e/-B override the file's emergency and abuse servers.
// A listen command in the file wins over the positional address.
func (d *Daemon) positional(operands []string) error {
	defer func() { d.in.SetProcess(d.proc) }()
	return d.in.Update(config.FromFlag, func(c *config.Config) error {
		if len(operands) > 0 {
			if c.Listen == "" {
				if c.DSRIf != "" {
					if _, err := config.ParseDSRListen(operands[0]); err != nil {
						return err
					}
				} else if _, err := config.ParseListen(operands[0], c.UDP, nil); err != nil {
					return err
				}
				c.Listen = operands[0]
				d.proc.CLI.Listen = operands[0]
			}
		}
		port := config.ListenPort(c.Listen, c.UDP)
		for i, spec := range operands[min(1, len(operands)):] {
			s, err := config.ParseServer(spec, port, c.UDP, nil)
			if err != nil {
				return err
			}
			c.SetServer(i, s.WithID())
		}
		for _, sp := range []struct {
			spec string
			dst  **config.Server
			cli  **config.Server
		}{{d.emerg, &c.Emergency, &d.proc.CLI.Emergency}, {d.abuse, &c.Abuse, &d.proc.CLI.Abuse}} {
			if sp.spec == "" {
				continue
			}
			s, err := config.ParseServer(sp.spec, port, c.UDP, nil)
			if err != nil {
				return err
			}
			s = s.WithID()
			*sp.dst = &s
			cp := s
			*sp.cli = &cp
		}
		d.proc.CLI.UDP = c.UDP
		if d.ctrl != "" {
			if _, err := config.ParseListen(d.ctrl, false, nil); err != nil {
				return fmt.Errorf("-C %s: %w", d.ctrl, err)
			}
			c.Control = d.ctrl
			d.proc.CLI.Control = d.ctrl
		}
		return nil
	})
}

// background starts pen again as a session leader with no terminal and
// waits until it serves, so that errors still reach the user (Pen forks
// and its parent exits at once, before anything can fail).
func (d *Daemon) background(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("can't fork: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("can't fork: %w", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, args...)
	// ExtraFiles[0] is the child's descriptor 3 (after stdin, stdout, stderr).
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("can't fork: %w", err)
	}
	w.Close()
	null.Close()
	msg, _ := io.ReadAll(r)
	r.Close()
	if s := strings.TrimSpace(string(msg)); s != "ok" {
		if s == "" {
			s = "pen stopped before it was serving"
		}
		cmd.Wait()
		fmt.Fprintf(d.Stderr, "pen: %s\n", s)
		return exitCode(1)
	}
	cmd.Process.Release()
	return nil
}

// serve opens the listeners, drops privileges, writes the pidfile and
// runs until told to stop.
func (d *Daemon) serve() error {
	signal.Ignore(syscall.SIGPIPE)
	// Catch the signals before anything else starts: a HUP that arrives
	// while the listeners open would otherwise end the process (Go's
	// default action). It waits in the channel until the engine runs.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if d.proc.PidFile != "" {
		if err := checkPidFile(d.proc.PidFile); err != nil {
			return err
		}
	}
	eng, err := engine.New(d.log, d.in)
	if err != nil {
		return err
	}
	d.eng = eng
	if d.ctrl != "" && os.Getuid() == 0 && d.proc.User == "" && !privateSocket(d.ctrl) {
		eng.RefuseControl("Won't open control port running as root; use -u to run as different user")
	}
	if d.in.Config().Debug > 0 {
		d.log.Printf("pen %s starting (Pen %s compatible)", version.Version, version.Pen)
		d.log.Printf("servers:")
		for i, s := range d.in.Config().Servers {
			d.log.Printf("%2d %s:%d:%d:%d:%d:%d", i, s.Host, s.ReportedPort(), s.Max, s.Hard, s.Weight, s.Prio)
		}
	}
	if err := d.in.SetEngine(eng); err != nil {
		return err
	}
	for _, h := range d.early {
		if err := h(d); err != nil {
			eng.Stop()
			return err
		}
	}
	if err := d.dropPrivileges(); err != nil {
		eng.Stop()
		return err
	}
	if d.proc.PidFile != "" {
		if err := writePidFile(d.proc.PidFile, os.Getpid()); err != nil {
			eng.Stop()
			return err
		}
		defer removePidFile(d.proc.PidFile, os.Getpid())
	}
	// Only now, with the privileges dropped, are control commands run.
	eng.ServeControl()
	for _, h := range d.hooks {
		if err := h(d); err != nil {
			eng.Stop()
			return err
		}
	}
	go d.signals(sigs)
	if d.ready != nil {
		fmt.Fprintln(d.ready, "ok")
		d.ready.Close()
		d.ready = nil
	}
	err = eng.Run()
	if d.stopHook != nil {
		d.stopHook()
	}
	d.log.Debugf(1, "Exiting, cleaning up...")
	return err
}

// OnStop registers f to run when pen stops serving.
func (d *Daemon) OnStop(f func()) { d.stopHook = f }

func (d *Daemon) dropPrivileges() error {
	var u *user.User
	if d.proc.User != "" {
		var err error
		if u, err = user.Lookup(d.proc.User); err != nil {
			//lint:ignore ST1005 Pen's message, kept verbatim
			return fmt.Errorf("Can't getpwnam(%s): %w", d.proc.User, err)
		}
	}
	if d.proc.Chroot != "" {
		if err := syscall.Chroot(d.proc.Chroot); err != nil {
			//lint:ignore ST1005 Pen's message, kept verbatim
			return fmt.Errorf("Can't chroot(%s): %w", d.proc.Chroot, err)
		}
		if err := os.Chdir("/"); err != nil {
			return fmt.Errorf("chdir /: %w", err)
		}
	}
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := syscall.Setgroups([]int{gid}); err != nil {
			//lint:ignore ST1005 Pen's message, kept verbatim
			return fmt.Errorf("Can't setgroups(%d): %w", gid, err)
		}
		if err := syscall.Setgid(gid); err != nil {
			//lint:ignore ST1005 Pen's message, kept verbatim
			return fmt.Errorf("Can't setgid(%d): %w", gid, err)
		}
		if err := syscall.Setuid(uid); err != nil {
			//lint:ignore ST1005 Pen's message, kept verbatim
			return fmt.Errorf("Can't setuid(%d): %w", uid, err)
		}
	}
	return nil
}

func (d *Daemon) signals(sigs <-chan os.Signal) {
	for s := range sigs {
		switch s {
		case syscall.SIGHUP:
			d.log.Debugf(1, "Caught HUP, will read cfg")
			if err := d.eng.ReopenLog(); err != nil {
				d.log.Printf("%v", err)
			}
			if d.cfgFile != "" {
				out, err := d.in.ExecFile(d.cfgFile, config.FromSignal)
				io.WriteString(d.Stdout, out)
				if err != nil {
					d.log.Printf("%v; configuration not changed", err)
				}
			}
		case syscall.SIGUSR1:
			d.log.Debugf(1, "Caught USR1, will save stats")
			if d.in.Config().WebStats != "" {
				if err := d.in.WriteStatus(); err != nil {
					d.log.Printf("Can't write to %s: %v", d.in.Config().WebStats, err)
				}
			} else {
				for _, l := range d.in.TextStats() {
					d.log.Printf("%s", l)
				}
			}
		case syscall.SIGUSR2:
			d.log.Printf("Caught USR2, aborting")
			abort()
		case syscall.SIGTERM, syscall.SIGINT:
			d.log.Debugf(1, "Quitting")
			d.eng.Quit()
			return
		}
	}
}

// privateSocket reports whether a control spec names a unix socket in a
// directory that root owns and nobody else may enter (the appliance's
// /tmp/pen, mode 0700). Pen refuses a control port to root without -u
// because any local user could reach it; no other user can reach such a
// socket, so pen opens it as root.
func privateSocket(spec string) bool {
	l, err := config.ParseListen(spec, false, nil)
	if err != nil || l.Path == "" {
		return false
	}
	fi, err := os.Stat(filepath.Dir(l.Path))
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == 0
}
