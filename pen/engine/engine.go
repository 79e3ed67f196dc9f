// Package engine runs a pen: it puts a configuration into effect on the
// balancer, the data path, the request log and the control socket, and
// answers the command language's questions about the running state. It is
// the config.Engine that the command interpreter drives.
package engine

import (
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/control"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
	"github.com/pen-lb/pen-appliance/pen/internal/tlsterm"
	"github.com/pen-lb/pen-appliance/pen/proxy"
)

// Engine is a running pen. Its balancer table and data path are its own;
// readers (metrics, the admin UI) use the read methods below.
type Engine struct {
	table *balance.Table
	loop  *proxy.Group // one event loop per core (the loops command)

	log *diag.Logger
	ex  control.Executor

	mu     sync.Mutex
	cur    *config.Config
	reqlog *proxy.RequestLog
	ctrl   *control.Server
	noCtrl string // why the control port may not be opened, or ""
	// ctrlSpec is the control spec in effect: the one ctrl serves, or,
	// with noCtrl, the one refused at start-up (which later changes may
	// keep without being refused again).
	ctrlSpec string
	// ctrlOn: control commands are served (ServeControl). Until then a
	// control listener is open and its clients wait in its queue.
	ctrlOn   bool
	listenAt string // the listen spec in effect, with the UDP flag
	quit     chan struct{}
	quitOnce sync.Once
	tlsCfg   *tls.Config
	// rt installs the policy routing of transparent mode.
	rt routing
	// dsr forwards frames instead of proxying when dsr_if is set.
	dsr dsrMode

	// Active health checks (health.go): the checkers, and the
	// configuration they read, behind hmu.
	hmu     sync.Mutex
	health  *health
	checked *config.Config
}

// New makes an engine. ex executes control socket commands (the
// interpreter that owns this engine).
func New(log *diag.Logger, ex control.Executor) (*Engine, error) {
	tb := balance.New()
	loop, err := proxy.NewGroup(tb, log)
	if err != nil {
		return nil, err
	}
	return &Engine{table: tb, loop: loop, log: log, ex: ex, quit: make(chan struct{}), rt: routing{open: openRouter}, dsr: dsrMode{table: tb}}, nil
}

// RefuseControl keeps the control port closed and logs why (Pen will not
// open one while running as root without -u).
func (e *Engine) RefuseControl(why string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.noCtrl = why
}

// ServeControl starts serving control commands. The daemon calls it once
// it has dropped its privileges (-u, -j), so that no command runs as
// root: a client that connects before that waits in the listener's queue,
// as with Pen, whose main loop starts after setuid.
func (e *Engine) ServeControl() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctrlOn {
		return
	}
	e.ctrlOn = true
	if e.ctrl != nil {
		go e.ctrl.Serve()
	}
}

