package balance

import (
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// The per-connection work of the event loops, from every core at once:
// choose a server, report it connected, count bytes, close. Place takes
// the table's lock once; Open and First take it twice. Connected, Sent,
// Received and Close take no lock.
func benchTable(b *testing.B, place bool) {
	in := config.New(config.Default(), config.Process{}, nil)
	for _, l := range append(servers(4), "roundrobin") {
		if _, err := in.Exec(l, config.FromFlag); err != nil {
			b.Fatal(err)
		}
	}
	tb := New()
	tb.Configure(in.Config())
	addr := netip.MustParseAddrPort("127.0.0.1:40000")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var c *Conn
			var ok bool
			if place {
				c, _, ok = tb.Place(addr)
			} else {
				c = tb.Open(addr)
				_, ok = c.First()
			}
			if !ok {
				b.Fatal("no server")
			}
			c.Connected()
			c.Sent(100)
			c.Received(200)
			c.Close()
		}
	})
}

func BenchmarkConnPlace(b *testing.B)     { benchTable(b, true) }
func BenchmarkConnOpenFirst(b *testing.B) { benchTable(b, false) }

// benchClients places connections from more distinct clients than the
// client table holds, so that every connection takes a slot from
// another client.
func benchClients(b *testing.B, max int) {
	in := config.New(config.Default(), config.Process{}, nil)
	for _, l := range append(servers(4), "roundrobin", "clients_max "+strconv.Itoa(max)) {
		if _, err := in.Exec(l, config.FromFlag); err != nil {
			b.Fatal(err)
		}
	}
	tb := New()
	tb.Configure(in.Config())
	var next atomic.Uint32
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			a := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
			c, _, ok := tb.Place(netip.AddrPortFrom(a, 40000))
			if !ok {
				b.Fatal("no server")
			}
			c.Connected()
			c.Close()
		}
	})
}

func BenchmarkNewClients2048(b *testing.B)  { benchClients(b, 2048) }
func BenchmarkNewClients20000(b *testing.B) { benchClients(b, 20000) }
