package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/pen-lb/pen-appliance/pen/acl"
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

// maxInclude bounds include nesting (a file including itself).
const maxInclude = 16

// Interp executes commands against a configuration and a running Engine.
// It is safe for concurrent use; commands run one at a time.
type Interp struct {
	mu      sync.Mutex
	cfg     *Config
	eng     Engine
	proc    Process
	resolve Resolver
	log     *diag.Logger
	now     func() time.Time

	// OnChange, if set, is called (with the lock held) after a command
	// changed the configuration and the engine accepted it.
	OnChange func(c *Config, origin Origin)

	byOrigin sync.Map // Origin -> *atomic.Uint64

	files fileState // guarded by mu
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
// returning an error; nothing changes then.
func (in *Interp) Update(origin Origin, f func(c *Config) error) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	x := in.begin(origin)
	x.cfg = in.cfg.Clone() // f may change any table in place
	if err := f(x.cfg); err != nil {
		return err
	}
	if err := x.cfg.checkNumbers(); err != nil {
		return err
	}
	_, err := in.commit(x)
	return err
}

// Exec runs one command line and returns its reply. On error nothing has
// changed; the error text is what the client should be told.
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
// and the error names the source and line.
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

// txn is one change in progress: commands work on a copy of the
// configuration, replies collect in out, and runtime actions wait in after
// until the engine has taken the new configuration.
type txn struct {
	in     *Interp
	cfg    *Config
	out    bytes.Buffer
	after  []func(Engine)
	origin Origin
	depth  int
	dry    bool     // validating only: no runtime actions, no files written
	writes []string // files the write command saves after the commit

	// Which of cfg's tables this transaction has copied and may change
	// in place; the others are shared with the running configuration.
	ownServers bool
	ownACL     [acl.Lists]bool
}

// begin starts a transaction on a copy of the running configuration. The
// copy shares the server table and the access lists with the running
// configuration until a command changes them (see writableServers and
// appendACL), so that a command costs the same with 20,000 servers as
// with two.
func (in *Interp) begin(origin Origin) *txn {
	c := *in.cfg
	return &txn{in: in, cfg: &c, origin: origin}
}

// writableServers returns the transaction's server table, copying it the
// first time: the running configuration's table is never changed in place.
func (x *txn) writableServers() []Server {
	if !x.ownServers {
		x.cfg.Servers = slices.Clone(x.cfg.Servers)
		x.ownServers = true
	}
	return x.cfg.Servers
}

// setServer stores s in slot i, growing the table as Pen does.
func (x *txn) setServer(i int, s Server) {
	c := x.cfg
	c.Servers = x.writableServers()
	if i >= len(c.Servers) {
		c.Servers = slices.Grow(c.Servers, i+1-len(c.Servers))[:i+1]
	}
	c.Servers[i] = s
}

// deleteServer removes slot i; later slots move down. The shorter side of
// the table moves, so that removing the first or the last slot, even
// 20,000 times in one change, costs nothing per slot.
func (x *txn) deleteServer(i int) {
	s := x.writableServers()
	if i < len(s)/2 {
		copy(s[1:i+1], s[:i])
		s[0] = Server{}
		x.cfg.Servers = s[1:]
		return
	}
	x.cfg.Servers = slices.Delete(s, i, i+1)
}

// appendACL adds e to access list n, copying the list the first time.
func (x *txn) appendACL(n int, e acl.Entry) {
	l := x.cfg.ACLs[n]
	if !x.ownACL[n] {
		l = slices.Clip(l) // the next append copies
		x.ownACL[n] = true
	}
	x.cfg.ACLs[n] = append(l, e)
}

// commit makes the transaction's configuration the running one. When the
// change was applied but autowrite could not save it, the reply comes with
// a *SaveError; so it does when a write in the transaction failed after a
// change. A write that fails in a transaction that changed nothing is a
// plain error.
func (in *Interp) commit(x *txn) (string, error) {
	changed := !x.cfg.equal(in.cfg)
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
		if f := in.proc.ConfigFile; x.cfg.AutoWrite && f != "" && autowrites(x.origin) &&
			in.checkMayWrite(f) == nil { // before the -F file is read (start-up), there is nothing to save yet
			if err := in.save(f); err != nil {
				in.log.Printf("autowrite: %v", err)
				saveErr = &SaveError{Path: f, Err: err}
			}
		}
		if in.OnChange != nil {
			in.OnChange(x.cfg, x.origin)
		}
	}
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

