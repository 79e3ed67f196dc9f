//go:build linux

package splice

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// The program is run by the kernel on frames built here
// (BPF_PROG_TEST_RUN), and what it returns is checked field by field,
// checksums included.

var (
	tClient = netip.MustParseAddrPort("10.0.0.1:40000")
	tPen    = netip.MustParseAddrPort("10.0.0.2:80")
	tPenUp  = netip.MustParseAddrPort("10.0.0.2:50000")
	tServer = netip.MustParseAddrPort("10.0.0.3:8080")
)

type progFixture struct {
	flows, flows6, ends *ebpf.Map
	prog                *ebpf.Program
}

func newProg(t testing.TB) *progFixture {
	t.Helper()
	needRoot(t)
	flows, flows6, ends, prog, err := loadProgram()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close(); flows.Close(); flows6.Close(); ends.Close() })
	return &progFixture{flows, flows6, ends, prog}
}

// endTags reads what the program has put in the ends ring buffer.
func (f *progFixture) endTags(t testing.TB) []uint64 {
	t.Helper()
	rd, err := ringbuf.NewReader(f.ends)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var tags []uint64
	for {
		rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return tags
		}
		if err != nil {
			t.Fatal(err)
		}
		tags = append(tags, binary.NativeEndian.Uint64(rec.RawSample))
	}
}

// TestValueLayout: the offsets the program reads and writes a flow value
// at are those of the Go struct that fills it.
func TestValueLayout(t *testing.T) {
	var v flowValue
	for _, c := range []struct {
		name      string
		off, want uintptr
	}{
		{"Flags", unsafe.Offsetof(v.Flags), vFlags},
		{"Acked", unsafe.Offsetof(v.Acked), vAcked},
		{"Fins", unsafe.Offsetof(v.Fins), vFins},
		{"FinEnd", unsafe.Offsetof(v.FinEnd), vFinEnd},
		{"Ifindex", unsafe.Offsetof(v.Ifindex), vIfindex},
		{"Tag", unsafe.Offsetof(v.Tag), vTag},
		{"Addrs", unsafe.Offsetof(v.Addrs), vAddrs},
	} {
		if c.off != c.want {
			t.Errorf("%s at %d, the program has it at %d", c.name, c.off, c.want)
		}
	}
}

// frame is an Ethernet frame holding the IP packet ip.
func frame(ip []byte) []byte {
	f := make([]byte, 14+len(ip))
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	if ip[0]>>4 == 6 {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
	}
	copy(f[14:], ip)
	return f
}

// ipLen is the IP header's length of the packet ip (IPv4 without
// options, or IPv6).
func ipLen(ip []byte) int {
	if ip[0]>>4 == 6 {
		return 40
	}
	return 20
}

// addrs are the IP packet's source and destination addresses.
func addrs(ip []byte) (src, dst []byte) {
	if ipLen(ip) == 40 {
		return ip[8:24], ip[24:40]
	}
	return ip[12:16], ip[16:20]
}

