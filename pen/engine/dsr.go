package engine

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pen-lb/pen-appliance/pen/acl"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/dsr"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
)

// dsrMode runs pen/dsr for dsr_if: pen then forwards the frames sent to
// the listen address on that interface instead of proxying them, and
// answers SYNs to the addresses that tarpit_acl matches (docs/DSR.md). It
// is the dsr.Pool: the servers come from the balancer and the
// configuration in effect. Its fields are used under Engine.mu, except cur
// and table, which the DSR reads from its own goroutine.
type dsrMode struct {
	cur   atomic.Pointer[config.Config]
	table *balance.Table

	d      *dsr.DSR
	key    string
	cancel context.CancelFunc
	done   chan error
}

// dsrKey is what a DSR is started with; when it changes, another one
// takes over.
func dsrKey(c *config.Config) string {
	if c.DSRIf == "" {
		return fmt.Sprintf("tarpit|%s|%v", c.TarpitIf, tarpitList(c))
	}
	return fmt.Sprintf("%s|%s|%v|%v|%v", c.DSRIf, c.Listen, c.UDP, c.RoundRobin, tarpitList(c))
}

// tarpitOnly is true when pen proxies and tarpits on tarpit_if: DSR runs
// without a VIP, for the tarpit alone.
func tarpitOnly(c *config.Config) bool {
	return c.DSRIf == "" && c.TarpitIf != "" && tarpitList(c) != nil
}

// tarpitList is the access list of tarpit_acl; nil when it is off or
// empty (an empty list tarpits nothing, unlike Pen's).
func tarpitList(c *config.Config) acl.List {
	if c.TarpitACL < 0 || c.TarpitACL >= len(c.ACLs) || len(c.ACLs[c.TarpitACL]) == 0 {
		return nil
	}
	return c.ACLs[c.TarpitACL]
}

// tarpitNets are the IPv4 networks of the list's permit entries when
// they hold every address it permits: its last entry permits (so an
// address no entry matches is denied) and no permit names a country. nil
// otherwise, and the socket's filter then passes every SYN to pen.
func tarpitNets(l acl.List) []dsr.TarpitNet {
	if len(l) == 0 || !l[len(l)-1].Permit {
		return nil
	}
	var nets []dsr.TarpitNet
	for _, e := range l {
		if !e.Permit {
			continue
		}
		switch e.Kind {
		case acl.IPv4:
			nets = append(nets, dsr.TarpitNet{Addr: e.Addr, Mask: e.Mask})
		case acl.IPv6:
			// Never matches an IPv4 address: the tarpit is IPv4.
		default:
			return nil
		}
	}
	return nets
}

