package dsr

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

var (
	client6 = netip.MustParseAddr("2001:db8::1")
	vip6    = netip.MustParseAddr("2001:db8::100")
	b1IP6   = netip.MustParseAddr("2001:db8::11")
	b2IP6   = netip.MustParseAddr("2001:db8::12")
	penLL   = netip.MustParseAddr("fe80::50:45ff:fe4e:2")
)

// tcp6Frame builds an Ethernet frame with an IPv6 packet: ext is a chain
// of extension headers (each a multiple of 8 bytes, its first byte the
// next header, which this fills in), then a TCP segment.
func tcp6Frame(dstMAC, srcMAC [6]byte, src, dst netip.Addr, sport, dport uint16, flags uint8, ext [][]byte, payload []byte) []byte {
	t := tcpFrame(dstMAC, srcMAC, clientIP, vip, sport, dport, flags, nil, payload)[ethHeaderLen+ipv4MinHeader:]
	f := make([]byte, ethHeaderLen+ipv6Header)
	copy(f[0:6], dstMAC[:])
	copy(f[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(f[12:14], etherTypeIPv6)
	ip := f[ethHeaderLen:]
	ip[0] = 0x60
	ip[7] = 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	codes := []byte{}
	for _, e := range ext {
		codes = append(codes, e[0])
	}
	next := byte(protoTCP)
	if len(ext) > 0 {
		next = codes[0]
	}
	f[ethHeaderLen+6] = next
	for i, e := range ext {
		h := append([]byte(nil), e...)
		h[0] = protoTCP
		if i+1 < len(ext) {
			h[0] = codes[i+1]
		}
		f = append(f, h...)
	}
	seg := append([]byte(nil), t...)
	binary.BigEndian.PutUint16(seg[16:18], 0)
	binary.BigEndian.PutUint16(seg[16:18], fold(sum(pseudoHeaderSum6(src, dst, protoTCP, len(seg)), seg)))
	f = append(f, seg...)
	binary.BigEndian.PutUint16(f[ethHeaderLen+4:], uint16(len(f)-ethHeaderLen-ipv6Header))
	return f
}

func TestParseIPv6(t *testing.T) {
	hopByHop := []byte{0, 0, 1, 4, 0, 0, 0, 0} // its code, length, PadN
	dstOpts := []byte{60, 0, 1, 4, 0, 0, 0, 0}
	for name, ext := range map[string][][]byte{"plain": nil, "options": {hopByHop, dstOpts}} {
		f := tcp6Frame(penMAC, clientMAC, client6, vip6, 40000, 80, tcpSYN, ext, []byte("x"))
		p, why := parseIPv6(f)
		if why != 0 || p.src != client6 || p.dst != vip6 || p.sport != 40000 || p.dport != 80 || p.flags != tcpSYN || p.proto != protoTCP || p.end != len(f) {
			t.Errorf("%s: %+v %v", name, p, why)
		}
	}
	// A later fragment: no ports.
	frag := []byte{44, 0, 0, 0x10, 0, 0, 0, 1}
	f := tcp6Frame(penMAC, clientMAC, client6, vip6, 40000, 80, tcpACK, [][]byte{frag}, nil)
	if p, why := parseIPv6(f); why != 0 || !p.fragment || p.dport != 0 {
		t.Errorf("fragment: %+v %v", p, why)
	}
	// The first fragment has its ports.
	first := []byte{44, 0, 0, 0x01, 0, 0, 0, 1}
	f = tcp6Frame(penMAC, clientMAC, client6, vip6, 40000, 80, tcpACK, [][]byte{first}, nil)
	if p, why := parseIPv6(f); why != 0 || p.fragment || p.dport != 80 {
		t.Errorf("first fragment: %+v %v", p, why)
	}
	for name, mangle := range map[string]func([]byte) []byte{
		"short":       func(b []byte) []byte { return b[:ethHeaderLen+30] },
		"version 4":   func(b []byte) []byte { b[ethHeaderLen] = 0x40; return b },
		"payload big": func(b []byte) []byte { binary.BigEndian.PutUint16(b[ethHeaderLen+4:], 3000); return b },
		"tcp cut": func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[ethHeaderLen+4:], 10)
			return b[:ethHeaderLen+ipv6Header+10]
		},
		"ext past": func(b []byte) []byte { b[ethHeaderLen+6] = 0; b[ethHeaderLen+ipv6Header+1] = 200; return b },
	} {
		f := tcp6Frame(penMAC, clientMAC, client6, vip6, 40000, 80, tcpSYN, nil, nil)
		if _, why := parseIPv6(mangle(f)); why != DropMalformed {
			t.Errorf("%s: %v, want %v", name, why, DropMalformed)
		}
	}
}

