package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
)

// groupHarness is a pen with n event loops, configured as the engine
// does it.
type groupHarness struct {
	t        *testing.T
	g        *Group
	tb       *balance.Table
	in       *config.Interp
	settings Settings
	addr     string
	mu       sync.Mutex
	log      bytes.Buffer
}

func startGroup(t *testing.T, loops int, listen string, tweak func(*Settings), lines ...string) *groupHarness {
	t.Helper()
	h := &groupHarness{t: t}
	log := diag.New(lockedWriter{&h.mu, &h.log})
	h.in = config.New(config.Default(), config.Process{}, log)
	for _, l := range lines {
		if _, err := h.in.Exec(l, config.FromFlag); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	c := h.in.Config()
	h.tb = balance.New()
	h.tb.Configure(c)
	g, err := NewGroup(h.tb, log)
	if err != nil {
		t.Fatal(err)
	}
	h.g = g
	s := Settings{UDP: c.UDP, ConnMax: c.ConnMax, PendingMax: c.PendingMax, MultiAccept: c.MultiAccept,
		Timeout: time.Duration(c.Timeout) * time.Second, UDPTimeout: 30 * time.Second, Loops: loops}
	if tweak != nil {
		tweak(&s)
	}
	h.settings = s
	l := config.Listen{Addr: netip.MustParseAddrPort(listen)}
	if err := g.Configure(s, &l, 128); err != nil {
		t.Fatal(err)
	}
	h.addr = g.ListenAddr()
	done := make(chan error, 1)
	go func() { done <- g.Run() }()
	t.Cleanup(func() {
		g.Stop()
		if err := <-done; err != nil {
			t.Errorf("group: %v", err)
		}
	})
	return h
}

func (h *groupHarness) reconfigure(lines ...string) {
	h.t.Helper()
	for _, l := range lines {
		if _, err := h.in.Exec(l, config.FromControl); err != nil {
			h.t.Errorf("%q: %v", l, err)
		}
	}
	h.tb.Configure(h.in.Config())
	if err := h.g.Configure(h.settings, nil, 128); err != nil {
		h.t.Errorf("configure group: %v", err)
	}
}

// ask sends a line on c and returns the answer.
func ask(t *testing.T, c net.Conn, r *bufio.Reader, line string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(got, "\n")
}

// Clients spread over every loop; a second pen on the port is refused,
// whether it has one loop or several, and so is a pen on a port another
// program holds with SO_REUSEPORT; the first pen keeps serving.
func TestGroupSharesPortAndRefusesOthers(t *testing.T) {
	be := lineServer(t, "A")
	h := startGroup(t, 4, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", be))
	if n := h.g.Loops(); n != 4 {
		t.Fatalf("%d loops, want 4", n)
	}
	for i := range 200 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := ask(t, c, bufio.NewReader(c), fmt.Sprint("hello ", i)); got != fmt.Sprint("A:hello ", i) {
			t.Fatalf("answer %q", got)
		}
		c.Close()
	}
	served := 0
	for i, l := range h.g.all() {
		n := l.Stats().Accepted
		t.Logf("loop %d accepted %d clients", i, n)
		if n > 0 {
			served++
		}
	}
	if served < 2 {
		t.Errorf("clients went to %d of 4 loops", served)
	}
	if st := h.g.Stats(); st.Accepted != 200 {
		t.Errorf("group accepted %d, want 200", st.Accepted)
	}

	addr := netip.MustParseAddrPort(h.addr)
	for _, n := range []int{1, 2} {
		g, err := NewGroup(balance.New(), diag.New(io.Discard))
		if err != nil {
			t.Fatal(err)
		}
		err = g.Configure(Settings{ConnMax: 4, PendingMax: 4, MultiAccept: 4, Loops: n}, &config.Listen{Addr: addr}, 16)
		if !errors.Is(err, unix.EADDRINUSE) || !strings.Contains(err.Error(), "another process serves it") {
			t.Errorf("second pen with %d loops on %s: %v, want address already in use", n, addr, err)
		}
		g.Stop()
	}
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatalf("the first pen lost its port: %v", err)
	}
	if got := ask(t, c, bufio.NewReader(c), "still"); got != "A:still" {
		t.Errorf("answer %q", got)
	}
	c.Close()

	// A program that holds a port with SO_REUSEPORT does not share it
	// with pen.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 4); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	foreign := addrOf(sa)
	g, _ := NewGroup(balance.New(), diag.New(io.Discard))
	defer g.Stop()
	err = g.Configure(Settings{ConnMax: 4, PendingMax: 4, MultiAccept: 4, Loops: 2}, &config.Listen{Addr: foreign}, 16)
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("pen on %s held by another program with SO_REUSEPORT: %v, want address already in use", foreign, err)
	}
}

