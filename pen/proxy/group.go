package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
)

// MaxLoops bounds the loops command.
const MaxLoops = config.MaxLoops

// Group is the data path on several cores: one Loop per core (the loops
// command; by default as many as the machine has CPUs), each with a
// listener of its own bound to the same address with SO_REUSEPORT, so that
// the kernel spreads new clients over the loops and a loop never takes a
// lock to accept or to move bytes. A loop serves every connection it
// accepted until it ends.
//
// What the loops share has one owner each: the balancer (balance.Table:
// server choice, client tracking, round-robin order, max/hard, blacklist
// and the counts behind servers and /metrics), the slot numbers and
// conn_max (slots: a lock-free bitmap), and the counters in Stats (each
// loop's own, summed when read). Idlers are held by the first loop only. A
// unix socket listener cannot be shared with SO_REUSEPORT: the first loop
// serves it alone.
//
// One pen refuses a port that another process holds, as it does with one
// loop: before binding its own listeners with SO_REUSEPORT, the group
// binds the address once without it, which fails when anyone else holds
// the port (with or without SO_REUSEPORT), and closes that probe.
//
// More loops at run time: new loops bind listeners that join the group.
// Fewer: a classic BPF program on the group (SO_ATTACH_REUSEPORT_CBPF)
// gives new clients to the first listeners only, and the loops beyond the
// number hand out what is queued on theirs, close it, and serve their
// connections until these end.
//
// Why listeners of their own rather than one listener shared with
// EPOLLEXCLUSIVE: with SO_REUSEPORT the kernel places each client on a
// loop by its address hash before any loop wakes, so a loop that accepts
// a burst (multi_accept) takes only its share of it, and a loop that
// pauses its listener (pending_max, descriptors) leaves the others'
// clients alone; EPOLLEXCLUSIVE wakes whichever loop waits, which then
// accepts the whole queue, and it forbids EPOLL_CTL_MOD, which pauses
// and resumes the listener. Only SO_REUSEPORT was built and measured.
type Group struct {
	tb    *balance.Table
	log   *diag.Logger
	slots *slots
	notes *kernelNotes

	mu        sync.Mutex
	loops     []*Loop       // every loop made; the first `listening` hold a listener
	listening int           // loops with a listener of their own (not draining)
	steer     int           // the listeners a steering program picks from; 0 = none (the kernel's hash)
	spec      config.Listen // what the listeners are bound to, if listening > 0
	udp       bool
	running   bool
	stopped   bool
	wg        sync.WaitGroup
	ended     chan struct{} // closed when the first loop's Run returns
	endOnce   sync.Once
	err       error // the first loop error, under mu
}

// NewGroup makes a group with one loop; Configure adds the others.
func NewGroup(tb *balance.Table, log *diag.Logger) (*Group, error) {
	g := &Group{tb: tb, log: log, slots: new(slots), notes: new(kernelNotes), ended: make(chan struct{})}
	l, err := makeLoop(tb, log, g.slots, g.notes)
	if err != nil {
		return nil, err
	}
	g.loops = []*Loop{l}
	return g, nil
}

// loopsFor is the number of loops s asks for.
func loopsFor(s Settings) int {
	if s.Loops > 0 {
		return min(s.Loops, MaxLoops)
	}
	return min(runtime.NumCPU(), MaxLoops)
}

// Configure applies s to every loop and, when listen is not nil, binds
// the listeners to it (nil keeps the current address). A bind error
// leaves the listeners as they were.
func (g *Group) Configure(s Settings, listen *config.Listen, backlog int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := loopsFor(s)
	spec, udp, have := g.spec, g.udp, g.listening > 0
	if listen != nil {
		spec, udp, have = *listen, s.UDP, true
	}
	if listen == nil && have && udp != s.UDP {
		return errors.New("changing between TCP and UDP needs a new listener")
	}
	nl := 0
	if have {
		nl = n
		if spec.Path != "" {
			nl = 1
		}
	}
	for len(g.loops) < n {
		l, err := makeLoop(g.tb, g.log, g.slots, g.notes)
		if err != nil {
			return err
		}
		g.loops = append(g.loops, l)
		if g.running {
			g.start(l)
		}
	}
	fds := make([]int, len(g.loops))
	for i := range fds {
		fds[i] = -1
	}
	switch {
	case listen != nil:
		// A new address: every listener is bound afresh.
		opened, err := openListeners(spec, s.UDP, backlog, s.NoDelay, nl)
		if errors.Is(err, unix.EADDRINUSE) && g.listening > 0 && g.ownsPort(spec) {
			opened, err = g.rebindOwn(spec, s, backlog, nl)
		}
		if err != nil {
			return err
		}
		copy(fds, opened)
		g.steer = 0
	case nl > g.listening:
		// More loops on the same address: the new ones join the
		// listeners' SO_REUSEPORT group; loops that were still
		// draining their listener keep it.
		at := g.loops[0].boundAddrSafe()
		for i := g.listening; i < nl; i++ {
			if g.loops[i].undrain() {
				continue
			}
			sp := spec
			sp.Addr = at
			fd, err := openListenerOpt(sp, s.UDP, backlog, s.NoDelay, reusePort)
			if err != nil {
				for _, fd := range fds {
					if fd >= 0 {
						unix.Close(fd)
					}
				}
				return err
			}
			fds[i] = fd
		}
	}
	var first error
	for i, l := range g.loops {
		ls := s
		if i > 0 {
			ls.Idlers = 0 // the first loop holds them
		}
		var sp *config.Listen
		if fds[i] >= 0 {
			sp = &spec
		}
		if err := l.install(ls, fds[i], sp, backlog); err != nil && first == nil {
			first = err
		}
		if listen != nil && i >= nl {
			l.CloseListener()
		}
	}
	switch {
	case listen == nil && nl < g.listening && nl > 0:
		// Fewer loops: new clients go to the first nl listeners only;
		// the others hand out what is queued on them, then close.
		if err := g.steerTo(nl, s.UDP); err != nil {
			g.log.Printf("loops %d: %v; the other loops keep accepting clients until pen listens anew", n, err)
			nl = g.listening
		} else {
			for _, l := range g.loops[nl:g.listening] {
				l.drain()
			}
		}
	case listen == nil && nl > g.listening && g.steer != 0:
		if err := g.steerTo(nl, s.UDP); err != nil {
			g.log.Printf("loops %d: %v", n, err)
		}
	}
	g.listening, g.spec, g.udp = nl, spec, s.UDP
	return first
}

