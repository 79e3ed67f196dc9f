package proxy

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP moves datagrams in batches: one recvmmsg or sendmmsg moves up to
// udpBatch of them, so a busy DNS flow costs a few syscalls per batch
// rather than four per query.

const (
	udpBatch   = 16
	udpMaxSize = 65535 // a datagram is never cut short
)

// mmsghdr is the kernel's struct mmsghdr on 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// batch is a set of datagram buffers with their headers.
type batch struct {
	msgs  [udpBatch]mmsghdr
	iovs  [udpBatch]unix.Iovec
	names [udpBatch]unix.RawSockaddrAny
	oob   [udpBatch][oobSize]byte
	bufs  [udpBatch][]byte
	lens  [udpBatch]int

	// Datagrams grouped by flow (readUDP), without allocating.
	flows  [udpBatch]*conn
	groups [udpBatch][udpBatch]int
	sizes  [udpBatch]int
}

func newBatch() *batch {
	b := &batch{}
	for i := range b.bufs {
		// Pages are touched only as far as datagrams fill them.
		b.bufs[i] = make([]byte, udpMaxSize)
	}
	return b
}

// recv reads up to udpBatch datagrams from fd; with names it also takes
// each sender's address, with oob the local address they were sent to.
func (b *batch) recv(fd int, names, oob bool) (int, syscall.Errno) {
	for i := range b.msgs {
		m := &b.msgs[i]
		*m = mmsghdr{}
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(len(b.bufs[i]))
		m.hdr.Iov = &b.iovs[i]
		m.hdr.Iovlen = 1
		if names {
			m.hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
			m.hdr.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		}
		if oob {
			m.hdr.Control = &b.oob[i][0]
			m.hdr.SetControllen(oobSize)
		}
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])), udpBatch, unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	for i := 0; i < int(n); i++ {
		b.lens[i] = int(b.msgs[i].n)
	}
	return int(n), 0
}

// peer returns the sender of datagram i.
func (b *batch) peer(i int) netip.AddrPort {
	sa := &b.names[i]
	if sa.Addr.Family == unix.AF_UNIX {
		return netip.AddrPort{}
	}
	return decodeSockaddr(sa)
}

// local returns the address datagram i was sent to (needs oob).
func (b *batch) local(i int) netip.Addr {
	cl := int(b.msgs[i].hdr.Controllen)
	if cl <= 0 || cl > oobSize {
		return netip.Addr{}
	}
	return pktinfoAddr(b.oob[i][:cl])
}

// sendTo sends datagrams 0..n-1 of b from the listener to peer, from the
// address local when dst is set. It returns how many went out.
func (b *batch) sendTo(fd int, n int, peer netip.AddrPort, local netip.Addr, dst bool, lfam int) int {
	var sa unix.RawSockaddrAny
	salen := fillSockaddr(&sa, peer, lfam)
	var oob [oobSize]byte
	ooblen := 0
	if dst && local.IsValid() {
		ooblen = fillPktinfo(oob[:], local, lfam)
	}
	for i := 0; i < n; i++ {
		m := &b.msgs[i]
		*m = mmsghdr{}
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(b.lens[i])
		m.hdr.Iov = &b.iovs[i]
		m.hdr.Iovlen = 1
		m.hdr.Name = (*byte)(unsafe.Pointer(&sa))
		m.hdr.Namelen = salen
		if ooblen > 0 {
			m.hdr.Control = &oob[0]
			m.hdr.SetControllen(ooblen)
		}
	}
	sent := 0
	for sent < n {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[sent])), uintptr(n-sent), unix.MSG_DONTWAIT, 0, 0)
		if e != 0 || r == 0 {
			break // the socket buffer is full: a datagram may be lost
		}
		sent += int(r)
	}
	return sent
}

// send sends datagrams from..to-1 of b on a connected socket.
func (b *batch) send(fd int, idx []int) (int, syscall.Errno) {
	for k, i := range idx {
		m := &b.msgs[k]
		*m = mmsghdr{}
		b.iovs[k].Base = &b.bufs[i][0]
		b.iovs[k].SetLen(b.lens[i])
		m.hdr.Iov = &b.iovs[k]
		m.hdr.Iovlen = 1
	}
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(idx)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

func fillSockaddr(sa *unix.RawSockaddrAny, peer netip.AddrPort, lfam int) uint32 {
	if lfam == unix.AF_INET6 {
		s6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		s6.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s6.Port))[:], peer.Port())
		s6.Addr = peer.Addr().As16()
		return unix.SizeofSockaddrInet6
	}
	s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	s4.Family = unix.AF_INET
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:], peer.Port())
	s4.Addr = peer.Addr().Unmap().As4()
	return unix.SizeofSockaddrInet4
}

func fillPktinfo(oob []byte, local netip.Addr, lfam int) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if local.Is4() && lfam == unix.AF_INET {
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
		info.Spec_dst = local.As4()
		return unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	}
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	info.Addr = local.As16()
	return unix.CmsgSpace(unix.SizeofInet6Pktinfo)
}

// The layout the kernel expects: 64 bytes.
var _ [unsafe.Sizeof(mmsghdr{}) - 64]struct{}
var _ [64 - unsafe.Sizeof(mmsghdr{})]struct{}
