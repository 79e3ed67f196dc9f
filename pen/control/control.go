// Package control implements Pen's control socket: a TCP port or a unix
// socket where each connection sends one command line, gets the reply and
// is closed. Clients of a TCP control port must pass control_acl; unix
// socket clients always pass (as in Pen), the socket file's permissions
// guard it. Unlike Pen, a client that connects and says nothing cannot
// stall pen: every connection runs on its own and must send its command
// within FirstLineDeadline.
//
// Pen's protocol has no status: the reply ends with the close, and a
// command that failed looks like one that printed nothing. pen's penctl
// therefore asks for a status line, in a way Pen's parser ignores: it ends
// its command line with StatusRequest ("\r" and a word; Pen and pen cut a
// command at the first CR). A client that asks gets StatusOK or
// StatusError as the first line of the answer, then the reply (or the
// reason for the failure). A client that does not ask, Pen's penctl among
// them, gets Pen's bytes: the reply, or the reason alone on failure.
package control

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pen-lb/pen-appliance/pen/acl"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// MaxCommand is the longest command line accepted, newline excluded; Pen
// reads at most 4095 bytes. A longer line is refused, not cut.
const MaxCommand = 4095

// FirstLineDeadline is how long a client may take to send its command
// line after connecting. penctl sends it at once; the limit keeps idle
// clients from holding the connection slots.
const FirstLineDeadline = 3 * time.Second

// Deadline bounds the sending of one reply.
const Deadline = 10 * time.Second

// maxClients bounds control connections served at once; more are
// refused with Overloaded.
const maxClients = 32

// maxRefusing bounds the connections being refused at once. A refusal
// waits briefly for the client's command before closing, so that the
// client reads the refusal instead of a reset; past this bound a
// connection is closed at once.
const maxRefusing = 32

// refuseLogEvery spaces the log lines about refused connections.
const refuseLogEvery = time.Second

// refuseLinger is how long a refused connection is kept to read (and
// drop) the client's command.
const refuseLinger = time.Second

// The status protocol.
const (
	// StatusRequest ends a command line whose sender wants a status line.
	StatusRequest = "\rpen-status"
	// StatusOK is the first line of the answer to a command that ran.
	StatusOK = "pen-status ok"
	// StatusError is the first line of the answer to a command that was
	// refused or failed, or that was applied but not saved; the reason
	// follows.
	StatusError = "pen-status error"
)

// Overloaded is sent to a client that connects while maxClients
// connections are being served. It goes out before the command is read,
// so it carries no status line; penctl counts any answer without a
// status line as a failure.
const Overloaded = "pen: too many control connections at once; the command was not run, try again\n"

// Executor runs one command line; config.Interp is one.
type Executor interface {
	Exec(line string, origin config.Origin) (string, error)
}

// Server serves a control listener.
type Server struct {
	ln   net.Listener
	ex   Executor
	log  *diag.Logger
	spec string
	sem  chan struct{} // a slot per connection being served
	// firstLine is FirstLineDeadline; tests shorten it.
	firstLine time.Duration
	refusing  chan struct{} // a slot per connection being refused

	// acl is the control_acl list in effect; the engine sets it after
	// every change (SetACL), the accept loop reads it. Until it is set,
	// TCP peers are refused.
	acl atomic.Pointer[acl.List]

	// mu guards the fields below. reading holds the connections that
	// have not yet sent their command line: Close closes them, since they
	// have asked for nothing yet. Connections running a command are only
	// counted (running): Close leaves them to finish, Wait waits for
	// them.
	mu            sync.Mutex
	reading       map[net.Conn]struct{}
	closed        bool
	refused       int           // connections refused since refusedLogged
	refusedLogged time.Time     // when refusals were last logged
	running       int           // handlers running
	idle          chan struct{} // closed when running drops to 0 (Wait)
}

// Listen opens the control listener named by spec (Pen's -C syntax:
// "port", "addr:port", or a path for a unix socket).
func Listen(spec string, ex Executor, log *diag.Logger) (*Server, error) {
	l, err := config.ParseListen(spec, false, nil)
	if err != nil {
		return nil, fmt.Errorf("control port %s: %w", spec, err)
	}
	var ln net.Listener
	if l.Path != "" {
		if err := removeStaleSocket(l.Path); err != nil {
			return nil, fmt.Errorf("control socket %s: %w", l.Path, err)
		}
		ln, err = net.Listen("unix", l.Path)
	} else {
		ln, err = net.Listen("tcp", l.Addr.String())
	}
	if err != nil {
		return nil, fmt.Errorf("control port %s: %w", spec, err)
	}
	return newServer(ln, spec, ex, log), nil
}

