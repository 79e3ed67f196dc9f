package transparent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/internal/netnstest"
)

// routerIn returns a Router working in h's namespace.
func routerIn(t *testing.T, h *netnstest.Host, table, priority int) *Router {
	t.Helper()
	ns, err := h.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nh, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	r := &Router{h: nh, table: table, priority: priority, probe: probeSocket}
	t.Cleanup(r.Close)
	return r
}

func srv(s string, udp bool) Server {
	return Server{Addr: netip.MustParseAddrPort(s), UDP: udp}
}

// ipRules is what ip rule shows at pen's priority, per family, one rule
// a line: the kernel's view, read apart from the netlink library.
func ipRules(h *netnstest.Host, priority int) []string {
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(strings.TrimSpace(h.IP(fam, "rule", "show", "priority", fmt.Sprint(priority))), "\n") {
			if l = strings.Join(strings.Fields(l), " "); l != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

func ipRoutes(h *netnstest.Host, table int) []string {
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(strings.TrimSpace(h.IP(fam, "route", "show", "table", fmt.Sprint(table))), "\n") {
			if l = strings.Join(strings.Fields(l), " "); l != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

func same(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func TestSyncFollowsServers(t *testing.T) {
	n := netnstest.New(t)
	h := n.Host("pen")
	r := routerIn(t, h, DefaultTable, DefaultPriority)

	servers := []Server{
		srv("198.18.2.3:80", false),
		srv("198.18.2.2:80", false),
		srv("198.18.2.2:80", false), // the same server twice: one rule
		srv("198.18.2.2:53", true),
		srv("[2001:db8:2::2]:8080", false),
		srv("[::ffff:198.18.2.4]:443", false), // IPv4 written as IPv6
		{},                                    // an empty slot
		srv("198.18.2.5:0", false),            // an unused slot
	}
	for i := range 2 { // the second time changes nothing
		if err := r.Sync(servers); err != nil {
			t.Fatalf("Sync #%d: %v", i+1, err)
		}
		same(t, "ip rule", ipRules(h, DefaultPriority), []string{
			"7360: from 198.18.2.2 ipproto udp sport 53 lookup 736",
			"7360: from 198.18.2.2 ipproto tcp sport 80 lookup 736",
			"7360: from 198.18.2.3 ipproto tcp sport 80 lookup 736",
			"7360: from 198.18.2.4 ipproto tcp sport 443 lookup 736",
			"7360: from 2001:db8:2::2 ipproto tcp sport 8080 lookup 736",
		})
		same(t, "ip route table 736", ipRoutes(h, DefaultTable), []string{
			"local default dev lo scope host",
			"local default dev lo metric 1024 pref medium",
		})
	}
	got, err := r.Rules()
	if err != nil {
		t.Fatal(err)
	}
	same(t, "Rules", got, []string{
		"from 198.18.2.2 ipproto tcp sport 80",
		"from 198.18.2.2 ipproto udp sport 53",
		"from 198.18.2.3 ipproto tcp sport 80",
		"from 198.18.2.4 ipproto tcp sport 443",
		"from 2001:db8:2::2 ipproto tcp sport 8080",
	})
	routes, err := r.Routes()
	if err != nil {
		t.Fatal(err)
	}
	same(t, "Routes", routes, []string{"local 0.0.0.0/0 dev lo", "local ::/0 dev lo"})

	// A server moves to another port, one goes, the IPv6 one goes and
	// with it the IPv6 route.
	if err := r.Sync([]Server{srv("198.18.2.2:81", false), srv("198.18.2.2:53", true)}); err != nil {
		t.Fatal(err)
	}
	same(t, "ip rule after the change", ipRules(h, DefaultPriority), []string{
		"7360: from 198.18.2.2 ipproto udp sport 53 lookup 736",
		"7360: from 198.18.2.2 ipproto tcp sport 81 lookup 736",
	})
	same(t, "ip route table 736 after the change", ipRoutes(h, DefaultTable), []string{"local default dev lo scope host"})

	if err := r.Sync(nil); err != nil {
		t.Fatal(err)
	}
	same(t, "ip rule without servers", ipRules(h, DefaultPriority), nil)
	same(t, "ip route table 736 without servers", ipRoutes(h, DefaultTable), nil)
}

// A pen that was killed leaves its rules and routes; the next one finds
// them by table and priority, keeps exactly one set, and leaves alone what
// is not its own.
func TestLeftoversOfAKilledPen(t *testing.T) {
	n := netnstest.New(t)
	h := n.Host("pen")
	servers := []Server{srv("198.18.2.2:80", false), srv("[2001:db8:2::3]:80", false)}

	dead := routerIn(t, h, 900, 9000)
	if err := dead.Sync(append(servers, srv("198.18.2.9:80", false))); err != nil {
		t.Fatal(err)
	}
	// Someone else's rules: same priority, another table; same table,
	// another priority; and one at pen's priority and table that pen
	// does not make.
	h.IP("rule", "add", "priority", "9000", "from", "198.18.2.2", "lookup", "901")
	h.IP("rule", "add", "priority", "9001", "from", "198.18.2.2", "lookup", "900")
	h.IP("rule", "add", "priority", "9000", "fwmark", "1", "lookup", "900")

	next := routerIn(t, h, 900, 9000)
	if err := next.Sync(servers); err != nil {
		t.Fatal(err)
	}
	same(t, "ip rule", ipRules(h, 9000), []string{
		"9000: from 198.18.2.2 ipproto tcp sport 80 lookup 900",
		"9000: from 198.18.2.2 lookup 901",
		"9000: from 2001:db8:2::3 ipproto tcp sport 80 lookup 900",
	})
	if err := next.Cleanup(); err != nil {
		t.Fatal(err)
	}
	same(t, "ip rule at 9000 after Cleanup", ipRules(h, 9000), []string{"9000: from 198.18.2.2 lookup 901"})
	same(t, "ip rule at 9001 after Cleanup", ipRules(h, 9001), []string{"9001: from 198.18.2.2 lookup 900"})
	same(t, "ip route table 900 after Cleanup", ipRoutes(h, 900), nil)
	if err := next.Cleanup(); err != nil {
		t.Errorf("Cleanup with nothing to clean: %v", err)
	}
}

func TestTableAndPriorityChecked(t *testing.T) {
	for _, c := range []struct{ table, prio int }{{254, 100}, {255, 100}, {0, 100}, {100, 0}, {100, 32766}, {100, 40000}} {
		if _, err := New(c.table, c.prio); err == nil {
			t.Errorf("New(%d, %d) accepted", c.table, c.prio)
		}
	}
}

// The routing pen installs is what a transparent socket needs: with the
// backends' default route through pen's host, a socket bound to the
// client's address reaches the backend, which sees the client's address,
// and gets the answer (TCP and UDP, IPv4 and IPv6). Without the rules the
// same connection fails.
func TestRepliesReachTransparentSockets(t *testing.T) {
	n := netnstest.New(t)
	pen := n.Host("pen")
	be := n.Host("backend")
	n.Link(pen, "be0", []string{"198.18.2.1/24", "2001:db8:2::1/64"}, be, "eth0", []string{"198.18.2.2/24", "2001:db8:2::2/64"})
	be.Route("default", "via", "198.18.2.1")
	be.Route("default", "via", "2001:db8:2::1")
	pen.Sysctl("net.ipv4.ip_forward", "1")
	pen.Sysctl("net.ipv6.conf.all.forwarding", "1")
	// The client's network is beyond pen (a route, so that the address
	// is not pen's own).
	pen.Route("blackhole", "198.18.1.0/24")
	pen.Route("blackhole", "2001:db8:1::/64")

	// Backends that answer with the address they saw.
	var lns []net.Listener
	var pcs []net.PacketConn
	for _, a := range []string{"198.18.2.2:80", "[2001:db8:2::2]:80"} {
		err := be.Do(func() error {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
			pc, err := net.ListenPacket("udp", a)
			pcs = append(pcs, pc)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ln := range lns {
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
				c.Close()
			}
		}()
	}
	for _, pc := range pcs {
		t.Cleanup(func() { pc.Close() })
		go func() {
			b := make([]byte, 100)
			for {
				_, from, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(from.(*net.UDPAddr).IP.String()+"\n"), from)
			}
		}()
	}

	ask := func(network, client, server string) (string, error) {
		var c net.Conn
		err := pen.Do(func() error {
			d := net.Dialer{
				Timeout:   time.Second,
				LocalAddr: localAddr(network, client),
				Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					rc.Control(func(fd uintptr) {
						if strings.Contains(client, ":") {
							serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
						} else {
							serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
						}
					})
					return serr
				},
			}
			var err error
			c, err = d.DialContext(context.Background(), network, server)
			return err
		})
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if network == "udp" {
			if _, err := c.Write([]byte("hello\n")); err != nil {
				return "", err
			}
		}
		return bufio.NewReader(c).ReadString('\n')
	}
	cases := []struct{ network, client, server string }{
		{"tcp", "198.18.1.7", "198.18.2.2:80"},
		{"udp", "198.18.1.7", "198.18.2.2:80"},
		{"tcp", "2001:db8:1::7", "[2001:db8:2::2]:80"},
		{"udp", "2001:db8:1::7", "[2001:db8:2::2]:80"},
	}
	for _, c := range cases {
		if got, err := ask(c.network, c.client, c.server); err == nil {
			t.Errorf("%s %s from %s without pen's rules: answer %q; want none", c.network, c.server, c.client, got)
		}
	}
	r := routerIn(t, pen, DefaultTable, DefaultPriority)
	servers := []Server{
		srv("198.18.2.2:80", false), srv("198.18.2.2:80", true),
		srv("[2001:db8:2::2]:80", false), srv("[2001:db8:2::2]:80", true),
	}
	if err := r.Sync(servers); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		got, err := ask(c.network, c.client, c.server)
		if err != nil {
			t.Errorf("%s %s from %s: %v", c.network, c.server, c.client, err)
			continue
		}
		if got != c.client+"\n" {
			t.Errorf("%s %s from %s: the backend saw %q", c.network, c.server, c.client, got)
		}
	}
	if err := r.Cleanup(); err != nil {
		t.Fatal(err)
	}
	same(t, "ip rule after Cleanup", ipRules(pen, DefaultPriority), nil)
	same(t, "ip route table 736 after Cleanup", ipRoutes(pen, DefaultTable), nil)
}

func localAddr(network, ip string) net.Addr {
	a := net.ParseIP(ip)
	if network == "udp" {
		return &net.UDPAddr{IP: a}
	}
	return &net.TCPAddr{IP: a}
}

// What is missing is said in the kernel's and the capabilities' terms.
func TestExplain(t *testing.T) {
	r := &Router{table: DefaultTable, priority: DefaultPriority}
	for _, c := range []struct {
		fam  int
		err  error
		want string
	}{
		{unix.AF_INET, unix.EPERM, "transparent: adding rule: pen may not change the routing: it needs CAP_NET_ADMIN (operation not permitted)"},
		{unix.AF_INET, unix.EAFNOSUPPORT, "transparent: adding rule: the kernel has no IPv4 policy routing (CONFIG_IP_MULTIPLE_TABLES) (address family not supported by protocol)"},
		{unix.AF_INET6, unix.EAFNOSUPPORT, "transparent: adding rule: the kernel has no IPv6 policy routing (CONFIG_IPV6_MULTIPLE_TABLES) or no IPv6 (address family not supported by protocol)"},
		{unix.AF_INET, unix.EINVAL, "transparent: adding rule: the kernel cannot match rules on protocol and port (Linux 4.17 or later needed) (invalid argument)"},
		{unix.AF_INET, unix.EBUSY, "transparent: adding rule: device or resource busy"},
	} {
		if got := r.explain("adding rule", c.fam, c.err).Error(); got != c.want {
			t.Errorf("%v:\n got %s\nwant %s", c.err, got, c.want)
		}
	}
}
