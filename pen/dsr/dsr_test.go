package dsr

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"golang.org/x/net/bpf"
)

// fakePool is a Pool whose servers the test sets.
type fakePool struct {
	mu     sync.Mutex
	s      Servers
	failed []int
}

func (p *fakePool) Servers() Servers {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.s
	s.List = append([]Backend(nil), s.List...)
	return s
}

func (p *fakePool) Failed(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed = append(p.failed, i)
	for j := range p.s.List {
		if p.s.List[j].Index == i {
			p.s.List[j].Up = false
		}
	}
}

func (p *fakePool) set(f func(*Servers)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.s)
}

var tarpitNet = netip.MustParsePrefix("198.18.0.128/28")

func testDSR(t *testing.T, pool *fakePool, cfg Config) *DSR {
	t.Helper()
	cfg.Pool = pool
	if !cfg.VIP.IsValid() {
		cfg.VIP = vip
	}
	d := newDSR(cfg, "test0", penMAC, []netip.Addr{netip.MustParseAddr("198.18.0.2")})
	return d
}

// learnAll asks for every server's MAC and answers each request as the
// server would.
func learnAll(t *testing.T, d *DSR, macs map[netip.Addr][6]byte) {
	t.Helper()
	s := d.cfg.Pool.Servers()
	addrs := map[netip.Addr]bool{}
	for _, b := range servers(s) {
		addrs[b.Addr] = true
	}
	d.backends.Store(&addrs)
	now := d.now()
	d.neigh.track(addrs, now)
	ask, _ := d.neigh.due(now)
	for _, a := range ask {
		mac, ok := macs[a]
		if !ok {
			continue
		}
		reply := arpFrame(make([]byte, arpFrameLen), penMAC, mac, arp.OperationReply, mac, a, penMAC, netip.IPv4Unspecified())
		if out, why := d.handle(vnet(reply), false, make([]byte, 200), testReadState(), now); out != nil || why != 0 {
			t.Fatalf("ARP reply from %v: out %v, %v", a, out != nil, why)
		}
	}
	d.update(d.cfg.Pool.Servers())
}

func vnet(f []byte) []byte { return append(make([]byte, vnetHeaderLen), f...) }

func testReadState() *readState {
	return &readState{limit: newLimiter(32, 64, 10000, 1), hit: map[netip.Addr]struct{}{}}
}

func twoServers() *fakePool {
	return &fakePool{s: Servers{List: []Backend{
		{Index: 0, Addr: b1IP, Weight: 1, Up: true},
		{Index: 1, Addr: b2IP, Weight: 3, Up: true},
	}}}
}

func TestForwardRewritesOnlyMACs(t *testing.T) {
	pool := twoServers()
	d := testDSR(t, pool, Config{Port: 80})
	learnAll(t, d, map[netip.Addr][6]byte{b1IP: b1MAC, b2IP: b2MAC})
	st := testReadState()
	syn := tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, tcpSYN, synOptions["linux"], nil)
	out, why := d.handle(vnet(syn), false, make([]byte, 200), st, d.now())
	if why != 0 || out == nil {
		t.Fatalf("handle: %v", why)
	}
	f := out[vnetHeaderLen:]
	if [6]byte(f[6:12]) != penMAC || ([6]byte(f[0:6]) != b1MAC && [6]byte(f[0:6]) != b2MAC) {
		t.Errorf("MACs %x -> %x", f[6:12], f[0:6])
	}
	if string(f[12:]) != string(syn[12:]) {
		t.Error("forwarding changed more than the Ethernet addresses")
	}
	for name, c := range map[string]struct {
		f    []byte
		want Reason
	}{
		"other port":     {tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 81, tcpSYN, nil, nil), DropNotOurs},
		"udp in tcp":     {udpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, nil), DropNotOurs},
		"other address":  {tcpFrame(penMAC, clientMAC, clientIP, b1IP, 40000, 80, tcpSYN, nil, nil), DropNotOurs},
		"ipv6":           {func() []byte { b := append([]byte(nil), syn...); b[12], b[13] = 0x86, 0xdd; return b }(), DropNotIPv4},
		"runt":           {syn[:10], DropMalformed},
		"arp not for us": {arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, b1IP), DropARP},
	} {
		if out, why := d.handle(vnet(c.f), false, make([]byte, 200), st, d.now()); out != nil || why != c.want {
			t.Errorf("%s: sent %v, reason %v, want %v", name, out != nil, why, c.want)
		}
	}
	if _, why := d.handle(vnet(syn), true, make([]byte, 200), st, d.now()); why != DropTruncated {
		t.Errorf("truncated frame: %v", why)
	}
	// Every port, UDP.
	du := testDSR(t, pool, Config{UDP: true})
	learnAll(t, du, map[netip.Addr][6]byte{b1IP: b1MAC, b2IP: b2MAC})
	if out, why := du.handle(vnet(udpFrame(penMAC, clientMAC, clientIP, vip, 5353, 9999, []byte("q"))), false, make([]byte, 200), st, d.now()); out == nil || why != 0 {
		t.Errorf("UDP to port 9999 with port 0: %v", why)
	}
	if _, why := du.handle(vnet(syn), false, make([]byte, 200), st, d.now()); why != DropNotOurs {
		t.Errorf("TCP in UDP mode: %v", why)
	}
}

