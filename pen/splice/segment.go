package splice

import (
	"encoding/binary"
	"net/netip"
)

// segment builds an IPv4 packet holding a TCP segment with ACK and PSH
// set, from src to dst, carrying payload (pen's raw socket sends it with
// the IP header included; the kernel fills in the header's checksum).
// With ts, it carries a timestamps option (NOP NOP TS), as the
// connection negotiated.
func segment(src, dst netip.AddrPort, seq, ack uint32, win uint16, ts bool, tsval, tsecr uint32, payload []byte) []byte {
	th := 20
	if ts {
		th += 12
	}
	b := make([]byte, 20+th+len(payload))
	ip := b[:20]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = 6
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	t := b[20 : 20+th]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte(th/4) << 4
	t[13] = 0x18 // ACK, PSH
	binary.BigEndian.PutUint16(t[14:], win)
	if ts {
		copy(t[20:], []byte{1, 1, 8, 10})
		binary.BigEndian.PutUint32(t[24:], tsval)
		binary.BigEndian.PutUint32(t[28:], tsecr)
	}
	copy(b[20+th:], payload)
	binary.BigEndian.PutUint16(t[16:], tcpChecksum(s4, d4, b[20:]))
	return b
}

// tcpChecksum is the Internet checksum of the TCP segment seg with its
// pseudo-header (the segment's checksum field zero).
func tcpChecksum(src, dst [4]byte, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	sum += 6 + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
