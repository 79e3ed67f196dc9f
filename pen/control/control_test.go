package control

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/acl"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// newInterp is a command interpreter without a running engine: enough for
// commands that only change or read the configuration.
func newInterp() *config.Interp {
	return config.New(config.Default(), config.Process{}, diag.Discard())
}

// serveTCP serves a control port on 127.0.0.1 and a port the kernel
// chose, guarded by list.
func serveTCP(t *testing.T, in *config.Interp, list acl.List) *Server {
	t.Helper()
	return serveTCPWithin(t, in, list, FirstLineDeadline)
}

// serveTCPWithin is serveTCP with another first-line deadline.
func serveTCPWithin(t *testing.T, in *config.Interp, list acl.List, firstLine time.Duration) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(ln, ln.Addr().String(), in, diag.Discard())
	s.firstLine = firstLine
	s.SetACL(list)
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return s
}

// serveUnix serves a control socket in a temporary directory.
func serveUnix(t *testing.T, in *config.Interp) *Server {
	t.Helper()
	s, err := Listen(filepath.Join(t.TempDir(), "pen.ctl"), in, diag.Discard())
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return s
}

// raw sends bytes as a client that does not ask for a status (Pen's
// penctl) and returns everything the server sent before closing.
func raw(t *testing.T, network, addr, send string) string {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, send); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", send, err)
	}
	return string(b)
}

func blacklist(in *config.Interp) int { return in.Config().Blacklist }

// TestPenRepliesUnchanged: a client that does not ask for a status gets
// Pen's bytes, and the reason alone when a command fails.
func TestPenRepliesUnchanged(t *testing.T) {
	in := newInterp()
	s := serveTCP(t, in, nil)
	addr := s.Addr().String()
	for _, c := range []struct{ send, want string }{
		{"blacklist 7\n", "7\n"},
		{"acl 1 permit 10.0.0.1\n", ""},
		{"blacklist\n", "7\n"},
		{"blacklist\r\n", "7\n"},
		{"bogus\n", "do_cmd: ignoring command starting with 'bogus'\n"},
	} {
		if got := raw(t, "tcp", addr, c.send); got != c.want {
			t.Errorf("%q answered %q, want %q", c.send, got, c.want)
		}
	}
}

// TestStatusLine: Request gets the reply of a command that ran and a
// *Refused with pen's reason for one that failed.
func TestStatusLine(t *testing.T) {
	in := newInterp()
	s := serveUnix(t, in)
	addr := s.Addr().String()
	if out, err := Request(addr, "acl 1 permit 10.0.0.1", 3*time.Second); err != nil || string(out) != "" {
		t.Fatalf("Request(acl 1 permit 10.0.0.1) = %q, %v; want an empty reply and no error", out, err)
	}
	if out, err := Request(addr, "blacklist 7", 3*time.Second); err != nil || string(out) != "7\n" {
		t.Fatalf("Request(blacklist 7) = %q, %v; want %q", out, err, "7\n")
	}
	if out, err := Request(addr, "blacklist", 3*time.Second); err != nil || string(out) != "7\n" {
		t.Fatalf("Request(blacklist) = %q, %v; want %q", out, err, "7\n")
	}
	out, err := Request(addr, "blacklist -4", 3*time.Second)
	var r *Refused
	if !errors.As(err, &r) || out != nil {
		t.Fatalf("Request(blacklist -4) = %q, %v; want a *Refused", out, err)
	}
	if r.Reason == "" || strings.HasPrefix(r.Reason, StatusError) {
		t.Errorf("the reason for refusing blacklist -4 is %q", r.Reason)
	}
	_, err = Request(addr, "bogus", 3*time.Second)
	if !errors.As(err, &r) || r.Reason != "do_cmd: ignoring command starting with 'bogus'\n" {
		t.Errorf("Request(bogus) = %v; want a *Refused with Pen's text", err)
	}
	if got := blacklist(in); got != 7 {
		t.Errorf("blacklist after the refused commands = %d, want 7", got)
	}
}

// TestOneCommandPerConnection: only the first line of a connection runs,
// and the server closes the connection after the reply.
func TestOneCommandPerConnection(t *testing.T) {
	in := newInterp()
	s := serveTCP(t, in, nil)
	if got := raw(t, "tcp", s.Addr().String(), "blacklist 7\nblacklist 9\nblacklist\n"); got != "7\n" {
		t.Errorf("three lines answered %q, want the reply of the first, %q", got, "7\n")
	}
	if got := blacklist(in); got != 7 {
		t.Errorf("blacklist = %d after three lines on one connection, want 7 (only the first runs)", got)
	}
	// A client that writes its line in pieces and then closes its side
	// is served too.
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "black")
	time.Sleep(50 * time.Millisecond)
	io.WriteString(c, "list")
	c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "7\n" {
		t.Errorf("a line sent in two pieces answered %q (%v), want %q", b, err, "7\n")
	}
}