// runData runs the lines of an upload or of -O/-o text; errors name the
// source and the line.
func (x *txn) runData(name string, data []byte) error { return x.runLines(name, data, false) }

// runFile runs the lines of a file read from disk (-F, include).
func (x *txn) runFile(name string, data []byte) error { return x.runLines(name, data, true) }

// errNotCommand replaces the error for a line of a file that does not
// start with a command, so that the error does not show the line.
var errNotCommand = errors.New("not a pen command (the line is not shown)")

func (x *txn) runLines(name string, data []byte, fromDisk bool) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), MaxLineSize)
	n := 0
	for sc.Scan() {
		n++
		if err := x.run(sc.Text()); err != nil {
			// A file that is not a configuration (include
			// /etc/shadow) fails at its first line, which
			// does not start with a command: say where, not
			// what.
			var u *UnknownCommandError
			if fromDisk && errors.As(err, &u) {
				err = errNotCommand
			}
			return &LineError{File: name, Line: n, Err: err}
		}
	}
	if err := sc.Err(); err != nil {
		return &LineError{File: name, Line: n + 1, Err: err}
	}
	return nil
}

// Split cuts a command line as Pen does: at the first CR and the first LF,
// then into words at spaces (and, unlike Pen, tabs).
func Split(line string) []string {
	if i := strings.IndexByte(line, '\r'); i >= 0 {
		line = line[:i]
	}
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	return strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
}

func (x *txn) printf(format string, args ...any) { fmt.Fprintf(&x.out, format, args...) }

// later queues a runtime action for after the commit.
func (x *txn) later(f func(Engine)) {
	if !x.dry {
		x.after = append(x.after, f)
	}
}

func (x *txn) run(line string) error {
	w := Split(line)
	if len(w) == 0 || strings.HasPrefix(w[0], "#") {
		return nil
	}
	if err := checkWords(w); err != nil {
		return err
	}
	if w[0] == "no" {
		if len(w) < 2 {
			return errors.New("no: expected a setting to turn off")
		}
		return x.runNo(w[1], w[2:])
	}
	check, err := x.webFileCheck(w[0], w[1:])
	if err != nil {
		return err
	}
	if err := x.runCmd(w[0], w[1:]); err != nil {
		return err
	}
	if check != nil {
		return check()
	}
	return nil
}

// checkWords refuses control characters and bytes that are not UTF-8 in
// any word: they would end up in the file write saves (a NUL cuts a C
// string, a newline would start a new command), in log lines and on the
// admin UI's pages. The error does not show the word, which may come from
// a file that is not a configuration.
func checkWords(w []string) error {
	for i, word := range w {
		bad, ok := controlChar(word)
		if ok {
			continue
		}
		if i == 0 {
			return fmt.Errorf("command word contains %s: refused", bad)
		}
		cmd := w[0]
		if cmd == "no" && i > 1 {
			cmd += " " + w[1]
			i--
		}
		return fmt.Errorf("%s: argument %d contains %s: refused", cmd, i, bad)
	}
	return nil
}

// controlChar finds the first control character (C0, DEL or C1) or
// invalid UTF-8 in s and describes it; ok is true when there is none.
func controlChar(s string) (what string, ok bool) {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && isInvalidAt(s, i):
			return fmt.Sprintf("a byte that is not UTF-8 (0x%02x)", s[i]), false
		case r < 0x20 || r == 0x7f:
			return fmt.Sprintf("a control character (0x%02x)", r), false
		case r >= 0x80 && r < 0xa0:
			return fmt.Sprintf("a control character (U+%04X)", r), false
		}
	}
	return "", true
}

// isInvalidAt reports whether the rune at s[i] is an encoding error rather
// than a literal U+FFFD.
func isInvalidAt(s string, i int) bool {
	r, size := utf8.DecodeRuneInString(s[i:])
	return r == utf8.RuneError && size == 1
}

// MaxInt is the largest number a command takes: Pen's numbers are C ints,
// and a configuration pen writes must mean the same to Pen.
const MaxInt = math.MaxInt32