func TestNoServerUntilMACKnown(t *testing.T) {
	pool := twoServers()
	d := testDSR(t, pool, Config{})
	d.update(pool.Servers())
	syn := tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, tcpSYN, nil, nil)
	if _, why := d.handle(vnet(syn), false, make([]byte, 200), testReadState(), d.now()); why != DropNoServer {
		t.Errorf("no MAC known: %v, want %v", why, DropNoServer)
	}
}

// ARP: requests for the VIP and tarpitted addresses are answered; MACs
// are learnt only from replies to our own requests.
func TestARP(t *testing.T) {
	pool := twoServers()
	d := testDSR(t, pool, Config{Tarpit: tarpitNet.Contains})
	st := testReadState()
	for _, ip := range []netip.Addr{vip, netip.MustParseAddr("198.18.0.130")} {
		req := arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, ip)
		out, why := d.handle(vnet(req), false, make([]byte, 200), st, d.now())
		if why != 0 || out == nil {
			t.Fatalf("request for %v: %v", ip, why)
		}
		p, why := parseARP(out[vnetHeaderLen:])
		if why != 0 {
			t.Fatal(why)
		}
		if p.Operation != arp.OperationReply || p.SenderIP != ip || [6]byte(p.SenderHardwareAddr) != penMAC || p.TargetIP != clientIP || [6]byte(p.TargetHardwareAddr) != clientMAC || [6]byte(out[vnetHeaderLen:][0:6]) != clientMAC {
			t.Errorf("reply for %v: %+v", ip, p)
		}
	}
	// Not for the servers' addresses, our own, or outside the tarpit.
	for _, ip := range []netip.Addr{b1IP, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.150")} {
		req := arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, ip)
		d.backends.Store(&map[netip.Addr]bool{b1IP: true})
		if out, why := d.handle(vnet(req), false, make([]byte, 200), st, d.now()); out != nil || why != DropARP {
			t.Errorf("request for %v answered (%v)", ip, why)
		}
	}
	// An unsolicited reply teaches nothing.
	reply := arpFrame(make([]byte, arpFrameLen), penMAC, b1MAC, arp.OperationReply, b1MAC, b1IP, penMAC, netip.IPv4Unspecified())
	d.neigh.track(map[netip.Addr]bool{b1IP: true}, d.now())
	if _, why := d.handle(vnet(reply), false, make([]byte, 200), st, d.now()); why != DropARP {
		t.Errorf("unsolicited reply: %v", why)
	}
	if _, ok := d.neigh.mac(b1IP); ok {
		t.Fatal("MAC learnt from an unsolicited reply")
	}
	// Asked: learnt; a second copy of the reply is not needed.
	ask, _ := d.neigh.due(d.now())
	if len(ask) != 1 || ask[0] != b1IP {
		t.Fatalf("asked %v", ask)
	}
	if _, why := d.handle(vnet(reply), false, make([]byte, 200), st, d.now()); why != 0 {
		t.Errorf("asked-for reply: %v", why)
	}
	if mac, ok := d.neigh.mac(b1IP); !ok || mac != b1MAC {
		t.Errorf("learnt %x %v", mac, ok)
	}
	if _, why := d.handle(vnet(reply), false, make([]byte, 200), st, d.now()); why != DropARP {
		t.Errorf("second reply: %v", why)
	}
}