// TestOversizedLineRefused: a line longer than MaxCommand is refused with
// a reason and not run (Pen would run its first 4095 bytes).
func TestOversizedLineRefused(t *testing.T) {
	in := newInterp()
	s := serveTCP(t, in, nil)
	long := "blacklist 7" + strings.Repeat(" ", MaxCommand) + "\n"
	if got, want := raw(t, "tcp", s.Addr().String(), long), errTooLong.Error()+"\n"; got != want {
		t.Errorf("a %d-byte line answered %q, want %q", len(long), got, want)
	}
	if got := blacklist(in); got != config.DefaultBlacklist {
		t.Errorf("blacklist = %d after an oversized line, want %d (not run)", got, config.DefaultBlacklist)
	}
	// The longest line accepted still runs.
	edge := "blacklist 8" + strings.Repeat(" ", MaxCommand-len("blacklist 8"))
	if got := raw(t, "tcp", s.Addr().String(), edge+"\n"); got != "8\n" {
		t.Errorf("a line of exactly %d bytes answered %q, want %q", len(edge), got, "8\n")
	}
	if got := blacklist(in); got != 8 {
		t.Errorf("blacklist = %d after a %d-byte line, want 8", got, len(edge))
	}
}

// TestACLRefusesTCPPeer: a TCP peer that control_acl denies is closed
// without an answer and runs nothing; Request reports that as a refusal.
func TestACLRefusesTCPPeer(t *testing.T) {
	in := newInterp()
	deny := acl.List{{Kind: acl.IPv4, Permit: false, Addr: netip.MustParseAddr("127.0.0.1"), Mask: [4]byte{255, 255, 255, 255}}}
	s := serveTCP(t, in, deny)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "blacklist 7\n")
	// The connection is closed unread, which may reset it.
	if got, err := io.ReadAll(c); len(got) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("a denied peer got %q (%v), want nothing", got, err)
	}
	_, err = Request(s.Addr().String(), "blacklist 9", 3*time.Second)
	var r *Refused
	if !errors.As(err, &r) {
		t.Errorf("Request from a denied peer = %v, want a *Refused", err)
	}
	if got := blacklist(in); got != config.DefaultBlacklist {
		t.Errorf("blacklist = %d after commands from a denied peer, want %d", got, config.DefaultBlacklist)
	}
	// Permitting the peer takes effect for the next connection.
	s.SetACL(nil)
	if _, err := Request(s.Addr().String(), "blacklist 9", 3*time.Second); err != nil {
		t.Fatalf("Request after the ACL was emptied: %v", err)
	}
	if got := blacklist(in); got != 9 {
		t.Errorf("blacklist = %d, want 9", got)
	}
}

// TestIdleClientsDoNotHoldSlots: while every slot is taken by clients that
// say nothing, a command is refused with a clear answer (it used to be
// closed silently, and penctl exited 0); the idle clients are dropped
// after the first-line deadline, and commands run again.
func TestIdleClientsDoNotHoldSlots(t *testing.T) {
	in := newInterp()
	s := serveTCPWithin(t, in, nil, 500*time.Millisecond)
	addr := s.Addr().String()
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range maxClients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// The next client is refused once the server has taken the idle ones.
	var refused bool
	for i := 0; i < 50 && !refused; i++ {
		_, err := Request(addr, "blacklist 7", 3*time.Second)
		var r *Refused
		switch {
		case errors.As(err, &r) && r.Reason == "answer without a status line; the command may not have run:\n"+Overloaded:
			refused = true
		case err == nil:
			// Served before the server took all idle clients; the
			// deadline cannot have passed yet.
			time.Sleep(5 * time.Millisecond)
		default:
			t.Fatalf("Request while the slots are taken: %v", err)
		}
	}
	if !refused {
		t.Fatalf("no command was refused while %d idle clients held every slot", maxClients)
	}
	in.Exec("blacklist 30", config.FromControl)
	if got := raw(t, "tcp", addr, "blacklist 8\n"); got != Overloaded {
		t.Errorf("a raw client while the slots are taken got %q, want %q", got, Overloaded)
	}
	if got := blacklist(in); got != 30 {
		t.Errorf("blacklist = %d after refused commands, want 30", got)
	}
	// Every idle client is closed after the first-line deadline.
	for i, c := range idle {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("idle client %d: read %v, want EOF after the first-line deadline", i, err)
		}
	}
	if _, err := Request(addr, "blacklist 9", 3*time.Second); err != nil {
		t.Fatalf("Request after the idle clients were dropped: %v", err)
	}
	if got := blacklist(in); got != 9 {
		t.Errorf("blacklist = %d, want 9", got)
	}
}