// Bounds of the client and connection tables and of the idle upstream
// connections held, which are allocated to these sizes.
const (
	maxTable  = 1 << 20
	maxIdlers = 10000
)

// MaxSeconds is the longest time a command takes, about 68 years; times
// are seconds, and the longest one times time.Second must fit a
// time.Duration (blacklist 9223372037 overflowed it and blacklisted
// nothing).
const MaxSeconds = MaxInt

// checkInt refuses n outside lo..hi; unit follows the number in the error.
func checkInt(what string, n, lo, hi int, unit string) error {
	if n < lo || n > hi {
		return fmt.Errorf("%s: %d%s out of range (%d..%d)", what, n, unit, lo, hi)
	}
	return nil
}

// checkNumbers refuses numbers out of the range the commands accept, for
// settings made directly (Update: the command-line flags).
func (c *Config) checkNumbers() error {
	for _, v := range []struct {
		name   string
		n      int
		lo, hi int
		unit   string
	}{
		{"blacklist", c.Blacklist, 0, MaxSeconds, " seconds"},
		{"timeout", c.Timeout, 1, MaxSeconds, " seconds"},
		{"tracking", c.Tracking, 0, MaxSeconds, " seconds"},
		{"idle_timeout", c.IdleTimeout, 0, MaxSeconds, " seconds"},
		{"ssl_client_renegotiation_interval", c.TLS.Renegotiate, 0, MaxSeconds, " seconds"},
		{"debug", c.Debug, 0, MaxInt, ""},
		{"clients_max", c.ClientsMax, 1, maxTable, ""},
		{"conn_max", c.ConnMax, 1, maxTable, ""},
		{"pending_max", c.PendingMax, 1, MaxInt, ""},
		{"multi_accept", c.MultiAccept, 1, MaxInt, ""},
		{"listen_queue", c.ListenQueue, 1, MaxInt, ""},
		{"idlers", c.Idlers, 0, maxIdlers, ""},
	} {
		if err := checkInt(v.name, v.n, v.lo, v.hi, v.unit); err != nil {
			return err
		}
	}
	return nil
}

// checkSeconds refuses a time longer than MaxSeconds.
func checkSeconds(what string, n int) error { return checkInt(what, n, 0, MaxSeconds, " seconds") }

// optInt parses an optional numeric argument.
func optInt(cmd string, args []string) (int, bool, error) {
	if len(args) == 0 {
		return 0, false, nil
	}
	if len(args) > 1 {
		return 0, false, fmt.Errorf("%s: unexpected %q", cmd, args[1])
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return 0, false, fmt.Errorf("%s: %q is not a number", cmd, args[0])
	}
	return n, true, nil
}

func noArgs(cmd string, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s: unexpected %q", cmd, args[0])
	}
	return nil
}

func oneArg(cmd string, args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("%s: expected one argument", cmd)
	}
	return args[0], nil
}

func aclNumber(cmd, s string, low int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not an acl number", cmd, s)
	}
	if n < low || n >= acl.Lists {
		return 0, fmt.Errorf("%s: acl %d outside (%d,%d)", cmd, n, low, acl.Lists-1)
	}
	return n, nil
}

// flag handles the commands that switch a setting on.
func (x *txn) flag(p *bool, v bool, cmd string, args []string) error {
	if err := noArgs(cmd, args); err != nil {
		return err
	}
	*p = v
	return nil
}

