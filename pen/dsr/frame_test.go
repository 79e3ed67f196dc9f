package dsr

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

var (
	clientMAC = [6]byte{0x02, 0x50, 0x45, 0x4e, 0x00, 0x01}
	penMAC    = [6]byte{0x02, 0x50, 0x45, 0x4e, 0x00, 0x02}
	b1MAC     = [6]byte{0x02, 0x50, 0x45, 0x4e, 0x00, 0x03}
	b2MAC     = [6]byte{0x02, 0x50, 0x45, 0x4e, 0x00, 0x04}
	clientIP  = netip.MustParseAddr("198.18.0.1")
	vip       = netip.MustParseAddr("198.18.0.100")
	b1IP      = netip.MustParseAddr("198.18.0.11")
	b2IP      = netip.MustParseAddr("198.18.0.12")
)

// tcpFrame builds an Ethernet frame with an IPv4 TCP segment with the given
// options (padded to a multiple of 4) and payload; checksums are right.
func tcpFrame(dstMAC, srcMAC [6]byte, src, dst netip.Addr, sport, dport uint16, flags uint8, opts, payload []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0) // end of options
	}
	tcpLen := tcpMinHeader + len(opts)
	f := make([]byte, ethHeaderLen+ipv4MinHeader+tcpLen+len(payload))
	copy(f[0:6], dstMAC[:])
	copy(f[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(f[12:14], etherTypeIPv4)
	ip := f[ethHeaderLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000)
	ip[8] = 64
	ip[9] = protoTCP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], ipv4HeaderChecksum(ip[:ipv4MinHeader]))
	t := ip[ipv4MinHeader:]
	binary.BigEndian.PutUint16(t[0:2], sport)
	binary.BigEndian.PutUint16(t[2:4], dport)
	binary.BigEndian.PutUint32(t[4:8], 0x01020304)
	t[12] = byte(tcpLen/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:16], 64240)
	copy(t[tcpMinHeader:], opts)
	copy(t[tcpLen:], payload)
	binary.BigEndian.PutUint16(t[16:18], transportChecksum(src, dst, protoTCP, t))
	return f
}

func udpFrame(dstMAC, srcMAC [6]byte, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	f := tcpFrame(dstMAC, srcMAC, src, dst, sport, dport, 0, nil, nil)[:ethHeaderLen+ipv4MinHeader]
	f = append(f, make([]byte, udpHeaderLen+len(payload))...)
	ip := f[ethHeaderLen:]
	ip[9] = protoUDP
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[10:12], 0)
	binary.BigEndian.PutUint16(ip[10:12], ipv4HeaderChecksum(ip[:ipv4MinHeader]))
	u := ip[ipv4MinHeader:]
	binary.BigEndian.PutUint16(u[0:2], sport)
	binary.BigEndian.PutUint16(u[2:4], dport)
	binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
	copy(u[udpHeaderLen:], payload)
	binary.BigEndian.PutUint16(u[6:8], transportChecksum(src, dst, protoUDP, u))
	return f
}

// Linux SYN options: MSS, SACK permitted, timestamps, NOP, window scale
// (20 bytes), and the variants with timestamps or SACK turned off.
var synOptions = map[string][]byte{
	"none":      nil,
	"mss":       {2, 4, 0x05, 0xb4},
	"linux":     {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7},
	"no-ts":     {2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7},
	"no-sack":   {2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7},
	"40-bytes":  {2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0},
	"odd-3-mss": {1, 1, 1, 2, 4, 0x05, 0xb4},
}

