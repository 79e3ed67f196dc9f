// Package proxy implements pen's data path: it accepts clients on TCP,
// UDP and unix sockets, asks the balancer for a server, connects to it and
// relays bytes both ways with half-close, connect and idle timeouts,
// X-Forwarded-For insertion and request logging.
//
// A Group (group.go) runs one event loop per core, each with its own
// listener on the shared address (SO_REUSEPORT); a loop (epoll,
// edge-triggered) owns every connection it accepted, and other goroutines
// reach it by posting closures. The loops share the balancer, whose lock
// is taken once per connection, and the slot numbers (slots.go).
// A connection holds no buffer while it is idle: data is read into one
// scratch buffer and written straight on, and only what the other side
// cannot take at once is kept. Plain TCP streams move bulk data with
// splice(2) through pooled pipes, so it never enters user space. A
// goroutine does a TLS client's handshake; then the loop serves it like
// any client, reading and writing through its tls.Conn without blocking.
//
// The files follow the path of a connection: listen.go binds the
// listener and accepts clients (descriptors.go: when descriptors run
// short), conn.go is a connection's life from its slot to its close
// (tls.go: TLS clients; udp.go and mmsg.go: UDP flows, udpkernel.go:
// UDP flows the kernel carries; idlers.go), relay.go moves the bytes
// (queue.go: what waits to be written; kernel.go: the in-kernel relay),
// and reqlog.go writes the request log. loop.go is the loop itself and its
// API.
package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
	"github.com/pen-lb/pen-appliance/pen/internal/httpstream"
)

// UDPFlowTimeout is how long an idle UDP flow lives when idle_timeout is
// 0 (Pen's flows never expire; see docs/COMPATIBILITY.md).
const UDPFlowTimeout = 30 * time.Second

// Settings is what the data path needs from the configuration.
type Settings struct {
	UDP         bool
	ConnMax     int
	PendingMax  int
	MultiAccept int
	Timeout     time.Duration // connect timeout
	IdleTimeout time.Duration // 0 = never
	UDPTimeout  time.Duration // idle UDP flows end after this
	FastClose   config.FastClose
	NoDelay     bool
	Keepalive   bool
	Transparent bool
	Source      netip.Addr
	HTTP        bool // add X-Forwarded-For/Proto
	Dummy       bool
	Idlers      int
	Dump        bool // debug level > 2: dump every buffer
	ASCII       bool
	Log         *RequestLog
	// TLS, when set, terminates TLS on client connections: they are
	// served on goroutines of their own (crypto/tls reads and writes
	// block) but keep their slot in the connection table.
	TLS *tls.Config
	// Loops is how many event loops a Group runs; 0 = one per CPU.
	Loops int
	// Splice splices plain TCP connections that need no user-space work
	// in the kernel where they can be (kernel.go, package splice).
	Splice bool
	// Relay hands quiet plain TCP connections that cannot be spliced to
	// the kernel's sockmap relay (kernel.go).
	Relay bool
	// UDPKernel hands UDP flows to the kernel (udpkernel.go).
	UDPKernel bool
}

// Stats counts what the loop did since it started.
type Stats struct {
	Accepted        uint64
	Active          int
	RefusedFull     uint64 // connection table full
	RefusedNoServer uint64 // no server could take the client
	RefusedACL      uint64 // denied by client_acl, no abuse server
	Pending         int
	Relayed         int // connections the kernel relays now (kernel_relay)
	Spliced         int // of those, connections whose segments it splices (package splice)
	KernelFlows     int // UDP flows the kernel carries now (udp_kernel)
}

const (
	tokListener = -1
	tokWake     = -2

	sideDown = 0 // the client's socket
	sideUp   = 1 // the server's socket

	bufSize   = 32 << 10 // one read, as Pen's BUFFER_MAX
	budget    = 16       // reads per connection per wakeup before yielding
	maxEvents = 256
)