func (x *txn) runCmd(cmd string, args []string) error {
	c := x.cfg
	switch cmd {
	case "abort_on_error":
		return x.flag(&c.AbortOnErr, true, cmd, args)
	case "acl":
		if len(args) < 1 {
			return errors.New("acl: expected acl N permit|deny address")
		}
		n, err := aclNumber(cmd, args[0], 0)
		if err != nil {
			return err
		}
		e, err := acl.ParseEntry(args[1:])
		if err != nil {
			return fmt.Errorf("acl: %w", err)
		}
		if len(c.ACLs[n]) >= MaxACLEntries {
			return fmt.Errorf("acl: acl %d is full (%d entries)", n, MaxACLEntries)
		}
		x.appendACL(n, e)
	case "ascii":
		return x.flag(&c.ASCII, true, cmd, args)
	case "blacklist":
		n, set, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if set {
			if n < 0 {
				return errors.New("blacklist: time must not be negative")
			}
			if err := checkSeconds(cmd, n); err != nil {
				return err
			}
			c.Blacklist = n
		}
		x.printf("%d\n", c.Blacklist)
	case "client_acl", "control_acl":
		p := &c.ClientACL
		if cmd == "control_acl" {
			p = &c.ControlACL
		}
		if len(args) > 0 {
			n, err := aclNumber(cmd, args[0], 0)
			if err != nil {
				return err
			}
			if err := noArgs(cmd, args[1:]); err != nil {
				return err
			}
			*p = n
		}
		x.printf("%d\n", *p)
	case "clients_max", "conn_max":
		p, what := &c.ClientsMax, "client"
		if cmd == "conn_max" {
			p, what = &c.ConnMax, "connection"
		}
		n, set, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if set {
			if n < 1 || n > maxTable {
				return fmt.Errorf("%s: %s table size %d out of range (1..%d)", cmd, what, n, maxTable)
			}
			if n > *p { // the tables only grow, as in Pen
				*p = n
			}
		}
		x.printf("%d\n", *p)
	case "close", "connection":
		n := 0
		if len(args) > 0 {
			var err error
			if n, err = atoi(cmd, args[0]); err != nil {
				return err
			}
		}
		if n < 0 || n >= c.ConnMax {
			x.printf("Connection %d out of range\n", n)
			return nil
		}
		if cmd == "close" {
			x.printf("Forcibly closing connection %d\n", n)
			x.later(func(e Engine) {
				if e != nil {
					e.CloseConn(n)
				}
			})
			return nil
		}
		s := ConnState{Slot: n, DownFD: -1, UpFD: -1}
		if x.in.eng != nil {
			s = x.in.eng.Conn(n)
		}
		x.printf("Connection %d:\nstate = %d\ndownfd = %d, upfd = %d\nclient = %d, server = %d\npend = %d\n",
			n, s.State, s.DownFD, s.UpFD, s.Client, s.Server, s.Pend)
	case "control":
		if len(args) > 0 {
			spec, err := oneArg(cmd, args)
			if err != nil {
				return err
			}
			if _, err := ParseListen(spec, false, x.in.resolve); err != nil {
				return fmt.Errorf("control: %w", err)
			}
			c.Control = spec
		}
		if c.Control == "" {
			x.printf("(null)\n")
		} else {
			x.printf("%s\n", c.Control)
		}
	case "debug":
		n, set, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if set {
			if n < 0 {
				return errors.New("debug: level must not be negative")
			}
			if err := checkInt(cmd, n, 0, MaxInt, ""); err != nil {
				return err
			}
			c.Debug = n
		}
		x.printf("%d\n", c.Debug)
	case "dsr_if":
		s, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		c.DSRIf = s
	case "dsr_ip":
		s, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		c.DSRIP = s
	case "dummy":
		return x.flag(&c.Dummy, true, cmd, args)
	case "epoll", "kqueue", "poll", "select":
		// Pen chooses its event mechanism with these; pen always uses
		// epoll, so they are accepted and change nothing.
		return noArgs(cmd, args)
	case "exit":
		if !x.in.proc.ExitEnabled {
			x.printf("%s\n", ErrExitDisabled.Error())
			return nil
		}
		x.later(func(e Engine) {
			if e != nil {
				e.Quit()
			}
		})
	case "hash":
		return x.flag(&c.Hash, true, cmd, args)
	case "http":
		return x.flag(&c.HTTP, true, cmd, args)
	case "idle_timeout":
		n, set, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if set {
			n = max(n, 0) // as Pen does
			if err := checkSeconds(cmd, n); err != nil {
				return err
			}
			c.IdleTimeout = n
		}
		x.printf("Idle timeout: %d seconds\n", c.IdleTimeout)
	case "idlers":
		n, set, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if set {
			if n < 0 || n > maxIdlers {
				return fmt.Errorf("idlers: %d out of range (0..%d)", n, maxIdlers)
			}
			c.Idlers = n
		}
		have := 0
		if x.in.eng != nil {
			have = x.in.eng.IdlersActive()
		}
		x.printf("Idlers: %d/%d\n", have, c.Idlers)
	case "include":
		f, err := oneArg(cmd, args)
		if err != nil {
			//lint:ignore ST1005 Pen's message, kept verbatim
			return errors.New("Usage: include filename")
		}
		if x.depth >= maxInclude {
			return fmt.Errorf("include: %s: nested more than %d deep", f, maxInclude)
		}
		data, err := readConfigFile(f)
		if err != nil {
			return fmt.Errorf("include: %w", err)
		}
		x.depth++
		defer func() { x.depth-- }()
		return x.runFile(f, data)
	case "keepalive":
		return x.flag(&c.Keepalive, true, cmd, args)
	case "listen":
		if len(args) > 0 {
			spec, err := oneArg(cmd, args)
			if err != nil {
				return err
			}
			if err := x.checkListen(spec, c.UDP, c.DSRIf); err != nil {
				return err
			}
			c.Listen = spec
		}
		x.printf("%s\n", c.Listen)
	case "log":
		if len(args) > 0 {
			s, err := oneArg(cmd, args)
			if err != nil {
				return err
			}
			if err := checkLogTarget(s); err != nil {
				return err
			}
			c.Log = s
		}
		if c.Log != "" {
			x.printf("%s\n", c.Log)
		}
	case "mode":
		if err := noArgs(cmd, args); err != nil {
			return err
		}
		x.printf("%s", c.Mode())
	case "peek":
		return x.flag(&c.Peek, true, cmd, args)
	case "pending_max":
		n, _, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if len(args) > 0 {
			if err := checkInt(cmd, n, math.MinInt32, MaxInt, ""); err != nil {
				return err
			}
			c.PendingMax = n
		}
		if c.PendingMax <= 0 {
			c.PendingMax = 1
		}
	case "pid":
		x.printf("%d\n", os.Getpid())
	case "prio":
		return x.flag(&c.Prio, true, cmd, args)
	case "recent":
		secs, set, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if !set {
			secs = DefaultRecent
		}
		if err := checkInt(cmd, secs, 0, MaxSeconds, " seconds"); err != nil {
			return err
		}
		if x.in.eng != nil {
			since := x.in.now().Add(-time.Duration(secs) * time.Second).Truncate(time.Second)
			for _, cl := range x.in.eng.Clients() {
				if cl.Last.Before(since) {
					continue
				}
				x.printf("%s connects %d sx %d rx %d\n", ClientName(cl.Addr), cl.Connects, cl.Sent, cl.Received)
			}
		}
	case "roundrobin":
		return x.flag(&c.RoundRobin, true, cmd, args)
	case "server":
		return x.server(args)
	case "servers":
		if err := noArgs(cmd, args); err != nil {
			return err
		}
		x.servers()
	case "socket":
		fd := 0
		if len(args) > 0 {
			var err error
			if fd, err = atoi(cmd, args[0]); err != nil {
				return err
			}
		}
		conn := -1
		if x.in.eng != nil {
			conn = x.in.eng.SocketConn(fd)
		}
		x.printf("Socket %d belongs to connection %d\n", fd, conn)
	case "source":
		s, err := oneArg(cmd, args)
		if err != nil {
			return errors.New("source: expected an address")
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			h, herr := resolveHost(x.in.resolve, s)
			if herr != nil || h.IsUnix() {
				return fmt.Errorf("unable to set source address to '%s'", s)
			}
			a = h.IP
		}
		c.Source = a.Unmap()
	case "status":
		if err := noArgs(cmd, args); err != nil {
			return err
		}
		if c.WebStats == "" {
			x.printf("Unable to create webstats\n")
			return nil
		}
		page := x.in.statusPage(c)
		if !x.dry {
			if err := WriteFileAtomic(c.WebStats, page, 0o644); err != nil {
				x.in.log.Printf("Can't write to %s: %v", c.WebStats, err)
				x.printf("Unable to create webstats\n")
				return nil
			}
		}
		x.out.Write(page)
	case "stubborn":
		return x.flag(&c.Stubborn, true, cmd, args)
	case "tarpit_acl":
		if len(args) > 0 {
			n, err := aclNumber(cmd, args[0], -1)
			if err != nil {
				return err
			}
			if err := noArgs(cmd, args[1:]); err != nil {
				return err
			}
			c.TarpitACL = n
		}
		x.printf("tarpit_acl = %d", c.TarpitACL)
	case "tcp_fastclose":
		if len(args) == 0 {
			x.printf("do_cmd: ignoring tcp_fastclose without argument\n")
			return nil
		}
		switch args[0] {
		case "both":
			c.FastClose = FastCloseBoth
		case "up":
			c.FastClose = FastCloseUp
		case "down":
			c.FastClose = FastCloseDown
		default:
			c.FastClose = FastCloseOff
		}
	case "tcp_nodelay":
		return x.flag(&c.NoDelay, true, cmd, args)
	case "timeout":
		n, set, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if set {
			if n < 1 {
				return errors.New("timeout: must be at least 1 second")
			}
			if err := checkSeconds(cmd, n); err != nil {
				return err
			}
			c.Timeout = n
		}
		x.printf("%d\n", c.Timeout)
	case "tracking":
		n, set, err := optInt(cmd, args)
		if err != nil {
			return err
		}
		if set {
			if n < 0 {
				return errors.New("tracking: time must not be negative")
			}
			if err := checkSeconds(cmd, n); err != nil {
				return err
			}
			c.Tracking = n
		}
		x.printf("%d\n", c.Tracking)
	case "transparent":
		return x.flag(&c.Transparent, true, cmd, args)
	case "web_stats":
		if len(args) > 0 {
			s, err := oneArg(cmd, args)
			if err != nil {
				return err
			}
			c.WebStats = s
		}
		if c.WebStats != "" {
			x.printf("%s\n", c.WebStats)
		}
	case "weight":
		return x.flag(&c.Weight, true, cmd, args)
	case "write":
		file := x.in.proc.ConfigFile
		if len(args) > 0 {
			var err error
			if file, err = oneArg(cmd, args); err != nil {
				return err
			}
		}
		if file == "" {
			return errors.New("write: no file")
		}
		if err := x.in.checkMayWrite(file); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if !x.dry {
			x.writes = append(x.writes, file)
		}

	// Settings Pen has only as flags, and ours.
	case "udp":
		return x.flag(&c.UDP, true, cmd, args)
	case "emergency_server", "abuse_server":
		spec, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		s, err := x.parseServerSpec(spec)
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		p := &c.Emergency
		if cmd == "abuse_server" {
			p = &c.Abuse
		}
		if *p != nil {
			s.id = (*p).id
		} else {
			s.id = newServerID()
		}
		*p = &s
	case "multi_accept":
		n, _, err := optInt(cmd, args)
		if err != nil || len(args) == 0 {
			return errors.New("multi_accept: expected a number")
		}
		if err := checkInt(cmd, n, math.MinInt32, MaxInt, ""); err != nil {
			return err
		}
		c.MultiAccept = max(n, 1)
	case "listen_queue":
		n, _, err := optInt(cmd, args)
		if err != nil || len(args) == 0 {
			return errors.New("listen_queue: expected a number")
		}
		if err := checkInt(cmd, n, math.MinInt32, MaxInt, ""); err != nil {
			return err
		}
		c.ListenQueue = max(n, 50)
	case "ssl_cert", "ssl_key", "ssl_ca_file", "ssl_ca_dir", "ssl_protocol":
		return x.tlsFile(cmd, args)
	case "ssl_compat":
		return x.flag(&c.TLS.Compat, true, cmd, args)
	case "ssl_require_client_cert":
		return x.flag(&c.TLS.RequireClient, true, cmd, args)
	case "ssl_ciphers":
		c.TLS.Ciphers = strings.Join(args, " ")
	case "ssl_client_renegotiation_interval":
		n, _, err := optInt(cmd, args)
		if err != nil || len(args) == 0 {
			return errors.New("ssl_client_renegotiation_interval: expected seconds")
		}
		if err := checkInt(cmd, n, 0, MaxSeconds, " seconds"); err != nil {
			return err
		}
		c.TLS.Renegotiate = n
	case "ssl_ocsp_response":
		s, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		c.TLS.OCSPResponse = s
	case "ssl_option":
		s, err := oneArg(cmd, args)
		if err != nil {
			//lint:ignore ST1005 Pen's message, kept verbatim
			return errors.New("Missing option")
		}
		switch s {
		case "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1.1", "no_tlsv1.2", "cipher_server_preference":
		default:
			return fmt.Errorf("ssl_option: unknown option %q", s)
		}
		for _, o := range c.TLS.Options {
			if o == s {
				return nil
			}
		}
		c.TLS.Options = append(slices.Clip(c.TLS.Options), s) // shared with the running configuration
	case "ssl_sni_path":
		s, err := oneArg(cmd, args)
		if err != nil {
			//lint:ignore ST1005 Pen's message, kept verbatim
			return errors.New("Missing ssl_sni_path")
		}
		c.TLS.SNIPath = s
	default:
		if ok, err := x.adminCmd(cmd, args); ok {
			return err
		}
		return &UnknownCommandError{Word: cmd}
	}
	return nil
}

