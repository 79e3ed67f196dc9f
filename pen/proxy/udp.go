package proxy

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP: each client address and port is a flow with its own connected
// socket to the server chosen for it. Datagrams from the client reach the
// flow through the listener; the server's answers are sent back from the
// listener to that client, from the address the client wrote to, so every
// answer reaches the client that asked.

const oobSize = 64

func (l *Loop) readUDP() {
	var oob [oobSize]byte
	for i := 0; i < l.set.MultiAccept; i++ {
		n, peer, local, errno := recvFrom(l.lfd, l.buf, oob[:], l.udpDst)
		if errno != 0 {
			if errno != unix.EAGAIN && errno != unix.EINTR {
				l.log.Debugf(1, "Error receiving data: %v", errno)
			}
			return
		}
		l.accepted.Add(1)
		l.fromClient(peer, local, l.buf[:n])
	}
}

// fromClient forwards one datagram from peer to its flow's server.
func (l *Loop) fromClient(peer netip.AddrPort, local netip.Addr, data []byte) {
	var c *conn
	if slot, ok := l.flows[peer]; ok {
		c = l.conns[slot]
		if c.epoch != l.tb.Epoch() {
			c.epoch = l.tb.Epoch()
			if !c.sess.Usable() {
				// The flow's server went away: choose again.
				l.dropUp(c)
				c.sess.Close()
				c.sess = nil
				if !l.placeFlow(c) {
					return
				}
			}
		}
	} else {
		c = l.newFlow(peer, local)
		if c == nil {
			return
		}
		if l.set.Log != nil {
			l.logChunk(c, data)
		}
	}
	c.t = l.now
	c.state &^= stateHalfDead
	if l.set.Dump {
		l.dump(data)
	}
	for tries := 0; tries < 4; tries++ {
		_, errno := sysWrite(int(c.up), data)
		if errno == 0 {
			c.sess.Sent(len(data))
			return
		}
		if errno != unix.ECONNREFUSED {
			l.log.Debugf(2, "UDP send to server %d: %v", c.sess.Server(), errno)
			return
		}
		// An earlier datagram bounced: the server is not there.
		l.udpServerDown(c)
		if c.state == stateUnused || c.up < 0 {
			return
		}
	}
}

const stateHalfDead = 16

// newFlow makes the flow for a client, recycling the stalest flow when
// the table is full (Pen's second-chance sweep).
func (l *Loop) newFlow(peer netip.AddrPort, local netip.Addr) *conn {
	c := l.newConn()
	if c == nil {
		c = l.recycleFlow()
		if c == nil {
			l.refusedFull.Add(1)
			l.logFull("Connection table full (%d slots), can't store connection. Try restarting with -x %d", len(l.conns), 2*len(l.conns))
			return nil
		}
	}
	c.fl |= fUDP
	c.peer, c.local = peer, local
	c.epoch = l.tb.Epoch()
	l.flows[peer] = c.slot
	c.sess = l.tb.Open(peer)
	if !l.placeFlow(c) {
		return nil
	}
	return c
}

// placeFlow chooses a server for the flow and opens its socket.
func (l *Loop) placeFlow(c *conn) bool {
	if c.sess == nil {
		c.sess = l.tb.Open(c.peer)
	}
	tg, ok := c.sess.First()
	for ok {
		if err := l.dial(c, tg); err == nil {
			return true
		} else {
			l.log.Printf("blacklisting server %d because connect error %v", tg.Index, err)
		}
		c.sess.Failed()
		tg, ok = c.sess.Next()
	}
	l.refused(c)
	return false
}

func (l *Loop) recycleFlow() *conn {
	n := len(l.conns)
	for i := 0; i < 2*n; i++ {
		l.hand = (l.hand + 1) % n
		c := l.conns[l.hand]
		if c == nil || c.state == stateUnused || c.fl&fUDP == 0 {
			continue
		}
		if c.state&stateHalfDead != 0 {
			l.log.Debugf(2, "Recycling halfdead connection %d", c.slot)
			l.closeConn(c)
			return l.newConn()
		}
		c.state |= stateHalfDead
	}
	return nil
}