// Loop is the event loop. Create it with New, start it with Run.
//
// Ownership. The loop goroutine owns everything in the first group: only
// code running on it (serve, and closures posted with do) reads or writes
// those fields, so they need no lock. Before Run starts and after it ends,
// do runs closures on the caller's goroutine under mu instead, which keeps
// the rule. Other goroutines use the exported methods, which post to the
// loop. The counters in the second group are atomic: the loop writes them,
// Stats reads them from anywhere. The third group is guarded by mu. A TLS
// front (tls.go) owns its client's socket and reaches the loop only by do.
type Loop struct {
	// Set by New, never changed.
	ep    int // the epoll instance
	wake  int // eventfd that makes epoll_wait return for posted closures
	tb    *balance.Table
	log   *diag.Logger
	slots *slots       // slot numbers, shared with the other loops of a Group
	notes *kernelNotes // what the log said of the kernel's help, shared likewise

	// The loop goroutine's.
	set      Settings      // the configuration in effect (Configure replaces it)
	lfd      int           // the listener, -1 if none
	lspec    config.Listen // what lfd is bound to, as configured
	lArmed   bool          // the listener is watched for clients
	lbacklog int           // lfd's listen backlog, to bind it again
	lfam     int           // lfd's address family
	draining bool          // lfd closes once nothing is queued on it (Group.Configure with fewer loops)

	conns     []*conn                  // the connections this loop serves, by slot; a slot's conn is reused
	byFD      []int32                  // fd -> slot+1, for the socket command
	pending   []int32                  // slots with a connect in progress
	ready     []int32                  // slots with work left over
	flushing  []int32                  // relayed slots whose shutdown waits for the kernel
	injecting []int32                  // spliced slots that still owe their peers bytes (kernel.go)
	settling  []settlingPair           // spliced pairs the peers closed, until they settle (kernel.go)
	ending    []endingPair             // spliced pairs a FIN or RST passed for, looked at again soon (kernel.go)
	endID     uint32                   // the loop's number in the tags of its spliced pairs (kernel.go), 0 until it splices
	now       int64                    // unix seconds at the top of this pass
	nowMs     int64                    // the same in milliseconds
	flows     map[netip.AddrPort]int32 // UDP client -> slot
	udpDst    bool                     // the UDP listener needs the local address of each datagram
	hand      int                      // UDP: second-chance sweep position
	idlers    int                      // idler connections open
	parked    int                      // waits through the Go runtime's poller (block)
	epf       *os.File                 // a duplicate of ep in that poller while block uses it, or nil
	epc       syscall.RawConn          // epf's raw connection, made once with epf
	fds       fdState                  // descriptor budget and EMFILE back-off

	buf     []byte                 // scratch buffer every read goes through
	outBuf  []byte                 // scratch buffer for rewritten client data
	events  []unix.EpollEvent      // epoll_wait's results
	pipes   []pipe                 // idle pipes for splice
	held    int                    // pipes holding data a destination has not taken yet
	ub      *batch                 // UDP datagram buffers
	rwFree  []*httpstream.Rewriter // idle X-Forwarded-For rewriters
	logConn *conn                  // whose data the rewriter is reading (for the request log)

	lastFullLog int64 // unix seconds of logFull's last line

	// Atomic: written by the loop, read by Stats from any goroutine.
	accepted, refusedFull, refusedNone, refusedACL atomic.Uint64
	active, pendingN, relayed, spliced, ukFlows    atomic.Int64

	// Safe for concurrent use on its own (TLS fronts log refusals).
	refusedTLS refusedLog

	ukSaid  bool   // the log has said why UDP flows stay in pen (loop goroutine)
	ukEpoch uint64 // the balancer's epoch when ukSweep last looked (loop goroutine)

	// Guarded by mu: the hand-over of closures and the loop's life.
	mu       sync.Mutex
	queue    []func() // closures posted by do, run by the loop
	ended    []int32  // slots of spliced pairs a FIN or RST passed for (the splicer's goroutine, spliceEnded)
	running  bool     // Run has started
	stopped  bool     // Stop was called
	closing  bool     // serve has returned: the loop's descriptors close now
	finished bool     // Run has ended (or never will)
	done     chan struct{}
}

// New makes a loop that places clients with tb.
func New(tb *balance.Table, log *diag.Logger) (*Loop, error) {
	return makeLoop(tb, log, new(slots), new(kernelNotes))
}