func (x *txn) runNo(what string, args []string) error {
	c := x.cfg
	switch what {
	case "acl":
		if len(args) != 1 {
			return errors.New("no acl: expected an acl number")
		}
		n, err := aclNumber("no acl", args[0], 0)
		if err != nil {
			return err
		}
		c.ACLs[n] = nil
		return nil
	case "server":
		if len(args) != 1 {
			return errors.New("no server: expected a server number")
		}
		n, err := atoi("no server", args[0])
		if err != nil {
			return err
		}
		if n < 0 || n >= len(c.Servers) {
			return fmt.Errorf("no server: server %d does not exist", n)
		}
		x.deleteServer(n)
		return nil
	}
	if err := noArgs("no "+what, args); err != nil {
		return err
	}
	switch what {
	case "abort_on_error":
		c.AbortOnErr = false
	case "ascii":
		c.ASCII = false
	case "dummy":
		c.Dummy = false
	case "hash":
		c.Hash = false
	case "http":
		c.HTTP = false
	case "keepalive":
		c.Keepalive = false
	case "log":
		c.Log = ""
	case "peek":
		c.Peek = false
	case "prio":
		c.Prio = false
	case "roundrobin":
		c.RoundRobin = false
	case "stubborn":
		c.Stubborn = false
	case "tcp_nodelay":
		c.NoDelay = false
	case "transparent":
		c.Transparent = false
	case "web_stats":
		c.WebStats = ""
	case "weight":
		c.Weight = false
	case "udp":
		c.UDP = false
	case "source":
		c.Source = netip.Addr{}
	case "control":
		c.Control = ""
	case "listen":
		c.Listen = ""
	case "dsr_if":
		c.DSRIf = ""
	case "emergency_server":
		c.Emergency = nil
	case "abuse_server":
		c.Abuse = nil
	case "ssl_cert":
		c.TLS.Cert = ""
	case "ssl_compat":
		c.TLS.Compat = false
	case "ssl_require_client_cert":
		c.TLS.RequireClient = false
	case "ssl_sni_path":
		c.TLS.SNIPath = ""
	case "ssl_ocsp_response":
		c.TLS.OCSPResponse = ""
	case "ssl_option":
		c.TLS.Options = nil
	default:
		if x.adminNo(what) {
			return nil
		}
		return &UnknownCommandError{Word: "no " + what}
	}
	return nil
}

