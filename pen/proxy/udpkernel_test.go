package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

func needUDPKernel(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "udp_kernel needs root (CAP_BPF and CAP_NET_ADMIN) to load and attach its BPF program")
	}
	if _, err := getUDPKernel(); err != nil {
		testenv.Skip(t, "BPF hash maps and sched_cls programs are not available: "+err.Error())
	}
}

// kernelPackets is what the kernel carried for every flow in its map.
func kernelPackets(t *testing.T) (packets, bytes uint64) {
	t.Helper()
	var k ukKey
	var v ukValue
	it := ukKern.flows.Iterate()
	for it.Next(&k, &v) {
		packets += v.Packets
		bytes += v.Bytes
	}
	var k6 ukKey6
	var v6 ukValue6
	it6 := ukKern.flows6.Iterate()
	for it6.Next(&k6, &v6) {
		packets += v6.Packets
		bytes += v6.Bytes
	}
	return
}

// The same over IPv6 (loopback): the kernel carries the flow, answers
// come from the address the client wrote to (a connected socket takes
// nothing else), their checksums are right (the kernel checks them on
// the way up: a wrong one is dropped, and the question goes unanswered),
// and the counts see every byte.
func TestUDPKernelFlowIPv6(t *testing.T) {
	needUDPKernel(t)
	a := udpServerAt(t, "A", net.IPv6loopback)
	h := start(t, "[::1]:0", func(s *Settings) { s.UDPKernel = true }, "udp",
		fmt.Sprintf("server 0 address ::1 port %d", udpPort(a)))
	c, err := net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(h.addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	askInKernel(t, h, c, " over IPv6")
	// udp_kernel turned off gives the flow back to pen: its two entries
	// leave the IPv6 map, and pen answers.
	if got := flows6(t); got != 2 {
		t.Errorf("the IPv6 map holds %d entries, want the flow's 2", got)
	}
	h.settings.UDPKernel = false
	h.reconfigure()
	if got := flows6(t); got != 0 {
		t.Errorf("the IPv6 map holds %d entries after udp_kernel went off", got)
	}
	if k := h.loop.Stats().KernelFlows; k != 0 {
		t.Errorf("the kernel still carries %d flows", k)
	}
	if got := udpAsk(t, c, "after"); got != "A:after" {
		t.Errorf("after udp_kernel went off: %q", got)
	}
}

// flows6 counts the entries of the IPv6 flow map.
func flows6(t *testing.T) int {
	t.Helper()
	var k ukKey6
	var v ukValue6
	n := 0
	it := ukKern.flows6.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// A flow that has carried ukAfter datagrams through pen is carried by the
// kernel: every question is answered, from the address the client wrote
// to, the kernel's counters grow and pen's do not, and the server's
// counts still see every byte.
func TestUDPKernelFlow(t *testing.T) {
	needUDPKernel(t)
	a := udpServer(t, "A")
	h := start(t, "0.0.0.0:0", func(s *Settings) { s.UDPKernel = true }, "udp",
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", a.LocalAddr().(*net.UDPAddr).Port))
	_, p, _ := net.SplitHostPort(h.addr)
	pen := netip.MustParseAddrPort("127.0.0.2:" + p) // to the wildcard listener
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(pen))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// udpAsk reads with Read on a connected socket: each answer came from
	// 127.0.0.2, or the kernel would not have given it.
	askInKernel(t, h, c, "")
}

// askInKernel asks 200 questions on c, a client of h's only flow, which
// its server "A" answers: every answer is right, the kernel carries the
// flow and all but its first datagrams, and the server's counts (which
// come from the kernel's counters once a second) see every byte. what
// (" over IPv6", or empty) goes into the log line.
func askInKernel(t *testing.T, h *harness, c *net.UDPConn, what string) {
	t.Helper()
	p0, _ := kernelPackets(t)
	const n = 200
	sent := 0
	for i := range n {
		msg := fmt.Sprintf("question %d", i)
		if got := udpAsk(t, c, msg); got != "A:"+msg {
			t.Fatalf("question %d: %q", i, got)
		}
		sent += len(msg)
	}
	if k := h.loop.Stats().KernelFlows; k != 1 {
		t.Errorf("the kernel carries %d flows, want 1", k)
	}
	p1, _ := kernelPackets(t)
	if got := p1 - p0; got < 2*(n-ukAfter-1) {
		t.Errorf("the kernel carried %d datagrams of %d questions and answers", got, 2*n)
	}
	t.Logf("%d questions%s: the kernel carried %d datagrams, pen %d", n, what, p1-p0, 2*n-int(p1-p0))
	deadline := time.Now().Add(3 * time.Second)
	for {
		st := h.tb.ServerStates()[0]
		if st.Sent == uint64(sent) && st.Received == uint64(sent+2*n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server counts sent %d received %d, want %d and %d", st.Sent, st.Received, sent, sent+2*n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A server whose port closes while the kernel carries its flow: the ICMP
// error still reaches pen's socket of the flow, pen blacklists the server
// and places the flow again, in user space first, then in the kernel.
func TestUDPKernelFailover(t *testing.T) {
	needUDPKernel(t)
	a := udpServer(t, "A")
	b := udpServer(t, "B")
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.UDPKernel = true }, "udp", "roundrobin",
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", a.LocalAddr().(*net.UDPAddr).Port),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", b.LocalAddr().(*net.UDPAddr).Port))
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(h.addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := udpAsk(t, c, "hello")
	name, _, _ := strings.Cut(first, ":")
	for i := range 20 {
		if got := udpAsk(t, c, fmt.Sprint(i)); got != name+":"+fmt.Sprint(i) {
			t.Fatalf("question %d: %q", i, got)
		}
	}
	if k := h.loop.Stats().KernelFlows; k != 1 {
		t.Fatalf("the kernel carries %d flows, want 1", k)
	}
	other := "B"
	if name == "A" {
		a.Close()
	} else {
		b.Close()
		other = "A"
	}
	var got string
	for i := 0; i < 10 && !strings.HasPrefix(got, other+":"); i++ {
		got = udpAsk(t, c, "again") // the first is lost with the closed port
	}
	if got != other+":again" {
		t.Fatalf("after %s's port closed: %q", name, got)
	}
	for i := range 20 {
		if got := udpAsk(t, c, fmt.Sprint(i)); got != other+":"+fmt.Sprint(i) {
			t.Fatalf("after fail-over, question %d: %q", i, got)
		}
	}
	if k := h.loop.Stats().KernelFlows; k != 1 {
		t.Errorf("after fail-over the kernel carries %d flows, want 1", k)
	}
	if !strings.Contains(h.logText(), "blacklisting server") {
		t.Errorf("no blacklisting in the log:\n%s", h.logText())
	}
}

// A change of configuration that takes a kernel flow's server away
// (here: the server is removed) moves the flow at its next datagram, as
// for a flow in pen.
func TestUDPKernelServerRemoved(t *testing.T) {
	needUDPKernel(t)
	a := udpServer(t, "A")
	b := udpServer(t, "B")
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.UDPKernel = true }, "udp",
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", a.LocalAddr().(*net.UDPAddr).Port),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", b.LocalAddr().(*net.UDPAddr).Port))
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(h.addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	name, _, _ := strings.Cut(udpAsk(t, c, "hello"), ":")
	for i := range 10 {
		udpAsk(t, c, fmt.Sprint(i))
	}
	if k := h.loop.Stats().KernelFlows; k != 1 {
		t.Fatalf("the kernel carries %d flows, want 1", k)
	}
	gone, other := "0", "B"
	if name == "B" {
		gone, other = "1", "A"
	}
	h.reconfigure("no server " + gone)
	if got := udpAsk(t, c, "moved"); got != other+":moved" {
		t.Errorf("after no server %s: %q, want %s", gone, got, other+":moved")
	}
}

// SyncCounts makes the servers' counts exact at once, without waiting
// for the loop's next second.
func TestUDPKernelSyncCounts(t *testing.T) {
	needUDPKernel(t)
	a := udpServer(t, "A")
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.UDPKernel = true }, "udp",
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", a.LocalAddr().(*net.UDPAddr).Port))
	g := &Group{loops: []*Loop{h.loop}}
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(h.addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := 0
	for i := range 50 {
		msg := fmt.Sprint("q", i)
		if got := udpAsk(t, c, msg); got != "A:"+msg {
			t.Fatalf("%q", got)
		}
		sent += len(msg)
	}
	g.SyncCounts()
	if st := h.tb.ServerStates()[0]; st.Sent != uint64(sent) || st.Received != uint64(sent+2*50) {
		t.Errorf("right after SyncCounts: sent %d received %d, want %d and %d", st.Sent, st.Received, sent, sent+2*50)
	}
}