func makeLoop(tb *balance.Table, log *diag.Logger, sl *slots, notes *kernelNotes) (*Loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &Loop{ep: ep, wake: wake, tb: tb, log: log, slots: sl, notes: notes, lfd: -1, buf: make([]byte, bufSize), fds: fdState{spare: spareFD(wake), maxClients: 1 << 30},
		events: make([]unix.EpollEvent, maxEvents), flows: map[netip.AddrPort]int32{}, done: make(chan struct{}),
		set: Settings{ConnMax: config.DefaultConnMax, PendingMax: config.DefaultPendingMax, MultiAccept: config.DefaultMultiAccept,
			Timeout: config.DefaultTimeout * time.Second, UDPTimeout: UDPFlowTimeout}}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: tokWake}); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll_ctl(wake): %w", err)
	}
	l.now, l.nowMs = time.Now().Unix(), time.Now().UnixMilli()
	return l, nil
}

func (l *Loop) closeFDs() {
	if l.epf != nil {
		l.epf.Close()
	}
	unix.Close(l.ep)
	unix.Close(l.wake)
	if l.fds.spare >= 0 {
		unix.Close(l.fds.spare)
		l.fds.spare = -1
	}
}

// do runs f on the loop goroutine and waits for it. Before Run has started
// and after it has ended, f runs on the caller's goroutine under the lock
// that Run takes to start and to finish, so it never runs beside the loop.
func (l *Loop) do(f func()) {
	l.mu.Lock()
	if !l.running || l.finished {
		defer l.mu.Unlock()
		f()
		return
	}
	if l.stopped {
		l.mu.Unlock()
		<-l.done
		l.mu.Lock()
		defer l.mu.Unlock()
		f()
		return
	}
	ch := make(chan struct{})
	l.queue = append(l.queue, func() { f(); close(ch) })
	l.mu.Unlock()
	wakeUp(l.wake)
	<-ch
}

// wakeUp makes the loop's epoll_wait return. A write to an eventfd fails
// only when its counter would overflow (EAGAIN), and then a wake-up is
// pending anyway.
func wakeUp(fd int) {
	var one = [8]byte{1}
	unix.Write(fd, one[:])
}

// logFull logs a refusal at most once a second.
func (l *Loop) logFull(format string, args ...any) {
	if l.now != l.lastFullLog {
		l.lastFullLog = l.now
		l.log.Printf(format, args...)
	}
}

// Configure applies s and, when listen is not nil, replaces the listener
// with one bound to it (a nil listen keeps the current one). The new
// listener is bound before anything changes, so a bind error leaves the
// loop as it was.
func (l *Loop) Configure(s Settings, listen *config.Listen, backlog int) error {
	var newFD = -1
	if listen != nil {
		fd, err := openListener(*listen, s.UDP, backlog, s.NoDelay)
		if errors.Is(err, unix.EADDRINUSE) {
			fd, err = l.reopenListener(*listen, s, backlog)
		}
		if err != nil {
			return err
		}
		newFD = fd
	}
	return l.install(s, newFD, listen, backlog)
}

// install applies s and, when listen is not nil, makes newFD (bound to
// listen, not yet watched) the listener. newFD is closed if it cannot be
// watched.
func (l *Loop) install(s Settings, newFD int, listen *config.Listen, backlog int) error {
	var err error
	l.do(func() {
		if listen == nil && l.set.UDP != s.UDP && l.lfd >= 0 {
			err = errors.New("changing between TCP and UDP needs a new listener")
			return
		}
		if listen != nil {
			// Watch the new listener before anything changes: if it
			// cannot be watched it would never be served.
			if err = unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, newFD, &unix.EpollEvent{Events: 0, Fd: tokListener}); err != nil {
				unix.Close(newFD)
				err = fmt.Errorf("listen %s: epoll_ctl(add): %w", listen, err)
				return
			}
		}
		l.set = s
		if listen != nil {
			l.swapListener(newFD, *listen)
			l.lbacklog = backlog
		}
		l.growTable(s.ConnMax)
		l.budgetClients()
		l.armListener()
		if l.ukFlows.Load() > 0 {
			// The servers or udp_kernel may have changed with the
			// settings: the kernel's flows follow before Configure
			// returns.
			l.ukSweep(true)
		}
	})
	return err
}

