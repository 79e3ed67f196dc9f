// Package metrics implements pen's Prometheus collectors. They read the
// running engine's counters at scrape time (nothing is counted twice and
// the data path pays nothing for them) and are registered on a
// *prometheus.Registry that the caller passes in, together with the Go
// runtime and process collectors.
//
// Labels name servers (their slot number, or "emergency" and "abuse"),
// access lists, refusal reasons and configuration sources, never clients,
// so the number of series stays bounded by the configuration.
//
// A server's counters follow the server: when "no server N" removes a slot
// and later slots move down, a slot number may show another server's
// counters afterwards, which Prometheus treats as a counter reset.
package metrics

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pen-lb/pen-appliance/pen/acl"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/engine"
	"github.com/pen-lb/pen-appliance/pen/proxy"
	"github.com/pen-lb/pen-appliance/pen/version"
)

// Source is the running load balancer as the collectors read it.
type Source interface {
	// Servers reports server slots 0..n-1, in the configuration's order.
	Servers() []config.ServerState
	// SpecialStates reports the emergency and abuse servers (nil if unset).
	SpecialStates() (emergency, abuse *config.ServerState)
	// TrackedClients is the number of used client table slots.
	TrackedClients() int
	// ACLDenied is how many clients access list n has refused.
	ACLDenied(n int) uint64
	// Stats are the data path's counters.
	Stats() proxy.Stats
}

// Config is what the collectors need from the command interpreter:
// server addresses and the change counters. *config.Interp is one.
type Config interface {
	Config() *config.Config
	ChangesBy() map[config.Origin]uint64
}

// EngineSource reads e; the engine has the read methods Source needs.
func EngineSource(e *engine.Engine) Source { return e }

// Origins are the configuration sources pen_config_changes_total always
// reports, so that rates work from the first scrape.
var Origins = []config.Origin{config.FromFlag, config.FromFile, config.FromSignal, config.FromControl, config.FromWeb}

// Register registers pen's collector for src and cfg on reg, and the Go
// runtime and process collectors.
func Register(reg *prometheus.Registry, src Source, cfg Config) error {
	for _, c := range []prometheus.Collector{
		NewCollector(src, cfg),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

// Collector is pen's own collector.
type Collector struct {
	src Source
	cfg Config
}

// NewCollector returns the collector of pen's metrics (without the runtime
// ones).
func NewCollector(src Source, cfg Config) *Collector { return &Collector{src: src, cfg: cfg} }

func desc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("pen", subsystem, name), help, labels, nil)
}

var (
	descUp = desc("server", "up",
		"Whether the server slot is in use and not blacklisted (1) or not (0).", "server", "address")
	descConns = desc("server", "connections",
		"Connections to the server now.", "server")
	descConnsTotal = desc("server", "connections_total",
		"Connections made to the server since pen started.", "server")
	descFailures = desc("server", "connect_failures_total",
		"Failed connects to the server (each blacklists it) since pen started.", "server")
	descBytes = desc("server", "bytes_total",
		"Bytes forwarded: direction=\"to_server\" is read from clients and sent to the server, direction=\"from_server\" is read from the server.",
		"server", "direction")
	descClients = desc("", "clients_tracked",
		"Clients in the client table (used slots).")
	descActive = desc("connections", "active",
		"Client connections open now.")
	descAccepted = desc("connections", "accepted_total",
		"Client connections (or UDP flows) accepted since pen started.")
	descRefused = desc("connections", "refused_total",
		"Client connections refused: reason=\"full\" (connection table full), \"no_server\" (no server could take it), \"acl\" (denied by client_acl and no abuse server).",
		"reason")
	descPending = desc("connections", "pending",
		"Connects to servers in progress now.")
	descACLDenied = desc("acl", "denied_total",
		"Clients an access list refused, by list (client_acl and server acl checks).", "acl")
	descChanges = desc("config", "changes_total",
		"Accepted configuration changes, by where the command came from.", "source")
	descBuild = desc("build", "info",
		"Always 1; the labels give this build's version and the Pen version it reproduces.", "version", "pen_version")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descConns, descConnsTotal, descFailures, descBytes,
		descClients, descActive, descAccepted, descRefused, descPending, descACLDenied, descChanges, descBuild} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	cfg := c.cfg.Config()
	states := c.src.Servers()
	for i, s := range cfg.Servers {
		var st config.ServerState
		if i < len(states) {
			st = states[i]
		}
		server(ch, strconv.Itoa(i), s, st)
	}
	em, ab := c.src.SpecialStates()
	if cfg.Emergency != nil && em != nil {
		server(ch, "emergency", *cfg.Emergency, *em)
	}
	if cfg.Abuse != nil && ab != nil {
		server(ch, "abuse", *cfg.Abuse, *ab)
	}

	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(c.src.TrackedClients()))
	st := c.src.Stats()
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(st.Active))
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(st.Accepted))
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(st.RefusedFull), "full")
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(st.RefusedNoServer), "no_server")
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(st.RefusedACL), "acl")
	for n := 0; n < acl.Lists; n++ {
		ch <- prometheus.MustNewConstMetric(descACLDenied, prometheus.CounterValue, float64(c.src.ACLDenied(n)), strconv.Itoa(n))
	}
	changes := c.cfg.ChangesBy()
	for _, o := range Origins {
		ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(changes[o]), string(o))
	}
	for o, n := range changes {
		if !known(o) {
			ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(n), string(o))
		}
	}
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, version.Version, version.Pen)
}

func known(o config.Origin) bool {
	for _, k := range Origins {
		if k == o {
			return true
		}
	}
	return false
}

func server(ch chan<- prometheus.Metric, label string, s config.Server, st config.ServerState) {
	up := 0.0
	if !s.Unused() && st.Until.IsZero() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, label, Address(s))
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(st.Conns), label)
	ch <- prometheus.MustNewConstMetric(descConnsTotal, prometheus.CounterValue, float64(st.Total), label)
	ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(st.Failures), label)
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.Sent), label, "to_server")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.Received), label, "from_server")
}

// Address formats a server's address as host:port ([v6]:port), or the
// path of a unix socket server.
func Address(s config.Server) string {
	if s.Host.IsUnix() {
		return s.Host.Path
	}
	if !s.Host.IP.IsValid() {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(s.Port)).String()
	}
	return s.Addr().String()
}