func TestNeighbourDiscovery(t *testing.T) {
	pool := &fakePool{s: Servers{List: []Backend{
		{Index: 0, Addr: b1IP6, Weight: 1, Up: true},
		{Index: 1, Addr: b2IP6, Weight: 1, Up: true},
		{Index: 2, Addr: b1IP, Weight: 1, Up: true}, // another family: never used
	}}}
	d := newDSR(Config{Pool: pool, VIP: vip6, Port: 80}, "test0", penMAC, []netip.Addr{penLL})
	st := testReadState()
	// A solicitation for the VIP is answered.
	ns := nsRequest(make([]byte, ndFrameLen), clientMAC, client6, vip6)
	out, why := d.handle(vnet(ns), false, make([]byte, replySize), st, d.now())
	if out == nil || why != 0 {
		t.Fatalf("NS for the VIP: %v", why)
	}
	na := out[vnetHeaderLen:]
	p, why := parseIPv6(na)
	if why != 0 {
		t.Fatal(why)
	}
	m, why := parseND(na, p)
	if why != 0 || m.typ != icmpNA || m.target != vip6 || m.ll != penMAC || m.flags != naSolicited|naOverride || p.dst != client6 || p.src != vip6 || [6]byte(na[0:6]) != clientMAC {
		t.Errorf("NA %+v %+v %v", m, p, why)
	}
	// Not for other addresses; a bad checksum is malformed.
	other := nsRequest(make([]byte, ndFrameLen), clientMAC, client6, b1IP6)
	if out, why := d.handle(vnet(other), false, make([]byte, replySize), st, d.now()); out != nil || why != DropARP {
		t.Errorf("NS for a server: %v", why)
	}
	ns[len(ns)-1] ^= 1
	if _, why := d.handle(vnet(ns), false, make([]byte, replySize), st, d.now()); why != DropMalformed {
		t.Errorf("NS with a bad checksum: %v", why)
	}
	// Servers' MACs: only from advertisements answering our solicitations.
	s := pool.Servers()
	addrs := map[netip.Addr]bool{}
	for _, b := range servers(s) {
		if d.family(b.Addr) {
			addrs[b.Addr] = true
		}
	}
	if len(addrs) != 2 {
		t.Fatalf("tracked %v", addrs)
	}
	d.neigh.track(addrs, d.now())
	adv := func(ip netip.Addr, mac [6]byte) []byte {
		return naReply(make([]byte, ndFrameLen), mac, penMAC, ip, penLL)
	}
	if _, why := d.handle(vnet(adv(b1IP6, b1MAC)), false, make([]byte, replySize), st, d.now()); why != DropARP {
		t.Errorf("unsolicited NA: %v", why)
	}
	ask, _ := d.neigh.due(d.now())
	if len(ask) != 2 {
		t.Fatalf("asked %v", ask)
	}
	req := nsRequest(make([]byte, ndFrameLen), penMAC, d.ownLL, b1IP6)
	if rp, why := parseIPv6(req); why != 0 || rp.src != penLL || [3]byte(req[0:3]) != [3]byte{0x33, 0x33, 0xff} {
		t.Errorf("our NS: %+v %v %x", rp, why, req[0:6])
	} else if m, why := parseND(req, rp); why != 0 || m.target != b1IP6 || m.ll != penMAC {
		t.Errorf("our NS: %+v %v", m, why)
	}
	for ip, mac := range map[netip.Addr][6]byte{b1IP6: b1MAC, b2IP6: b2MAC} {
		if _, why := d.handle(vnet(adv(ip, mac)), false, make([]byte, replySize), st, d.now()); why != 0 {
			t.Errorf("NA from %v: %v", ip, why)
		}
	}
	d.update(pool.Servers())
	syn := tcp6Frame(penMAC, clientMAC, client6, vip6, 40000, 80, tcpSYN, nil, nil)
	out, why = d.handle(vnet(syn), false, make([]byte, replySize), st, d.now())
	if out == nil || why != 0 {
		t.Fatalf("forwarding IPv6: %v", why)
	}
	if dst := [6]byte(out[vnetHeaderLen:][0:6]); dst != b1MAC && dst != b2MAC {
		t.Errorf("IPv6 frame sent to %x", dst)
	}
	if n := len(d.table.Load().targets); n != 2 {
		t.Errorf("%d servers in the table, want the 2 IPv6 ones", n)
	}
	if _, why := d.handle(vnet(tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpSYN, nil, nil)), false, make([]byte, replySize), st, time.Now()); why != DropNotOurs {
		t.Errorf("IPv4 with an IPv6 VIP: %v", why)
	}
}

// Without a link-local address pen solicits from :: without a link-layer
// option, and takes the answer sent to all nodes.
func TestNeighbourDiscoveryWithoutLinkLocal(t *testing.T) {
	pool := &fakePool{s: Servers{List: []Backend{{Index: 0, Addr: b1IP6, Weight: 1, Up: true}}}}
	d := newDSR(Config{Pool: pool, VIP: vip6}, "test0", penMAC, nil)
	req := nsRequest(make([]byte, ndFrameLen), penMAC, d.ownLL, b1IP6)
	p, why := parseIPv6(req)
	if why != 0 || !p.src.IsUnspecified() {
		t.Fatalf("NS: %+v %v", p, why)
	}
	if m, why := parseND(req, p); why != 0 || m.hasLL || len(req) != ethHeaderLen+ipv6Header+ndMsgLen {
		t.Errorf("NS from :: %+v %v, %d bytes", m, why, len(req))
	}
	d.neigh.track(map[netip.Addr]bool{b1IP6: true}, d.now())
	d.neigh.due(d.now())
	// The server's answer to a solicitation from ::, to all nodes.
	na := ndFrame(make([]byte, ndFrameLen), [6]byte{0x33, 0x33, 0, 0, 0, 1}, b1MAC, b1IP6, netip.MustParseAddr("ff02::1"), ndMessage{typ: icmpNA, flags: naOverride, target: b1IP6, ll: b1MAC, hasLL: true})
	if _, why := d.handle(vnet(na), false, make([]byte, replySize), testReadState(), d.now()); why != 0 {
		t.Errorf("NA to all nodes: %v", why)
	}
	if mac, ok := d.neigh.mac(b1IP6); !ok || mac != b1MAC {
		t.Errorf("learnt %x %v", mac, ok)
	}
}