// apply starts, restarts or stops DSR to follow c. On error the DSR that
// ran goes on running.
func (m *dsrMode) apply(c *config.Config, log *diag.Logger) error {
	if c.DSRIf == "" && !tarpitOnly(c) {
		m.stop()
		m.cur.Store(c)
		return nil
	}
	key := dsrKey(c)
	if m.d != nil && key == m.key {
		m.cur.Store(c)
		return nil
	}
	var cfg dsr.Config
	if c.DSRIf != "" {
		l, err := config.ParseListen(c.Listen, c.UDP, nil)
		if err != nil {
			return err
		}
		vip := l.Addr.Addr().Unmap()
		if l.Path != "" || !vip.IsValid() || vip.IsUnspecified() {
			return fmt.Errorf("dsr_if %s needs a listen address that is an IP address, not %q", c.DSRIf, c.Listen)
		}
		cfg = dsr.Config{
			Interface: c.DSRIf,
			VIP:       vip,
			Port:      l.Addr.Port(),
			UDP:       c.UDP,
			HashPort:  c.RoundRobin,
			Pool:      m,
		}
	} else {
		// The tarpit alone: pen proxies, so its servers are not asked by
		// ARP (they need not be on the interface's segment) and are kept
		// out of the tarpit here instead.
		cfg = dsr.Config{Interface: c.TarpitIf, Pool: noServers{}}
	}
	cfg.Logger = dsrLogger(log)
	if list := tarpitList(c); list != nil {
		cfg.Tarpit = func(a netip.Addr) bool { return list.Match(a, nil) }
		if c.DSRIf == "" {
			cfg.Tarpit = func(a netip.Addr) bool { return list.Match(a, nil) && !m.isServer(a) }
		}
		cfg.TarpitNets = tarpitNets(list)
	}
	name, iface := "dsr_if", c.DSRIf
	if c.DSRIf == "" {
		name, iface = "tarpit_if", c.TarpitIf
	}
	d, err := dsr.New(cfg)
	if err != nil {
		return fmt.Errorf("%s %s: %w", name, iface, err)
	}
	m.stop()
	m.cur.Store(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	m.d, m.key, m.cancel, m.done = d, key, cancel, done
	return nil
}

// stop ends the DSR, if one runs.
func (m *dsrMode) stop() {
	if m.d == nil {
		return
	}
	m.cancel()
	<-m.done
	m.d, m.key, m.cancel, m.done = nil, "", nil, nil
}

// Servers is dsr.Pool's view of the balancer: a server is up when its
// slot is in use and it is not blacklisted.
func (m *dsrMode) Servers() dsr.Servers {
	c := m.cur.Load()
	if c == nil {
		return dsr.Servers{}
	}
	states := m.table.ServerStates()
	out := dsr.Servers{Prio: c.Prio}
	for i, s := range c.Servers {
		if i >= len(states) {
			break
		}
		out.List = append(out.List, dsr.Backend{
			Index: i, Addr: s.Host.IP, Weight: s.Weight, Prio: s.Prio,
			Up: !s.Unused() && states[i].Until.IsZero(),
		})
	}
	if c.Emergency != nil {
		em, _ := m.table.SpecialStates()
		out.Emergency = &dsr.Backend{
			Index: balance.EmergencyServer, Addr: c.Emergency.Host.IP, Weight: 1,
			Up: !c.Emergency.Unused() && (em == nil || em.Until.IsZero()),
		}
	}
	return out
}

// Failed blacklists a server that stopped answering ARP for the blacklist
// time, as a failed connect does.
func (m *dsrMode) Failed(i int) {
	c := m.cur.Load()
	if c == nil || i < 0 {
		return
	}
	m.table.Blacklist(i, time.Duration(c.Blacklist)*time.Second)
}

var _ dsr.Pool = (*dsrMode)(nil)

// isServer reports whether a is the address of a server, the emergency or
// the abuse server: the tarpit never answers for them.
func (m *dsrMode) isServer(a netip.Addr) bool {
	c := m.cur.Load()
	if c == nil {
		return false
	}
	a = a.Unmap()
	for _, s := range c.Servers {
		if s.Host.IP.Unmap() == a {
			return true
		}
	}
	for _, s := range []*config.Server{c.Emergency, c.Abuse} {
		if s != nil && s.Host.IP.Unmap() == a {
			return true
		}
	}
	return false
}

// noServers is the pool of a tarpit without DSR: nothing to forward to.
type noServers struct{}

func (noServers) Servers() dsr.Servers { return dsr.Servers{} }
func (noServers) Failed(int)           {}

// dsrLogger writes DSR's warnings to pen's log, and its other messages
// (servers learnt, tables rebuilt) only with -d.
func dsrLogger(log *diag.Logger) *slog.Logger {
	level := slog.LevelWarn
	if log.Enabled(1) {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(logWriter{log}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{} // pen's log has its own
			}
			return a
		},
	}))
}

// logWriter passes DSR's log lines to pen's log.
type logWriter struct{ log *diag.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Printf("dsr: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// DSRStats are DSR's counters, and false when DSR is off.
func (e *Engine) DSRStats() (dsr.Stats, bool) {
	e.mu.Lock()
	d := e.dsr.d
	e.mu.Unlock()
	if d == nil {
		return dsr.Stats{}, false
	}
	return d.Stats(), true
}
