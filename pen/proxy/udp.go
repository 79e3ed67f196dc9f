package proxy

import (
	"net/netip"
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
	if l.ub == nil {
		l.ub = newBatch()
	}
	b := l.ub
	for total := 0; total < l.set.MultiAccept; {
		n, errno := b.recv(l.lfd, true, l.udpDst)
		if errno != 0 {
			if errno != unix.EAGAIN && errno != unix.EINTR {
				l.log.Debugf(1, "Error receiving data: %v", errno)
			}
			return
		}
		l.accepted.Add(uint64(n))
		// Datagrams of one flow go to its server in one batch.
		nf := 0
		for i := 0; i < n; i++ {
			c := l.flowFor(b.peer(i), b.local(i), b.bufs[i][:b.lens[i]])
			if c == nil {
				continue
			}
			k := 0
			for k < nf && b.flows[k] != c {
				k++
			}
			if k == nf {
				b.flows[k], b.sizes[k] = c, 0
				nf++
			}
			b.groups[k][b.sizes[k]] = i
			b.sizes[k]++
		}
		for k := 0; k < nf; k++ {
			l.toServer(b.flows[k], b.groups[k][:b.sizes[k]])
			b.flows[k] = nil
		}
		total += n
		if n < udpBatch {
			return
		}
	}
}

// flowFor finds or makes the flow of a datagram from peer.
func (l *Loop) flowFor(peer netip.AddrPort, local netip.Addr, data []byte) *conn {
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
					return nil
				}
			}
		}
	} else {
		c = l.newFlow(peer, local)
		if c == nil {
			return nil
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
	return c
}

// toServer sends datagrams idx of the batch to the flow's server.
func (l *Loop) toServer(c *conn, idx []int) {
	b := l.ub
	for tries := 0; tries < 4 && len(idx) > 0; tries++ {
		if c.state == stateUnused || c.up < 0 {
			return
		}
		sent, errno := b.send(int(c.up), idx)
		for _, i := range idx[:sent] {
			c.sess.Sent(b.lens[i])
		}
		idx = idx[sent:]
		switch {
		case errno == 0 && sent > 0:
			l.ukCount(c, sent)
			continue
		case errno == unix.ECONNREFUSED:
			// An earlier datagram bounced: the server is not there.
			l.udpServerDown(c)
		default:
			if errno != 0 {
				l.log.Debugf(2, "UDP send to server %d: %v", c.sess.Server(), errno)
			}
			return // the socket buffer is full: drop, as UDP may
		}
	}
}

// newFlow makes the flow for a client, recycling the stalest flow when
// the table is full (Pen's second-chance sweep).
func (l *Loop) newFlow(peer netip.AddrPort, local netip.Addr) *conn {
	var c *conn
	if l.roomForClient() {
		c = l.newConn()
	}
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
	if l.connect(c, tg, ok) {
		return true
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
// client, a batch at a time.
func (l *Loop) udpEvent(c *conn, events uint32) {
	if events&(unix.EPOLLIN|unix.EPOLLERR) == 0 || c.up < 0 {
		return
	}
	if l.ub == nil {
		l.ub = newBatch()
	}
	b := l.ub
	up := int(c.up)
	for i := 0; i < budget; i++ {
		n, errno := b.recv(up, false, false)
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
		for k := 0; k < n; k++ {
			c.sess.Received(b.lens[k])
			if l.set.Dump {
				l.dump(b.bufs[k][:b.lens[k]])
			}
		}
		if sent := b.sendTo(l.lfd, n, c.peer, c.local, l.udpDst, l.lfam); sent < n {
			l.log.Debugf(2, "UDP send to client %s: %d of %d datagrams dropped", c.peer, n-sent, n)
		}
		if n < udpBatch {
			return
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
	if tg, ok := c.sess.Next(); !l.connect(c, tg, ok) {
		l.closeConn(c)
	}
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
