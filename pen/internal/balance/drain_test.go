package balance

import (
	"testing"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// A draining server takes no new connection, not even from a client
// tracked to it; its open connections go on and end as usual.
func TestDrain(t *testing.T) {
	tb, _, in := setup(t, servers(2)...)
	// Tracking: this client goes to server 1 and sticks.
	c := tb.Open(ap("127.0.0.9:1"))
	open, ok := c.First()
	if !ok || open.Index != 1 {
		t.Fatalf("first choice %v %v, want server 1", open, ok)
	}
	c.Connected()
	if _, err := in.Exec("server 1 drain 1", config.FromControl); err != nil {
		t.Fatal(err)
	}
	tb.Configure(in.Config())
	for i := 0; i < 4; i++ {
		if got := pick(t, tb, "127.0.0.9:2"); got != 0 {
			t.Fatalf("connection %d went to server %d while server 1 drains", i, got)
		}
	}
	if n := tb.ServerStates()[1].Conns; n != 1 {
		t.Errorf("server 1 has %d connections, want the open one", n)
	}
	c.Close()
	if n := tb.ServerStates()[1].Conns; n != 0 {
		t.Errorf("server 1 has %d connections after the close", n)
	}
	if _, err := in.Exec("server 1 drain 0", config.FromControl); err != nil {
		t.Fatal(err)
	}
	tb.Configure(in.Config())
	// The client was tracked to server 0 meanwhile; new clients reach
	// server 1 again.
	if got := []int{pick(t, tb, "127.0.0.10:1"), pick(t, tb, "127.0.0.11:1")}; got[0] != 1 && got[1] != 1 {
		t.Errorf("after drain 0 new clients went to %v, none to server 1", got)
	}
}
