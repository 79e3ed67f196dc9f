//go:build linux

package splice

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
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
	flows *ebpf.Map
	prog  *ebpf.Program
}

func newProg(t testing.TB) *progFixture {
	t.Helper()
	needRoot(t)
	flows, prog, err := loadProgram()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close(); flows.Close() })
	return &progFixture{flows, prog}
}

// frame is an Ethernet frame holding seg (segment's IPv4 packet).
func frame(ip []byte) []byte {
	f := make([]byte, 14+len(ip))
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	copy(f[14:], ip)
	return f
}

// tcpOpts builds an IPv4 packet with the given TCP options, flags and
// payload, checksums right.
func tcpOpts(src, dst netip.AddrPort, seq, ack uint32, flags byte, win uint16, opts, payload []byte) []byte {
	th := 20 + len(opts)
	b := make([]byte, 20+th+len(payload))
	b[0], b[8], b[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s4[:])
	copy(b[16:], d4[:])
	binary.BigEndian.PutUint16(b[10:], ipChecksum(b[:20]))
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], src.Port())
	binary.BigEndian.PutUint16(t[2:], dst.Port())
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte(th/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], win)
	copy(t[20:], opts)
	copy(t[th:], payload)
	binary.BigEndian.PutUint16(t[16:], tcpChecksum(s4, d4, t))
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
	if ipChecksum(ip[:20]) != 0 {
		t.Errorf("IPv4 header checksum wrong: %x", ip[:20])
	}
	var s4, d4 [4]byte
	copy(s4[:], ip[12:16])
	copy(d4[:], ip[16:20])
	if tcpChecksum(s4, d4, ip[20:]) != 0 {
		t.Errorf("TCP checksum wrong")
	}
}

func tsOpt(tsval, tsecr uint32) []byte {
	o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[4:], tsval)
	binary.BigEndian.PutUint32(o[8:], tsecr)
	return o
}

func sackOpt(edges ...uint32) []byte {
	o := []byte{1, 1, 5, byte(2 + 4*len(edges))}
	for _, e := range edges {
		o = binary.BigEndian.AppendUint32(o, e)
	}
	return o
}

// install puts the two directions client->pen (rewritten to pen->server)
// and server->pen into flows.
func (f *progFixture) install(t testing.TB, up, down flowValue) {
	t.Helper()
	kc, ks := key(tClient, tPen), key(tServer, tPenUp)
	kps, kpc := key(tPenUp, tServer), key(tPen, tClient)
	copy(up.Addrs[:], kps[0:8])
	copy(up.Ports[:], kps[8:12])
	up.Peer = ks
	copy(down.Addrs[:], kpc[0:8])
	copy(down.Ports[:], kpc[8:12])
	down.Peer = kc
	for k, v := range map[flowKey]flowValue{kc: up, ks: down, kpc: {Flags: fDrop}, kps: {Flags: fDrop}} {
		if err := f.flows.Put(k, v); err != nil {
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

func (f *progFixture) value(t testing.TB, src, dst netip.AddrPort) flowValue {
	t.Helper()
	var v flowValue
	if err := f.flows.Lookup(key(src, dst), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestProgramRewrites(t *testing.T) {
	f := newProg(t)
	var seqAdd, ackAdd, base, start uint32 = 1000, 0xfffff000, 777777, 0xfffffff0
	f.install(t,
		flowValue{Flags: fTS | fWin, SeqAdd: seqAdd, AckAdd: ackAdd, TsBase: base, LShift: 7, RShift: 9},
		flowValue{Flags: fTS | fWin, SeqAdd: 0 - ackAdd, AckAdd: 0 - seqAdd, TsBase: 5000})
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
}

func TestProgramDropsPensOwn(t *testing.T) {
	f := newProg(t)
	f.install(t, flowValue{}, flowValue{})
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
	f.Add(byte(0x18), uint16(1000), append(tsOpt(1, 2), sackOpt(10, 20)...), []byte("hello"))
	f.Add(byte(0x10), uint16(0), sackOpt(1, 2, 3, 4, 5, 6, 7, 8), []byte{})
	f.Add(byte(0x11), uint16(65535), []byte{2, 4, 5, 0xb4, 1, 3, 3, 7}, []byte("x"))
	f.Add(byte(0x14), uint16(1), []byte{1, 1, 8, 10, 0, 0, 0, 1}, []byte{})
	p := newProg(f) // one program for every input: loading one takes milliseconds
	f.Fuzz(func(t *testing.T, flags byte, win uint16, opts, payload []byte) {
		if len(opts) > 40 || len(payload) > 1400 {
			return
		}
		for len(opts)%4 != 0 {
			opts = append(opts, 0)
		}
		p.install(t,
			flowValue{Flags: fTS | fWin, SeqAdd: 12345, AckAdd: 54321, TsBase: 99, LShift: 14, RShift: 0},
			flowValue{Flags: fTS | fWin, SeqAdd: 1 << 31, AckAdd: 3, TsBase: 7})
		in := tcpOpts(tClient, tPen, 1, 2, flags, win, opts, payload)
		ret, out := p.run(t, in, 0)
		switch int32(ret) {
		case tcxPass:
			checkSums(t, out)
			if !bytes.Equal(out[20+20+len(opts):], payload) {
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