// A server whose ARP goes unanswered is reported failed after three
// requests a second apart, and asked again with back-off.
func TestARPUnansweredFails(t *testing.T) {
	ns := newNeighbours(30 * time.Second)
	now := time.Unix(1000, 0)
	ns.track(map[netip.Addr]bool{b1IP: true}, now)
	var failedAt []time.Duration
	var askedAt []time.Duration
	for ms := 0; ms <= 40000; ms += 100 {
		ask, failed := ns.due(now.Add(time.Duration(ms) * time.Millisecond))
		if len(ask) > 0 {
			askedAt = append(askedAt, time.Duration(ms)*time.Millisecond)
		}
		if len(failed) > 0 {
			failedAt = append(failedAt, time.Duration(ms)*time.Millisecond)
		}
	}
	if len(failedAt) == 0 || failedAt[0] != 3*time.Second {
		t.Errorf("failed at %v, want first at 3s", failedAt)
	}
	want := []time.Duration{0, 1 * time.Second, 2 * time.Second, 3 * time.Second, 5 * time.Second, 9 * time.Second, 17 * time.Second, 33 * time.Second}
	if fmt.Sprint(askedAt) != fmt.Sprint(want) {
		t.Errorf("asked at %v, want %v", askedAt, want)
	}
}

func TestLookupWeightsAndStability(t *testing.T) {
	mk := func(ws ...int) []candidate {
		var c []candidate
		for i, w := range ws {
			a := netip.AddrFrom4([4]byte{198, 18, 1, byte(i + 1)})
			c = append(c, candidate{id: serverID(a), weight: w, target: &target{index: i, addr: a}})
		}
		return c
	}
	count := func(l *lookup) map[int]int {
		n := map[int]int{}
		for _, s := range l.slots {
			n[l.targets[s].index]++
		}
		return n
	}
	l := buildLookup(mk(1, 3))
	n := count(l)
	if r := float64(n[1]) / float64(n[0]); r < 2.9 || r > 3.1 {
		t.Errorf("weights 1:3 give %v", n)
	}
	// Only the removed server's entries move; only entries going to a
	// reweighted server's or coming from it change.
	three := buildLookup(mk(1, 1, 1))
	c := mk(1, 1, 1)
	two := buildLookup([]candidate{c[0], c[2]})
	moved := 0
	for e := range three.slots {
		before, after := three.targets[three.slots[e]].index, two.targets[two.slots[e]].index
		if before != 1 && before != after {
			moved++
		}
	}
	if moved != 0 {
		t.Errorf("removing server 1 moved %d entries of other servers", moved)
	}
	heavier := mk(1, 2, 1)
	l2 := buildLookup(heavier)
	for e := range three.slots {
		before, after := three.targets[three.slots[e]].index, l2.targets[l2.slots[e]].index
		if before != after && after != 1 {
			t.Fatalf("raising server 1's weight moved entry %d from %d to %d", e, before, after)
		}
	}
	if got := count(l2); got[1] < tableSize/2-500 || got[1] > tableSize/2+500 {
		t.Errorf("weights 1:2:1 give %v", got)
	}
	if (&lookup{}).pick(1) != nil {
		t.Error("empty table picked a server")
	}
}

