// Package transparent installs the policy routing that transparent
// proxying needs, through rtnetlink.
//
// In transparent mode pen connects to a server from the client's own
// address (IP_TRANSPARENT, Pen's spoof_bind). The server answers that
// address; its replies reach pen's host because the server's route to the
// client goes through it, but the host would forward them to the client,
// which knows nothing of the connection, instead of handing them to pen's
// socket. Two things change that:
//
//   - a routing table of pen's own (DefaultTable) holding "local
//     0.0.0.0/0 dev lo" and "local ::/0 dev lo": every address is local
//     for a packet looked up there;
//   - one policy rule per server, at pen's priority (DefaultPriority):
//     "from SERVER-ADDRESS ipproto tcp|udp sport SERVER-PORT lookup
//     TABLE". Only what the server sends from the port pen talks to is
//     delivered locally; the rest of its traffic is routed as before.
//
// Everything pen installs is found by its table and priority, so a pen
// that was killed leaves nothing that its successor does not find and
// remove. Two pens on one host need a table and a priority each.
package transparent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The defaults stay clear of the kernel's own tables (253 default, 254
// main, 255 local) and of the tables and rules that set-up guides use
// (table 100, rule priorities 100 to 1000 in steps of 100): 736 is "pen"
// on a phone keypad. The rules come before the main table's rule (32766),
// as they must, and after the local table's (0).
const (
	DefaultTable    = 736
	DefaultPriority = 7360
)

// Server is one server pen connects to.
type Server struct {
	Addr netip.AddrPort
	UDP  bool
}

func (s Server) String() string {
	p := "tcp"
	if s.UDP {
		p = "udp"
	}
	return p + " " + s.Addr.String()
}

// Router installs and removes the routing of one pen.
type Router struct {
	h        *netlink.Handle
	table    int
	priority int
	// probe checks that the kernel lets pen make transparent sockets.
	probe func(fam int) error
}

// New returns a Router for the given table and rule priority in the
// current network namespace.
func New(table, priority int) (*Router, error) {
	if err := check(table, priority); err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("transparent: netlink: %v", err)
	}
	return &Router{h: h, table: table, priority: priority, probe: probeSocket}, nil
}

func check(table, priority int) error {
	switch {
	case table <= 0 || int64(table) >= 1<<32-1 || table == unix.RT_TABLE_MAIN || table == unix.RT_TABLE_LOCAL || table == unix.RT_TABLE_DEFAULT || table == unix.RT_TABLE_COMPAT:
		return fmt.Errorf("transparent: routing table %d is not free for pen (1 to 4294967294, not 252 to 255)", table)
	case priority <= 0 || priority >= 32766:
		return fmt.Errorf("transparent: rule priority %d must lie between the local table's (0) and the main table's (32766)", priority)
	}
	return nil
}

// Table and Priority say what the Router installs.
func (r *Router) Table() int    { return r.table }
func (r *Router) Priority() int { return r.priority }

// Close releases the netlink socket. What is installed stays.
func (r *Router) Close() { r.h.Close() }

// A ruleKey identifies one of pen's rules.
type ruleKey struct {
	addr netip.Addr
	udp  bool
	port uint16
}

func keyOf(s Server) ruleKey {
	return ruleKey{s.Addr.Addr().Unmap(), s.UDP, s.Addr.Port()}
}

// Sync makes pen's rules and routes match servers: one rule per distinct
// address, protocol and port, and the local route of each address family
// that a server has. Servers without an address or port (unix sockets,
// unused slots) are left out. Rules and routes of pen's table and priority that
// no server needs any more are removed, also those a killed predecessor
// left. On error, Sync says what is missing; whatever it installed before
// the error stays until the next Sync or Cleanup.
func (r *Router) Sync(servers []Server) error {
	want := map[ruleKey]bool{}
	fams := map[int]bool{}
	for _, s := range servers {
		a := s.Addr.Addr().Unmap()
		if !a.IsValid() || a.IsUnspecified() || s.Addr.Port() == 0 {
			continue // an unused slot
		}
		want[keyOf(s)] = true
		fams[familyOf(a)] = true
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		if !fams[fam] {
			continue
		}
		if err := r.probe(fam); err != nil {
			return err
		}
		// Without policy routing for the family, a kernel puts a
		// route for any table into the main table, where "local
		// 0.0.0.0/0" would swallow every packet the host forwards or
		// sends: nothing is touched unless the kernel has rules.
		if _, err := r.h.RuleList(fam); err != nil {
			return r.explain("listing "+famName(fam)+" rules", fam, err)
		}
	}
	have, err := r.rules()
	if err != nil {
		return err
	}
	// Rules first, routes after: a rule pointing at a table without
	// routes is passed over, so nothing changes until the table is
	// filled, and nothing is added to a table when rules are refused.
	seen := map[ruleKey]bool{}
	for _, ru := range have {
		k, ok := ruleKeyOf(ru)
		if ok && want[k] && !seen[k] {
			seen[k] = true
			continue
		}
		if err := r.h.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
			return r.explain("removing rule", ru.Family, err)
		}
	}
	add := make([]ruleKey, 0, len(want))
	for k := range want {
		if !seen[k] {
			add = append(add, k)
		}
	}
	slices.SortFunc(add, compareKeys)
	for _, k := range add {
		if err := r.h.RuleAdd(r.rule(k)); err != nil && !errors.Is(err, unix.EEXIST) {
			return r.explain("adding rule "+r.describe(k), familyOf(k.addr), err)
		}
	}
	return r.syncRoutes(fams)
}