// Classic BPF that picks a listener of a SO_REUSEPORT group.
const (
	skfAdOff    = 0xfffff000 // -0x1000 as the uint32 of an instruction's K
	skfAdRXHash = 32
	skfAdRandom = 56
)

// steerTo makes the kernel give new clients (or UDP datagrams) to the
// first n listeners of the group only: a program on the group returns a
// random index below n for TCP, and the packet's hash modulo n for UDP,
// so that a UDP client's datagrams keep going to one loop. The sockets
// are numbered in the order they joined the group, which is the loops'.
func (g *Group) steerTo(n int, udp bool) error {
	l := g.loops[0]
	var fd = -1
	l.do(func() { fd = l.lfd })
	if fd < 0 {
		return errors.New("no listener")
	}
	what := uint32(skfAdOff + skfAdRandom)
	if udp {
		what = uint32(skfAdOff + skfAdRXHash)
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: what},
		{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(n)},
		{Code: unix.BPF_RET | unix.BPF_A},
	}
	var err error
	l.do(func() {
		err = unix.SetsockoptSockFprog(l.lfd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
	if err != nil {
		return fmt.Errorf("steering clients to %d listeners: %w", n, err)
	}
	g.steer = n
	return nil
}

// ownsPort reports whether the group's own listeners hold spec's port (a
// new address on the same port, which only one set of sockets may hold).
func (g *Group) ownsPort(spec config.Listen) bool {
	old := g.spec
	if old.Path != "" || spec.Path != "" {
		return old.Path != "" && old.Path == spec.Path
	}
	a := g.loops[0].boundAddrSafe()
	return a.IsValid() && a.Port() == spec.Addr.Port()
}

// rebindOwn closes the group's listeners to bind spec; if it still cannot
// be bound, the old address is bound again. Under g.mu.
func (g *Group) rebindOwn(spec config.Listen, s Settings, backlog, nl int) ([]int, error) {
	old, oldN, oldUDP := g.spec, g.listening, g.udp
	if old.Path == "" {
		old.Addr = g.loops[0].boundAddrSafe()
	}
	var oldNoDelay bool
	var oldBacklog int
	g.loops[0].do(func() { oldNoDelay, oldBacklog = g.loops[0].set.NoDelay, g.loops[0].lbacklog })
	for _, l := range g.loops {
		l.CloseListener()
	}
	g.listening, g.steer = 0, 0
	fds, err := openListeners(spec, s.UDP, backlog, s.NoDelay, nl)
	if err == nil {
		return fds, nil
	}
	back, berr := openListeners(old, oldUDP, oldBacklog, oldNoDelay, oldN)
	if berr == nil {
		for i, fd := range back {
			l := g.loops[i]
			l.do(func() {
				if eerr := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: 0, Fd: tokListener}); eerr != nil {
					unix.Close(fd)
					berr = eerr
					return
				}
				l.swapListener(fd, old)
				l.armListener()
			})
		}
		g.listening = oldN
	}
	if berr != nil {
		g.log.Printf("listener %s closed to make room for %s, and it cannot be opened again: %v", old, spec, berr)
	}
	return nil, err
}

