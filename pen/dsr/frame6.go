package dsr

import (
	"encoding/binary"
	"net/netip"
)

// parseIPv6 reads the IPv6 and transport headers of an Ethernet frame,
// past hop-by-hop, routing and destination options headers. A fragment
// header makes the frame a fragment (placed by address only) unless it is
// the first fragment, whose transport header follows it.
func parseIPv6(f []byte) (p ipFrame, why Reason) {
	if etherType(f) != etherTypeIPv6 {
		return p, DropNotIPv4
	}
	b := f[ethHeaderLen:]
	if len(b) < ipv6Header || b[0]>>4 != 6 {
		return p, DropMalformed
	}
	payload := int(binary.BigEndian.Uint16(b[4:6]))
	if payload == 0 && len(b)-ipv6Header > 0xffff {
		payload = len(b) - ipv6Header // a GSO frame beyond 64 KiB (BIG TCP)
	}
	if ipv6Header+payload > len(b) {
		return p, DropMalformed
	}
	p.l3 = ethHeaderLen
	p.end = ethHeaderLen + ipv6Header + payload
	p.src = netip.AddrFrom16([16]byte(b[8:24]))
	p.dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	off := ethHeaderLen + ipv6Header
	for range 8 { // a bound on extension headers
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if off+8 > p.end {
				return p, DropMalformed
			}
			next, off = f[off], off+(int(f[off+1])+1)*8
			continue
		case 44: // fragment
			if off+8 > p.end {
				return p, DropMalformed
			}
			fragOff := binary.BigEndian.Uint16(f[off+2:off+4]) &^ 7
			next, off = f[off], off+8
			if fragOff != 0 {
				p.proto, p.l4, p.fragment = next, off, true
				return p, 0
			}
			continue
		}
		break
	}
	if off > p.end {
		return p, DropMalformed
	}
	p.proto, p.l4 = next, off
	t := f[p.l4:p.end]
	if p.proto == protoICMPv6 && len(t) < 4 {
		return p, DropMalformed
	}
	return p, p.parseTransport(t)
}

// pseudoHeaderSum6 is the partial sum of the IPv6 pseudo-header of an
// upper-layer packet of length n (RFC 8200 section 8.1).
func pseudoHeaderSum6(src, dst netip.Addr, proto uint8, n int) uint32 {
	s, d := src.As16(), dst.As16()
	acc := sum(0, s[:])
	acc = sum(acc, d[:])
	return acc + uint32(n>>16) + uint32(n&0xffff) + uint32(proto)
}

// Neighbour discovery (RFC 4861): pen answers neighbour solicitations for
// an IPv6 VIP, and learns servers' MACs with solicitations of its own, as
// it does with ARP for IPv4.
const (
	icmpNS       = 135
	icmpNA       = 136
	ndMsgLen     = 24 // type, code, checksum, flags/reserved, target
	ndOptLen     = 8  // a link-layer address option
	ndFrameLen   = ethHeaderLen + ipv6Header + ndMsgLen + ndOptLen
	ndOptSrcLL   = 1
	ndOptTgtLL   = 2
	naRouter     = 0x80
	naSolicited  = 0x40
	naOverride   = 0x20
	ndHopLimit   = 255
	ndSolicitLen = ndMsgLen + ndOptLen
)

// ndMessage is a neighbour solicitation or advertisement.
type ndMessage struct {
	typ    uint8
	flags  uint8 // advertisement flags
	target netip.Addr
	ll     [6]byte // the link-layer address option (source for NS, target for NA)
	hasLL  bool
}

