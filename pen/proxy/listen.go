package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// The listener: binding it, watching it while the tables have room, and
// taking clients from it.

// openListener binds the listener as Pen does: SO_REUSEADDR (TCP only)
// and SO_KEEPALIVE, backlog -q.
//
// It does not set SO_REUSEPORT, which Pen does: with it a second pen on
// the same port starts and silently shares the clients with the first.
// Without it the second one is refused with EADDRINUSE. For the same
// reason UDP gets no SO_REUSEADDR (on Linux it lets two UDP sockets bind
// one port), and a unix socket path is removed only when nothing answers
// on it.
func openListener(spec config.Listen, udp bool, backlog int, nodelay bool) (int, error) {
	return openListenerOpt(spec, udp, backlog, nodelay, 0)
}

// Ways to open a listener besides Pen's.
const (
	bindOnly  = 1 << iota // bind but do not listen (a probe)
	reusePort             // SO_REUSEPORT: one of a Group's listeners
)

func openListenerOpt(spec config.Listen, udp bool, backlog int, nodelay bool, how int) (int, error) {
	typ := unix.SOCK_STREAM
	if udp {
		typ = unix.SOCK_DGRAM
	}
	if spec.Path != "" {
		return openUnixListener(spec.Path, typ, backlog)
	}
	fam := family(spec.Addr.Addr())
	fd, err := unix.Socket(fam, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("listen %s: socket: %w", spec.Addr, err)
	}
	opts := []sockOpt{}
	if !udp {
		// Lets pen listen again at once on a port whose old
		// connections linger in TIME_WAIT.
		opts = append(opts, sockOpt{unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"},
			sockOpt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE"})
		if nodelay {
			opts = append(opts, sockOpt{unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY"})
		}
	} else if spec.Addr.Addr().IsUnspecified() {
		// Answer each UDP client from the address it wrote to.
		if fam == unix.AF_INET {
			opts = append(opts, sockOpt{unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO"})
		} else {
			opts = append(opts, sockOpt{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"},
				sockOpt{unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO"})
		}
	}
	if how&reusePort != 0 {
		opts = append(opts, sockOpt{unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT"})
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("listen %s: setsockopt(%s): %w", spec.Addr, o.name, err)
		}
	}
	if err := unix.Bind(fd, sockaddr(spec.Addr, fam)); err != nil {
		unix.Close(fd)
		if err == unix.EADDRINUSE {
			return -1, fmt.Errorf("listen %s: %w (another process serves it)", spec.Addr, err)
		}
		return -1, fmt.Errorf("can't bind local address %s: %w", spec.Addr, err)
	}
	if !udp && how&bindOnly == 0 {
		if err := unix.Listen(fd, backlog); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("listen %s: %w", spec.Addr, err)
		}
	}
	return fd, nil
}

type sockOpt struct {
	level, opt int
	name       string
}

// openUnixListener binds a unix socket at path. A socket left behind by a
// pen that is gone is replaced; a live one, or anything that is not a
// socket, is refused.
func openUnixListener(path string, typ, backlog int) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("listen %s: socket: %w", path, err)
	}
	if err := clearUnixPath(path, typ); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("can't bind local address %s: %w", path, err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, backlog); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("listen %s: %w", path, err)
		}
	}
	return fd, nil
}

// clearUnixPath removes a stale socket at path so that it can be bound.
func clearUnixPath(path string, typ int) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("listen %s: the path exists and is not a socket; remove it if it is not needed", path)
	}
	probe, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("listen %s: socket: %w", path, err)
	}
	err = unix.Connect(probe, &unix.SockaddrUnix{Name: path})
	unix.Close(probe)
	switch err {
	case unix.ECONNREFUSED:
		// Nobody listens there: a socket left behind.
	case nil, unix.EAGAIN:
		return fmt.Errorf("listen %s: %w (another process serves it)", path, unix.EADDRINUSE)
	default:
		return fmt.Errorf("listen %s: a socket is there and answers %v; remove it if it is not needed", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("listen %s: removing the old socket: %w", path, err)
	}
	return nil
}

// reopenListener binds listen when the address is taken, perhaps by this
// loop's own listener (a new address on the same port, which only one
// socket may hold). The current listener is closed first; if listen still
// cannot be bound, the old address is bound again, so that the loop
// serves where it served before.
func (l *Loop) reopenListener(listen config.Listen, s Settings, backlog int) (int, error) {
	var old config.Listen
	var oldUDP, oldNoDelay, had bool
	var oldBacklog int
	l.do(func() {
		had, old, oldUDP, oldNoDelay, oldBacklog = l.lfd >= 0, l.lspec, l.set.UDP, l.set.NoDelay, l.lbacklog
		if old.Path == "" {
			old.Addr = l.boundAddr() // the port it got, if it asked for 0
		}
		samePort := old.Path == "" && listen.Path == "" && old.Addr.Port() == listen.Addr.Port() && oldUDP == s.UDP
		if !had || !(samePort || old.Path != "" && old.Path == listen.Path) {
			had = false
			return
		}
		l.swapListener(-1, config.Listen{})
	})
	fd, err := openListener(listen, s.UDP, backlog, s.NoDelay)
	if !had || err == nil {
		return fd, err
	}
	back, berr := openListener(old, oldUDP, oldBacklog, oldNoDelay)
	if berr == nil {
		l.do(func() {
			if eerr := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, back, &unix.EpollEvent{Events: 0, Fd: tokListener}); eerr != nil {
				unix.Close(back)
				berr = eerr
				return
			}
			l.swapListener(back, old)
			l.armListener()
		})
	}
	if berr != nil {
		l.log.Printf("listener %s closed to make room for %s, and it cannot be opened again: %v", old, listen, berr)
	}
	return -1, err
}

// CloseListener closes the listener (no listen address configured).
func (l *Loop) CloseListener() {
	l.do(func() { l.swapListener(-1, config.Listen{}) })
}

// swapListener makes fd (already added to epoll, unarmed) the listener,
// or closes the listener when fd is -1.
func (l *Loop) swapListener(fd int, spec config.Listen) {
	if l.lfd >= 0 {
		// Closing the descriptor removes it from epoll as well; the
		// explicit removal only makes that immediate, so its result
		// does not matter.
		unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, l.lfd, nil)
		unix.Close(l.lfd)
		// UDP flows answer through the listener: they end with it.
		for _, slot := range l.flowSlots() {
			l.closeConn(l.conns[slot])
		}
	}
	l.lfd, l.lspec, l.lArmed, l.draining = fd, spec, false, false
	l.udpDst = fd >= 0 && l.set.UDP && spec.Path == "" && spec.Addr.Addr().IsUnspecified()
	switch {
	case spec.Path != "":
		l.lfam = unix.AF_UNIX
	case fd >= 0:
		l.lfam = family(spec.Addr.Addr())
	}
}

// armListener listens for clients while the tables have room (Pen's
// arm_listenfd; also pauses while pending_max connects are in progress).
func (l *Loop) armListener() {
	if l.lfd < 0 {
		return
	}
	paused, _ := l.paused()
	want := (l.set.UDP || len(l.pending) < l.set.PendingMax) && !paused
	if want == l.lArmed {
		return
	}
	var ev uint32
	if want {
		ev = unix.EPOLLIN
	}
	err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, l.lfd, &unix.EpollEvent{Events: ev, Fd: tokListener})
	if err == unix.ENOENT {
		// The listener fell out of the epoll set: put it back.
		err = unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, l.lfd, &unix.EpollEvent{Events: ev, Fd: tokListener})
		if err == nil {
			l.log.Printf("listener %s was not watched any more; watching it again", l.lspec)
		}
	}
	if err != nil {
		// lArmed stays as it was, so the next pass of the loop (at
		// most a second away) tries again.
		l.logFull("listener %s: epoll_ctl: %v; clients wait until it can be watched again", l.lspec, err)
		return
	}
	l.lArmed = want
}

