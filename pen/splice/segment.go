package splice

import (
	"encoding/binary"
	"net/netip"
)

// TCP flags pen's segments carry.
const (
	flagFIN = 0x01
	flagPSH = 0x08
	flagACK = 0x10
)

// segment builds an IP packet (IPv4 or IPv6, as src and dst are) holding
// a TCP segment from src to dst with the given flags, options (a multiple
// of four bytes long) and payload; pen's raw sockets send it with the IP
// header included (the kernel fills in an IPv4 header's checksum).
func segment(src, dst netip.AddrPort, seq, ack uint32, flags byte, win uint16, opts, payload []byte) []byte {
	th := 20 + len(opts)
	ih := 20
	if src.Addr().Is6() {
		ih = 40
	}
	b := make([]byte, ih+th+len(payload))
	ip := b[:ih]
	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	if ih == 20 {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = 6
		copy(ip[12:16], s)
		copy(ip[16:20], d)
	} else {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(th+len(payload)))
		ip[6] = 6
		ip[7] = 64
		copy(ip[8:24], s)
		copy(ip[24:40], d)
	}
	t := b[ih : ih+th]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte(th/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], win)
	copy(t[20:], opts)
	copy(b[ih+th:], payload)
	binary.BigEndian.PutUint16(t[16:], tcpChecksum(s, d, b[ih:]))
	return b
}

// tsOpt is the timestamps option as Linux lays it out: NOP NOP TS.
func tsOpt(tsval, tsecr uint32) []byte {
	o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[4:], tsval)
	binary.BigEndian.PutUint32(o[8:], tsecr)
	return o
}

// tcpChecksum is the Internet checksum of the TCP segment seg with its
// pseudo-header (IPv4 or IPv6, by the addresses' length; the segment's
// checksum field zero).
func tcpChecksum(src, dst []byte, seg []byte) uint16 {
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
	add(src)
	add(dst)
	sum += 6 + uint32(len(seg))>>16 + uint32(len(seg))&0xffff
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
