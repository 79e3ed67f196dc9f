package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pen-lb/pen-appliance/pen/diag"
)

// Origin says where a command came from; it labels change counters.
type Origin string

const (
	FromFlag    Origin = "flag"    // -O, -o and the command line
	FromFile    Origin = "file"    // -F at start-up, include
	FromSignal  Origin = "signal"  // re-reading -F on SIGHUP
	FromControl Origin = "control" // the control socket
	FromWeb     Origin = "webui"   // the admin UI
)

// Process holds the facts about the pen process that the write command
// records in its comment line and that some commands need.
type Process struct {
	Foreground  bool
	ExitEnabled bool   // -X
	Chroot      string // -j
	PidFile     string // -p
	User        string // -u
	ConfigFile  string // -F: default target of write, file re-read on HUP
	// What the command line itself sets, so that write saves these only
	// when a command has changed them since.
	CLI CLI
}

// CLI is what the command line (flags and positional arguments) set.
type CLI struct {
	Listen    string
	UDP       bool
	Control   string
	Emergency *Server
	Abuse     *Server
}

// UnknownCommandError is returned for a command pen does not know; its
// text is Pen's reply.
type UnknownCommandError struct{ Word string }

func (e *UnknownCommandError) Error() string {
	return fmt.Sprintf("do_cmd: ignoring command starting with '%s'", e.Word)
}

// LineError locates an error in a configuration file.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ErrExitDisabled is returned by exit without -X; its text is Pen's reply.
var ErrExitDisabled = exitDisabled()

func exitDisabled() error {
	//lint:ignore ST1005 Pen's message, kept verbatim
	return errors.New("Exit is not enabled; restart with -X flag")
}

// Interp executes commands against a configuration and a running Engine.
// It is safe for concurrent use; commands run one at a time.
type Interp struct {
	mu      sync.Mutex
	cfg     *Config
	eng     Engine
	status  func(c *Config) any // the state command's runtime part (SetStatus)
	proc    Process
	resolve Resolver
	log     *diag.Logger
	now     func() time.Time

	// OnChange, if set, is called (with the lock held) after a command
	// changed the configuration and the engine accepted it.
	OnChange func(c *Config, origin Origin)

	byOrigin sync.Map // Origin -> *atomic.Uint64

	files fileState // guarded by mu

	// sized says whether clients_max and conn_max have been given since
	// start-up. Before pen serves, the first one sets the table's exact
	// size and later ones only grow it, as Pen's expand_clienttable and
	// expand_conntable do from a size of 0 (-c 100, or clients_max 100 in
	// the -F file, gives 100 slots); once pen serves, the tables only
	// grow. Guarded by mu; a transaction's copy is kept when it commits.
	sized [2]bool
}