// staleProbe bounds the connect that tells a live socket from a stale one.
const staleProbe = time.Second

// removeStaleSocket makes way for a new socket at path. Pen removes
// whatever is there; pen removes only a stale socket, one that nothing
// listens on (left behind by a pen that was killed), and refuses to
// replace a file that is not a socket or a socket that is in use (another
// pen's control socket).
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s is there and is not a socket; refusing to replace it", describe(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, staleProbe)
	if err == nil {
		c.Close()
		return errors.New("another process listens on this socket; refusing to replace it")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether the socket there is in use (%v); refusing to replace it", err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing the stale socket: %w", err)
	}
	return nil
}

// describe names the kind of file a mode stands for.
func describe(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "a file"
}

func newServer(ln net.Listener, spec string, ex Executor, log *diag.Logger) *Server {
	return &Server{
		ln: ln, ex: ex, log: log, spec: spec,
		firstLine: FirstLineDeadline,
		sem:       make(chan struct{}, maxClients),
		refusing:  make(chan struct{}, maxRefusing),
		reading:   map[net.Conn]struct{}{},
	}
}

// Spec is the listener spec the server was opened with.
func (s *Server) Spec() string { return s.spec }

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Accept failures (EMFILE, ENFILE, ...) are retried after a pause that
// doubles from acceptBackoffMin up to acceptBackoffMax and starts over
// after an accept succeeds: retrying at once would spin on a failure that
// lasts until descriptors are freed.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Serve accepts control connections until Close.
func (s *Server) Serve() {
	var backoff time.Duration // the pause after the last failure; 0 after a success
	failures := 0             // accept failures since the last success
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// One line per burst of failures, not one per retry.
			if failures == 0 {
				s.log.Printf("control port: accept: %v; retrying with a growing pause of up to %v", err, acceptBackoffMax)
			}
			failures++
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			time.Sleep(backoff)
			continue
		}
		if failures > 0 {
			s.log.Printf("control port: accepting again after %d failed attempts", failures)
			failures, backoff = 0, 0
		}
		// A peer control_acl denies is closed at once, as in Pen, and
		// never holds a slot.
		if !s.permitted(c) {
			s.log.Printf("do_ctrl: not from there")
			c.Close()
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			s.refuse(c)
			continue
		}
		s.count(1)
		go func() {
			defer func() { <-s.sem; s.count(-1) }()
			s.handle(c)
		}()
	}
}

// refuse tells a client that came while every slot is taken that its
// command was not run.
func (s *Server) refuse(c net.Conn) {
	s.logRefusal()
	select {
	case s.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-s.refusing }()
		defer c.Close()
		c.SetDeadline(time.Now().Add(refuseLinger))
		c.Write([]byte(Overloaded))
		finish(c)
	}()
}

// logRefusal logs refused connections at most once per refuseLogEvery,
// with the number refused since the last line, so that a flood of clients
// does not flood the log.
func (s *Server) logRefusal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused++
	if now := time.Now(); now.Sub(s.refusedLogged) >= refuseLogEvery {
		s.log.Printf("do_ctrl: too many control connections (%d served at once); refused %d", maxClients, s.refused)
		s.refused = 0
		s.refusedLogged = now
	}
}

// finish ends an answer. Closing a TCP socket with unread input sends a
// reset, which can destroy the answer before the client reads it (a
// refusal sent before reading, the reason for refusing an oversized
// line): end the answer with a FIN, then read and drop what the client
// still sends until it closes, for at most refuseLinger.
func finish(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return
	}
	cw.CloseWrite()
	c.SetReadDeadline(time.Now().Add(refuseLinger))
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// Close stops the listener (a unix listener removes its socket file) and
// closes the connections that have not sent their command yet. It does
// not wait for commands that are running: Close is called by the engine
// while the interpreter is locked, possibly on behalf of a command that
// came through this very listener (`control NEWADDR`), whose handler must
// still be able to send its reply. Such a handler ends on its own within
// Deadline.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.reading {
		c.Close()
	}
	clear(s.reading)
	s.mu.Unlock()
	return s.ln.Close()
}

