// Package control implements Pen's control socket: a TCP port or a unix
// socket where each connection sends one command line, gets the reply and
// is closed. Clients of a TCP control port must pass control_acl; unix
// socket clients always pass (as in Pen), the socket file's permissions
// guard it. Unlike Pen, a client that connects and says nothing cannot
// stall pen: every connection has a deadline and runs on its own.
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
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// MaxCommand is the most a client may send; Pen reads at most 4095 bytes.
const MaxCommand = 4095

// Deadline bounds one control connection.
const Deadline = 10 * time.Second

// maxClients bounds control connections served at once.
const maxClients = 32

// Executor runs one command line; config.Interp is one.
type Executor interface {
	Exec(line string, origin config.Origin) (string, error)
	Config() *config.Config
}

// Server serves a control listener.
type Server struct {
	ln   net.Listener
	ex   Executor
	log  *diag.Logger
	spec string
	sem  chan struct{}

	// mu guards reading and closed. reading holds the connections that
	// have not yet sent their command line: Close closes them, since they
	// have asked for nothing yet. Connections running a command are not
	// tracked; they finish on their own within Deadline.
	mu      sync.Mutex
	reading map[net.Conn]struct{}
	closed  bool
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
		os.Remove(l.Path)
		ln, err = net.Listen("unix", l.Path)
	} else {
		ln, err = net.Listen("tcp", l.Addr.String())
	}
	if err != nil {
		return nil, fmt.Errorf("control port %s: %w", spec, err)
	}
	return &Server{ln: ln, ex: ex, log: log, spec: spec, sem: make(chan struct{}, maxClients), reading: map[net.Conn]struct{}{}}, nil
}

// Spec is the listener spec the server was opened with.
func (s *Server) Spec() string { return s.spec }

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts control connections until Close.
func (s *Server) Serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debugf(1, "accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			s.log.Debugf(1, "do_ctrl: too many control connections")
			c.Close()
			continue
		}
		go func() {
			defer func() { <-s.sem }()
			s.handle(c)
		}()
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

func peerAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	return netip.Addr{} // unix socket: always permitted
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(Deadline))
	cfg := s.ex.Config()
	if !cfg.ACLs[cfg.ControlACL].Match(peerAddr(c), nil) {
		s.log.Printf("do_ctrl: not from there")
		return
	}
	if !s.startReading(c) {
		return
	}
	line, err := readLine(c)
	s.doneReading(c)
	if err != nil {
		s.log.Debugf(1, "do_ctrl: %v", err)
		return
	}
	reply, err := s.ex.Exec(line, config.FromControl)
	if err != nil {
		reply = err.Error() + "\n"
	}
	c.Write([]byte(reply))
}

// readLine reads until the first newline, EOF or MaxCommand bytes. Pen
// reads once; penctl writes the whole line at once, but a client that
// writes in pieces is served too.
func readLine(c net.Conn) (string, error) {
	var buf bytes.Buffer
	b := make([]byte, 1024)
	for buf.Len() < MaxCommand {
		n, err := c.Read(b[:min(len(b), MaxCommand-buf.Len())])
		buf.Write(b[:n])
		if i := bytes.IndexByte(buf.Bytes(), '\n'); i >= 0 {
			return string(buf.Bytes()[:i]), nil
		}
		if err != nil {
			if buf.Len() > 0 {
				return buf.String(), nil
			}
			return "", err
		}
	}
	return strings.SplitN(buf.String(), "\n", 2)[0], nil
}

// Request sends one command to a control socket (penctl): addr is
// "host:port" or a path containing '/'. It returns everything the server
// sent back before closing.
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
	if _, err := c.Write([]byte(command + "\n")); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	_, err = out.ReadFrom(c)
	return out.Bytes(), err
}