// udpEvent reads the server's answers of a flow and sends them to the
// client.
func (l *Loop) udpEvent(c *conn, events uint32) {
	if events&(unix.EPOLLIN|unix.EPOLLERR) == 0 || c.up < 0 {
		return
	}
	up := int(c.up)
	for i := 0; i < budget; i++ {
		n, errno := sysRead(up, l.buf)
		if errno == unix.EAGAIN {
			return
		}
		if errno != 0 {
			if errno == unix.ECONNREFUSED {
				l.udpServerDown(c)
			}
			return
		}
		c.t = l.now
		c.state &^= stateHalfDead
		c.sess.Received(n)
		if l.set.Dump {
			l.dump(l.buf[:n])
		}
		if errno := sendTo(l.lfd, l.buf[:n], c.peer, c.local, l.udpDst); errno != 0 {
			l.log.Debugf(2, "UDP send to client %s: %v", c.peer, errno)
		}
	}
	// More may be waiting: edge-triggered, so come back for it.
	if c.fl&fQueued == 0 {
		c.fl |= fQueued
		l.ready = append(l.ready, c.slot)
	}
}

// udpServerDown handles an ICMP error for a flow's server: the server is
// blacklisted like a TCP server whose connect failed, and the flow moves
// to another one.
func (l *Loop) udpServerDown(c *conn) {
	l.log.Printf("blacklisting server %d because of connect failure", c.sess.Server())
	l.dropUp(c)
	c.sess.Failed()
	tg, ok := c.sess.Next()
	for ok {
		if err := l.dial(c, tg); err == nil {
			return
		}
		c.sess.Failed()
		tg, ok = c.sess.Next()
	}
	l.closeConn(c)
}

func (l *Loop) forgetFlow(c *conn) {
	if s, ok := l.flows[c.peer]; ok && s == c.slot {
		delete(l.flows, c.peer)
	}
}

func (l *Loop) flowSlots() []int32 {
	out := make([]int32, 0, len(l.flows))
	for _, s := range l.flows {
		out = append(out, s)
	}
	return out
}

// recvFrom reads one datagram without allocating; with dst it also
// returns the local address the datagram was sent to.
func recvFrom(fd int, p, oob []byte, dst bool) (int, netip.AddrPort, netip.Addr, syscall.Errno) {
	var sa unix.RawSockaddrAny
	var iov unix.Iovec
	iov.Base = &p[0]
	iov.SetLen(len(p))
	var msg unix.Msghdr
	msg.Name = (*byte)(unsafe.Pointer(&sa))
	msg.Namelen = uint32(unsafe.Sizeof(sa))
	msg.Iov = &iov
	msg.Iovlen = 1
	if dst {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	n, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	if e != 0 {
		return 0, netip.AddrPort{}, netip.Addr{}, e
	}
	var local netip.Addr
	if dst && msg.Controllen > 0 {
		local = pktinfoAddr(oob[:msg.Controllen])
	}
	peer := decodeSockaddr(&sa)
	if sa.Addr.Family == unix.AF_UNIX {
		// Unix datagram clients have an address only if they bound one.
		peer = netip.AddrPort{}
	}
	return int(n), peer, local, 0
}

func pktinfoAddr(oob []byte) netip.Addr {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom4(info.Addr)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom16(info.Addr).Unmap()
		}
	}
	return netip.Addr{}
}

// sendTo sends p to peer from the listener, from the address local when
// the listener is bound to every address.
func sendTo(fd int, p []byte, peer netip.AddrPort, local netip.Addr, dst bool) syscall.Errno {
	var sa unix.RawSockaddrAny
	var salen uint32
	lfam, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if lfam == unix.AF_INET6 {
		s6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa))
		s6.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s6.Port))[:], peer.Port())
		s6.Addr = peer.Addr().As16()
		salen = unix.SizeofSockaddrInet6
	} else {
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		s4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:], peer.Port())
		s4.Addr = peer.Addr().Unmap().As4()
		salen = unix.SizeofSockaddrInet4
	}
	var iov unix.Iovec
	iov.Base = &p[0]
	iov.SetLen(len(p))
	var msg unix.Msghdr
	msg.Name = (*byte)(unsafe.Pointer(&sa))
	msg.Namelen = salen
	msg.Iov = &iov
	msg.Iovlen = 1
	var oob [oobSize]byte
	if dst && local.IsValid() {
		var n int
		if local.Is4() && lfam == unix.AF_INET {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
			h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			info.Spec_dst = local.As4()
			n = unix.CmsgSpace(unix.SizeofInet4Pktinfo)
		} else {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
			h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			info.Addr = local.As16()
			n = unix.CmsgSpace(unix.SizeofInet6Pktinfo)
		}
		msg.Control = &oob[0]
		msg.SetControllen(n)
	}
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
	return e
}