// growTable lets the loop use slots below n. The table never shrinks:
// connections in higher slots stay until they end, as in Pen.
func (l *Loop) growTable(n int) {
	for len(l.conns) < n {
		l.conns = append(l.conns, nil)
	}
}

// Run serves until Stop. It returns once every connection is closed.
func (l *Loop) Run() error {
	l.mu.Lock()
	if l.stopped {
		// Stop came first and closed everything.
		l.mu.Unlock()
		return nil
	}
	l.running = true
	l.mu.Unlock()
	defer close(l.done)
	err := l.serve()
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.shutdown()
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	for _, f := range q {
		f() // posted before Stop; nobody will run them now
	}
	l.finished = true
	l.mu.Unlock()
	return err
}

// yieldEvery is how often a busy loop passes through the Go scheduler. A
// goroutine that only ever makes syscalls looks to the runtime's monitor
// as if it had run without a break; after 10 ms the monitor preempts it
// and keeps polling at its shortest interval, waking about a thousand
// times a second and taking CPU from the load balancer's neighbours. A
// voluntary yield now and then lets the monitor back off (measured: its
// wake-ups fell from about 1,060 to 110 a second under load, pen's context
// switches by half, and keep-alive throughput rose about 10%).
const yieldEvery = 4 * time.Millisecond

// block waits up to wait milliseconds for events. A goroutine blocked in
// a system call keeps its P (the Go scheduler's right to run Go code)
// until the runtime's monitor takes it back, 20 µs to 10 ms later. With
// GOMAXPROCS at the core count and a loop per core, idle loops thus hold
// the Ps that TLS handshakes, which run on goroutines of their own, need:
// measured on two cores, pen then used 0.85 of a core for ECDSA
// handshakes with the rest of the machine idle. So while handshakes are
// under way, or were in the last 100 ms, the loop waits through the Go
// runtime's poller instead, which gives its P up at once (six rounds
// alternated: 2,009 ECDSA handshakes a second became 2,457, HAProxy made
// 1,912; waiting in the poller at all times gave 2,378). Otherwise it
// blocks in epoll_wait itself, which costs less per wake-up: waiting
// through the poller always cost keep-alive 2% and a new connection per
// request 4%.
func (l *Loop) block(wait int) (int, error) {
	const handshakeLinger = 100 // ms after the last handshake, so that gaps between handshakes do not flip the mode
	if handshaking.Load() == 0 && l.nowMs-handshakeSeen.Load() > handshakeLinger {
		if l.epf != nil {
			// Out of the runtime's poller: registered there, every
			// event on ep would also wake the runtime's own epoll.
			l.epf.Close()
			l.epf, l.epc = nil, nil
		}
		n, err := unix.EpollWait(l.ep, l.events, wait)
		if err != nil && err != unix.EINTR {
			return 0, fmt.Errorf("epoll_wait: %w", err)
		}
		return max(n, 0), nil
	}
	if l.epf == nil {
		// A duplicate for the runtime's poller, which makes it
		// non-blocking and closes it; epoll_wait ignores O_NONBLOCK.
		d, err := unix.FcntlInt(uintptr(l.ep), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return 0, fmt.Errorf("dup of epoll descriptor: %w", err)
		}
		if err := unix.SetNonblock(d, true); err != nil {
			unix.Close(d)
			return 0, fmt.Errorf("epoll descriptor: %w", err)
		}
		f := os.NewFile(uintptr(d), "epoll")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			return 0, err
		}
		l.epf, l.epc = f, rc
	}
	l.epf.SetReadDeadline(time.Now().Add(time.Duration(wait) * time.Millisecond))
	n := 0
	err := l.epc.Read(func(uintptr) bool {
		n = epollPoll(l.ep, l.events)
		return n > 0
	})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, fmt.Errorf("waiting for epoll: %w", err)
	}
	l.parked++
	return n, nil
}