// Wait waits up to d for the commands that are running to send their
// replies. Whoever stops pen calls it after Close, without holding a lock
// that a command needs, so that the reply to `exit` reaches its client
// before the process ends.
func (s *Server) Wait(d time.Duration) bool {
	s.mu.Lock()
	if s.running == 0 {
		s.mu.Unlock()
		return true
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

// count counts a handler in (+1) or out (-1).
func (s *Server) count(delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running += delta
	if s.running == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// startReading registers c as waiting for its command line; it reports
// false if the server is already closed.
func (s *Server) startReading(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.reading[c] = struct{}{}
	return true
}

func (s *Server) doneReading(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reading, c)
}

// SetACL sets the access list that TCP clients must pass (control_acl).
func (s *Server) SetACL(l acl.List) { s.acl.Store(&l) }

func (s *Server) permitted(c net.Conn) bool {
	peer := peerAddr(c)
	if !peer.IsValid() {
		return true // a unix socket peer always passes, as in Pen
	}
	l := s.acl.Load()
	return l != nil && l.Match(peer, nil)
}

func peerAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	return netip.Addr{} // unix socket: always permitted
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	if !s.startReading(c) {
		return
	}
	c.SetReadDeadline(time.Now().Add(s.firstLine))
	line, err := readLine(c)
	s.doneReading(c)
	if errors.Is(err, errNoLine) {
		s.log.Debugf(1, "do_ctrl: %v", err)
		return
	}
	line, wantStatus := strings.CutSuffix(line, StatusRequest)
	var reply string
	if err == nil {
		reply, err = s.ex.Exec(line, config.FromControl)
	}
	c.SetWriteDeadline(time.Now().Add(Deadline))
	if err != nil {
		// The reason goes after whatever the command printed (a
		// change that was applied but not saved may have printed
		// something).
		s.log.Debugf(1, "do_ctrl: %q: %v", line, err)
		reply += err.Error() + "\n"
		if wantStatus {
			reply = StatusError + "\n" + reply
		}
	} else if wantStatus {
		reply = StatusOK + "\n" + reply
	}
	c.Write([]byte(reply))
	finish(c)
}

// errNoLine means the client sent nothing usable and gets no answer.
var errNoLine = errors.New("no command line")

// errTooLong refuses a command line longer than MaxCommand.
var errTooLong = fmt.Errorf("command line longer than %d bytes; not run", MaxCommand)

// readLine reads until the first newline or EOF. Pen reads once; penctl
// writes the whole line at once, but a client that writes in pieces is
// served too. A line that does not end within MaxCommand bytes is
// errTooLong (Pen would cut it and run the first 4095 bytes); a client
// that sends nothing, or an incomplete line before its deadline, gets
// errNoLine.
func readLine(c net.Conn) (string, error) {
	var buf bytes.Buffer
	b := make([]byte, 1024)
	for buf.Len() <= MaxCommand {
		n, err := c.Read(b[:min(len(b), MaxCommand+1-buf.Len())])
		buf.Write(b[:n])
		if i := bytes.IndexByte(buf.Bytes(), '\n'); i >= 0 {
			return string(buf.Bytes()[:i]), nil
		}
		if err != nil {
			var ne net.Error
			if buf.Len() > 0 && !(errors.As(err, &ne) && ne.Timeout()) {
				return buf.String(), nil // the client closed after its line
			}
			return "", fmt.Errorf("%w: %v", errNoLine, err)
		}
	}
	return "", errTooLong
}

// Refused is the error of Request when pen answered that the command
// failed, or answered without a status line; Reason is pen's answer.
type Refused struct{ Reason string }

func (e *Refused) Error() string { return strings.TrimRight(e.Reason, "\n") }

// Request sends one command to a control socket (penctl): addr is
// "host:port" or a path containing '/'. It asks for a status line and
// returns the reply of a command that ran. A command that pen refused,
// that failed, or that was applied but could not be saved gives a
// *Refused with pen's reason (and whatever the command printed). An
// answer without a status line is a *Refused too: pen sends one to every
// client that asks, except when it refuses a connection before reading
// it (too many clients, control_acl); Pen itself never sends one.
func Request(addr string, command string, timeout time.Duration) ([]byte, error) {
	network := "tcp"
	if strings.Contains(addr, "/") {
		network = "unix"
	} else if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		// penctl splits at the last ':', so "::1:10000" works.
		host := strings.TrimSuffix(strings.TrimPrefix(addr[:i], "["), "]")
		addr = net.JoinHostPort(host, addr[i+1:])
	}
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(command + StatusRequest + "\n")); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(c); err != nil {
		// pen closes a connection it refuses before reading the
		// command (control_acl), which resets it: no answer.
		if !errors.Is(err, syscall.ECONNRESET) || out.Len() > 0 {
			return nil, err
		}
		out.Reset()
	}
	status, body, _ := bytes.Cut(out.Bytes(), []byte("\n"))
	switch string(status) {
	case StatusOK:
		return body, nil
	case StatusError:
		return nil, &Refused{Reason: string(body)}
	}
	if out.Len() == 0 {
		return nil, &Refused{Reason: "pen closed the connection without an answer; the command was not run (does control_acl permit this client?)"}
	}
	return nil, &Refused{Reason: "answer without a status line; the command may not have run:\n" + out.String()}
}