func (x *txn) tlsFile(cmd string, args []string) error {
	s, err := oneArg(cmd, args)
	if err != nil {
		return err
	}
	t := &x.cfg.TLS
	switch cmd {
	case "ssl_cert":
		t.Cert = s
	case "ssl_key":
		t.Key = s
	case "ssl_ca_file":
		t.CAFile = s
	case "ssl_ca_dir":
		t.CADir = s
	case "ssl_protocol":
		switch s {
		case "ssl23", "ssl2", "ssl3", "tls1":
		default:
			return fmt.Errorf("protocol version %s not known", s)
		}
		t.Protocol = s
	}
	return nil
}

// checkLogTarget accepts a file name, or host:port for logging over UDP
// (Pen's rule: a ':' in a name that does not start with '/').
func checkLogTarget(s string) error {
	if !strings.Contains(s, ":") || strings.HasPrefix(s, "/") {
		return nil
	}
	i := strings.LastIndexByte(s, ':')
	if i == 0 {
		return fmt.Errorf("log: bogus host in %q", s)
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("log: bogus port in %q", s)
	}
	return nil
}

func (x *txn) checkListen(spec string, udp bool, dsrIf string) error {
	if dsrIf != "" {
		if _, err := ParseDSRListen(spec); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		return nil
	}
	if _, err := ParseListen(spec, udp, x.in.resolve); err != nil {
		return err
	}
	return nil
}

