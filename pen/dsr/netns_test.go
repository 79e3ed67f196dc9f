package dsr

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
	"github.com/pen-lb/pen-appliance/pen/internal/netnstest"
)

// The test network mirrors Pen's DSR example: a switch (a bridge in a
// host of its own) joins a client, pen and the backends. Pen's interface
// has no address; each backend holds the VIP on its loopback and neither
// answers nor announces ARP for it. Offloads stay at veth's defaults
// (checksum offload and TSO on), so pen gets frames with partial
// checksums and super-frames of up to 64 KiB.
type topo struct {
	n        *netnstest.Net
	sw       *netnstest.Host
	client   *netnstest.Host
	pen      *netnstest.Host
	backends []*netnstest.Host
	pool     *fakePool
	dsr      *DSR
	v6       bool // the VIP and the servers are IPv6
	noVIP    bool // a tarpit alone
	// The switch is on pen's host: the fast path cannot hand frames to
	// the other end of pen's veth, which is in the same namespace.
	penSwitches bool
}

const (
	topoVIP     = "198.18.0.100"
	topoClient  = "198.18.0.1"
	topoVIP6    = "2001:db8::100"
	topoClient6 = "2001:db8::1"
)

func topoMAC(host int) string { return fmt.Sprintf("02:70:65:6e:00:%02x", host) }

func backendIP(i int) string { return fmt.Sprintf("198.18.0.%d", 11+i) }

func backendIP6(i int) string { return fmt.Sprintf("2001:db8::%d", 11+i) }

// vip is the VIP of the test's family with a port.
func (tp *topo) vip(port int) string {
	if tp.v6 {
		return net.JoinHostPort(topoVIP6, fmt.Sprint(port))
	}
	return net.JoinHostPort(topoVIP, fmt.Sprint(port))
}

// clientAddr is the client's i-th extra address of the test's family.
func (tp *topo) clientAddr(i int) string {
	if tp.v6 {
		return fmt.Sprintf("2001:db8::4:%x", i+1)
	}
	return fmt.Sprintf("198.18.%d.%d", 4+i/200, 1+i%200)
}

// newTopo builds the network with n backends, each serving TCP and UDP on
// the VIP (see serveBackend).
func newTopo(t *testing.T, nBackends int) *topo {
	return newTopoSwitch(t, nBackends, false)
}

// newTopoSwitch builds the network with the switch on pen's own host when
// penSwitches is set (then both ends of pen's veth are in one namespace).
func newTopoSwitch(t *testing.T, nBackends int, penSwitches bool) *topo {
	n := netnstest.New(t)
	tp := &topo{n: n, client: n.Host("client"), pen: n.Host("pen"), penSwitches: penSwitches}
	tp.sw = tp.pen
	if !penSwitches {
		tp.sw = n.Host("sw")
	}
	tp.sw.Switch("br0")
	attach := func(h *netnstest.Host, port string, mac int, addrs ...string) {
		n.Link(tp.sw, port, nil, h, "eth0", addrs)
		tp.sw.Port("br0", port)
		h.IP("link", "set", "eth0", "address", topoMAC(mac))
	}
	attach(tp.client, "vclient", 1, topoClient+"/16", topoClient6+"/64")
	attach(tp.pen, "vpen", 2)
	for i := range nBackends {
		b := n.Host(fmt.Sprintf("b%d", i))
		attach(b, fmt.Sprintf("vb%d", i), 0x10+i, backendIP(i)+"/16", backendIP6(i)+"/64")
		b.IP("addr", "add", topoVIP+"/32", "dev", "lo")
		b.IP("addr", "add", topoVIP6+"/128", "dev", "lo")
		for _, dev := range []string{"all", "eth0"} {
			b.Sysctl("net.ipv4.conf."+dev+".arp_ignore", "1")
			b.Sysctl("net.ipv4.conf."+dev+".arp_announce", "2")
		}
		serveBackend(t, b, fmt.Sprintf("b%d", i))
		tp.backends = append(tp.backends, b)
	}
	return tp
}