func TestParseIPv4(t *testing.T) {
	f := tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, tcpSYN, synOptions["linux"], nil)
	p, why := parseIPv4(f)
	if why != 0 {
		t.Fatalf("parseIPv4: %v", why)
	}
	if p.src != clientIP || p.dst != vip || p.sport != 40000 || p.dport != 80 || p.flags != tcpSYN || p.proto != protoTCP || p.end != len(f) || p.l4 != 34 {
		t.Errorf("parseIPv4 = %+v", p)
	}
	if !checksumOK(f, p) {
		t.Error("checksum of a built frame is wrong")
	}
	// Ethernet padding after the packet is not part of it.
	padded := append(append([]byte(nil), f...), 0, 0, 0, 0)
	if p2, why := parseIPv4(padded); why != 0 || p2.end != len(f) {
		t.Errorf("padded frame: end %d, want %d (%v)", p2.end, len(f), why)
	}
	bad := map[string]func([]byte) []byte{
		"short":         func(b []byte) []byte { return b[:ethHeaderLen+10] },
		"version 6":     func(b []byte) []byte { b[ethHeaderLen] = 0x65; return b },
		"ihl 4":         func(b []byte) []byte { b[ethHeaderLen] = 0x44; return b },
		"ihl past end":  func(b []byte) []byte { b[ethHeaderLen] = 0x4f; return b[:ethHeaderLen+40] },
		"total too big": func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:18], 2000); return b },
		"total < ihl":   func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:18], 10); return b },
		"tcp cut":       func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:18], 30); return b },
		"tcp off 4":     func(b []byte) []byte { b[34+12] = 0x40; return b },
		"tcp off past":  func(b []byte) []byte { b[34+12] = 0xf0; return b },
	}
	for name, mangle := range bad {
		if _, why := parseIPv4(mangle(append([]byte(nil), f...))); why != DropMalformed {
			t.Errorf("%s: got %v, want %v", name, why, DropMalformed)
		}
	}
	arpf := arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, vip)
	if _, why := parseIPv4(arpf); why != DropNotIPv4 {
		t.Errorf("ARP frame: %v", why)
	}
	// A later fragment has no transport header.
	frag := append([]byte(nil), f[:ethHeaderLen+ipv4MinHeader+8]...)
	binary.BigEndian.PutUint16(frag[16:18], ipv4MinHeader+8)
	binary.BigEndian.PutUint16(frag[20:22], 185)
	if p, why := parseIPv4(frag); why != 0 || !p.fragment || p.dport != 0 {
		t.Errorf("fragment: %+v %v", p, why)
	}
}

// A frame whose transport checksum was left for offload (it holds only
// the pseudo-header's sum, or garbage) is right after completeChecksum.
func TestCompleteChecksum(t *testing.T) {
	for _, f := range [][]byte{
		tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, tcpACK, synOptions["linux"], []byte("GET / HTTP/1.0\r\n\r\n")),
		udpFrame(penMAC, clientMAC, clientIP, vip, 40000, 53, []byte("abc")),
		udpFrame(penMAC, clientMAC, clientIP, vip, 40000, 53, nil),
	} {
		p, _ := parseIPv4(f)
		want := append([]byte(nil), f...)
		off := p.l4 + 16
		if p.proto == protoUDP {
			off = p.l4 + 6
		}
		binary.BigEndian.PutUint16(f[off:], ^fold(pseudoHeaderSum(p.src, p.dst, p.proto, p.end-p.l4)))
		if checksumOK(f, p) {
			t.Fatal("partial checksum taken for a full one")
		}
		completeChecksum(f, p)
		if !checksumOK(f, p) || string(f) != string(want) {
			t.Errorf("proto %d: completed checksum %x, want %x", p.proto, f[off:off+2], want[off:off+2])
		}
	}
}

func TestTarpitReplyChecksumForEverySYN(t *testing.T) {
	for name, opts := range synOptions {
		for _, payload := range [][]byte{nil, []byte("fast open data")} {
			syn := tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 443, tcpSYN, opts, payload)
			p, why := parseIPv4(syn)
			if why != 0 {
				t.Fatal(why)
			}
			b := tarpitReply(make([]byte, tarpitReplyLen), syn, p, penMAC, 42)
			r, why := parseIPv4(b)
			if why != 0 {
				t.Fatalf("%s: reply does not parse: %v", name, why)
			}
			if !checksumOK(b, r) {
				t.Errorf("%s: reply checksum wrong", name)
			}
			ack := binary.BigEndian.Uint32(b[r.l4+8:])
			win := binary.BigEndian.Uint16(b[r.l4+14:])
			if r.src != vip || r.dst != clientIP || r.sport != 443 || r.dport != 40000 || r.flags != tcpSYN|tcpACK || ack != p.seq+1 || win != tarpitWindow {
				t.Errorf("%s: reply %+v ack %d window %d", name, r, ack, win)
			}
			if [6]byte(b[0:6]) != clientMAC || [6]byte(b[6:12]) != penMAC {
				t.Errorf("%s: reply MACs %x -> %x", name, b[6:12], b[0:6])
			}
		}
	}
}

func TestIsSYN(t *testing.T) {
	for flags, want := range map[uint8]bool{
		tcpSYN: true, tcpSYN | 0x40 | 0x80: true, // ECE, CWR: an ECN SYN
		tcpSYN | tcpACK: false, tcpACK: false, tcpSYN | tcpRST: false, tcpSYN | tcpFIN: false, 0: false,
	} {
		if isSYN(flags) != want {
			t.Errorf("isSYN(%#x) = %v", flags, !want)
		}
	}
}
