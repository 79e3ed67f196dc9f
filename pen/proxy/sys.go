package proxy

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data path calls these on non-blocking sockets only, so the raw
// syscall entry (which does not hand the thread back to the scheduler) is
// safe and saves time on every read and write.

func sysRead(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

func sysWrite(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

func sysSplice(in, out, n int) (int, syscall.Errno) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
	if e != 0 {
		return -1, e
	}
	return int(r), 0
}

// The calls every proxied connection makes besides reading and writing
// (socket, connect, setsockopt, shutdown, close) go through the raw entry
// too: on sockets that never block, the scheduler's bookkeeping of an
// ordinary syscall (entersyscall and exitsyscall) is pure cost, and a
// connection makes seven of them. close does not block either: pen never
// sets SO_LINGER, so the kernel sends what is left after close returns.

func sysSocket(family, typ int) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC), 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// sysConnect starts connecting a non-blocking TCP or UDP socket of the
// given family to a; the error is nil, EINPROGRESS or why it failed.
func sysConnect(fd, family int, a netip.AddrPort) error {
	var sa unix.RawSockaddrAny
	n := fillSockaddr(&sa, a, family)
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(n)); e != 0 {
		return e
	}
	return nil
}

func sysSetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	if e != 0 {
		return e
	}
	return nil
}

func sysShutdown(fd, how int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0); e != 0 {
		return e
	}
	return nil
}

func sysClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// sysAccept accepts one connection without allocating and returns the
// peer's address (zero for a unix-socket peer).
func sysAccept(lfd int) (int, netip.AddrPort, syscall.Errno) {
	var sa unix.RawSockaddrAny
	l := uint32(unsafe.Sizeof(sa))
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), decodeSockaddr(&sa), 0
}

// sysAcceptQueue returns how many connections wait in a TCP listener's
// accept queue, which TCP_INFO gives for a listening socket in
// tcpi_unacked; ok is false for any other socket. It is asked so that
// accept is not called once more only to learn that the queue is empty:
// an accept that fails with EAGAIN costs the kernel a socket and a file
// made and thrown away (4.5 µs measured here, against 0.6 µs for this).
func sysAcceptQueue(lfd int) (n int, ok bool) {
	// tcpi_state is the first byte and tcpi_unacked the u32 at offset
	// 24; the kernel copies no more than the length asked for.
	var info [28]byte
	l := uint32(len(info))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(lfd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 || l < uint32(len(info)) || info[0] != tcpListen {
		return 0, false
	}
	return int(binary.NativeEndian.Uint32(info[24:])), true
}

// tcpListen is TCP_LISTEN of the kernel's TCP states (tcpi_state).
const tcpListen = 10

func decodeSockaddr(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), port)
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// sockaddr converts an address for connect and bind. Addresses are given
// in the socket's family: an IPv4 address on an IPv6 socket is mapped.
func sockaddr(a netip.AddrPort, family int) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Addr: a.Addr().As16(), Port: int(a.Port())}
	}
	return &unix.SockaddrInet4{Addr: a.Addr().Unmap().As4(), Port: int(a.Port())}
}

func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// sysSendMore writes p with MSG_MORE: the kernel may hold a partial
// segment back for what follows, which here is always a shutdown that
// puts the FIN into the same segment.
func sysSendMore(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		unix.MSG_MORE|unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), 0
}

// epollPoll returns the events ready now, without blocking.
func epollPoll(ep int, events []unix.EpollEvent) int {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(r)
}