// serve is the loop. It asks epoll for ready events without blocking
// first (a raw system call: the Go scheduler is not involved while events
// keep coming), and only blocks when there are none. When the last round
// found work and this one finds none, the loop gives its
// CPU to whoever else is waiting to run there (sched_yield) and looks
// once more before it blocks. On a box that also runs the clients or the
// servers, they produce the next events meanwhile, so the loop handles
// them in larger batches and sleeps and wakes less; on a box of its own
// the yield returns at once. Measured with make bench's keep-alive test
// on two cores and two loops: pen's CPU per request fell from 16-18 to
// 14 µs, and a new connection per request from 82-92 to 76 µs.
func (l *Loop) serve() error {
	tick := time.Now().Unix()
	yielded := time.Now()
	lastN := 0
	for {
		wait := 1000
		if len(l.ready) > 0 {
			wait = 0
		} else if len(l.flushing) > 0 {
			wait = 2 // the kernel relay writes what is left
		} else if len(l.injecting) > 0 {
			wait = 1 // spliced connections wait for their peers' windows
		} else if paused, ms := l.paused(); paused {
			wait = min(wait, ms) // watch the listener again in time
		}
		if len(l.ending) > 0 {
			wait = min(wait, l.endingWait())
		}
		var err error
		n := epollPoll(l.ep, l.events)
		if n == 0 && lastN > 0 && wait > 0 {
			unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			n = epollPoll(l.ep, l.events)
		}
		if n == 0 && wait > 0 {
			if n, err = l.block(wait); err != nil {
				return err
			}
		}
		lastN = n
		now := time.Now()
		l.now, l.nowMs = now.Unix(), now.UnixMilli()
		if now.Sub(yielded) > yieldEvery {
			yielded = now
			runtime.Gosched()
		}
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			switch ev.Fd {
			case tokListener:
				l.readListener()
			case tokWake:
				if l.runQueue() {
					return nil
				}
			default:
				l.event(ev)
			}
		}
		l.runReady()
		l.runFlushing()
		l.runInjecting()
		l.runEnding()
		if l.now != tick {
			tick = l.now
			l.timers()
		}
		if l.ukFlows.Load() > 0 {
			l.ukSweep(false)
		}
		l.armListener()
		if l.set.Log != nil {
			l.set.Log.Flush()
		}
	}
}

func (l *Loop) runQueue() (stop bool) {
	// Resets the eventfd; EAGAIN (nothing to reset) is harmless.
	var b [8]byte
	unix.Read(l.wake, b[:])
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	ended := l.ended
	l.ended = nil
	stop = l.stopped
	l.mu.Unlock()
	for _, f := range q {
		f()
	}
	l.endSeen(ended)
	return stop
}