// tcpOpts builds an IP packet (IPv4 or IPv6, as the addresses are) with
// the given TCP options, flags and payload, checksums right (segment's,
// with the IPv4 header's checksum that the kernel fills in for pen).
func tcpOpts(src, dst netip.AddrPort, seq, ack uint32, flags byte, win uint16, opts, payload []byte) []byte {
	b := segment(src, dst, seq, ack, flags, win, opts, payload)
	if src.Addr().Is4() {
		binary.BigEndian.PutUint16(b[10:], ipChecksum(b[:20]))
	}
	return b
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// checkSums fails unless the IPv4 header's and the TCP segment's
// checksums are right.
func checkSums(t testing.TB, ip []byte) {
	t.Helper()
	if ipLen(ip) == 20 && ipChecksum(ip[:20]) != 0 {
		t.Errorf("IPv4 header checksum wrong: %x", ip[:20])
	}
	s, d := addrs(ip)
	if tcpChecksum(s, d, ip[ipLen(ip):]) != 0 {
		t.Errorf("TCP checksum wrong")
	}
}

func sackOpt(edges ...uint32) []byte {
	o := []byte{1, 1, 5, byte(2 + 4*len(edges))}
	for _, e := range edges {
		o = binary.BigEndian.AppendUint32(o, e)
	}
	return o
}

// install puts the two directions client->pen (rewritten to pen->server)
// and server->pen into flows (or flows6, as the addresses are).
func (f *progFixture) install(t testing.TB, up, down flowCommon) {
	t.Helper()
	f.installAt(t, [4]netip.AddrPort{tClient, tPen, tPenUp, tServer}, up, down)
}

// installAt is install for the addresses client, pen, pen's address
// toward the server, server.
func (f *progFixture) installAt(t testing.TB, a [4]netip.AddrPort, up, down flowCommon) {
	t.Helper()
	kc, ks := key(a[0], a[1]), key(a[3], a[2])
	kps, kpc := key(a[2], a[3]), key(a[1], a[0])
	v6 := a[0].Addr().Is6()
	own := flowCommon{Flags: fDrop}
	vals := []any{
		flowValueOf(up, kps, ks, v6), flowValueOf(down, kpc, kc, v6),
		flowValueOf(own, nil, nil, v6), flowValueOf(own, nil, nil, v6),
	}
	m := f.flows
	if v6 {
		m = f.flows6
	}
	for i, k := range [][]byte{kc, ks, kpc, kps} {
		if err := m.Put(k, vals[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *progFixture) run(t testing.TB, ip []byte, mark uint32) (uint32, []byte) {
	t.Helper()
	in := frame(ip)
	out := make([]byte, len(in)+256)
	var ctx [48]uint32
	ctx[2] = mark
	ret, err := f.prog.Run(&ebpf.RunOptions{Data: in, DataOut: out, Context: ctx[:]})
	if err != nil {
		t.Fatal(err)
	}
	return ret, out[14:len(in)]
}

func (f *progFixture) value(t testing.TB, src, dst netip.AddrPort) flowCommon {
	t.Helper()
	if src.Addr().Is6() {
		var v flowValue6
		if err := f.flows6.Lookup(key(src, dst), &v); err != nil {
			t.Fatal(err)
		}
		return v.flowCommon
	}
	var v flowValue
	if err := f.flows.Lookup(key(src, dst), &v); err != nil {
		t.Fatal(err)
	}
	return v.flowCommon
}

func TestProgramRewrites(t *testing.T) {
	f := newProg(t)
	var seqAdd, ackAdd, base, start uint32 = 1000, 0xfffff000, 777777, 0xfffffff0
	up := flowCommon{Flags: fTS | fWin, SeqAdd: seqAdd, AckAdd: ackAdd, TsBase: base, LShift: 7, RShift: 9}
	binary.NativeEndian.PutUint64(up.Tag[:], 0x0123456789abcdef)
	f.install(t, up,
		flowCommon{Flags: fTS | fWin, SeqAdd: 0 - ackAdd, AckAdd: 0 - seqAdd, TsBase: 5000})
	payload := bytes.Repeat([]byte("data"), 25)
	opts := append(tsOpt(100, 200), sackOpt(5000, 6000, 7000, 8000)...)
	ret, out := f.run(t, tcpOpts(tClient, tPen, start, 3000, 0x18, 1000, opts, payload), 0)
	if ret != tcxPass {
		t.Fatalf("returned %d, want %d (pass)", int32(ret), tcxPass)
	}
	checkSums(t, out)
	tc := out[20:]
	if got := netip.AddrFrom4([4]byte(out[12:16])); got != tPenUp.Addr() {
		t.Errorf("source %v, want %v", got, tPenUp.Addr())
	}
	if got := netip.AddrFrom4([4]byte(out[16:20])); got != tServer.Addr() {
		t.Errorf("destination %v, want %v", got, tServer.Addr())
	}
	if sp, dp := binary.BigEndian.Uint16(tc[0:]), binary.BigEndian.Uint16(tc[2:]); sp != tPenUp.Port() || dp != tServer.Port() {
		t.Errorf("ports %d->%d", sp, dp)
	}
	be := binary.BigEndian.Uint32
	if got := be(tc[4:]); got != start+seqAdd {
		t.Errorf("seq %#x, want %#x", got, start+seqAdd)
	}
	if got := be(tc[8:]); got != 3000+ackAdd {
		t.Errorf("ack %#x, want %#x", got, 3000+ackAdd)
	}
	if got := binary.BigEndian.Uint16(tc[14:]); got != 1000<<7>>9 {
		t.Errorf("window %d, want %d", got, 1000<<7>>9)
	}
	if tsval, tsecr := be(tc[24:]), be(tc[28:]); tsval != base || tsecr != 0 {
		t.Errorf("timestamps %d %d, want %d 0 (the first: learnt; nothing to echo yet)", tsval, tsecr, base)
	}
	for i, e := range []uint32{5000, 6000, 7000, 8000} {
		if got := be(tc[36+4*i:]); got != e+ackAdd {
			t.Errorf("SACK edge %d: %#x, want %#x", i, got, e+ackAdd)
		}
	}
	if !bytes.Equal(tc[52:], payload) {
		t.Error("the payload changed")
	}
	v := f.value(t, tClient, tPen)
	if v.Acked != 3000 || v.Nxt != start+seqAdd+100 || v.Flags&fLearned == 0 || v.TsvalAdd != base-100 {
		t.Errorf("entry: acked %d nxt %#x flags %#x tsvalAdd %d", v.Acked, v.Nxt, v.Flags, v.TsvalAdd)
	}
	// The other direction now echoes: TSecr less what was added.
	w := f.value(t, tServer, tPenUp)
	if w.Flags&fEcr == 0 || w.TsecrAdd != 0-(base-100) {
		t.Errorf("the other direction: flags %#x tsecrAdd %d", w.Flags, int32(w.TsecrAdd))
	}
	ret, out = f.run(t, tcpOpts(tServer, tPenUp, 9000, start+seqAdd+100, 0x10, 300, tsOpt(50, base+3), nil), 0)
	if ret != tcxPass {
		t.Fatalf("returned %d", int32(ret))
	}
	checkSums(t, out)
	tc = out[20:]
	if tsval, tsecr := be(tc[24:]), be(tc[28:]); tsval != 5000 || tsecr != 103 {
		t.Errorf("server's timestamps %d %d, want 5000 103", tsval, tsecr)
	}
	if got := be(tc[8:]); got != start+100 {
		t.Errorf("server's ack %#x, want %#x", got, start+100)
	}
	// The client's next segment, a FIN, five ticks later.
	ret, out = f.run(t, tcpOpts(tClient, tPen, start+100, 9001, 0x11, 1000, tsOpt(105, 5000), nil), 0)
	if ret != tcxPass {
		t.Fatalf("returned %d", int32(ret))
	}
	checkSums(t, out)
	if tsval, tsecr := be(out[20+24:]), be(out[20+28:]); tsval != base+5 || tsecr != 50 {
		t.Errorf("timestamps %d %d, want %d 50", tsval, tsecr, base+5)
	}
	v = f.value(t, tClient, tPen)
	if v.Fins != 1 || v.FinEnd != start+seqAdd+101 {
		t.Errorf("FIN: %d, end %#x", v.Fins, v.FinEnd)
	}
	// The FIN, and only the FIN, told pen, with the pair's tag.
	if tags := f.endTags(t); len(tags) != 1 || tags[0] != 0x0123456789abcdef {
		t.Errorf("ends: %#x, want the tag once", tags)
	}
}

func TestProgramDropsPensOwn(t *testing.T) {
	f := newProg(t)
	f.install(t, flowCommon{}, flowCommon{})
	seg := tcpOpts(tPen, tClient, 1, 2, 0x10, 100, nil, nil)
	if ret, _ := f.run(t, seg, 0); ret != tcxDrop {
		t.Errorf("pen's own segment: %d, want drop", int32(ret))
	}
	if ret, _ := f.run(t, seg, injectMark); ret != uint32(tcxNext&0xffffffff) {
		t.Errorf("pen's injected segment: %d, want next", int32(ret))
	}
	other := tcpOpts(tClient, netip.MustParseAddrPort("10.0.0.2:81"), 1, 2, 0x10, 100, nil, nil)
	if ret, out := f.run(t, other, 0); ret != uint32(tcxNext&0xffffffff) || !bytes.Equal(out, other) {
		t.Errorf("a segment of another connection: %d", int32(ret))
	}
	syn := tcpOpts(tClient, tPen, 1, 0, 0x02, 100, nil, nil)
	if ret, out := f.run(t, syn, 0); ret != uint32(tcxNext&0xffffffff) || !bytes.Equal(out, syn) {
		t.Errorf("a SYN: %d", int32(ret))
	}
}

// FuzzProgram: whatever options, flags and payload a segment carries,
// the program passes it on unchanged in length and payload, with
// checksums right, or leaves it alone.
func FuzzProgram(f *testing.F) {
	f.Add(false, byte(0x18), uint16(1000), append(tsOpt(1, 2), sackOpt(10, 20)...), []byte("hello"))
	f.Add(false, byte(0x10), uint16(0), sackOpt(1, 2, 3, 4, 5, 6, 7, 8), []byte{})
	f.Add(false, byte(0x11), uint16(65535), []byte{2, 4, 5, 0xb4, 1, 3, 3, 7}, []byte("x"))
	f.Add(false, byte(0x14), uint16(1), []byte{1, 1, 8, 10, 0, 0, 0, 1}, []byte{})
	f.Add(true, byte(0x18), uint16(1000), append(tsOpt(1, 2), sackOpt(10, 20)...), []byte("hello"))
	f.Add(true, byte(0x11), uint16(7), sackOpt(1, 2), []byte{})
	p := newProg(f) // one program for every input: loading one takes milliseconds
	f.Fuzz(func(t *testing.T, v6 bool, flags byte, win uint16, opts, payload []byte) {
		if len(opts) > 40 || len(payload) > 1400 {
			return
		}
		for len(opts)%4 != 0 {
			opts = append(opts, 0)
		}
		a := [4]netip.AddrPort{tClient, tPen, tPenUp, tServer}
		if v6 {
			for i, s := range []string{"[2001:db8::1]:1", "[2001:db8::2]:2", "[2001:db8::3]:3", "[2001:db8::4]:4"} {
				a[i] = netip.MustParseAddrPort(s)
			}
		}
		p.installAt(t, a,
			flowCommon{Flags: fTS | fWin, SeqAdd: 12345, AckAdd: 54321, TsBase: 99, LShift: 14, RShift: 0},
			flowCommon{Flags: fTS | fWin, SeqAdd: 1 << 31, AckAdd: 3, TsBase: 7})
		in := tcpOpts(a[0], a[1], 1, 2, flags, win, opts, payload)
		ret, out := p.run(t, in, 0)
		switch int32(ret) {
		case tcxPass:
			checkSums(t, out)
			if !bytes.Equal(out[ipLen(out)+20+len(opts):], payload) {
				t.Error("the payload changed")
			}
		case tcxNext:
			if !bytes.Equal(out, in) {
				t.Error("a segment left alone changed")
			}
		default:
			t.Errorf("returned %d", int32(ret))
		}
	})
}

// The same over IPv6: no header checksum, 32 bytes of addresses in the
// pseudo-header.
func TestProgramRewrites6(t *testing.T) {
	f := newProg(t)
	a := [4]netip.AddrPort{
		netip.MustParseAddrPort("[2001:db8:1::1]:40000"), netip.MustParseAddrPort("[2001:db8:1::2]:80"),
		netip.MustParseAddrPort("[2001:db8:2::2]:50000"), netip.MustParseAddrPort("[2001:db8:2::3]:8080"),
	}
	var seqAdd, ackAdd, base uint32 = 77, 0x80000000, 1 << 30
	f.installAt(t, a,
		flowCommon{Flags: fTS | fWin, SeqAdd: seqAdd, AckAdd: ackAdd, TsBase: base, LShift: 2, RShift: 4},
		flowCommon{Flags: fTS | fWin, SeqAdd: 0 - ackAdd, AckAdd: 0 - seqAdd, TsBase: 9})
	payload := bytes.Repeat([]byte("six!"), 300)
	opts := append(tsOpt(100, 200), sackOpt(5000, 6000)...)
	ret, out := f.run(t, tcpOpts(a[0], a[1], 1000, 3000, 0x18, 4000, opts, payload), 0)
	if ret != tcxPass {
		t.Fatalf("returned %d, want %d (pass)", int32(ret), tcxPass)
	}
	checkSums(t, out)
	if s, d := netip.AddrFrom16([16]byte(out[8:24])), netip.AddrFrom16([16]byte(out[24:40])); s != a[2].Addr() || d != a[3].Addr() {
		t.Errorf("addresses %v -> %v, want %v -> %v", s, d, a[2].Addr(), a[3].Addr())
	}
	tc := out[40:]
	be := binary.BigEndian.Uint32
	if sp, dp := binary.BigEndian.Uint16(tc[0:]), binary.BigEndian.Uint16(tc[2:]); sp != a[2].Port() || dp != a[3].Port() {
		t.Errorf("ports %d->%d", sp, dp)
	}
	if seq, ack := be(tc[4:]), be(tc[8:]); seq != 1000+seqAdd || ack != 3000+ackAdd {
		t.Errorf("seq %d ack %#x", seq, ack)
	}
	if got := binary.BigEndian.Uint16(tc[14:]); got != 4000<<2>>4 {
		t.Errorf("window %d, want %d", got, 4000<<2>>4)
	}
	if tsval := be(tc[24:]); tsval != base {
		t.Errorf("TSval %d, want %d", tsval, base)
	}
	if l, r := be(tc[36:]), be(tc[40:]); l != 5000+ackAdd || r != 6000+ackAdd {
		t.Errorf("SACK block %#x-%#x", l, r)
	}
	if !bytes.Equal(tc[44:], payload) {
		t.Error("the payload changed")
	}
	if v := f.value(t, a[0], a[1]); v.Acked != 3000 || v.Nxt != 1000+seqAdd+uint32(len(payload)) {
		t.Errorf("entry: acked %d nxt %d", v.Acked, v.Nxt)
	}
	if w := f.value(t, a[3], a[2]); w.Flags&fEcr == 0 {
		t.Errorf("the other direction did not learn the echo offset")
	}
	// Pen's own socket toward the server: dropped.
	if ret, _ := f.run(t, tcpOpts(a[2], a[3], 1, 2, 0x10, 100, nil, nil), 0); ret != tcxDrop {
		t.Errorf("pen's own segment: %d, want drop", int32(ret))
	}
}
