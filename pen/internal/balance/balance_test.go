package balance

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func setup(t *testing.T, lines ...string) (*Table, *clock, *config.Interp) {
	t.Helper()
	in := config.New(config.Default(), config.Process{}, nil)
	for _, l := range lines {
		if _, err := in.Exec(l, config.FromFlag); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	tb := New()
	clk := &clock{time.Unix(1_800_000_000, 0)}
	tb.SetClock(clk.now)
	tb.Configure(in.Config())
	return tb, clk, in
}

func servers(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("server %d address 127.0.0.1 port %d", i, 100+i))
	}
	return out
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// pick opens a connection, takes the first choice and closes it again.
func pick(t *testing.T, tb *Table, client string) int {
	t.Helper()
	c := tb.Open(ap(client))
	tg, ok := c.First()
	if !ok {
		return NoServer
	}
	c.Connected()
	c.Close()
	return tg.Index
}

func TestTrackingDefault(t *testing.T) {
	tb, _, _ := setup(t, servers(2)...)
	// Round-robin starts at server 1; then the client sticks.
	got := []int{pick(t, tb, "127.0.0.1:1000"), pick(t, tb, "127.0.0.1:1001"), pick(t, tb, "127.0.0.2:1000"), pick(t, tb, "127.0.0.2:1001")}
	want := []int{1, 1, 0, 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestRoundRobin(t *testing.T) {
	tb, _, _ := setup(t, append(servers(2), "roundrobin")...)
	got := []int{pick(t, tb, "127.0.0.1:1"), pick(t, tb, "127.0.0.1:2"), pick(t, tb, "127.0.0.2:1"), pick(t, tb, "127.0.0.1:3")}
	if want := []int{1, 0, 1, 0}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestHash(t *testing.T) {
	tb, _, _ := setup(t, append(servers(3), "hash")...)
	// 127.0.0.1 read little-endian is 16777343; % 3 = 2 (verified on Pen).
	if got := pick(t, tb, "127.0.0.1:5"); got != 2 {
		t.Errorf("hash of 127.0.0.1 over 3 servers: got %d, want 2", got)
	}
	// With -r the port (as stored, byte-swapped) is XORed in.
	h := hashIndex(ap("127.0.0.1:258"), 3, true) // port 0x0102 -> 0x0201
	if want := int((uint32(16777343) ^ 0x0201) % 3); h != want {
		t.Errorf("hash with port: got %d, want %d", h, want)
	}
	if got := hashIndex(ap("[::5]:1"), 3, false); got != 5%3 {
		t.Errorf("IPv6 hash: got %d", got)
	}
}

func TestWeightAndPrio(t *testing.T) {
	tb, _, _ := setup(t, "server 0 address 127.0.0.1 port 100 weight 1",
		"server 1 address 127.0.0.1 port 101 weight 3", "weight", "roundrobin")
	// Least weighted connections: hold connections open and watch the split.
	counts := map[int]int{}
	for i := 0; i < 8; i++ {
		c := tb.Open(ap(fmt.Sprintf("127.0.0.%d:1", i+1)))
		tg, ok := c.First()
		if !ok {
			t.Fatal("no server")
		}
		c.Connected()
		counts[tg.Index]++
	}
	if counts[0] != 2 || counts[1] != 6 {
		t.Errorf("weight 1:3 over 8 connections: got %v", counts)
	}

	tb, _, _ = setup(t, "server 0 address 127.0.0.1 port 100", "server 1 address 127.0.0.1 port 101", "weight", "roundrobin")
	if got := pick(t, tb, "127.0.0.1:1"); got != 0 {
		t.Errorf("all weights 0 should fall back to least connections, got %d", got)
	}

	tb, _, _ = setup(t, "server 0 address 127.0.0.1 port 100 prio 5", "server 1 address 127.0.0.1 port 101 prio 2",
		"server 2 address 127.0.0.1 port 102 prio 2", "prio", "roundrobin")
	if got := pick(t, tb, "127.0.0.1:1"); got != 1 {
		t.Errorf("prio: got %d, want 1 (lowest prio, lowest index)", got)
	}
	tb.Blacklist(1, time.Minute)
	if got := pick(t, tb, "127.0.0.1:1"); got != 2 {
		t.Errorf("prio with 1 blacklisted: got %d, want 2", got)
	}
}

func TestFailoverAndEmergency(t *testing.T) {
	tb, clk, _ := setup(t, append(servers(3), "roundrobin", "emergency_server 127.0.0.1:102")...)
	c := tb.Open(ap("127.0.0.1:1"))
	var seq []int
	tg, ok := c.First()
	for ok {
		seq = append(seq, tg.Index)
		if tg.Index == EmergencyServer {
			c.Close()
			break
		}
		c.Failed()
		tg, ok = c.Next()
	}
	// Initial 1, then 2, 0, 1 again (blacklisted now, skipped), then emergency.
	if want := []int{1, 2, 0, EmergencyServer}; fmt.Sprint(seq) != fmt.Sprint(want) {
		t.Errorf("failover sequence %v, want %v", seq, want)
	}
	for i := 0; i < 3; i++ {
		if s := tb.ServerStates()[i]; s.Until.IsZero() || s.Failures != 1 {
			t.Errorf("server %d should be blacklisted with one failure: %+v", i, s)
		}
	}
	// All blacklisted: new clients go straight to the emergency server.
	if got := pick(t, tb, "127.0.0.2:1"); got != EmergencyServer {
		t.Errorf("all blacklisted: got %d, want emergency", got)
	}
	// After the blacklist time they come back.
	clk.t = clk.t.Add(31 * time.Second)
	if got := pick(t, tb, "127.0.0.2:1"); got < 0 {
		t.Errorf("after blacklist expiry: got %d", got)
	}
}

func TestStubborn(t *testing.T) {
	tb, _, _ := setup(t, append(servers(2), "stubborn", "emergency_server 127.0.0.1:102")...)
	c := tb.Open(ap("127.0.0.1:1"))
	if _, ok := c.First(); !ok {
		t.Fatal("no first server")
	}
	c.Failed()
	if _, ok := c.Next(); ok {
		t.Errorf("stubborn should not fail over")
	}
}

func TestManualBlacklist(t *testing.T) {
	tb, clk, _ := setup(t, append(servers(2), "roundrobin")...)
	tb.Blacklist(1, 10*time.Second)
	for i := 0; i < 3; i++ {
		if got := pick(t, tb, "127.0.0.1:1"); got != 0 {
			t.Fatalf("server 1 blacklisted, got %d", got)
		}
	}
	clk.t = clk.t.Add(11 * time.Second)
	if got := []int{pick(t, tb, "127.0.0.1:1"), pick(t, tb, "127.0.0.1:1")}; fmt.Sprint(got) != "[1 0]" {
		t.Errorf("after 10s: %v", got)
	}
	tb.Blacklist(0, time.Hour)
	tb.Blacklist(0, 0)
	if st := tb.ServerStates()[0]; !st.Until.IsZero() {
		t.Errorf("blacklist 0 should reinstate: %+v", st)
	}
}

func TestAbuseAndACLs(t *testing.T) {
	tb, _, in := setup(t, "server 0 address 127.0.0.1 port 100", "abuse_server 127.0.0.1:103",
		"acl 1 permit 127.0.0.1", "client_acl 1")
	if got := pick(t, tb, "127.0.0.1:1"); got != 0 {
		t.Errorf("permitted client: got %d", got)
	}
	if got := pick(t, tb, "127.0.0.2:1"); got != AbuseServer {
		t.Errorf("denied client: got %d, want abuse", got)
	}
	if n := tb.ACLDenied(1); n != 1 {
		t.Errorf("acl 1 denials: %d", n)
	}
	// Without an abuse server a denied client is refused, not sent to -e.
	in.Exec("no abuse_server", config.FromControl)
	in.Exec("emergency_server 127.0.0.1:102", config.FromControl)
	tb.Configure(in.Config())
	c := tb.Open(ap("127.0.0.2:2"))
	if _, ok := c.First(); ok || c.Reason() != ReasonACL {
		t.Errorf("denied client without abuse server: ok=%v reason=%v", ok, c.Reason())
	}
	// server N acl: only one server, the client fails its acl: dropped.
	in.Exec("client_acl 0", config.FromControl)
	in.Exec("no emergency_server", config.FromControl)
	in.Exec("server 0 acl 1", config.FromControl)
	tb.Configure(in.Config())
	if got := pick(t, tb, "127.0.0.2:3"); got != NoServer {
		t.Errorf("server acl: got %d, want none", got)
	}
	if got := pick(t, tb, "127.0.0.1:3"); got != 0 {
		t.Errorf("server acl permitted client: got %d", got)
	}
}

func TestLimits(t *testing.T) {
	tb, _, _ := setup(t, "server 0 address 127.0.0.1 port 100 max 1 hard 2", "server 1 address 127.0.0.1 port 101 max 1")
	// client A lands on 1 (round-robin starts at 1) and stays open.
	a := tb.Open(ap("127.0.0.1:1"))
	if tg, _ := a.First(); tg.Index != 1 {
		t.Fatalf("first client on %d", tg.Index)
	}
	// client B: 0 has room.
	b := tb.Open(ap("127.0.0.2:1"))
	if tg, _ := b.First(); tg.Index != 0 {
		t.Fatalf("second client on %d", tg.Index)
	}
	// client B again: 0 is at max 1 but B is sticky and 1 < hard 2.
	b2 := tb.Open(ap("127.0.0.2:2"))
	if tg, ok := b2.First(); !ok || tg.Index != 0 {
		t.Errorf("sticky client over max under hard: %v %v", tg.Index, ok)
	}
	// client C: both full.
	c := tb.Open(ap("127.0.0.3:1"))
	if _, ok := c.First(); ok {
		t.Errorf("all servers at max, client C accepted")
	}
	b2.Close()
	b.Close()
	if got := tb.ServerStates()[0].Conns; got != 0 {
		t.Errorf("server 0 conns after closing: %d", got)
	}
}

func TestClientTable(t *testing.T) {
	tb, clk, _ := setup(t, append(servers(2), "clients_max 2048", "tracking 10")...)
	pick(t, tb, "127.0.0.1:1")
	clk.t = clk.t.Add(5 * time.Second)
	pick(t, tb, "127.0.0.2:1")
	st := tb.ClientStates()
	if len(st) != 2 || st[0].Connects != 1 || st[0].Server != 1 || st[1].Server != 0 {
		t.Fatalf("client states %+v", st)
	}
	// After the tracking time a returning client is new: its affinity to
	// server 1 is gone and round-robin places it again.
	clk.t = clk.t.Add(11 * time.Second)
	c := tb.Open(ap("127.0.0.1:2"))
	c.First()
	c.Close()
	for _, cs := range tb.ClientStates() {
		if cs.Addr == netip.MustParseAddr("127.0.0.1") && cs.Connects != 1 {
			t.Errorf("expired client kept its stats: %+v", cs)
		}
	}
}

func TestClientLRU(t *testing.T) {
	in := config.New(config.Default(), config.Process{}, nil)
	in.Exec("server 0 address 127.0.0.1 port 100", config.FromFlag)
	tb := newTable(2)
	clk := &clock{time.Unix(1_800_000_000, 0)}
	tb.SetClock(clk.now)
	c := in.Config().Clone()
	c.ClientsMax = 2
	tb.Configure(c)
	for i, a := range []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"} {
		clk.t = clk.t.Add(time.Second)
		pick(t, tb, a)
		_ = i
	}
	var addrs []string
	for _, cs := range tb.ClientStates() {
		addrs = append(addrs, cs.Addr.String())
	}
	if got := strings.Join(addrs, ","); got != "10.0.0.3,10.0.0.2" {
		t.Errorf("LRU replaced the wrong slot: %s", got)
	}
}

func TestRemoveServerKeepsState(t *testing.T) {
	tb, _, in := setup(t, append(servers(3), "roundrobin")...)
	c := tb.Open(ap("127.0.0.1:1"))
	c.First() // server 1
	c.Connected()
	c.Sent(100)
	if _, err := in.Exec("no server 0", config.FromControl); err != nil {
		t.Fatal(err)
	}
	tb.Configure(in.Config())
	st := tb.ServerStates()
	if len(st) != 2 || st[0].Sent != 100 || st[0].Conns != 1 {
		t.Errorf("after removing server 0, old server 1 is now 0 with its counters: %+v", st)
	}
}
