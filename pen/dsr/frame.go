package dsr

import (
	"encoding/binary"
	"net/netip"
)

// Ethernet, IPv4 and transport constants used by the frame code.
const (
	ethHeaderLen  = 14
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	ipv6Header    = 40
	protoICMPv6   = 58
	ipv4MinHeader = 20
	protoTCP      = 6
	protoUDP      = 17
	tcpMinHeader  = 20
	udpHeaderLen  = 8

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// ipFrame is what the forwarder needs to know of an Ethernet frame
// carrying IPv4 or IPv6: offsets into the frame and the fields it decides
// on. It is filled by parseIPv4 or parseIPv6 without copying the frame.
type ipFrame struct {
	l3, l4   int // offsets of the IP header and of the transport header
	end      int // end of the IP packet (its length) within the frame
	proto    uint8
	src, dst netip.Addr
	// fragment is true for every fragment but the first: it carries no
	// transport header, so ports and flags below are zero.
	fragment     bool
	sport, dport uint16
	flags        uint8 // TCP flags (first fragment or whole packet only)
	seq          uint32
}

// etherType returns the EtherType of an Ethernet II frame, or 0 when the
// frame is too short to have one.
func etherType(f []byte) uint16 {
	if len(f) < ethHeaderLen {
		return 0
	}
	return binary.BigEndian.Uint16(f[12:14])
}

// parseIPv4 reads the IPv4 and transport headers of an Ethernet frame. It
// reports drop reasons for frames that are not well-formed IPv4: too
// short, a header length below 20 or beyond the frame, a total length
// that disagrees with the frame, or a transport header cut short. A frame
// may be longer than the IPv4 packet (Ethernet padding); end marks where
// the packet stops.
func parseIPv4(f []byte) (p ipFrame, why Reason) {
	if etherType(f) != etherTypeIPv4 {
		return p, DropNotIPv4
	}
	b := f[ethHeaderLen:]
	if len(b) < ipv4MinHeader || b[0]>>4 != 4 {
		return p, DropMalformed
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	// A GSO frame beyond 64 KiB (BIG TCP) carries a total length of 0,
	// which the kernel fills in per segment; 0 is accepted only then.
	if total == 0 && len(b) > 0xffff {
		total = len(b)
	}
	if ihl < ipv4MinHeader || ihl > len(b) || total > len(b) || total < ihl {
		return p, DropMalformed
	}
	p.l3 = ethHeaderLen
	p.l4 = ethHeaderLen + ihl
	p.end = ethHeaderLen + total
	p.proto = b[9]
	p.src = netip.AddrFrom4([4]byte(b[12:16]))
	p.dst = netip.AddrFrom4([4]byte(b[16:20]))
	frag := binary.BigEndian.Uint16(b[6:8])
	if frag&0x1fff != 0 {
		p.fragment = true
		return p, 0
	}
	return p, p.parseTransport(f[p.l4:p.end])
}

// parseTransport reads the ports (and, for TCP, the sequence number and
// flags) of the TCP or UDP segment t into p, for IPv4 and IPv6 alike; other
// protocols are left to the caller.
func (p *ipFrame) parseTransport(t []byte) Reason {
	switch p.proto {
	case protoTCP:
		if len(t) < tcpMinHeader {
			return DropMalformed
		}
		if off := int(t[12]>>4) * 4; off < tcpMinHeader || off > len(t) {
			return DropMalformed
		}
		p.sport = binary.BigEndian.Uint16(t[0:2])
		p.dport = binary.BigEndian.Uint16(t[2:4])
		p.seq = binary.BigEndian.Uint32(t[4:8])
		p.flags = t[13]
	case protoUDP:
		if len(t) < udpHeaderLen {
			return DropMalformed
		}
		p.sport = binary.BigEndian.Uint16(t[0:2])
		p.dport = binary.BigEndian.Uint16(t[2:4])
	}
	return 0
}

// setMACs rewrites a frame's Ethernet addresses in place: this is all DSR
// changes in a forwarded frame.
func setMACs(f []byte, dst, src [6]byte) {
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
}

// sum adds b to a ones' complement running sum (RFC 1071), as 16-bit
// big-endian words; an odd last byte is padded with zero.
func sum(acc uint32, b []byte) uint32 {
	n := len(b) &^ 1
	for i := 0; i < n; i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)&1 != 0 {
		acc += uint32(b[len(b)-1]) << 8
	}
	return acc
}

// fold finishes a ones' complement sum: carries folded in, complemented.
func fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}

// ipv4HeaderChecksum is the checksum of an IPv4 header whose checksum
// field is zero.
func ipv4HeaderChecksum(h []byte) uint16 { return fold(sum(0, h)) }

// pseudoHeaderSum is the partial sum of the IPv4 pseudo-header of a
// transport segment of length n.
func pseudoHeaderSum(src, dst netip.Addr, proto uint8, n int) uint32 {
	s, d := src.As4(), dst.As4()
	acc := sum(0, s[:])
	acc = sum(acc, d[:])
	return acc + uint32(proto) + uint32(n)
}

// transportChecksum computes the TCP or UDP checksum of segment seg
// (header and payload, its checksum field included, which is skipped) in
// an IPv4 packet from src to dst. This is the whole sum, not a partial
// one: it is what a frame marked for checksum offload lacks.
func transportChecksum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	off := 16 // TCP
	if proto == protoUDP {
		off = 6
	}
	acc := pseudoHeaderSum(src, dst, proto, len(seg))
	acc = sum(acc, seg[:off])
	acc = sum(acc, seg[off+2:])
	c := fold(acc)
	if proto == protoUDP && c == 0 {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	return c
}

// completeChecksum writes the full transport checksum into an IPv4 frame
// whose checksum was left for offload (TP_STATUS_CSUMNOTREADY): the frame
// then leaves this host correct whatever the next device does. Fragments
// and protocols other than TCP and UDP are left alone.
func completeChecksum(f []byte, p ipFrame) {
	if p.fragment {
		return
	}
	seg := f[p.l4:p.end]
	switch p.proto {
	case protoTCP:
		binary.BigEndian.PutUint16(seg[16:18], transportChecksum(p.src, p.dst, p.proto, seg))
	case protoUDP:
		binary.BigEndian.PutUint16(seg[6:8], transportChecksum(p.src, p.dst, p.proto, seg))
	}
}

// checksumOK reports whether an IPv4 frame's header and transport
// checksums are right (tests and the fuzz target use it to check frames
// that pen builds).
func checksumOK(f []byte, p ipFrame) bool {
	if fold(sum(0, f[p.l3:p.l4])) != 0 {
		return false
	}
	if p.fragment {
		return true
	}
	seg := f[p.l4:p.end]
	switch p.proto {
	case protoTCP:
		return fold(sum(pseudoHeaderSum(p.src, p.dst, p.proto, len(seg)), seg)) == 0
	case protoUDP:
		if binary.BigEndian.Uint16(seg[6:8]) == 0 {
			return true
		}
		return fold(sum(pseudoHeaderSum(p.src, p.dst, p.proto, len(seg)), seg)) == 0
	}
	return true
}