// serveBackend runs, in h, a TCP server on VIP:80 that greets every
// connection with "NAME CLIENTADDR\n", then reads until EOF and answers
// with the SHA-256 of what it read; and a UDP server on VIP:53 that
// answers every datagram with "NAME CLIENTADDR".
func serveBackend(t *testing.T, h *netnstest.Host, name string) {
	for _, vip := range []string{topoVIP, topoVIP6} {
		serveBackendOn(t, h, name, vip)
	}
}

func serveBackendOn(t *testing.T, h *netnstest.Host, name, vip string) {
	var ln net.Listener
	var pc net.PacketConn
	if err := h.Do(func() error {
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort(vip, "80")); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", net.JoinHostPort(vip, "53"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr().(*net.TCPAddr).IP)
				hash := sha256.New()
				io.Copy(hash, c)
				fmt.Fprintf(c, "%x\n", hash.Sum(nil))
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s %s", name, from.(*net.UDPAddr).IP), from)
		}
	}()
}

// start runs DSR in pen's namespace until the test ends, and waits until
// want servers are in its table.
func (tp *topo) start(t *testing.T, cfg Config, want int) {
	t.Helper()
	if tp.pool == nil {
		tp.pool = &fakePool{}
		for i := range tp.backends {
			a := backendIP(i)
			if tp.v6 {
				a = backendIP6(i)
			}
			tp.pool.s.List = append(tp.pool.s.List, Backend{Index: i, Addr: netip.MustParseAddr(a), Weight: 1, Up: true})
		}
	}
	cfg.Interface = "eth0"
	cfg.Pool = tp.pool
	if !cfg.VIP.IsValid() && !tp.noVIP {
		cfg.VIP = netip.MustParseAddr(topoVIP)
		if tp.v6 {
			cfg.VIP = netip.MustParseAddr(topoVIP6)
		}
	}
	if err := tp.pen.Do(func() error {
		var err error
		tp.dsr, err = New(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tp.dsr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	tp.waitInTable(t, want)
}

func (tp *topo) waitInTable(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, s := range tp.dsr.Stats().Servers {
			if s.InTable {
				n++
			}
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d servers in the table after 10 s, want %d; stats %+v", n, want, tp.dsr.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dial connects from the client, from source address src (or its main
// address when src is ""), to addr.
func (tp *topo) dial(network, src, addr string) (net.Conn, error) {
	var c net.Conn
	err := tp.client.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		if src != "" {
			if network == "tcp" {
				d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
			} else {
				d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
			}
		}
		var err error
		c, err = d.Dial(network, addr)
		return err
	})
	return c, err
}

// whoTCP returns the backend that a connection from src reached and the
// client address it saw.
func (tp *topo) whoTCP(src string) (name, seen string, err error) {
	c, err := tp.dial("tcp", src, tp.vip(80))
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("greeting %q", line)
	}
	return f[0], f[1], nil
}

// unmapped writes an address as the test wrote it (servers may see an
// IPv4 client as ::ffff:a.b.c.d).
func unmapped(a string) string {
	if ip, err := netip.ParseAddr(a); err == nil {
		return ip.Unmap().String()
	}
	return a
}

// forwarding is the two ways the VIP's frames are forwarded: by the
// kernel's fast path, and on the AF_PACKET socket in user space.
var forwarding = []struct {
	name       string
	noFastPath bool
}{{"fastpath", false}, {"socket", true}}

// checkMode fails the test when the DSR does not forward the way the
// subtest asks (a kernel without the fast path skips its subtests, or
// fails them under CI).
func (tp *topo) checkMode(t *testing.T, noFastPath bool) {
	t.Helper()
	if got := tp.dsr.Stats().FastPath; got == noFastPath {
		if !noFastPath {
			testenv.Skip(t, "this kernel does not run the fast path (BPF, TCX)")
		}
		t.Fatalf("fast path %v, want %v", got, !noFastPath)
	}
	// pen's eth0 is a veth whose other end is on the switch's host.
	if !noFastPath && tp.dsr.fast.peer == tp.penSwitches {
		t.Fatalf("the fast path hands frames to the other end of pen's veth: %v, want %v", tp.dsr.fast.peer, !tp.penSwitches)
	}
	// The packet sockets on pen's host, by the type of frame they are
	// bound to: with the fast path none may be bound to every type, or
	// the kernel would hand each forwarded frame to it first.
	out, err := tp.pen.Output("cat", "/proc/net/packet")
	if err != nil {
		t.Fatalf("/proc/net/packet: %v: %s", err, out)
	}
	var protos []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 4 {
			protos = append(protos, f[3])
		}
	}
	slices.Sort(protos)
	want := []string{"0003"}
	if !noFastPath {
		want = []string{"0800", "0806"}
		if tp.v6 {
			want = []string{"0806", "86dd"}
		}
	}
	if !slices.Equal(protos, want) {
		t.Fatalf("packet sockets bound to frame types %v, want %v", protos, want)
	}
}

func TestNetnsTCPAndUDPThroughDSR(t *testing.T) {
	for _, m := range forwarding {
		t.Run(m.name, func(t *testing.T) { testTCPAndUDP(t, m.noFastPath, false) })
	}
}

// IPv6 DSR: neighbour discovery in place of ARP.
func TestNetnsIPv6ThroughDSR(t *testing.T) {
	for _, m := range forwarding {
		t.Run(m.name, func(t *testing.T) { testTCPAndUDP(t, m.noFastPath, true) })
	}
}

func testTCPAndUDP(t *testing.T, noFastPath, v6 bool) {
	prefix := "/16"
	if v6 {
		prefix = "/64"
	}
	tp := newTopo(t, 2)
	tp.v6 = v6
	tp.start(t, Config{Port: 80, NoFastPath: noFastPath}, 2)
	tp.checkMode(t, noFastPath)
	seen := map[string]bool{}
	for i := range 20 {
		src := tp.clientAddr(i)
		tp.client.IP("addr", "add", src+prefix, "dev", "eth0", "nodad")
		name, addr, err := tp.whoTCP(src)
		if err != nil {
			t.Fatalf("TCP from %s: %v (stats %+v)", src, err, tp.dsr.Stats())
		}
		if unmapped(addr) != src {
			t.Errorf("backend %s saw client %s, want %s", name, addr, src)
		}
		seen[name] = true
	}
	if len(seen) != 2 {
		t.Errorf("20 clients reached only %v", seen)
	}
	// A port other than the VIP's is not forwarded.
	if c, err := tp.dial("tcp", "", tp.vip(81)); err == nil {
		c.Close()
		t.Error("connected to VIP:81, which pen does not forward")
	}

	// 50 MB from the client, through pen (the direction that crosses it,
	// in TSO super-frames with partial checksums), hash compared.
	c, err := tp.dial("tcp", "", tp.vip(80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 50<<20)
	rand.Read(data)
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatalf("writing 50 MB: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the hash: %v", err)
	}
	want := sha256.Sum256(data)
	if strings.TrimSpace(got) != hex.EncodeToString(want[:]) {
		t.Errorf("50 MB arrived changed: hash %s, want %x", got, want)
	}
	s := tp.dsr.Stats()
	t.Logf("50 MB in %v; fast path %v; %d frames forwarded, %d read in %d batches; dropped %v", time.Since(start).Round(time.Millisecond), s.FastPath, s.Forwarded, s.Received, s.Batches, s.Dropped)

	// UDP (-U), every port.
	tu := newTopo(t, 2)
	tu.v6 = v6
	tu.start(t, Config{UDP: true, NoFastPath: noFastPath}, 2)
	tu.checkMode(t, noFastPath)
	for i := range 10 {
		src := tu.clientAddr(100 + i)
		tu.client.IP("addr", "add", src+prefix, "dev", "eth0", "nodad")
		c, err := tu.dial("udp", src, tu.vip(53))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write([]byte("q"))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		c.Close()
		if err != nil {
			t.Fatalf("UDP from %s: %v (stats %+v)", src, err, tu.dsr.Stats())
		}
		if f := strings.Fields(string(buf[:n])); len(f) != 2 || unmapped(f[1]) != src {
			t.Errorf("UDP answer %q, want the client %s", buf[:n], src)
		}
	}
	if c, err := tu.dial("tcp", "", tu.vip(80)); err == nil {
		c.Close()
		t.Error("TCP connected through a UDP-mode DSR")
	}
}

// addClients gives the client n more addresses, 198.18.8.1 on.
func (tp *topo) addClients(t *testing.T, n int) []string {
	var b strings.Builder
	var addrs []string
	for i := range n {
		a := fmt.Sprintf("198.18.%d.%d", 8+i/200, 1+i%200)
		if tp.v6 {
			a = fmt.Sprintf("2001:db8::8:%x", i+1)
		}
		addrs = append(addrs, a)
		fmt.Fprintf(&b, "addr add %s/16 dev eth0\n", a)
	}
	f := filepath.Join(t.TempDir(), "addrs")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tp.client.Run("ip", "-batch", f)
	return addrs
}

func (tp *topo) placement(t *testing.T, clients []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, src := range clients {
		name, _, err := tp.whoTCP(src)
		if err != nil {
			t.Fatalf("TCP from %s: %v", src, err)
		}
		out[src] = name
	}
	return out
}

func TestNetnsWeightsBlacklistFailover(t *testing.T) {
	for _, m := range forwarding {
		t.Run(m.name, func(t *testing.T) { testWeightsBlacklistFailover(t, m.noFastPath) })
	}
}

func testWeightsBlacklistFailover(t *testing.T, noFastPath bool) {
	tp := newTopo(t, 3)
	tp.pool = &fakePool{}
	for i, w := range []int{1, 3, 2} {
		tp.pool.s.List = append(tp.pool.s.List, Backend{Index: i, Addr: netip.MustParseAddr(backendIP(i)), Weight: w, Up: true})
	}
	tp.start(t, Config{Port: 80, ARPRefresh: time.Second, NoFastPath: noFastPath}, 3)
	tp.checkMode(t, noFastPath)
	clients := tp.addClients(t, 400)
	before := tp.placement(t, clients)
	count := map[string]int{}
	for _, b := range before {
		count[b]++
	}
	t.Logf("weights 1:3:2 over 400 clients: %v", count)
	// Expected 67:200:133; allow for the binomial spread (3 sigma).
	for name, want := range map[string]int{"b0": 67, "b1": 200, "b2": 133} {
		if d := count[name] - want; d < -30 || d > 30 {
			t.Errorf("%s got %d clients, want about %d", name, count[name], want)
		}
	}

	// Blacklisting b1 moves only b1's clients.
	tp.pool.set(func(s *Servers) { s.List[1].Up = false })
	tp.waitInTable(t, 2)
	after := tp.placement(t, clients)
	moved := 0
	for _, c := range clients {
		if before[c] != "b1" && after[c] != before[c] {
			t.Errorf("client %s moved from %s to %s", c, before[c], after[c])
		}
		if before[c] == "b1" {
			moved++
			if after[c] == "b1" {
				t.Errorf("client %s still reaches the blacklisted b1", c)
			}
		}
	}
	t.Logf("blacklisting b1 moved its %d clients and no other", moved)
	// Reinstated: every client is back where it was.
	tp.pool.set(func(s *Servers) { s.List[1].Up = true })
	tp.waitInTable(t, 3)
	if again := tp.placement(t, clients); fmt.Sprint(again) != fmt.Sprint(before) {
		t.Error("reinstating b1 did not bring back the same placement")
	}

	// b2 stops answering ARP: within a few seconds it is failed and its
	// clients go elsewhere.
	tp.backends[2].IP("link", "set", "eth0", "arp", "off")
	start := time.Now()
	tp.waitInTable(t, 2)
	t.Logf("b2 failed %v after its ARP stopped", time.Since(start).Round(100*time.Millisecond))
	tp.pool.mu.Lock()
	failed := fmt.Sprint(tp.pool.failed)
	tp.pool.mu.Unlock()
	if !strings.Contains(failed, "2") {
		t.Errorf("pool told of failures %s, want server 2", failed)
	}
	final := tp.placement(t, clients[:100])
	for _, c := range clients[:100] {
		if final[c] == "b2" {
			t.Errorf("client %s still reaches b2", c)
		}
		if before[c] != "b2" && final[c] != before[c] {
			t.Errorf("client %s moved from %s to %s when b2 failed", c, before[c], final[c])
		}
	}
}

// The tarpit, seen from a real Linux client: connect() to a tarpitted
// address completes (the client's kernel took the SYN/ACK's checksum)
// and then nothing more comes, whatever options the client's SYN
// carries; the VIP is never tarpitted.
func TestNetnsTarpit(t *testing.T) {
	tp := newTopo(t, 1)
	tarpit := netip.MustParsePrefix("198.18.0.128/28")
	tp.start(t, Config{Port: 80, Tarpit: func(a netip.Addr) bool { return tarpit.Contains(a) || a == netip.MustParseAddr(topoVIP) }}, 1)
	check := func(label string) {
		t.Helper()
		c, err := tp.dial("tcp", "", "198.18.0.130:22")
		if err != nil {
			t.Fatalf("%s: connect to a tarpitted address: %v", label, err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		c.Write([]byte("SSH-2.0-scanner\r\n"))
		if n, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: read %d bytes, %v; want a hang", label, n, err)
		}
	}
	check("default options")
	tp.client.Sysctl("net.ipv4.tcp_timestamps", "0")
	check("tcp_timestamps=0")
	tp.client.Sysctl("net.ipv4.tcp_sack", "0")
	check("tcp_timestamps=0 tcp_sack=0")
	tp.client.Sysctl("net.ipv4.tcp_timestamps", "1")
	check("tcp_sack=0")
	if name, _, err := tp.whoTCP(""); err != nil || name != "b0" {
		t.Errorf("VIP with a tarpit list that names it: %q, %v; want the backend", name, err)
	}
	// Addresses outside the list get no answer at all.
	if c, err := tp.dial("tcp", "", "198.18.0.150:22"); err == nil {
		c.Close()
		t.Error("connected to an address outside the tarpit")
	}
	s := tp.dsr.Stats()
	t.Logf("tarpit: %d SYNs answered, %d addresses, %d ARP answers", s.TarpitSYNs, s.TarpitAddrs, s.ARPAnswered)
	if s.TarpitSYNs < 4 {
		t.Errorf("tarpit answered %d SYNs", s.TarpitSYNs)
	}
}

// synScan sends one SYN from the client to port 22 of every address in
// prefix through a raw socket, as nmap -sS does, and returns the
// addresses that answered with a SYN/ACK within the time limit. Raw
// scanners do not check checksums; the count shows that every address
// is answered.
func (tp *topo) synScan(t *testing.T, prefix netip.Prefix, limit time.Duration) map[netip.Addr]bool {
	t.Helper()
	src := netip.MustParseAddr(topoClient)
	var conn net.PacketConn
	if err := tp.client.Do(func() error {
		var err error
		conn, err = net.ListenPacket("ip4:tcp", topoClient)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for a := prefix.Masked().Addr(); prefix.Contains(a); a = a.Next() {
		seg := tcpFrame(penMAC, clientMAC, src, a, 61000, 22, tcpSYN, synOptions["mss"], nil)[ethHeaderLen+ipv4MinHeader:]
		if _, err := conn.WriteTo(seg, &net.IPAddr{IP: a.AsSlice()}); err != nil {
			t.Fatalf("sending a SYN to %v: %v", a, err)
		}
	}
	answered := map[netip.Addr]bool{}
	conn.SetReadDeadline(time.Now().Add(limit))
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		a, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP.To4())
		if n >= tcpMinHeader && buf[13] == tcpSYN|tcpACK && prefix.Contains(a) {
			answered[a] = true
		}
	}
	return answered
}

func TestNetnsTarpitSYNScan(t *testing.T) {
	t.Run("dsr", func(t *testing.T) { testSYNScan(t, false) })
	t.Run("tarpit-alone", func(t *testing.T) { testSYNScan(t, true) })
}

// testSYNScan scans a tarpitted /28 with the raw-socket scanner above,
// then with nmap -sS and with hping3 -S, all from the client's one
// address; a tarpit alone also gives the socket's filter its network.
// Every scanner must see a SYN/ACK from all 16 addresses, and the
// tarpit's per-source rate limit (32 SYNs a second, bursts of 64) must
// drop none of their SYNs: a scan sends 16, nmap 32 at most with its one
// retransmission. (A /24 is another matter: nmap's default timing sends
// its 256 SYNs faster than that, and the limit leaves about 100
// addresses unanswered unless --max-rate keeps it under 32 a second.)
func testSYNScan(t *testing.T, noVIP bool) {
	tp := newTopo(t, 1)
	tp.noVIP = noVIP
	tarpit := netip.MustParsePrefix("198.18.0.128/28")
	cfg := Config{Port: 80, Tarpit: tarpit.Contains}
	if noVIP {
		cfg.TarpitNets = []TarpitNet{{Addr: tarpit.Addr(), Mask: [4]byte{255, 255, 255, 240}}}
	}
	tp.start(t, cfg, 1)
	// scan runs one scanner as a subtest and checks what the tarpit
	// counted meanwhile.
	scan := func(name string, f func(t *testing.T) int) {
		t.Run(name, func(t *testing.T) {
			before := tp.dsr.Stats()
			start := time.Now()
			got := f(t)
			s := tp.dsr.Stats()
			syns := s.TarpitSYNs - before.TarpitSYNs
			limited := s.Dropped[DropRateLimit] - before.Dropped[DropRateLimit]
			t.Logf("%s SYN scan of %v: %d of 16 addresses answered in %v; tarpit answered %d SYNs, rate limit dropped %d", name, tarpit, got, time.Since(start).Round(time.Millisecond), syns, limited)
			if got != 16 {
				t.Errorf("%s: %d of 16 addresses answered", name, got)
			}
			if limited != 0 {
				t.Errorf("the tarpit's rate limit dropped %d of %s's SYNs", limited, name)
			}
			if syns < 16 {
				t.Errorf("tarpit answered %d SYNs of %s's scan, want 16 or more", syns, name)
			}
		})
	}
	scan("go", func(t *testing.T) int {
		got := tp.synScan(t, tarpit, 3*time.Second)
		if len(got) != 16 {
			t.Errorf("SYN scan of %v: %d of 16 addresses answered: %v", tarpit, len(got), got)
		}
		if s := tp.dsr.Stats(); s.TarpitAddrs != 16 {
			t.Errorf("tarpit counted %d addresses, want 16", s.TarpitAddrs)
		}
		return len(got)
	})
	scan("nmap", func(t *testing.T) int { return tp.nmapScan(t, tarpit) })
	scan("hping3", func(t *testing.T) int { return tp.hpingScan(t, tarpit) })
}

// nmapRun is the part of nmap's XML output (-oX) that the test reads.
type nmapRun struct {
	Hosts []struct {
		Status struct {
			State string `xml:"state,attr"`
		} `xml:"status"`
		Addresses []struct {
			Addr string `xml:"addr,attr"`
			Type string `xml:"addrtype,attr"`
		} `xml:"address"`
		Ports []struct {
			Protocol string `xml:"protocol,attr"`
			ID       int    `xml:"portid,attr"`
			State    struct {
				State  string `xml:"state,attr"`
				Reason string `xml:"reason,attr"`
			} `xml:"state"`
		} `xml:"ports>port"`
	} `xml:"host"`
	Finished struct {
		Summary string `xml:"summary,attr"`
		Exit    string `xml:"exit,attr"`
	} `xml:"runstats>finished"`
	HostCount struct {
		Up    int `xml:"up,attr"`
		Total int `xml:"total,attr"`
	} `xml:"runstats>hosts"`
}

// nmapScan runs nmap -sS on port 22 of every address in prefix from the
// client, skipping host discovery (-Pn) and DNS (-n), with one
// retransmission at most and a time limit, and returns how many
// addresses nmap found port 22 open on: a tarpit SYN/ACK makes nmap say
// open.
func (tp *topo) nmapScan(t *testing.T, prefix netip.Prefix) int {
	t.Helper()
	nmap := testenv.NeedProgram(t, "nmap", "nmap")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, stderr, err := tp.clientRun(ctx, nmap, "-sS", "-Pn", "-n", "-e", "eth0", "-p", "22",
		"--max-retries", "1", "--host-timeout", "20s", "-oX", "-", prefix.String())
	if err != nil {
		t.Fatalf("nmap: %v: %s", err, stderr)
	}
	var run nmapRun
	if err := xml.Unmarshal([]byte(out), &run); err != nil {
		t.Fatalf("nmap's XML output: %v\n%s", err, out)
	}
	t.Logf("nmap: %s (exit %s; %d of %d hosts up)", run.Finished.Summary, run.Finished.Exit, run.HostCount.Up, run.HostCount.Total)
	open := map[netip.Addr]bool{}
	for _, h := range run.Hosts {
		var a netip.Addr
		for _, ad := range h.Addresses {
			if ad.Type == "ipv4" {
				a, _ = netip.ParseAddr(ad.Addr)
			}
		}
		for _, p := range h.Ports {
			if p.Protocol == "tcp" && p.ID == 22 && p.State.State == "open" && prefix.Contains(a) {
				open[a] = true
			} else {
				t.Errorf("nmap: %v port %s/%d is %s (%s), want open", a, p.Protocol, p.ID, p.State.State, p.State.Reason)
			}
		}
	}
	if len(run.Hosts) != 16 || len(open) != 16 {
		t.Errorf("nmap scanned %d hosts, found port 22 open on %d, want 16 and 16: %v", len(run.Hosts), len(open), open)
	}
	return len(open)
}

// hpingScan runs hping3 -S -c 1 on port 22 of every address in prefix
// from the client, four at a time, each run with a time limit, and
// returns how many addresses answered with a SYN/ACK (flags=SA).
func (tp *topo) hpingScan(t *testing.T, prefix netip.Prefix) int {
	t.Helper()
	hping := testenv.NeedProgram(t, "hping3", "hping3")
	var addrs []netip.Addr
	for a := prefix.Masked().Addr(); prefix.Contains(a); a = a.Next() {
		addrs = append(addrs, a)
	}
	var mu sync.Mutex
	answered := map[netip.Addr]bool{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, stderr, err := tp.clientRun(ctx, hping, "-S", "-p", "22", "-c", "1", a.String())
			// hping3 exits 1 when nothing answered: that shows in the
			// count, the output says why.
			sa := false
			for line := range strings.Lines(out) {
				f := strings.Fields(line)
				if slices.Contains(f, "ip="+a.String()) && slices.Contains(f, "flags=SA") && slices.Contains(f, "sport=22") {
					sa = true
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if sa {
				answered[a] = true
			} else {
				t.Errorf("hping3 -S %v: no SYN/ACK (%v): %s%s", a, err, out, stderr)
			}
			if a == addrs[len(addrs)-1] {
				for line := range strings.Lines(out) {
					if strings.HasPrefix(line, "len=") {
						t.Logf("hping3 -S -p 22 -c 1 %v: %s", a, strings.TrimSpace(line))
					}
				}
			}
		}()
	}
	wg.Wait()
	return len(answered)
}

// clientRun runs a program in the client's namespace (ip netns exec)
// until it exits or ctx ends, when it is killed, and returns its
// standard output and error.
func (tp *topo) clientRun(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", tp.client.Name}, args...)...)
	cmd.WaitDelay = time.Second
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s still running after the time limit: %w", args[0], err)
	}
	return o.String(), e.String(), err
}

// A backend whose interface goes down is failed over like one whose ARP
// stopped.
func TestNetnsBackendInterfaceDown(t *testing.T) {
	tp := newTopo(t, 2)
	tp.start(t, Config{Port: 80, ARPRefresh: time.Second}, 2)
	clients := tp.addClients(t, 40)
	before := tp.placement(t, clients)
	tp.backends[0].IP("link", "set", "eth0", "down")
	tp.waitInTable(t, 1)
	after := tp.placement(t, clients)
	for _, c := range clients {
		if after[c] != "b1" {
			t.Errorf("client %s reached %s with b0 down", c, after[c])
		}
		if before[c] == "b1" && after[c] != "b1" {
			t.Errorf("client %s moved off b1", c)
		}
	}
}

// The other end of pen's veth is the server itself, which also routes the
// client's frames to pen (a container whose host is the backend). The
// fast path hands each frame straight to that end (checkMode), where the
// server's stack takes it as addressed to itself.
func TestNetnsDSRToVethPeer(t *testing.T) {
	n := netnstest.New(t)
	tp := &topo{n: n, client: n.Host("client"), pen: n.Host("pen")}
	b := n.Host("b0")
	tp.backends = []*netnstest.Host{b}
	const client = "198.18.9.2"
	n.Link(tp.client, "eth0", []string{client + "/24"}, b, "eth0", []string{"198.18.9.1/24"})
	n.Link(b, "eth1", []string{backendIP(0) + "/24"}, tp.pen, "eth0", nil)
	tp.client.Route(topoVIP+"/32", "via", "198.18.9.1")
	b.IP("addr", "add", topoVIP+"/32", "dev", "lo")
	for _, dev := range []string{"all", "eth1"} {
		b.Sysctl("net.ipv4.conf."+dev+".arp_ignore", "1")
		b.Sysctl("net.ipv4.conf."+dev+".arp_announce", "2")
	}
	for _, dev := range []string{"all", "default", "eth0", "eth1"} {
		b.Sysctl("net.ipv4.conf."+dev+".rp_filter", "0")
	}
	b.Sysctl("net.ipv4.ip_forward", "1")
	// Early demux would tie the client's frames to b0's own socket
	// before routing, and a frame tied to a socket is not forwarded.
	b.Sysctl("net.ipv4.tcp_early_demux", "0")
	// What the client sends to the VIP goes to pen, not to b0's own
	// copy of the VIP: a rule before the local table.
	b.IP("route", "add", topoVIP+"/32", "dev", "eth1", "table", "100")
	b.IP("rule", "add", "pref", "100", "iif", "eth0", "to", topoVIP+"/32", "lookup", "100")
	b.IP("rule", "add", "pref", "200", "lookup", "local")
	b.IP("rule", "del", "pref", "0")
	serveBackendOn(t, b, "b0", topoVIP)

	tp.start(t, Config{Port: 80}, 1)
	tp.checkMode(t, false)
	for i := range 5 {
		name, seen, err := tp.whoTCP("")
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if name != "b0" || unmapped(seen) != client {
			t.Fatalf("connection %d reached %s, which saw %s", i, name, seen)
		}
	}
	var frames uint64
	for _, c := range tp.dsr.fast.counters() {
		frames += c.Frames
	}
	if frames < 10 {
		t.Fatalf("the fast path forwarded %d frames for 5 connections", frames)
	}
}

// With both ends of pen's veth in one namespace the kernel would drop a
// frame handed to the other end, so the fast path sends it out through
// the veth (checkMode).
func TestNetnsDSRSwitchOnPensHost(t *testing.T) {
	tp := newTopoSwitch(t, 2, true)
	tp.start(t, Config{Port: 80}, 2)
	tp.checkMode(t, false)
	seen := map[string]bool{}
	for i := range 20 {
		src := tp.clientAddr(i)
		tp.client.IP("addr", "add", src+"/16", "dev", "eth0")
		name, addr, err := tp.whoTCP(src)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if unmapped(addr) != src {
			t.Fatalf("connection %d from %s: %s saw %s", i, src, name, addr)
		}
		seen[name] = true
	}
	if len(seen) != 2 {
		t.Fatalf("20 clients reached %v, want both servers", seen)
	}
}