// Cleanup removes every rule and route of pen's table and priority.
func (r *Router) Cleanup() error {
	have, err := r.rules()
	if err != nil {
		return err
	}
	var errs []error
	for _, ru := range have {
		if err := r.h.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, r.explain("removing rule", ru.Family, err))
		}
	}
	if err := r.syncRoutes(nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Rules lists the installed rules of pen's table and priority, sorted,
// in the form "from ADDRESS ipproto tcp sport PORT".
func (r *Router) Rules() ([]string, error) {
	have, err := r.rules()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(have))
	for _, ru := range have {
		if k, ok := ruleKeyOf(ru); ok {
			out = append(out, r.describe(k))
		} else {
			out = append(out, ru.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

// Routes lists the routes in pen's table, as "local 0.0.0.0/0 dev lo".
func (r *Router) Routes() ([]string, error) {
	var out []string
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := r.routes(fam)
		if err != nil {
			return nil, err
		}
		for _, rt := range rs {
			out = append(out, describeRoute(rt, r.h))
		}
	}
	return out, nil
}

func (r *Router) describe(k ruleKey) string {
	p := "tcp"
	if k.udp {
		p = "udp"
	}
	return fmt.Sprintf("from %s ipproto %s sport %d", k.addr, p, k.port)
}

func describeRoute(rt netlink.Route, h *netlink.Handle) string {
	typ := "unicast"
	if rt.Type == unix.RTN_LOCAL {
		typ = "local"
	}
	dst := "default"
	if rt.Dst != nil {
		dst = rt.Dst.String()
	} else if rt.Family == unix.AF_INET {
		dst = "0.0.0.0/0"
	} else if rt.Family == unix.AF_INET6 {
		dst = "::/0"
	}
	dev := fmt.Sprint(rt.LinkIndex)
	if l, err := h.LinkByIndex(rt.LinkIndex); err == nil {
		dev = l.Attrs().Name
	}
	return typ + " " + dst + " dev " + dev
}

// rules lists the rules of pen's table and priority, both families.
func (r *Router) rules() ([]netlink.Rule, error) {
	all, err := r.h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, r.explain("listing rules", 0, err)
	}
	var out []netlink.Rule
	for _, ru := range all {
		if ru.Priority == r.priority && ru.Table == r.table {
			out = append(out, ru)
		}
	}
	return out, nil
}

func (r *Router) routes(fam int) ([]netlink.Route, error) {
	rs, err := r.h.RouteListFiltered(fam, &netlink.Route{Table: r.table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		if fam == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, nil // no IPv6 in this kernel: nothing of pen's there
		}
		return nil, r.explain("listing routes", fam, err)
	}
	return rs, nil
}

// syncRoutes makes pen's table hold the local default route of each
// family in fams and nothing else.
func (r *Router) syncRoutes(fams map[int]bool) error {
	var lo netlink.Link
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := r.routes(fam)
		if err != nil {
			return err
		}
		found := false
		for _, rt := range rs {
			if fams[fam] && !found && isLocalDefault(rt) {
				found = true
				continue
			}
			if err := r.h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
				return r.explain("removing route", fam, err)
			}
		}
		if !fams[fam] || found {
			continue
		}
		if lo == nil {
			if lo, err = r.h.LinkByName("lo"); err != nil {
				return fmt.Errorf("transparent: no loopback device: %v", err)
			}
		}
		bits := 32
		if fam == unix.AF_INET6 {
			bits = 128
		}
		rt := &netlink.Route{
			Family:    fam,
			Table:     r.table,
			Type:      unix.RTN_LOCAL,
			Scope:     unix.RT_SCOPE_HOST,
			LinkIndex: lo.Attrs().Index,
			Dst:       &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)},
		}
		if err := r.h.RouteReplace(rt); err != nil {
			return r.explain("adding route "+describeRoute(*rt, r.h)+" table "+fmt.Sprint(r.table), fam, err)
		}
	}
	return nil
}