// ParseDSRListen parses the listen spec of DSR mode: IPv4[:port], port 0
// or none meaning every port.
func ParseDSRListen(spec string) (netip.AddrPort, error) {
	host, port, found := strings.Cut(spec, ":")
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("direct server return needs an IPv4 address, got %q", host)
	}
	p := 0
	if found {
		if p, err = strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
		}
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

func (x *txn) parseServerSpec(spec string) (Server, error) {
	return ParseServer(spec, ListenPort(x.cfg.Listen, x.cfg.UDP), x.cfg.UDP, x.in.resolve)
}

func (x *txn) server(args []string) error {
	if len(args) == 0 {
		return errors.New("server: expected a server number")
	}
	n, err := atoi("server", args[0])
	if err != nil {
		return err
	}
	if n < 0 || n >= MaxServers {
		return fmt.Errorf("server: server number %d out of range (0..%d)", n, MaxServers-1)
	}
	kv := args[1:]
	if len(kv)%2 != 0 {
		return fmt.Errorf("server: %q has no value", kv[len(kv)-1])
	}
	c := x.cfg
	var s Server
	if n < len(c.Servers) {
		s = c.Servers[n]
	}
	if s.id == 0 {
		s.id = newServerID()
	}
	var bl *int
	for i := 0; i < len(kv); i += 2 {
		k, v := kv[i], kv[i+1]
		if k == "address" {
			h, err := resolveHost(x.in.resolve, v)
			if err != nil {
				return fmt.Errorf("server %d: %w", n, err)
			}
			s.Host = h
			if h.IsUnix() {
				s.Port = 1
			}
			continue
		}
		if k == "port" {
			p, err := ParsePort(v, c.UDP)
			if err != nil {
				return fmt.Errorf("server %d: %w", n, err)
			}
			if !s.Host.IsUnix() {
				s.Port = p
			}
			continue
		}
		num, err := atoi("server "+k, v)
		if err != nil {
			return err
		}
		switch k {
		case "acl":
			if num < 0 || num >= acl.Lists {
				return fmt.Errorf("server %d: acl %d outside (0,%d)", n, num, acl.Lists-1)
			}
			s.ACL = num
		case "max", "hard", "weight", "prio":
			if num < 0 {
				return fmt.Errorf("server %d: %s must not be negative", n, k)
			}
			if err := checkInt(fmt.Sprintf("server %d: %s", n, k), num, 0, MaxInt, ""); err != nil {
				return err
			}
			switch k {
			case "max":
				s.Max = num
			case "hard":
				s.Hard = num
			case "weight":
				s.Weight = num
			case "prio":
				s.Prio = num
			}
		case "blacklist":
			if num < 0 {
				return fmt.Errorf("server %d: blacklist time must not be negative", n)
			}
			if err := checkSeconds(fmt.Sprintf("server %d: blacklist", n), num); err != nil {
				return err
			}
			t := num
			bl = &t
		default:
			return fmt.Errorf("server %d: unknown setting %q (acl, address, port, max, hard, blacklist, weight, prio)", n, k)
		}
	}
	x.setServer(n, s)
	if bl != nil {
		d := time.Duration(*bl) * time.Second
		x.later(func(e Engine) {
			if e != nil {
				e.Blacklist(n, d)
			}
		})
	}
	return nil
}

func (x *txn) servers() {
	var st []ServerState
	if x.in.eng != nil {
		st = x.in.eng.Servers()
	}
	for i, s := range x.cfg.Servers {
		var ss ServerState
		if i < len(st) {
			ss = st[i]
		}
		x.printf("%d addr %s port %d conn %d max %d hard %d weight %d prio %d sx %d rx %d\n",
			i, s.Host, s.ReportedPort(), ss.Conns, s.Max, s.Hard, s.Weight, s.Prio, ss.Sent, ss.Received)
	}
}