// openListeners binds n listeners to spec, each with SO_REUSEPORT, after
// a probe without it has found the address free. A unix socket gets one
// listener, bound as Pen does.
func openListeners(spec config.Listen, udp bool, backlog int, nodelay bool, n int) ([]int, error) {
	if spec.Path != "" {
		fd, err := openListener(spec, udp, backlog, nodelay)
		if err != nil {
			return nil, err
		}
		return []int{fd}, nil
	}
	probe, err := openListenerOpt(spec, udp, backlog, nodelay, bindOnly)
	if err != nil {
		return nil, err
	}
	sa, err := unix.Getsockname(probe)
	unix.Close(probe)
	if err != nil {
		return nil, fmt.Errorf("listen %s: getsockname: %w", spec.Addr, err)
	}
	if a := addrOf(sa); a.IsValid() {
		spec.Addr = netip.AddrPortFrom(spec.Addr.Addr(), a.Port())
	}
	fds := make([]int, 0, n)
	for range n {
		fd, err := openListenerOpt(spec, udp, backlog, nodelay, reusePort)
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, err
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func addrOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// boundAddrSafe is boundAddr from any goroutine.
func (l *Loop) boundAddrSafe() netip.AddrPort {
	var a netip.AddrPort
	l.do(func() {
		if l.lfd >= 0 && l.lspec.Path == "" {
			a = l.boundAddr()
		}
	})
	return a
}

// CloseListener closes every listener (no listen address configured).
func (g *Group) CloseListener() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range g.loops {
		l.CloseListener()
	}
	g.listening = 0
}

// start runs l on a goroutine of its own. Under g.mu.
func (g *Group) start(l *Loop) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := l.Run()
		g.mu.Lock()
		if err != nil && g.err == nil {
			g.err = err
		}
		g.mu.Unlock()
		g.endOnce.Do(func() { close(g.ended) })
	}()
}

// Run serves until Stop, or until a loop fails; then every loop stops.
// It returns once every connection is closed.
func (g *Group) Run() error {
	g.mu.Lock()
	if g.stopped || g.running {
		g.mu.Unlock()
		return nil
	}
	g.running = true
	for _, l := range g.loops {
		g.start(l)
	}
	g.mu.Unlock()
	<-g.ended
	g.Stop()
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Stop closes every listener and connection and ends Run.
func (g *Group) Stop() {
	g.mu.Lock()
	g.stopped = true
	loops := g.loops
	g.mu.Unlock()
	for _, l := range loops {
		l.Stop()
	}
}

// Loops is the number of loops serving (draining ones included).
func (g *Group) Loops() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.loops)
}

func (g *Group) all() []*Loop {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.loops
}

// Stats sums the loops' counters; safe from any goroutine.
func (g *Group) Stats() Stats {
	var s Stats
	for _, l := range g.all() {
		ls := l.Stats()
		s.Accepted += ls.Accepted
		s.Active += ls.Active
		s.RefusedFull += ls.RefusedFull
		s.RefusedNoServer += ls.RefusedNoServer
		s.RefusedACL += ls.RefusedACL
		s.Pending += ls.Pending
		s.Relayed += ls.Relayed
		s.Spliced += ls.Spliced
		s.KernelFlows += ls.KernelFlows
	}
	return s
}

// Conn reports connection slot i, whichever loop serves it.
func (g *Group) Conn(i int) config.ConnState {
	var st config.ConnState
	for n, l := range g.all() {
		c := l.Conn(i)
		if n == 0 || c.State != stateUnused {
			st = c
		}
		if c.State != stateUnused {
			break
		}
	}
	return st
}

// Conns reports the connection table of every loop, by slot.
func (g *Group) Conns() config.ConnTable {
	var t config.ConnTable
	for n, l := range g.all() {
		lt := l.Conns()
		if n == 0 {
			t = lt
			continue
		}
		t.Max = max(t.Max, lt.Max)
		t.Conns = append(t.Conns, lt.Conns...)
	}
	t.Used = int(g.slots.used.Load())
	t.Last = int(g.slots.last.Load())
	slices.SortFunc(t.Conns, func(a, b config.ConnState) int { return a.Slot - b.Slot })
	return t
}

// SyncCounts adds what the kernel carried for the loops (udp_kernel,
// kernel_relay), which they otherwise add once a second, to the servers'
// and clients' counts, so that a report made now is exact. Not to be
// called from a loop.
func (g *Group) SyncCounts() {
	for _, l := range g.all() {
		if l.ukFlows.Load() == 0 && l.relayed.Load() == 0 {
			continue
		}
		l.do(func() {
			for _, c := range l.conns {
				if c != nil && c.state != stateUnused {
					l.kernelCounts(c)
				}
			}
		})
	}
}

// CloseConn closes connection slot i (the close command).
func (g *Group) CloseConn(i int) {
	for _, l := range g.all() {
		l.CloseConn(i)
	}
}

// SocketConn returns the slot that owns fd, or -1 (the socket command).
func (g *Group) SocketConn(fd int) int {
	for _, l := range g.all() {
		if r := l.SocketConn(fd); r >= 0 {
			return r
		}
	}
	return -1
}

// Idlers is the number of idle upstream connections held.
func (g *Group) Idlers() int {
	n := 0
	for _, l := range g.all() {
		n += l.Idlers()
	}
	return n
}

// ListenAddr is the bound listener address.
func (g *Group) ListenAddr() string { return g.all()[0].ListenAddr() }