// Pen's rules hold across loops: round-robin order, conn_max, max per
// server, client tracking, blacklisting, and the counts that servers
// reports.
func TestGroupKeepsPenSemantics(t *testing.T) {
	ports := []int{lineServer(t, "A"), lineServer(t, "B"), lineServer(t, "C")}
	var lines []string
	for i, p := range ports {
		lines = append(lines, fmt.Sprintf("server %d address 127.0.0.1 port %d", i, p))
	}
	h := startGroup(t, 3, "127.0.0.1:0", func(s *Settings) { s.ConnMax = 4 }, append(lines, "roundrobin")...)

	// Round-robin: the servers in turn, whichever loop takes a client.
	var seq []string
	for i := range 12 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		got := ask(t, c, bufio.NewReader(c), fmt.Sprint(i))
		seq = append(seq, got[:1])
		c.Close()
	}
	if got := strings.Join(seq, ""); got != "BCABCABCABCA" {
		t.Errorf("round-robin order %s, want BCABCABCABCA", got)
	}

	// conn_max 4 over every loop; the servers command counts them.
	var held []net.Conn
	for i := range 4 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		ask(t, c, bufio.NewReader(c), fmt.Sprint("hold ", i))
		held = append(held, c)
	}
	total := 0
	for _, s := range h.tb.ServerStates() {
		total += s.Conns
	}
	if total != 4 {
		t.Errorf("servers count %d connections, want 4", total)
	}
	if tab := h.g.Conns(); tab.Used != 4 || len(tab.Conns) != 4 {
		t.Errorf("connection table: %d used, %d listed, want 4", tab.Used, len(tab.Conns))
	} else {
		for _, st := range tab.Conns {
			if st.Slot >= 4 {
				t.Errorf("slot %d beyond conn_max 4", st.Slot)
			}
			if got := h.g.Conn(st.Slot); got.State == stateUnused {
				t.Errorf("connection %d: not found", st.Slot)
			}
		}
	}
	for range 3 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("a fifth client read %d bytes, want a refused connection", n)
		}
		c.Close()
	}
	if st := h.g.Stats(); st.RefusedFull != 3 {
		t.Errorf("refused for a full table: %d, want 3", st.RefusedFull)
	}
	// close N reaches the connection whichever loop serves it.
	for _, st := range h.g.Conns().Conns {
		h.g.CloseConn(st.Slot)
	}
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("a closed connection still answers")
		}
		c.Close()
	}
	waitFor(t, func() bool { return h.g.Stats().Active == 0 }, "connections to end")

	// max 1 per server: three clients at once take one server each.
	h.settings.ConnMax = 500
	h.reconfigure("conn_max 500", "server 0 max 1", "server 1 max 1", "server 2 max 1")
	seen := map[string]bool{}
	held = nil
	for i := range 3 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		seen[ask(t, c, bufio.NewReader(c), fmt.Sprint(i))[:1]] = true
		held = append(held, c)
	}
	if len(seen) != 3 {
		t.Errorf("with max 1, three clients went to %v", seen)
	}
	c, _ := net.Dial("tcp", h.addr)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("a fourth client read %d bytes with every server at max", n)
	}
	c.Close()
	for _, c := range held {
		c.Close()
	}
	waitFor(t, func() bool { return h.g.Stats().Active == 0 }, "connections to end")

	// Tracking: one client address keeps its server over many loops.
	h.reconfigure("no roundrobin", "tracking 60", "server 0 max 0", "server 1 max 0", "server 2 max 0")
	first := ""
	for i := range 20 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		s := ask(t, c, bufio.NewReader(c), fmt.Sprint(i))[:1]
		c.Close()
		if first == "" {
			first = s
		} else if s != first {
			t.Fatalf("tracked client moved from %s to %s", first, s)
		}
	}
	// Blacklisting moves it, on every loop.
	h.tb.Blacklist(int(first[0]-'A'), time.Minute)
	for i := range 10 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		if s := ask(t, c, bufio.NewReader(c), fmt.Sprint(i))[:1]; s == first {
			t.Errorf("blacklisted server %s still chosen", first)
		}
		c.Close()
	}
	var totals uint64
	for _, s := range h.tb.ServerStates() {
		totals += s.Total
	}
	if want := uint64(12 + 4 + 3 + 20 + 10); totals != want {
		t.Errorf("servers count %d connections in all, want %d", totals, want)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGroupReconfigureUnderTraffic changes the servers, the modes, the
// blacklist and the number of loops (more and fewer) while TCP and TLS
// clients talk through several loops and others come and go, and reads
// the tables. Every request must be answered; under -race it
// shows that the loops share nothing without an owner.
func TestGroupReconfigureUnderTraffic(t *testing.T) {
	ports := []int{lineServer(t, "A"), lineServer(t, "B"), lineServer(t, "C")}
	lines := []string{
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", ports[0]),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", ports[1]),
	}
	cfg := testTLSConfig(t)
	plain := startGroup(t, 2, "127.0.0.1:0", nil, lines...)
	secure := startGroup(t, 3, "127.0.0.1:0", func(s *Settings) { s.TLS = cfg }, lines...)

	deadline := time.Now().Add(60 * time.Second)
	var wg sync.WaitGroup
	var answered atomic.Int64
	const clients, conns, rounds = 4, 6, 30
	talk := func(name string, dial func() (net.Conn, error)) {
		defer wg.Done()
		for k := 0; k < conns; k++ {
			c, err := dial()
			if err != nil {
				t.Errorf("%s: connection %d: %v", name, k, err)
				return
			}
			c.SetDeadline(deadline)
			r := bufio.NewReader(c)
			for j := 0; j < rounds; j++ {
				req := fmt.Sprintf("%s conn %d request %d\n", name, k, j)
				if _, err := io.WriteString(c, req); err != nil {
					t.Errorf("%s: write: %v", name, err)
					c.Close()
					return
				}
				got, err := r.ReadString('\n')
				if err != nil || !strings.HasSuffix(got, ":"+req) {
					t.Errorf("%s: %q answered %q, %v", name, req, got, err)
					c.Close()
					return
				}
				answered.Add(1)
			}
			c.Close()
		}
	}
	for i := 0; i < clients; i++ {
		wg.Add(2)
		go talk(fmt.Sprintf("tcp%d", i), func() (net.Conn, error) { return net.Dial("tcp", plain.addr) })
		go talk(fmt.Sprintf("tls%d", i), func() (net.Conn, error) {
			return tls.DialWithDialer(&net.Dialer{Deadline: deadline}, "tcp", secure.addr, &tls.Config{InsecureSkipVerify: true})
		})
	}
	// Clients that come and go while the loops change.
	stop := make(chan struct{})
	var victimsDone sync.WaitGroup
	victimsDone.Add(1)
	go func() {
		defer victimsDone.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.Dial("tcp", plain.addr)
			if err != nil {
				continue
			}
			io.WriteString(c, "victim\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
	}()

	clientsDone := make(chan struct{})
	go func() { wg.Wait(); close(clientsDone) }()
	changes := 0
	loops := []int{2, 3, 1, 4, 2}
	for running := true; running && changes < 400; changes++ {
		select {
		case <-clientsDone:
			running = false
		case <-time.After(2 * time.Millisecond):
		}
		for _, h := range []*groupHarness{plain, secure} {
			switch changes % 6 {
			case 0:
				h.reconfigure(fmt.Sprintf("server 2 address 127.0.0.1 port %d weight 3", ports[2]))
			case 1:
				h.settings.Loops = loops[changes/6%len(loops)]
				h.reconfigure("weight", fmt.Sprintf("server 1 weight %d", changes%5+1))
			case 2:
				h.reconfigure("no weight", "roundrobin")
			case 3:
				h.tb.Blacklist(2, time.Minute)
				h.reconfigure("no roundrobin", "hash")
			case 4:
				h.reconfigure("no server 2", "no hash")
			case 5:
				h.tb.Blacklist(1, 0)
				h.g.Conns()
				h.g.SocketConn(changes)
				h.g.Idlers()
				h.g.Stats()
				h.tb.ServerStates()
				h.tb.ClientStates()
			}
		}
		for _, st := range plain.g.Conns().Conns {
			plain.g.Conn(st.Slot)
		}
	}
	<-clientsDone
	close(stop)
	victimsDone.Wait()
	if want := int64(2 * clients * conns * rounds); answered.Load() != want {
		t.Errorf("%d requests answered, want %d", answered.Load(), want)
	}
	if changes < 6 {
		t.Errorf("only %d configuration changes during the traffic", changes)
	}
	waitFor(t, func() bool { return plain.g.Stats().Active == 0 && secure.g.Stats().Active == 0 }, "connections to end")
	for _, h := range []*groupHarness{plain, secure} {
		for i, s := range h.tb.ServerStates() {
			if s.Conns != 0 {
				t.Errorf("server %d counts %d connections after every client left", i, s.Conns)
			}
		}
	}
	t.Logf("%d requests answered during %d configuration changes (loops %v)", answered.Load(), changes, loops)
}

// With fewer loops, new clients go to the remaining loops only and the
// others close their listeners; with more again, every loop takes
// clients.
func TestGroupFewerAndMoreLoops(t *testing.T) {
	be := lineServer(t, "A")
	h := startGroup(t, 4, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", be))
	round := func(n int) []uint64 {
		t.Helper()
		before := make([]uint64, 4)
		for i, l := range h.g.all() {
			before[i] = l.Stats().Accepted
		}
		for i := range n {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := ask(t, c, bufio.NewReader(c), fmt.Sprint(i)); got != fmt.Sprint("A:", i) {
				t.Fatalf("answer %q", got)
			}
			c.Close()
		}
		d := make([]uint64, 4)
		for i, l := range h.g.all() {
			d[i] = l.Stats().Accepted - before[i]
		}
		return d
	}
	round(40)
	h.settings.Loops = 2
	h.reconfigure()
	if d := round(100); d[2] != 0 || d[3] != 0 || d[0] == 0 || d[1] == 0 {
		t.Errorf("with loops 2, clients per loop %v", d)
	}
	for i, l := range h.g.all()[2:] {
		if a := l.ListenAddr(); a != "" {
			t.Errorf("loop %d still listens on %s", i+2, a)
		}
	}
	h.settings.Loops = 3
	h.reconfigure()
	if d := round(150); d[3] != 0 || d[0] == 0 || d[1] == 0 || d[2] == 0 {
		t.Errorf("with loops 3, clients per loop %v", d)
	}
	h.settings.Loops = 4
	h.reconfigure()
	if d := round(200); d[0] == 0 || d[1] == 0 || d[2] == 0 || d[3] == 0 {
		t.Errorf("with loops 4 again, clients per loop %v", d)
	}
}