// Prio: only the lowest prio value among usable servers; the emergency
// server only when no server is usable.
func TestPrioAndEmergency(t *testing.T) {
	em := netip.MustParseAddr("198.18.0.13")
	emMAC := [6]byte{0x02, 0x50, 0x45, 0x4e, 0x00, 0x05}
	pool := &fakePool{s: Servers{
		Prio: true,
		List: []Backend{
			{Index: 0, Addr: b1IP, Prio: 2, Up: true},
			{Index: 1, Addr: b2IP, Prio: 1, Up: true},
		},
		Emergency: &Backend{Index: -1, Addr: em, Up: true},
	}}
	d := testDSR(t, pool, Config{})
	macs := map[netip.Addr][6]byte{b1IP: b1MAC, b2IP: b2MAC, em: emMAC}
	learnAll(t, d, macs)
	dest := func() [6]byte {
		t.Helper()
		syn := tcpFrame(penMAC, clientMAC, clientIP, vip, 40000, 80, tcpSYN, nil, nil)
		out, why := d.handle(vnet(syn), false, make([]byte, 200), testReadState(), d.now())
		if out == nil {
			return [6]byte{}
		}
		_ = why
		return [6]byte(out[vnetHeaderLen:][0:6])
	}
	if got := dest(); got != b2MAC {
		t.Errorf("prio: went to %x, want the prio 1 server %x", got, b2MAC)
	}
	pool.set(func(s *Servers) { s.List[1].Up = false })
	d.update(pool.Servers())
	if got := dest(); got != b1MAC {
		t.Errorf("prio 1 down: went to %x, want %x", got, b1MAC)
	}
	pool.set(func(s *Servers) { s.List[0].Up = false })
	d.update(pool.Servers())
	if got := dest(); got != emMAC {
		t.Errorf("all down: went to %x, want the emergency server %x", got, emMAC)
	}
	pool.set(func(s *Servers) { s.Emergency.Up = false })
	d.update(pool.Servers())
	if got := dest(); got != ([6]byte{}) {
		t.Errorf("nothing up: went to %x", got)
	}
}

func TestTarpit(t *testing.T) {
	pool := twoServers()
	pool.s.List[0].Addr = netip.MustParseAddr("198.18.0.129") // a server inside the tarpit's range
	d := testDSR(t, pool, Config{Tarpit: tarpitNet.Contains})
	learnAll(t, d, map[netip.Addr][6]byte{pool.s.List[0].Addr: b1MAC, b2IP: b2MAC})
	st := testReadState()
	hit := netip.MustParseAddr("198.18.0.130")
	syn := tcpFrame(penMAC, clientMAC, clientIP, hit, 40000, 22, tcpSYN, synOptions["linux"], nil)
	out, why := d.handle(vnet(syn), false, make([]byte, 200), st, d.now())
	if out == nil || why != 0 {
		t.Fatalf("SYN to a tarpitted address: %v", why)
	}
	r, _ := parseIPv4(out[vnetHeaderLen:])
	if !checksumOK(out[vnetHeaderLen:], r) || r.flags != tcpSYN|tcpACK {
		t.Errorf("reply %+v", r)
	}
	for name, c := range map[string]struct {
		f    []byte
		want Reason
	}{
		"ACK":              {tcpFrame(penMAC, clientMAC, clientIP, hit, 40000, 22, tcpACK, nil, []byte("x")), DropTarpit},
		"SYN to a server":  {tcpFrame(penMAC, clientMAC, clientIP, pool.s.List[0].Addr, 40000, 22, tcpSYN, nil, nil), DropNotOurs},
		"SYN to us":        {tcpFrame(penMAC, clientMAC, clientIP, netip.MustParseAddr("198.18.0.2"), 40000, 22, tcpSYN, nil, nil), DropNotOurs},
		"SYN out of range": {tcpFrame(penMAC, clientMAC, clientIP, netip.MustParseAddr("198.18.0.160"), 40000, 22, tcpSYN, nil, nil), DropNotOurs},
		"UDP":              {udpFrame(penMAC, clientMAC, clientIP, hit, 40000, 22, nil), DropNotOurs},
	} {
		if out, why := d.handle(vnet(c.f), false, make([]byte, 200), st, d.now()); out != nil || why != c.want {
			t.Errorf("%s: sent %v, %v, want %v", name, out != nil, why, c.want)
		}
	}
	// The VIP is never tarpitted, even when the list says so.
	dv := testDSR(t, pool, Config{Tarpit: func(netip.Addr) bool { return true }})
	if dv.tarpitted(vip) {
		t.Error("the VIP is tarpitted")
	}
	// Rate limit: one source gets its burst, then about its rate.
	now := time.Unix(2000, 0)
	st.limit = newLimiter(32, 64, 10000, 1)
	sent, limited := 0, 0
	for i := range 200 {
		syn := tcpFrame(penMAC, clientMAC, clientIP, hit, uint16(1000+i), 22, tcpSYN, nil, nil)
		out, why := d.handle(vnet(syn), false, make([]byte, 200), st, now.Add(time.Duration(i)*10*time.Millisecond))
		if out != nil {
			sent++
		}
		if why == DropRateLimit {
			limited++
		}
	}
	// 2 s at 32/s plus a burst of 64.
	if sent < 120 || sent > 130 || sent+limited != 200 {
		t.Errorf("one source got %d replies in 2 s (%d limited), want about 128", sent, limited)
	}
	if s := d.Stats(); s.TarpitAddrs != 1 || s.TarpitSYNs < 100 {
		t.Errorf("stats %+v", s)
	}
}