// TestCloseEndsWaitingClients: Close closes connections that
// have not sent a command and returns without waiting.
func TestCloseEndsWaitingClients(t *testing.T) {
	in := newInterp()
	s := serveUnix(t, in)
	c, err := net.Dial("unix", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the server reads from it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.reading)
		s.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not start reading the connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a waiting client after Close: read %v, want EOF", err)
	}
	if _, err := net.Dial("unix", s.Addr().String()); err == nil {
		t.Errorf("the control socket still accepts after Close")
	}
}

// TestSocketPathOwnedElsewhere: Listen on a unix path replaces only a
// stale socket, never a regular file or a socket something listens on
// (Pen unlinks whatever is there).
func TestSocketPathOwnedElsewhere(t *testing.T) {
	dir := t.TempDir()
	in := newInterp()

	file := filepath.Join(dir, "pen.cfg")
	if err := os.WriteFile(file, []byte("server 0 address 10.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, in, diag.Discard()); err == nil || !strings.Contains(err.Error(), "a regular file is there and is not a socket") {
		t.Errorf("Listen on a regular file: %v, want a refusal naming the regular file", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "server 0 address 10.0.0.1\n" {
		t.Errorf("the regular file after the refusal: %q, %v; want it untouched", b, err)
	}

	live := filepath.Join(dir, "live.ctl")
	other, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := Listen(live, in, diag.Discard()); err == nil || !strings.Contains(err.Error(), "another process listens") {
		t.Errorf("Listen on a live socket: %v, want a refusal", err)
	}
	go func() {
		if c, err := other.Accept(); err == nil {
			c.Close()
		}
	}()
	if c, err := net.DialTimeout("unix", live, time.Second); err != nil {
		t.Errorf("the other listener's socket no longer answers after the refusal: %v", err)
	} else {
		c.Close()
	}

	stale := filepath.Join(dir, "stale.ctl")
	gone, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	gone.(*net.UnixListener).SetUnlinkOnClose(false)
	gone.Close()
	s, err := Listen(stale, in, diag.Discard())
	if err != nil {
		t.Fatalf("Listen on a stale socket: %v, want it replaced", err)
	}
	go s.Serve()
	defer s.Close()
	if out, err := Request(stale, "blacklist", 3*time.Second); err != nil || string(out) != "30\n" {
		t.Errorf("Request on the replaced socket = %q, %v", out, err)
	}
}

// exhausted is a listener whose Accept fails with EMFILE while fail is set,
// as a real one does when the process has no descriptors left.
type exhausted struct {
	net.Listener
	fail     atomic.Bool
	attempts atomic.Int64 // failed accepts
}

func (l *exhausted) Accept() (net.Conn, error) {
	if l.fail.Load() {
		l.attempts.Add(1)
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptBacksOff: while accept fails with EMFILE the control server
// retries with a growing pause (it used to retry every 10 ms and log
// each failure), logs once, and serves again once accept works.
func TestAcceptBacksOff(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &exhausted{Listener: inner}
	ln.fail.Store(true)
	var logged lockedBuffer
	s := newServer(ln, inner.Addr().String(), newInterp(), diag.New(&logged))
	s.SetACL(nil)
	go s.Serve()
	defer s.Close()

	const window = 1500 * time.Millisecond
	time.Sleep(window)
	// Pauses of 5, 10, 20, ... 640 ms, then 1 s: 9 or so attempts.
	if n := ln.attempts.Load(); n < 2 || n > 12 {
		t.Errorf("%d accept attempts in %v of EMFILE, want a handful (growing pauses)", n, window)
	}
	if n := strings.Count(logged.String(), "too many open files"); n != 1 {
		t.Errorf("the EMFILE burst was logged %d times, want once:\n%s", n, logged.String())
	}
	ln.fail.Store(false)
	start := time.Now()
	if out, err := Request(inner.Addr().String(), "blacklist", 5*time.Second); err != nil || string(out) != "30\n" {
		t.Fatalf("Request once accept works again = %q, %v", out, err)
	}
	if d := time.Since(start); d > acceptBackoffMax+500*time.Millisecond {
		t.Errorf("the first command after the burst took %v, want at most about the longest pause (%v)", d, acceptBackoffMax)
	}
	if !strings.Contains(logged.String(), "accepting again after") {
		t.Errorf("the end of the burst was not logged:\n%s", logged.String())
	}
}

// lockedBuffer collects log output written by the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