// Stop closes the listener and every connection and ends Run (or, if Run
// was never called, just closes everything).
func (l *Loop) Stop() {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.stopped = true
	running := l.running
	if !running {
		l.finished = true
		l.shutdown()
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	wakeUp(l.wake)
	<-l.done
}

// shutdown closes everything; it runs on the loop goroutine (or instead
// of it when Run never ran).
func (l *Loop) shutdown() {
	if l.endID != 0 {
		endLoops.Delete(l.endID)
	}
	if l.lfd >= 0 {
		unix.Close(l.lfd)
		l.lfd = -1
	}
	for _, c := range l.conns {
		if c != nil && c.state != stateUnused {
			l.closeConn(c)
		}
	}
	l.runSettling(true)
	for _, p := range l.pipes {
		p.close()
	}
	l.pipes = nil
	if l.set.Log != nil {
		l.set.Log.Flush()
	}
	l.closeFDs()
}

// Stats reports the loop's counters; safe from any goroutine.
func (l *Loop) Stats() Stats {
	return Stats{
		Accepted:        l.accepted.Load(),
		Active:          int(l.active.Load()),
		RefusedFull:     l.refusedFull.Load(),
		RefusedNoServer: l.refusedNone.Load(),
		RefusedACL:      l.refusedACL.Load(),
		Pending:         int(l.pendingN.Load()),
		Relayed:         int(l.relayed.Load()),
		Spliced:         int(l.spliced.Load()),
		KernelFlows:     int(l.ukFlows.Load()),
	}
}

// Conn reports connection slot i (the connection command).
func (l *Loop) Conn(i int) config.ConnState {
	st := config.ConnState{Slot: i, DownFD: -1, UpFD: -1, Pend: 0}
	l.do(func() {
		if i >= 0 && i < len(l.conns) && l.conns[i] != nil {
			st = l.conns[i].report()
		}
	})
	return st
}

// Conns reports the connection table.
func (l *Loop) Conns() config.ConnTable {
	var t config.ConnTable
	l.do(func() {
		t.Max, t.Used, t.Last = len(l.conns), int(l.slots.used.Load()), int(l.slots.last.Load())
		for _, c := range l.conns {
			if c != nil && c.state != stateUnused {
				t.Conns = append(t.Conns, c.report())
			}
		}
	})
	return t
}

// CloseConn closes connection slot i (the close command).
func (l *Loop) CloseConn(i int) {
	l.do(func() {
		if i >= 0 && i < len(l.conns) && l.conns[i] != nil && l.conns[i].state != stateUnused {
			l.closeConn(l.conns[i])
		}
	})
}

// SocketConn returns the slot that owns fd, or -1 (the socket command).
func (l *Loop) SocketConn(fd int) int {
	r := -1
	l.do(func() {
		if fd >= 0 && fd < len(l.byFD) {
			r = int(l.byFD[fd]) - 1
		}
	})
	return r
}

// Idlers is the number of idle upstream connections held.
func (l *Loop) Idlers() int {
	n := 0
	l.do(func() { n = l.idlers })
	return n
}

func (l *Loop) setFD(fd int, slot int32) {
	if fd < 0 {
		return
	}
	for fd >= len(l.byFD) {
		l.byFD = append(l.byFD, make([]int32, len(l.byFD)+1024)...)
	}
	l.byFD[fd] = slot + 1
}

func (l *Loop) clearFD(fd int) {
	if fd >= 0 && fd < len(l.byFD) {
		l.byFD[fd] = 0
	}
}

// timers runs once a second: connect timeouts, idle timeouts, UDP flow
// expiry and idlers.
//
// A connect times out after at least the configured time, between it and
// a second more. Pen compares whole seconds (now-t >= timeout), so with
// timeout 1 a connect begun just before a second ticks over could be
// given up, and its server blacklisted, after a few milliseconds.
func (l *Loop) timers() {
	timeout := l.set.Timeout.Milliseconds()
	for i := 0; i < len(l.pending); {
		c := l.conns[l.pending[i]]
		if l.nowMs-c.start >= timeout {
			l.log.Printf("blacklisting server %d because of connect timeout", c.sess.Server())
			l.connectFailed(c)
			continue // the pending list changed
		}
		i++
	}
	idle := int64(l.set.IdleTimeout / time.Second)
	udpIdle := int64(l.set.UDPTimeout / time.Second)
	if idle > 0 || len(l.flows) > 0 || l.relayed.Load() > 0 {
		for _, c := range l.conns {
			if c == nil || c.state == stateUnused {
				continue
			}
			l.kernelCounts(c)
			if c.fl&fUDP != 0 {
				lim := udpIdle
				if idle > 0 {
					lim = idle
				}
				if l.now-c.t >= lim {
					l.closeConn(c)
				}
				continue
			}
			if idle > 0 && c.state == stateConnected && c.fl&fIdler == 0 && l.now-c.t >= idle {
				l.log.Debugf(2, "Connection %d idle for %d seconds, closing", c.slot, l.now-c.t)
				l.closeConn(c)
			}
		}
	}
	l.runSettling(false)
	if l.draining {
		l.readListener() // in case it has not been readable since
	}
	if !l.set.UDP && !l.set.Dummy {
		for l.idlers > l.set.Idlers {
			l.closeOneIdler()
		}
		for l.idlers < l.set.Idlers {
			if !l.addIdler() {
				break
			}
		}
	}
}
