package dsr

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mdlayher/arp"
)

// seedFrames are the frames every frame fuzz target starts from (also
// written to testdata/fuzz by TestWriteFuzzSeeds).
func seedFrames() [][]byte {
	var out [][]byte
	for _, name := range []string{"none", "linux", "no-ts", "no-sack", "40-bytes"} {
		out = append(out, tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, tcpSYN, synOptions[name], nil))
		out = append(out, tcpFrame(penMAC, clientMAC, clientIP, netip.MustParseAddr("198.18.0.130"), 40000, 22, tcpSYN, synOptions[name], nil))
	}
	out = append(out,
		tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, tcpACK, nil, []byte("GET / HTTP/1.1\r\n\r\n")),
		udpFrame(penMAC, clientMAC, clientIP, vip, 5353, 80, []byte("query")),
		arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, vip),
		arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, netip.MustParseAddr("198.18.0.131")),
		arpFrame(make([]byte, arpFrameLen), penMAC, b1MAC, arp.OperationReply, b1MAC, b1IP, penMAC, netip.IPv4Unspecified()),
	)
	frag := tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, tcpACK, nil, []byte("12345678"))
	binary.BigEndian.PutUint16(frag[20:22], 0x2001)
	out = append(out, frag,
		tcp6Frame(penMAC, clientMAC, client6, vip6, 40000, 80, tcpSYN, nil, nil),
		tcp6Frame(penMAC, clientMAC, client6, vip6, 40000, 80, tcpACK, [][]byte{{0, 0, 1, 4, 0, 0, 0, 0}, {44, 0, 0, 0x10, 0, 0, 0, 1}}, []byte("x")),
		nsRequest(make([]byte, ndFrameLen), clientMAC, client6, vip6),
		naReply(make([]byte, ndFrameLen), penMAC, b1MAC, b1IP6, penLL),
	)
	return out
}

// FuzzHandle feeds any frame to the frame handler of an IPv4 and of an
// IPv6 DSR (Ethernet, ARP, IPv4, IPv6, neighbour discovery, TCP and UDP
// parsing, forwarding, ARP and ND answers and the tarpit): it never
// panics, a forwarded frame differs from its original only in its
// Ethernet addresses, and every reply it builds has right checksums.
func FuzzHandle(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	pool := twoServers()
	pool6 := &fakePool{s: Servers{List: []Backend{{Index: 0, Addr: b1IP6, Up: true}, {Index: 1, Addr: b2IP6, Up: true}}}}
	f.Fuzz(func(t *testing.T, frame []byte) {
		fuzzHandle(t, newDSR(Config{Pool: pool, VIP: vip, Tarpit: tarpitNet.Contains}, "fuzz0", penMAC, nil), frame)
		fuzzHandle(t, newDSR(Config{Pool: pool6, VIP: vip6}, "fuzz0", penMAC, []netip.Addr{penLL}), frame)
	})
}

func fuzzHandle(t *testing.T, d *DSR, frame []byte) {
	addrs := map[netip.Addr]bool{}
	for _, b := range d.cfg.Pool.Servers().List {
		addrs[b.Addr] = true
	}
	d.neigh.track(addrs, time.Unix(0, 0))
	d.neigh.due(time.Unix(0, 0)) // requests out: replies in the input are taken
	d.update(d.cfg.Pool.Servers())
	in := vnet(frame)
	orig := append([]byte(nil), in...)
	out, why := d.handle(in, false, make([]byte, replySize), testReadState(), time.Unix(1, 0))
	if out == nil {
		if why == 0 && etherType(frame) != etherTypeARP && etherType(frame) != etherTypeIPv6 {
			t.Fatal("frame neither sent nor dropped")
		}
		return
	}
	if why != 0 {
		t.Fatalf("frame sent and dropped (%v)", why)
	}
	o := out[vnetHeaderLen:]
	switch {
	case &out[0] == &in[0]: // forwarded in place
		if !bytes.Equal(o[12:], orig[vnetHeaderLen+12:]) || [6]byte(o[6:12]) != penMAC {
			t.Fatal("forwarding changed more than the Ethernet addresses")
		}
	case etherType(o) == etherTypeARP:
		if _, why := parseARP(o); why != 0 || len(o) != arpFrameLen {
			t.Fatalf("ARP reply does not parse: %v", why)
		}
	case etherType(o) == etherTypeIPv6:
		p, why := parseIPv6(o)
		if why != 0 {
			t.Fatalf("NA does not parse: %v", why)
		}
		if m, why := parseND(o, p); why != 0 || m.typ != icmpNA || m.target != vip6 {
			t.Fatalf("NA wrong: %v %+v", why, m)
		}
	default:
		p, why := parseIPv4(o)
		if why != 0 || !checksumOK(o, p) || p.flags != tcpSYN|tcpACK {
			t.Fatalf("tarpit reply wrong: %v %+v", why, p)
		}
	}
}

// FuzzTarpitReply builds a SYN with any options and payload: the reply's
// checksums are right for every one of them (Pen's are not).
func FuzzTarpitReply(f *testing.F) {
	for _, o := range synOptions {
		f.Add(o, []byte(nil), uint32(1), uint16(40000))
	}
	f.Add([]byte{}, []byte("data"), uint32(0xffffffff), uint16(1))
	f.Fuzz(func(t *testing.T, opts, payload []byte, seq uint32, sport uint16) {
		if len(opts) > 40 {
			opts = opts[:40]
		}
		if len(payload) > 1400 {
			payload = payload[:1400]
		}
		syn := tcpFrame(penMAC, clientMAC, clientIP, vip, sport, 22, tcpSYN, opts, payload)
		binary.BigEndian.PutUint32(syn[ethHeaderLen+ipv4MinHeader+4:], seq)
		p, why := parseIPv4(syn)
		if why != 0 {
			t.Fatal(why)
		}
		b := tarpitReply(make([]byte, tarpitReplyLen), syn, p, penMAC, 7)
		r, why := parseIPv4(b)
		if why != 0 || !checksumOK(b, r) {
			t.Fatalf("reply: %v, checksum ok %v", why, checksumOK(b, r))
		}
		if binary.BigEndian.Uint32(b[r.l4+8:]) != seq+1 || r.dport != sport {
			t.Fatal("reply does not acknowledge the SYN")
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpus under testdata/fuzz when
// PEN_WRITE_FUZZ_SEEDS is set.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PEN_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set PEN_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzHandle")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seedFrames() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir = filepath.Join("testdata", "fuzz", "FuzzTarpitReply")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, o := range synOptions {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(\"\")\nuint32(1)\nuint16(40000)\n", o)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
