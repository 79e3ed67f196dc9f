//go:build linux

package tcx

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pen-lb/pen-appliance/internal/testenv"
	"github.com/pen-lb/pen-appliance/pen/internal/netnstest"
)

// host makes a network namespace with an interface d0 (one end of a
// veth pair, up, no address), or skips.
func host(t *testing.T) *netnstest.Host {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "TCX programs and network namespaces need root")
	}
	n := netnstest.New(t)
	h := n.Host("tcx")
	n.Link(h, "d0", nil, n.Host("peer"), "e0", nil)
	return h
}

// attached counts the programs on ifindex's hook.
func attached(t *testing.T, ifindex int, hook ebpf.AttachType) int {
	t.Helper()
	r, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: hook})
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Programs)
}

func passProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}}) // TCX_NEXT
	if err != nil {
		testenv.Skip(t, "BPF programs are not available: "+err.Error())
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// An Attacher puts its hooks on an interface once however often it is
// asked, takes back what it attached when a later hook is refused,
// answers a refused interface with the same error without asking the
// kernel again, and takes everything off on Close.
func TestAttacher(t *testing.T) {
	h := host(t)
	err := h.Do(func() error {
		prog := passProgram(t)
		d0, err := net.InterfaceByName("d0")
		if err != nil {
			return err
		}
		a := NewAttacher(Hook{prog, ebpf.AttachTCXIngress}, Hook{prog, ebpf.AttachTCXEgress})
		for range 3 {
			if err := a.Attach(d0.Index); err != nil {
				return err
			}
		}
		if in, out := attached(t, d0.Index, ebpf.AttachTCXIngress), attached(t, d0.Index, ebpf.AttachTCXEgress); in != 1 || out != 1 {
			t.Errorf("after three calls: %d programs on ingress and %d on egress, want one each", in, out)
		}
		const nowhere = 1 << 30
		first := a.Attach(nowhere)
		if first == nil {
			t.Fatal("attached to an interface that does not exist")
		}
		if again := a.Attach(nowhere); again != first {
			t.Errorf("the refusal again: %v, want the first one (%v) as it was", again, first)
		}

		// The egress hook is refused (not a TCX hook): the ingress
		// hook attached just before comes off again.
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		bad := NewAttacher(Hook{prog, ebpf.AttachTCXIngress}, Hook{prog, ebpf.AttachCGroupInetEgress})
		if err := bad.Attach(lo.Index); err == nil {
			t.Error("a hook of the wrong type was attached")
		}
		if n := attached(t, lo.Index, ebpf.AttachTCXIngress); n != 0 {
			t.Errorf("%d programs left on lo's ingress after the refusal", n)
		}

		a.Close()
		if in, out := attached(t, d0.Index, ebpf.AttachTCXIngress), attached(t, d0.Index, ebpf.AttachTCXEgress); in != 0 || out != 0 {
			t.Errorf("after Close: %d programs on ingress and %d on egress", in, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Addrs knows the loopback addresses and the interfaces' own, keeps a
// reading for MaxAge, and reads again sooner when an address the caller
// knows to be the host's is missing.
func TestAddrs(t *testing.T) {
	h := host(t)
	added := netip.MustParseAddr("198.51.100.7")
	var d0, lo int
	a := &Addrs{MaxAge: time.Hour}
	err := h.Do(func() error {
		for name, p := range map[string]*int{"d0": &d0, "lo": &lo} {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return err
			}
			*p = ifi.Index
		}
		s, err := a.Get()
		if err != nil {
			return err
		}
		for _, ad := range []string{"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"} {
			if got := s.Index(netip.MustParseAddr(ad)); got != lo || !s.Local(netip.MustParseAddr(ad)) {
				t.Errorf("%s: interface %d, want lo (%d)", ad, got, lo)
			}
		}
		if s.Loopback() != lo {
			t.Errorf("Loopback() = %d, want %d", s.Loopback(), lo)
		}
		if s.Local(added) {
			t.Errorf("%v is local before it was added", added)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h.IP("addr", "add", added.String()+"/24", "dev", "d0")
	err = h.Do(func() error {
		s, err := a.Get()
		if err != nil {
			return err
		}
		if s.Local(added) {
			t.Errorf("read again within MaxAge without being asked to")
		}
		if s, err = a.Get(added); err != nil {
			return err
		}
		if got := s.Index(added); got != d0 {
			t.Errorf("%v: interface %d after a reading asked for it, want d0 (%d)", added, got, d0)
		}
		if got := s.Index(netip.MustParseAddr("::ffff:198.51.100.7")); got != d0 {
			t.Errorf("the IPv4-mapped form: interface %d, want d0 (%d)", got, d0)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
