package engine

import (
	"net/netip"
	"testing"

	"github.com/pen-lb/pen-appliance/pen/acl"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
)

// The DSR pool shows the balancer's servers with their weights, prio and
// blacklisting, and a server failed by DSR is blacklisted as a failed
// connect is.
func TestDSRPool(t *testing.T) {
	c := config.Default()
	c.Prio = true
	for i, spec := range []string{"198.18.0.11:80:0:0:1:2", "198.18.0.12:80:0:0:3:1"} {
		s, err := config.ParseServer(spec, 80, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetServer(i, s)
	}
	em, err := config.ParseServer("198.18.0.13", 80, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Emergency = &em
	tb := balance.New()
	tb.Configure(c)
	m := &dsrMode{table: tb}
	m.cur.Store(c)
	s := m.Servers()
	if !s.Prio || len(s.List) != 2 || s.Emergency == nil {
		t.Fatalf("servers %+v", s)
	}
	for i, want := range []struct {
		addr         string
		weight, prio int
	}{{"198.18.0.11", 1, 2}, {"198.18.0.12", 3, 1}} {
		b := s.List[i]
		if b.Index != i || b.Addr != netip.MustParseAddr(want.addr) || b.Weight != want.weight || b.Prio != want.prio || !b.Up {
			t.Errorf("server %d: %+v, want %+v up", i, b, want)
		}
	}
	if e := s.Emergency; e.Addr != netip.MustParseAddr("198.18.0.13") || !e.Up || e.Index != balance.EmergencyServer {
		t.Errorf("emergency %+v", e)
	}
	m.Failed(1)
	if st := tb.ServerStates()[1]; st.Until.IsZero() || st.Failed.IsZero() {
		t.Errorf("server 1 after Failed: %+v, want blacklisted", st)
	}
	if m.Servers().List[1].Up {
		t.Error("a failed server is still up")
	}
	tb.Blacklist(1, 0)
	if !m.Servers().List[1].Up {
		t.Error("a reinstated server is not up")
	}
}

// An empty tarpit list tarpits nothing (Pen's matched every address).
func TestDSRTarpitList(t *testing.T) {
	c := config.Default()
	if tarpitList(c) != nil {
		t.Error("tarpit_acl off gives a list")
	}
	c.TarpitACL = 3
	if tarpitList(c) != nil {
		t.Error("an empty tarpit list is used")
	}
	e, err := acl.ParseEntry([]string{"permit", "198.18.0.128", "255.255.255.240"})
	if err != nil {
		t.Fatal(err)
	}
	c.ACLs[3] = acl.List{e}
	l := tarpitList(c)
	if l == nil || !l.Match(netip.MustParseAddr("198.18.0.130"), nil) || l.Match(netip.MustParseAddr("198.18.0.150"), nil) {
		t.Errorf("tarpit list %v", l)
	}
	if nets := tarpitNets(l); len(nets) != 1 || nets[0].Addr != netip.MustParseAddr("198.18.0.128") || nets[0].Mask != [4]byte{255, 255, 255, 240} {
		t.Errorf("tarpit networks %v", nets)
	}
	// A list whose last entry denies permits what it does not name: no
	// networks hold it.
	deny, err := acl.ParseEntry([]string{"deny", "198.18.0.129", "255.255.255.255"})
	if err != nil {
		t.Fatal(err)
	}
	if nets := tarpitNets(acl.List{e, deny}); nets != nil {
		t.Errorf("networks %v for a list that ends with deny", nets)
	}
	if nets := tarpitNets(acl.List{deny, e}); len(nets) != 1 {
		t.Errorf("networks %v for deny, permit", nets)
	}
}