// Apply puts c into effect. On error nothing has changed.
func (e *Engine) Apply(c *config.Config) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	prev := e.cur
	// Open what can fail first, so that a failure changes nothing.
	var listen *config.Listen
	// With dsr_if the listen address is the VIP, served by frames
	// (dsr.go), not by a listener.
	proxyListen := c.Listen
	if c.DSRIf != "" {
		proxyListen = ""
	}
	key := fmt.Sprintf("%v|%s", c.UDP, proxyListen)
	if proxyListen != "" && key != e.listenAt {
		l, err := config.ParseListen(proxyListen, c.UDP, nil)
		if err != nil {
			return err
		}
		listen = &l
	}
	reqlog := e.reqlog
	if prev == nil || c.Log != prev.Log {
		reqlog = nil
		if c.Log != "" {
			var err error
			if reqlog, err = proxy.OpenRequestLog(c.Log); err != nil {
				return err
			}
		}
	}
	tlsCfg := e.tlsCfg
	if c.TLS.Enabled() && !c.UDP {
		if prev == nil || e.tlsCfg == nil || !reflect.DeepEqual(c.TLS, prev.TLS) {
			var err error
			if tlsCfg, err = tlsterm.Config(c.TLS, e.log); err != nil {
				closeLog(reqlog, e.reqlog)
				//lint:ignore ST1005 Pen's message, kept verbatim
				return fmt.Errorf("Unable to create default context: %w", err)
			}
		}
	} else {
		tlsCfg = nil
	}
	var ctrl *control.Server
	ctrlChanged := c.Control != e.ctrlSpec
	if ctrlChanged && c.Control != "" {
		if e.noCtrl != "" {
			// Refused at start-up: pen runs without a control port
			// and says why. Later, only a change that asks for
			// another control port is refused.
			if prev == nil {
				e.log.Printf("%s", e.noCtrl)
			} else {
				closeLog(reqlog, e.reqlog)
				return errors.New(e.noCtrl)
			}
		} else {
			var err error
			if ctrl, err = control.Listen(c.Control, e.ex, e.log); err != nil {
				closeLog(reqlog, e.reqlog)
				return err
			}
		}
	}
	if err := e.dsr.apply(c, e.log); err != nil {
		if ctrl != nil {
			ctrl.Close()
		}
		closeLog(reqlog, e.reqlog)
		return err
	}
	e.table.Configure(c)
	s := settings(c, reqlog, tlsCfg)
	// Connections leave from clients' addresses only when the routing
	// brings the servers' replies back to pen.
	s.Transparent = e.rt.apply(c, e.log.Printf)
	if err := e.loop.Configure(s, listen, c.ListenQueue); err != nil {
		if ctrl != nil {
			ctrl.Close()
		}
		closeLog(reqlog, e.reqlog)
		if prev != nil {
			e.table.Configure(prev)
			e.rt.apply(prev, e.log.Printf)
			e.dsr.apply(prev, e.log)
		} else {
			e.dsr.stop()
		}
		return err
	}
	if proxyListen == "" && e.listenAt != "" {
		e.loop.CloseListener()
		key = ""
	}
	if proxyListen != "" || e.listenAt != "" {
		e.listenAt = key
	}
	if reqlog != e.reqlog {
		if e.reqlog != nil {
			e.reqlog.Close()
		}
		e.reqlog = reqlog
	}
	if ctrlChanged {
		if e.ctrl != nil {
			e.ctrl.Close()
		}
		e.ctrl = ctrl
		e.ctrlSpec = c.Control
	}
	if e.ctrl != nil {
		// The control server checks control_acl without the
		// interpreter's lock; it learns the list here.
		e.ctrl.SetACL(c.ACLs[c.ControlACL])
		if ctrlChanged && e.ctrlOn {
			go e.ctrl.Serve()
		}
	}
	e.cur = c
	e.tlsCfg = tlsCfg
	e.hmu.Lock()
	e.checked = c
	e.hmu.Unlock()
	e.applyHealth(c)
	return nil
}

func closeLog(newLog, cur *proxy.RequestLog) {
	if newLog != nil && newLog != cur {
		newLog.Close()
	}
}

func settings(c *config.Config, reqlog *proxy.RequestLog, tlsCfg *tls.Config) proxy.Settings {
	udpTimeout := proxy.UDPFlowTimeout
	if c.IdleTimeout > 0 {
		udpTimeout = time.Duration(c.IdleTimeout) * time.Second
	}
	s := proxy.Settings{
		UDP:         c.UDP,
		ConnMax:     c.ConnMax,
		PendingMax:  c.PendingMax,
		MultiAccept: c.MultiAccept,
		Timeout:     time.Duration(c.Timeout) * time.Second,
		IdleTimeout: time.Duration(c.IdleTimeout) * time.Second,
		UDPTimeout:  udpTimeout,
		FastClose:   c.FastClose,
		NoDelay:     c.NoDelay,
		Keepalive:   c.Keepalive,
		Transparent: c.Transparent,
		Source:      c.Source,
		HTTP:        c.HTTP,
		Dummy:       c.Dummy,
		Idlers:      c.Idlers,
		Dump:        c.Debug > 2,
		ASCII:       c.ASCII,
		Log:         reqlog,
		TLS:         tlsCfg,
		Loops:       c.Loops,
		Splice:      c.KernelRelay.Splice(),
		Relay:       c.KernelRelay.Sockmap(),
		UDPKernel:   !c.NoUDPKernel,
	}
	return s
}

