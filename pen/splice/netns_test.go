//go:build linux

package splice

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pen-lb/pen-appliance/pen/internal/netnstest"
)

// Peers on other hosts: client -- pen -- server, each in a network
// namespace of its own, on veths with their offloads at their defaults.
// The program takes the client's segments on the ingress of pen's
// interface toward it, rewrites them and sends them out of the
// interface toward the server (bpf_redirect_neigh), and back; pen's
// sockets, silenced by the egress program, receive nothing.
func TestSpliceAcrossHosts(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) { acrossHosts(t, false, v4Hosts) })
	t.Run("ipv6", func(t *testing.T) { acrossHosts(t, false, v6Hosts) })
}

// hostAddrs are the addresses of acrossHosts' topology: the client's,
// pen's toward it, pen's toward the server, the server's (with prefix
// lengths), and the ports pen and the server listen on.
type hostAddrs struct {
	client, penC, penS, server string
	network                    string
}

var (
	v4Hosts = hostAddrs{"198.18.10.1/24", "198.18.10.2/24", "198.18.20.2/24", "198.18.20.3/24", "tcp4"}
	v6Hosts = hostAddrs{"2001:db8:10::1/64", "2001:db8:10::2/64", "2001:db8:20::2/64", "2001:db8:20::3/64", "tcp6"}
)

// at is the address of a (without its prefix length) with port.
func at(a string, port uint16) string {
	p := netip.MustParsePrefix(a)
	return netip.AddrPortFrom(p.Addr(), port).String()
}

// The same with one segment in fifty lost, at random, on the client's
// and the server's links, both ways, from the splice on: the peers
// recover with SACK and retransmissions that pass through the program,
// and pen sends again what it owed.
func TestSpliceAcrossLossyHosts(t *testing.T) {
	acrossHosts(t, true, v4Hosts)
}

func acrossHosts(t *testing.T, lossy bool, ad hostAddrs) {
	n := netnstest.New(t)
	client, pen, server := n.Host("client"), n.Host("pen"), n.Host("server")
	n.Link(client, "eth0", []string{ad.client}, pen, "c0", []string{ad.penC})
	n.Link(pen, "s0", []string{ad.penS}, server, "eth0", []string{ad.server})
	in := pen.Do

	var s *Splicer
	var ls, lm net.Listener
	if err := in(func() (err error) { s, err = open(); return }); err != nil {
		t.Fatalf("splicer: %v", err)
	}
	t.Cleanup(s.Close)
	if err := server.Do(func() (err error) { ls, err = net.Listen(ad.network, at(ad.server, 8080)); return }); err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if err := in(func() (err error) { lm, err = net.Listen(ad.network, at(ad.penC, 80)); return }); err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	c, err := client.Dial(ad.network, at(ad.penC, 80))
	if err != nil {
		t.Fatal(err)
	}
	down, err := lm.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var up net.Conn
	if err := in(func() (err error) { up, err = net.Dial(ad.network, at(ad.server, 8080)); return }); err != nil {
		t.Fatal(err)
	}
	sv, err := ls.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); down.Close(); up.Close(); sv.Close() })
	var after []func()
	if lossy {
		after = append(after, func() {
			loseSome(t, client, "eth0")
			loseSome(t, server, "eth0")
		})
	}
	carryBothWays(t, s, c, down, up, sv, in, after...)
	if lossy {
		// Segments were lost, and sent again through the program.
		for _, h := range []*netnstest.Host{client, server} {
			if n := retransmitted(t, h); n == 0 {
				t.Errorf("%s sent nothing again: no segment was lost", h.Name)
			} else {
				t.Logf("%s sent %d segments again", h.Name, n)
			}
		}
	}
}

// retransmitted reads the TCP retransmissions of h's namespace.
func retransmitted(t *testing.T, h *netnstest.Host) int {
	t.Helper()
	var names []string
	for _, line := range strings.Split(h.Run("cat", "/proc/net/snmp"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "RetransSegs" && i < len(f) {
				n, _ := strconv.Atoi(f[i])
				return n
			}
		}
	}
	t.Fatalf("%s: no RetransSegs in /proc/net/snmp", h.Name)
	return 0
}

// loseSome drops one packet in fifty, at random, both ways on h's dev.
func loseSome(t *testing.T, h *netnstest.Host, dev string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "pen_test_loss", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			asm.FnGetPrandomU32.Call(),
			asm.Mod.Imm(asm.R0, 50),
			asm.JEq.Imm(asm.R0, 0, "drop"),
			asm.Mov.Imm(asm.R0, tcxNext),
			asm.Return(),
			asm.Mov.Imm(asm.R0, tcxDrop).WithSymbol("drop"),
			asm.Return(),
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	if err := h.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			l, err := link.AttachTCX(link.TCXOptions{Interface: ifi.Index, Program: prog, Attach: at})
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
