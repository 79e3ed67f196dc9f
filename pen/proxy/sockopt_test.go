package proxy

import (
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSocketOptions: as in Pen, the listener sets SO_KEEPALIVE (so every
// client socket has it), keepalive sets it on the sockets to the servers
// too, and tcp_nodelay sets TCP_NODELAY on the listener (inherited by the
// clients' sockets) and on the sockets to the servers.
func TestSocketOptions(t *testing.T) {
	held := make(chan struct{})
	defer close(held)
	ln := tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { <-held })
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepalive and tcp_nodelay %v", on), func(t *testing.T) {
			h := start(t, "127.0.0.1:0", func(s *Settings) { s.Keepalive, s.NoDelay = on, on },
				fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(ln)))
			c := h.dial()
			defer c.Close()
			var st struct{ down, up int }
			deadline := time.Now().Add(5 * time.Second)
			for {
				for i := 0; i < 8; i++ {
					if cs := h.loop.Conn(i); cs.UpFD >= 0 && cs.DownFD >= 0 && cs.State&int(stateInProgress) == 0 {
						st.down, st.up = cs.DownFD, cs.UpFD
					}
				}
				if st.up > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if st.up <= 0 {
				t.Fatal("no connected connection in pen's table")
			}
			get := func(fd, level, opt int) bool {
				v, err := unix.GetsockoptInt(fd, level, opt)
				if err != nil {
					t.Fatalf("getsockopt: %v", err)
				}
				return v != 0
			}
			for _, c := range []struct {
				what string
				got  bool
				want bool
			}{
				{"client socket SO_KEEPALIVE", get(st.down, unix.SOL_SOCKET, unix.SO_KEEPALIVE), true},
				{"client socket TCP_NODELAY", get(st.down, unix.IPPROTO_TCP, unix.TCP_NODELAY), on},
				{"server socket SO_KEEPALIVE", get(st.up, unix.SOL_SOCKET, unix.SO_KEEPALIVE), on},
				{"server socket TCP_NODELAY", get(st.up, unix.IPPROTO_TCP, unix.TCP_NODELAY), on},
			} {
				if c.got != c.want {
					t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}