func (in *Interp) countChange(o Origin) {
	v, _ := in.byOrigin.LoadOrStore(o, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

// ChangesBy counts accepted configuration changes per origin.
func (in *Interp) ChangesBy() map[Origin]uint64 {
	out := map[Origin]uint64{}
	in.byOrigin.Range(func(k, v any) bool {
		out[k.(Origin)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// New returns an interpreter for c. The engine may be nil until the load
// balancer is running (start-up); see SetEngine.
func New(c *Config, proc Process, log *diag.Logger) *Interp {
	if log == nil {
		log = diag.Discard()
	}
	in := &Interp{cfg: c, proc: proc, resolve: DefaultResolver, log: log, now: time.Now}
	log.SetLevel(c.Debug)
	return in
}

// SetResolver replaces the name resolver (tests).
func (in *Interp) SetResolver(r Resolver) { in.resolve = r }

// SetClock replaces the clock (tests).
func (in *Interp) SetClock(now func() time.Time) { in.now = now }

// SetEngine attaches the running engine and applies the current
// configuration to it.
func (in *Interp) SetEngine(e Engine) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := e.Apply(in.cfg); err != nil {
		return err
	}
	in.eng = e
	return nil
}

// Config returns the current configuration. It must not be modified.
func (in *Interp) Config() *Config {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.cfg
}

// Process returns the process facts.
func (in *Interp) Process() Process {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proc
}

// SetProcess replaces the process facts (the command line is parsed before
// all of them are known).
func (in *Interp) SetProcess(p Process) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.proc = p
}

// Changes counts accepted configuration changes.
func (in *Interp) Changes() uint64 {
	var n uint64
	for _, v := range in.ChangesBy() {
		n += v
	}
	return n
}

// Update applies f to a copy of the configuration and commits it, for the
// start-up code that sets what the command line gives. f may refuse by
// returning an error; nothing changes then. A *SaveError means the change
// was applied but autowrite could not save it.
func (in *Interp) Update(origin Origin, f func(c *Config) error) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	x := in.begin(origin)
	x.cfg = in.cfg.Clone() // f may change any table in place
	if err := f(x.cfg); err != nil {
		return err
	}
	if err := x.cfg.CheckNumbers(); err != nil {
		return err
	}
	_, err := in.commit(x)
	return err
}

// Exec runs one command line and returns its reply. On error nothing has
// changed, except with a *SaveError: then the change was applied, the
// reply comes with it, and the file was not saved. The error text is what
// the client should be told.
func (in *Interp) Exec(line string, origin Origin) (string, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	x := in.begin(origin)
	if err := x.run(line); err != nil {
		return "", err
	}
	return in.commit(x)
}

// ExecLines runs the lines of a configuration (a file or an upload) as one
// change: every line is checked first, and if any fails nothing changes
// and the error names the source and line (*LineError). A *SaveError
// means the change was applied but not saved, as for Exec.
func (in *Interp) ExecLines(name string, data []byte, origin Origin) (string, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	x := in.begin(origin)
	if err := x.runData(name, data); err != nil {
		return "", err
	}
	return in.commit(x)
}

// ExecFile is ExecLines on the contents of a file. Errors name the file
// and the line; they show nothing of a line that is not a command (see
// runData), so that naming a file that is not a configuration does not
// reveal what it holds.
func (in *Interp) ExecFile(path string, origin Origin) (string, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return "", err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	x := in.begin(origin)
	if err := x.runFile(path, data); err != nil {
		return "", err
	}
	out, err := in.commit(x)
	var se *SaveError
	if err == nil || errors.As(err, &se) {
		in.noteRead(path, data)
	}
	return out, err
}

// readConfigFile reads a configuration file: a regular file of at most
// MaxConfigSize bytes (a FIFO or a device would block or never end).
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("can't read config file '%s': %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("can't read config file '%s': %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("can't read config file '%s': not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("can't read config file '%s': %w", path, err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("can't read config file '%s': larger than %d bytes", path, MaxConfigSize)
	}
	return data, nil
}

// Check parses and validates lines without applying anything; the error
// names the line. It is used to validate an upload before applying it.
func (in *Interp) Check(name string, data []byte) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	x := in.begin(FromWeb)
	x.dry = true
	return x.runData(name, data)
}

// commit makes the transaction's configuration the running one. When the
// change was applied but autowrite could not save it, the reply comes with
// a *SaveError; so it does when a write in the transaction failed after a
// change. A write that fails in a transaction that changed nothing is a
// plain error.
func (in *Interp) commit(x *txn) (string, error) {
	changed := !x.cfg.Equal(in.cfg)
	var saveErr error
	if changed {
		if in.eng != nil {
			if err := in.eng.Apply(x.cfg); err != nil {
				return "", err
			}
		}
		in.cfg = x.cfg
		in.log.SetLevel(x.cfg.Debug)
		in.countChange(x.origin)
		// save refuses an -F file that pen has not read: one that
		// appeared after start-up, say; a HUP reads it.
		if f := in.proc.ConfigFile; x.cfg.AutoWrite && f != "" && autowrites(x.origin) {
			if err := in.save(f); err != nil {
				in.log.Printf("autowrite: %v", err)
				saveErr = &SaveError{Path: f, Err: err}
			}
		}
		if in.OnChange != nil {
			in.OnChange(x.cfg, x.origin)
		}
	}
	in.sized = x.sized
	for _, f := range x.after {
		f(in.eng)
	}
	for _, file := range x.writes {
		if err := in.save(file); err != nil {
			in.log.Printf("write: %v", err)
			if saveErr != nil {
				continue
			}
			if changed {
				saveErr = &SaveError{Path: file, Err: err}
			} else {
				saveErr = fmt.Errorf("write: not saved to %s: %w", file, err)
			}
		}
	}
	return x.out.String(), saveErr
}

// autowrites reports whether autowrite saves changes from origin: those
// made while pen runs, through the control socket and the admin UI. The
// command line is given again at every start, and the -F file is what
// would be written.
func autowrites(o Origin) bool { return o == FromControl || o == FromWeb }

// AddOnChange arranges for f to be called, like OnChange and after any
// function already set there, whenever a command changed the
// configuration and the engine accepted it. f runs with the interpreter's
// lock held: it must not call the Interp, and should hand slow work to
// another goroutine.
func (in *Interp) AddOnChange(f func(c *Config, origin Origin)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	prev := in.OnChange
	in.OnChange = func(c *Config, origin Origin) {
		if prev != nil {
			prev(c, origin)
		}
		f(c, origin)
	}
}

// Preview runs the lines of data as ExecLines would, on a copy of the
// configuration, and returns the configuration they would produce without
// applying anything: no engine change, no file written, no runtime action.
// The admin UI uses it to refuse a change that would lock out the browser
// making it before the change is made. Errors are *LineError, as from
// ExecLines.
func (in *Interp) Preview(name string, data []byte) (*Config, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	x := in.begin(FromWeb)
	x.dry = true
	if err := x.runData(name, data); err != nil {
		return nil, err
	}
	return x.cfg, nil
}