func isLocalDefault(rt netlink.Route) bool {
	if rt.Type != unix.RTN_LOCAL {
		return false
	}
	if rt.Dst == nil {
		return true
	}
	ones, _ := rt.Dst.Mask.Size()
	return ones == 0
}

func (r *Router) rule(k ruleKey) *netlink.Rule {
	ru := netlink.NewRule()
	ru.Priority = r.priority
	ru.Table = r.table
	ru.Family = familyOf(k.addr)
	bits := k.addr.BitLen()
	ru.Src = &net.IPNet{IP: net.IP(k.addr.AsSlice()), Mask: net.CIDRMask(bits, bits)}
	ru.IPProto = unix.IPPROTO_TCP
	if k.udp {
		ru.IPProto = unix.IPPROTO_UDP
	}
	ru.Sport = netlink.NewRulePortRange(k.port, k.port)
	return ru
}

// ruleKeyOf reads back one of pen's rules; ok is false for a rule at
// pen's table and priority that pen does not make (it is removed).
func ruleKeyOf(ru netlink.Rule) (ruleKey, bool) {
	if ru.Src == nil || ru.Sport == nil || ru.Sport.Start != ru.Sport.End || ru.Dst != nil ||
		(ru.IPProto != unix.IPPROTO_TCP && ru.IPProto != unix.IPPROTO_UDP) ||
		ru.Mark != 0 || ru.IifName != "" || ru.OifName != "" || ru.Invert || ru.Dport != nil {
		return ruleKey{}, false
	}
	a, ok := netip.AddrFromSlice(ru.Src.IP)
	if !ok {
		return ruleKey{}, false
	}
	a = a.Unmap()
	if ones, bits := ru.Src.Mask.Size(); ones != bits || bits != a.BitLen() {
		return ruleKey{}, false
	}
	return ruleKey{a, ru.IPProto == unix.IPPROTO_UDP, ru.Sport.Start}, true
}

func compareKeys(a, b ruleKey) int {
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	if a.port != b.port {
		return int(a.port) - int(b.port)
	}
	switch {
	case a.udp == b.udp:
		return 0
	case a.udp:
		return 1
	}
	return -1
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func famName(fam int) string {
	if fam == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}

// explain turns a netlink error into what is missing.
func (r *Router) explain(what string, fam int, err error) error {
	var hint string
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		hint = "pen may not change the routing: it needs CAP_NET_ADMIN"
	case errors.Is(err, unix.EAFNOSUPPORT) && fam == unix.AF_INET6:
		hint = "the kernel has no IPv6 policy routing (CONFIG_IPV6_MULTIPLE_TABLES) or no IPv6"
	case errors.Is(err, unix.EAFNOSUPPORT), errors.Is(err, unix.EOPNOTSUPP):
		hint = "the kernel has no " + famName(fam) + " policy routing (CONFIG_IP_MULTIPLE_TABLES)"
	case errors.Is(err, unix.EINVAL) && strings.HasPrefix(what, "adding rule"):
		hint = "the kernel cannot match rules on protocol and port (Linux 4.17 or later needed)"
	}
	if hint != "" {
		return fmt.Errorf("transparent: %s: %s (%v)", what, hint, err)
	}
	return fmt.Errorf("transparent: %s: %v", what, err)
}

// probeSocket checks that the kernel lets pen mark a socket transparent.
func probeSocket(fam int) error {
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if fam == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
			return errors.New("transparent: the kernel has no IPv6")
		}
		return fmt.Errorf("transparent: socket: %v", err)
	}
	defer unix.Close(fd)
	level, opt, name := unix.SOL_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT"
	if fam == unix.AF_INET6 {
		level, opt, name = unix.SOL_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT"
	}
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("transparent: setsockopt(%s): pen may not make transparent sockets: it needs CAP_NET_ADMIN or CAP_NET_RAW (%v)", name, err)
		}
		return fmt.Errorf("transparent: setsockopt(%s): %v", name, err)
	}
	return nil
}