// The socket filter passes ARP, the VIP and SYNs (when tarpitting), and
// nothing else.
func TestFilter(t *testing.T) {
	prog, err := filter(vip, true, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	var insns []bpf.Instruction
	for _, r := range prog {
		insns = append(insns, r.Disassemble())
	}
	// x/net/bpf's VM cannot read the packet type (an ancillary load);
	// run the program from the EtherType check on.
	vm, err := bpf.NewVM(insns[3:])
	if err != nil {
		t.Fatal(err)
	}
	noTarpit, _ := filter(vip, false, nil, false)
	var insns2 []bpf.Instruction
	for _, r := range noTarpit {
		insns2 = append(insns2, r.Disassemble())
	}
	vm2, err := bpf.NewVM(insns2[3:])
	if err != nil {
		t.Fatal(err)
	}
	other := netip.MustParseAddr("198.18.0.130")
	frag := tcpFrame(penMAC, clientMAC, clientIP, other, 1, 2, tcpSYN, nil, nil)
	binary.BigEndian.PutUint16(frag[20:22], 10)
	for name, c := range map[string]struct {
		f           []byte
		want, want2 bool
	}{
		"arp":            {arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, vip), true, true},
		"vip tcp":        {tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpACK, nil, nil), true, true},
		"vip udp":        {udpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, nil), true, true},
		"syn other":      {tcpFrame(penMAC, clientMAC, clientIP, other, 1, 2, tcpSYN, synOptions["linux"], nil), true, false},
		"syn ece other":  {tcpFrame(penMAC, clientMAC, clientIP, other, 1, 2, tcpSYN|0xc0, nil, nil), true, false},
		"ack other":      {tcpFrame(penMAC, clientMAC, clientIP, other, 1, 2, tcpACK, nil, nil), false, false},
		"synack other":   {tcpFrame(penMAC, clientMAC, clientIP, other, 1, 2, tcpSYN|tcpACK, nil, nil), false, false},
		"udp other":      {udpFrame(penMAC, clientMAC, clientIP, other, 1, 2, nil), false, false},
		"fragment other": {frag, false, false},
		"ipv6": {func() []byte {
			b := tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpSYN, nil, nil)
			b[12], b[13] = 0x86, 0xdd
			return b
		}(), false, false},
	} {
		n, err := vm.Run(c.f)
		if err != nil {
			t.Fatal(err)
		}
		if (n > 0) != c.want {
			t.Errorf("%s: passed %v, want %v", name, n > 0, c.want)
		}
		n, _ = vm2.Run(c.f)
		if (n > 0) != c.want2 {
			t.Errorf("%s without tarpit: passed %v, want %v", name, n > 0, c.want2)
		}
	}
}