func (l *Loop) readListener() {
	if l.set.UDP {
		l.readUDP()
		return
	}
	limit := l.set.MultiAccept
	if !l.draining && l.lspec.Path == "" {
		// Accept what is queued and no more: the listener is watched
		// level-triggered, so whatever arrives meanwhile is reported by
		// the next epoll_wait. A draining listener goes on to EAGAIN,
		// which tells it that it may go.
		if n, ok := sysAcceptQueue(l.lfd); ok && n > 0 {
			limit = min(limit, n)
		}
	}
	for i := 0; i < limit; i++ {
		if len(l.pending) >= l.set.PendingMax {
			return
		}
		fd, peer, errno := sysAccept(l.lfd)
		switch errno {
		case 0:
		case unix.EAGAIN:
			if l.draining {
				// Nothing more is queued for this loop (the group
				// has fewer loops now): the listener goes.
				l.swapListener(-1, config.Listen{})
			}
			return
		case unix.ECONNABORTED, unix.EINTR:
			return
		case unix.EMFILE, unix.ENFILE:
			if l.releaseSettling(errno) {
				continue
			}
			l.outOfDescriptors(errno)
			return
		default:
			l.logFull("accept: %v", errno)
			return
		}
		l.accepting()
		l.accepted.Add(1)
		l.addClient(fd, peer)
	}
}

// ListenAddr is the bound listener address (useful with port 0 in tests).
func (l *Loop) ListenAddr() string {
	var s string
	l.do(func() {
		if l.lfd < 0 {
			return
		}
		if l.lspec.Path != "" {
			s = l.lspec.Path
		} else if a := l.boundAddr(); a.IsValid() {
			s = a.String()
		}
	})
	return s
}

// boundAddr is the address an IP listener is bound to, or the zero
// AddrPort. Loop goroutine only.
func (l *Loop) boundAddr() netip.AddrPort {
	sa, err := unix.Getsockname(l.lfd)
	if err != nil {
		return netip.AddrPort{}
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// drain makes the loop hand out the clients queued on its listener and
// then close it: the group has fewer loops now, and the kernel gives new
// clients to the others. A UDP listener closes at once (its flows end).
func (l *Loop) drain() {
	l.do(func() {
		if l.lfd < 0 {
			return
		}
		if l.set.UDP {
			l.swapListener(-1, config.Listen{})
			return
		}
		l.draining = true
		l.readListener()
	})
}

// undrain keeps the listener that the loop was draining (the group has
// more loops again) and reports whether it had one.
func (l *Loop) undrain() bool {
	had := false
	l.do(func() {
		had = l.lfd >= 0
		l.draining = false
	})
	return had
}
