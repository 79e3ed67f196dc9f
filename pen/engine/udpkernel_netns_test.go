package engine

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/internal/netnstest"
)

// udpEcho answers every datagram on addr, in h, with name, the address it
// came from and the datagram.
func udpEcho(t *testing.T, h *netnstest.Host, name, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s %s %s", name, from, b[:n]), from)
		}
	}()
}

// exchangeUDP sends msg on c and returns the answer, or "" after a second.
func exchangeUDP(c net.Conn, msg string) string {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return ""
	}
	b := make([]byte, 2048)
	n, err := c.Read(b)
	if err != nil {
		return ""
	}
	return string(b[:n])
}

// With udp_kernel (the default), a UDP flow between hosts is carried by
// the kernel once pen has placed it: stopped with SIGSTOP, pen answers
// nothing itself, and the flow's questions are still answered, from the
// address the client asked, by the server pen chose, which sees them come
// from pen. A new flow needs pen: while it is stopped, it gets no answer;
// once pen runs again, it does.
//
// Over IPv4 and IPv6, each with the veths' offloads at their defaults
// (checksums left partial, as the kernel hands them on) and with
// checksum offloads off on every veth, so that every datagram carries a
// complete checksum and every receiver checks it: one the program got
// wrong is dropped, and its question goes unanswered.
func TestUDPKernelAcrossHosts(t *testing.T) {
	for _, tc := range []struct {
		name, vip, pen string
		backends       [2]string
		csumOff        bool
	}{
		{"ipv4", "198.18.1.1:53", "198.18.2.1", [2]string{"198.18.2.2:5353", "198.18.2.3:5353"}, false},
		{"ipv4-checksums", "198.18.1.1:53", "198.18.2.1", [2]string{"198.18.2.2:5353", "198.18.2.3:5353"}, true},
		{"ipv6", "[2001:db8:1::1]:53", "2001:db8:2::1", [2]string{"[2001:db8:2::2]:5353", "[2001:db8:2::3]:5353"}, false},
		{"ipv6-checksums", "[2001:db8:1::1]:53", "2001:db8:2::1", [2]string{"[2001:db8:2::2]:5353", "[2001:db8:2::3]:5353"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t)
			if tc.csumOff {
				for _, hd := range []struct {
					h   *netnstest.Host
					dev string
				}{{g.client, "eth0"}, {g.pen, "c0"}, {g.pen, "b0"}, {g.pen, "b1"}, {g.backends[0], "eth0"}, {g.backends[1], "eth0"}} {
					hd.h.Run("ethtool", "-K", hd.dev, "tx", "off", "rx", "off")
				}
			}
			udpEcho(t, g.backends[0], "be2", tc.backends[0])
			udpEcho(t, g.backends[1], "be3", tc.backends[1])
			p := startPen(t, g.pen, nil, "-U", tc.vip, tc.backends[0], tc.backends[1])
			udpKernelAcrossHosts(t, g, p, tc.vip, net.JoinHostPort(tc.pen, ""))
		})
	}
}

// udpKernelAcrossHosts is TestUDPKernelAcrossHosts once pen runs: from is
// how the servers print pen's address ("ADDR:").
func udpKernelAcrossHosts(t *testing.T, g *gateway, p *penProc, vip, from string) {
	var c net.Conn
	for i := 0; ; i++ {
		var err error
		if c, err = g.client.Dial("udp", vip); err != nil {
			t.Fatal(err)
		}
		if exchangeUDP(c, "hello") != "" {
			break
		}
		c.Close()
		if i == 50 {
			t.Fatalf("pen does not answer; its output:\n%s", p.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer c.Close()
	check := func(label string, n int) string {
		t.Helper()
		server := ""
		for i := range n {
			msg := fmt.Sprintf("%s %d", label, i)
			got := exchangeUDP(c, msg)
			f := strings.Fields(got)
			if len(f) < 2 || !strings.HasSuffix(got, " "+msg) {
				t.Fatalf("%s: question %d answered %q", label, i, got)
			}
			if server == "" {
				server = f[0]
			} else if f[0] != server {
				t.Fatalf("%s: the flow moved from %s to %s", label, server, f[0])
			}
			if !strings.HasPrefix(f[1], from) {
				t.Fatalf("%s: the server saw the question come from %s, not from pen (%s)", label, f[1], from)
			}
		}
		return server
	}
	before := check("through pen", 10)
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if after := check("pen stopped", 200); after != before {
		t.Errorf("the flow went to %s in the kernel, %s through pen", after, before)
	}
	other, err := g.client.Dial("udp", vip)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if got := exchangeUDP(other, "new flow"); got != "" {
		t.Errorf("a new flow was answered while pen was stopped: %q", got)
	}
	p.cmd.Process.Signal(syscall.SIGCONT)
	stopped = false
	var got string
	for i := 0; i < 5 && got == ""; i++ {
		got = exchangeUDP(other, "new flow")
	}
	if !strings.HasSuffix(got, " new flow") {
		t.Errorf("a new flow after pen went on: %q", got)
	}
}