// With the fast path, the socket sees of the VIP's frames only the
// fragments the kernel program cannot place.
func TestFilterWithFastPath(t *testing.T) {
	prog, err := filter(vip, false, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	var insns []bpf.Instruction
	for _, r := range prog {
		insns = append(insns, r.Disassemble())
	}
	vm, err := bpf.NewVM(insns[3:])
	if err != nil {
		t.Fatal(err)
	}
	frag := tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 2, tcpACK, nil, nil)
	binary.BigEndian.PutUint16(frag[20:22], 10)
	for name, c := range map[string]struct {
		f    []byte
		want bool
	}{
		"arp":          {arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, vip), true},
		"vip tcp":      {tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpACK, nil, nil), false},
		"vip fragment": {frag, true},
		"syn other":    {tcpFrame(penMAC, clientMAC, clientIP, b1IP, 1, 2, tcpSYN, nil, nil), false},
	} {
		if n, _ := vm.Run(c.f); (n > 0) != c.want {
			t.Errorf("%s: passed %v, want %v", name, n > 0, c.want)
		}
	}
}

func TestFilterIPv6(t *testing.T) {
	ext := tcp6Frame(penMAC, clientMAC, client6, vip6, 1, 80, tcpACK, [][]byte{{44, 0, 0, 0x10, 0, 0, 0, 1}}, nil)
	for _, fast := range []bool{false, true} {
		prog, err := filter(vip6, false, nil, fast)
		if err != nil {
			t.Fatal(err)
		}
		var insns []bpf.Instruction
		for _, r := range prog {
			insns = append(insns, r.Disassemble())
		}
		vm, err := bpf.NewVM(insns[3:])
		if err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]struct {
			f    []byte
			want bool
		}{
			"ns":            {nsRequest(make([]byte, ndFrameLen), clientMAC, client6, vip6), true},
			"na":            {naReply(make([]byte, ndFrameLen), b1MAC, penMAC, b1IP6, penLL), true},
			"vip tcp":       {tcp6Frame(penMAC, clientMAC, client6, vip6, 1, 80, tcpACK, nil, nil), !fast},
			"vip fragment":  {ext, true},
			"other address": {tcp6Frame(penMAC, clientMAC, client6, b1IP6, 1, 80, tcpACK, nil, nil), false},
			"ipv4 vip":      {tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpACK, nil, nil), false},
			"arp":           {arpRequest(make([]byte, arpFrameLen), clientMAC, clientIP, vip), true},
		} {
			if n, _ := vm.Run(c.f); (n > 0) != c.want {
				t.Errorf("fast path %v, %s: passed %v, want %v", fast, name, n > 0, c.want)
			}
		}
	}
}

// With the tarpit's networks, only SYNs to them pass the filter.
func TestFilterTarpitNets(t *testing.T) {
	nets := []TarpitNet{
		{Addr: netip.MustParseAddr("198.18.0.128"), Mask: [4]byte{255, 255, 255, 240}},
		{Addr: netip.MustParseAddr("198.18.7.0"), Mask: [4]byte{255, 255, 0, 255}}, // not contiguous
	}
	prog, err := filter(vip, true, nets, false)
	if err != nil {
		t.Fatal(err)
	}
	var insns []bpf.Instruction
	for _, r := range prog {
		insns = append(insns, r.Disassemble())
	}
	vm, err := bpf.NewVM(insns[3:])
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]bool{
		"198.18.0.130": true, "198.18.0.143": true, "198.18.0.144": false,
		"198.18.9.0": true, "198.18.9.1": false, "198.18.0.2": false,
	} {
		f := tcpFrame(penMAC, clientMAC, clientIP, netip.MustParseAddr(dst), 1, 2, tcpSYN, nil, nil)
		if n, _ := vm.Run(f); (n > 0) != want {
			t.Errorf("SYN to %s: passed %v, want %v", dst, n > 0, want)
		}
	}
	if n, _ := vm.Run(tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpACK, nil, nil)); n == 0 {
		t.Error("the VIP's frames are filtered out")
	}
}