// Run serves until Quit or Stop.
func (e *Engine) Run() error {
	errc := make(chan error, 1)
	go func() { errc <- e.loop.Run() }()
	select {
	case <-e.quit:
		e.Stop()
		return <-errc
	case err := <-errc:
		// The data path ended by itself: pen is about to exit, so
		// the routing of transparent mode goes now.
		e.mu.Lock()
		e.rt.stop(e.log.Printf)
		e.dsr.stop()
		e.mu.Unlock()
		return err
	}
}

// stopGrace bounds how long Stop waits for control commands to send their
// replies.
const stopGrace = 2 * time.Second

// Stop closes every listener and connection.
func (e *Engine) Stop() {
	e.stopHealth()
	e.loop.Stop()
	e.mu.Lock()
	ctrl := e.ctrl
	e.ctrl = nil
	if e.reqlog != nil {
		e.reqlog.Close()
		e.reqlog = nil
	}
	e.rt.stop(e.log.Printf)
	e.dsr.stop()
	e.mu.Unlock()
	if ctrl != nil {
		// Not under e.mu: a running command may need it (through
		// the interpreter's Apply) before it can answer.
		ctrl.Close()
		ctrl.Wait(stopGrace)
	}
}

// Quit asks Run to return (the exit command, SIGTERM).
func (e *Engine) Quit() { e.quitOnce.Do(func() { close(e.quit) }) }

// Done is closed when Quit was called.
func (e *Engine) Done() <-chan struct{} { return e.quit }

// ReopenLog reopens the request log file (SIGHUP).
func (e *Engine) ReopenLog() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reqlog == nil {
		return nil
	}
	return e.reqlog.Reopen()
}

// ControlAddr is the bound control address, or "".
func (e *Engine) ControlAddr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctrl == nil {
		return ""
	}
	return e.ctrl.Addr().String()
}

// The config.Engine interface.

func (e *Engine) Servers() []config.ServerState {
	if e.loop != nil {
		e.loop.SyncCounts()
	}
	return e.table.ServerStates()
}
func (e *Engine) Blacklist(i int, d time.Duration) { e.table.Blacklist(i, d) }
func (e *Engine) Clients() []config.ClientState    { return e.table.ClientStates() }
func (e *Engine) Conns() config.ConnTable          { return e.loop.Conns() }
func (e *Engine) Conn(i int) config.ConnState      { return e.loop.Conn(i) }
func (e *Engine) CloseConn(i int)                  { e.loop.CloseConn(i) }
func (e *Engine) SocketConn(fd int) int            { return e.loop.SocketConn(fd) }
func (e *Engine) IdlersActive() int                { return e.loop.Idlers() }
func (e *Engine) Current() int                     { return e.table.Current() }

var _ config.Engine = (*Engine)(nil)

// Read access for metrics and the admin UI.

// SpecialStates reports the emergency and abuse servers (nil if unset).
func (e *Engine) SpecialStates() (emergency, abuse *config.ServerState) {
	return e.table.SpecialStates()
}

// TrackedClients is the number of used client table slots.
func (e *Engine) TrackedClients() int { return e.table.TrackedClients() }

// ACLDenied is how many clients access list n has refused.
func (e *Engine) ACLDenied(n int) uint64 { return e.table.ACLDenied(n) }

// Stats are the data path's counters.
func (e *Engine) Stats() proxy.Stats { return e.loop.Stats() }

// ListenAddr is the address the listener is bound to, or "" when there is
// none.
func (e *Engine) ListenAddr() string { return e.loop.ListenAddr() }
