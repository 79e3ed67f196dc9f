package proxy

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestIdlers: with idlers N the loop keeps N upstream connections with no
// client open to the servers, in round-robin order (Pen's idlers), opens
// another when a server ends one, throws away what servers send on them,
// and closes them when N falls.
func TestIdlers(t *testing.T) {
	var open [2]atomic.Int32
	var accepted atomic.Int32
	var endNext atomic.Bool
	var lns [2]net.Listener
	for i := range lns {
		lns[i] = tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
			accepted.Add(1)
			open[i].Add(1)
			defer open[i].Add(-1)
			if endNext.CompareAndSwap(true, false) {
				c.Write([]byte("bye\n")) // the server ends an idler: pen opens another
				return
			}
			c.Write([]byte("hello\n"))
			c.Read(make([]byte, 1)) // until pen closes it
		})
	}
	h := start(t, "127.0.0.1:0", func(s *Settings) { s.Idlers = 2 },
		fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(lns[0])),
		fmt.Sprintf("server 1 address 127.0.0.1 port %d", port(lns[1])))
	wait := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: idlers %d, open connections %d and %d, %d accepted",
					what, h.loop.Idlers(), open[0].Load(), open[1].Load(), accepted.Load())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("idlers 2: one on each server", func() bool {
		return h.loop.Idlers() == 2 && open[0].Load() == 1 && open[1].Load() == 1
	})
	time.Sleep(1500 * time.Millisecond) // past a round of the loop's timers
	if open[0].Load() != 1 || open[1].Load() != 1 || accepted.Load() != 2 {
		t.Fatalf("the idlers did not stay: %d and %d open, %d accepted", open[0].Load(), open[1].Load(), accepted.Load())
	}
	endNext.Store(true)
	h.settings.Idlers = 3
	h.reconfigure()
	wait("idlers 3, one ended by its server and opened again", func() bool {
		return h.loop.Idlers() == 3 && open[0].Load()+open[1].Load() == 3 && accepted.Load() == 4 &&
			open[0].Load() > 0 && open[1].Load() > 0
	})
	h.settings.Idlers = 0
	h.reconfigure()
	wait("idlers 0", func() bool { return h.loop.Idlers() == 0 && open[0].Load() == 0 && open[1].Load() == 0 })
}