// parseND reads a neighbour solicitation or advertisement from an IPv6
// frame parsed as p. It checks what RFC 4861 asks a receiver to check:
// hop limit 255, code 0, the checksum, and a target that is not
// multicast.
func parseND(f []byte, p ipFrame) (ndMessage, Reason) {
	var m ndMessage
	if p.proto != protoICMPv6 || p.fragment {
		return m, DropNotOurs
	}
	t := f[p.l4:p.end]
	if len(t) < ndMsgLen || (t[0] != icmpNS && t[0] != icmpNA) {
		return m, DropNotOurs
	}
	if f[p.l3+7] != ndHopLimit || t[1] != 0 {
		return m, DropARP
	}
	if fold(sum(pseudoHeaderSum6(p.src, p.dst, protoICMPv6, len(t)), t)) != 0 {
		return m, DropMalformed
	}
	m.typ, m.flags = t[0], t[4]
	m.target = netip.AddrFrom16([16]byte(t[8:24]))
	if m.target.IsMulticast() {
		return m, DropARP
	}
	for o := t[ndMsgLen:]; len(o) >= 8; {
		n := int(o[1]) * 8
		if n == 0 || n > len(o) {
			return m, DropMalformed
		}
		if (o[0] == ndOptSrcLL && m.typ == icmpNS || o[0] == ndOptTgtLL && m.typ == icmpNA) && n == 8 {
			m.ll, m.hasLL = [6]byte(o[2:8]), true
		}
		o = o[n:]
	}
	return m, 0
}

// ndFrame builds a neighbour solicitation or advertisement into b (at
// least ndFrameLen bytes), with a link-layer address option when m has
// one, and returns it.
func ndFrame(b []byte, ethDst, ethSrc [6]byte, src, dst netip.Addr, m ndMessage) []byte {
	n := ndMsgLen
	if m.hasLL {
		n += ndOptLen
	}
	b = b[:ethHeaderLen+ipv6Header+n]
	clear(b)
	copy(b[0:6], ethDst[:])
	copy(b[6:12], ethSrc[:])
	binary.BigEndian.PutUint16(b[12:14], etherTypeIPv6)
	ip := b[ethHeaderLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:6], uint16(n))
	ip[6] = protoICMPv6
	ip[7] = ndHopLimit
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	t := ip[ipv6Header:]
	t[0] = m.typ
	t[4] = m.flags
	tg := m.target.As16()
	copy(t[8:24], tg[:])
	if m.hasLL {
		t[ndMsgLen] = ndOptSrcLL
		if m.typ == icmpNA {
			t[ndMsgLen] = ndOptTgtLL
		}
		t[ndMsgLen+1] = 1
		copy(t[ndMsgLen+2:], m.ll[:])
	}
	binary.BigEndian.PutUint16(t[2:4], fold(sum(pseudoHeaderSum6(src, dst, protoICMPv6, len(t)), t)))
	return b
}

// solicitedNode is the solicited-node multicast address of a and its
// Ethernet multicast address.
func solicitedNode(a netip.Addr) (netip.Addr, [6]byte) {
	b := a.As16()
	ip := [16]byte{0xff, 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]}
	return netip.AddrFrom16(ip), [6]byte{0x33, 0x33, 0xff, b[13], b[14], b[15]}
}

// nsRequest asks who has ip: a neighbour solicitation to its
// solicited-node address, from src (our link-local address) with our MAC.
// From :: (an interface without a link-local address) it may carry no
// link-layer address (RFC 4861 section 7.1.1), and the answer goes to all
// nodes.
func nsRequest(b []byte, ours [6]byte, src, ip netip.Addr) []byte {
	dst, mac := solicitedNode(ip)
	return ndFrame(b, mac, ours, src, dst, ndMessage{typ: icmpNS, target: ip, ll: ours, hasLL: !src.IsUnspecified()})
}

// naReply answers a solicitation for target (the VIP), to its sender.
func naReply(b []byte, ours, to [6]byte, target, dst netip.Addr) []byte {
	flags := uint8(naSolicited | naOverride)
	if !dst.IsValid() || dst.IsUnspecified() {
		// A solicitation from :: (duplicate address detection) is
		// answered to all nodes, unsolicited.
		dst, to, flags = netip.MustParseAddr("ff02::1"), [6]byte{0x33, 0x33, 0, 0, 0, 1}, naOverride
	}
	return ndFrame(b, to, ours, target, dst, ndMessage{typ: icmpNA, flags: flags, target: target, ll: ours, hasLL: true})
}
