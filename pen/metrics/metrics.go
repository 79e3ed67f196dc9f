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
// With dsr_if, the collector also exports DSR's and the tarpit's counters
// (pen_dsr_*, pen_tarpit_*) when the Source has DSRStats (DSRSource), as
// the engine has; they are left out while DSR is off.
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
	"github.com/pen-lb/pen-appliance/pen/dsr"
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

// DSRSource is a Source that runs DSR (dsr_if): DSRStats returns DSR's
// counters, and false while DSR is off. The engine is one.
type DSRSource interface {
	DSRStats() (dsr.Stats, bool)
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
	descKernel = desc("connections", "kernel",
		"Connections or UDP flows whose data the kernel carries now, by way=\"udp\" (udp_kernel), \"relay\" (kernel_relay's sockmap relay) or \"splice\" (spliced connections, kernel_relay splice: the default).", "way")
	descACLDenied = desc("acl", "denied_total",
		"Clients an access list refused, by list (client_acl and server acl checks).", "acl")
	descChanges = desc("config", "changes_total",
		"Accepted configuration changes, by where the command came from.", "source")
	descDSRFastPath = desc("dsr", "fast_path",
		"With dsr_if: whether the kernel forwards the VIP's frames (1) or pen does in user space (0).")
	descDSRReceived = desc("dsr", "frames_received_total",
		"With dsr_if: frames pen read from the interface (the fast path's frames never reach pen).")
	descDSRForwarded = desc("dsr", "forwarded_frames_total",
		"With dsr_if: frames sent on to the server, by pen or the fast path, since DSR started.", "server")
	descDSRForwardedBytes = desc("dsr", "forwarded_bytes_total",
		"With dsr_if: bytes of the IP packets sent on to the server (headers included) since DSR started.", "server")
	descDSRInTable = desc("dsr", "server_in_table",
		"With dsr_if: whether the server takes flows now (1: usable, with its MAC learnt by ARP) or not (0).", "server")
	descDSRDropped = desc("dsr", "dropped_frames_total",
		"With dsr_if: frames neither forwarded nor answered, by reason (see docs/DSR.md).", "reason")
	descDSRARPSent = desc("dsr", "arp_requests_sent_total",
		"With dsr_if: ARP requests (or neighbour solicitations) pen sent for servers' MACs.")
	descDSRARPReplies = desc("dsr", "arp_replies_total",
		"With dsr_if: replies to pen's ARP requests (or solicitations) that it took in.")
	descDSRARPAnswered = desc("dsr", "arp_answered_total",
		"With dsr_if: ARP requests (or solicitations) for the VIP or a tarpitted address that pen answered.")
	descDSRRebuilds = desc("dsr", "table_rebuilds_total",
		"With dsr_if: rebuilds of the lookup table that places flows on servers.")
	descTarpitSYNs = desc("tarpit", "syns_answered_total",
		"With dsr_if and tarpit_acl: SYNs to tarpitted addresses answered with a SYN/ACK.")
	descTarpitAddrs = desc("tarpit", "addresses_hit",
		"With dsr_if and tarpit_acl: distinct tarpitted addresses that got SYNs since DSR started.")
	descBuild = desc("build", "info",
		"Always 1; the labels give this build's version and the Pen version it reproduces.", "version", "pen_version")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descConns, descConnsTotal, descFailures, descBytes,
		descClients, descActive, descAccepted, descRefused, descPending, descKernel, descACLDenied, descChanges, descBuild,
		descDSRFastPath, descDSRReceived, descDSRForwarded, descDSRForwardedBytes, descDSRInTable, descDSRDropped,
		descDSRARPSent, descDSRARPReplies, descDSRARPAnswered, descDSRRebuilds, descTarpitSYNs, descTarpitAddrs} {
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
	ch <- prometheus.MustNewConstMetric(descKernel, prometheus.GaugeValue, float64(st.KernelFlows), "udp")
	ch <- prometheus.MustNewConstMetric(descKernel, prometheus.GaugeValue, float64(st.Relayed-st.Spliced), "relay")
	ch <- prometheus.MustNewConstMetric(descKernel, prometheus.GaugeValue, float64(st.Spliced), "splice")
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
	if ds, ok := c.src.(DSRSource); ok {
		if st, ok := ds.DSRStats(); ok {
			dsrMetrics(ch, st)
		}
	}
}

// dsrMetrics exports DSR's counters. Every drop reason is reported, so
// that rates work from the first scrape.
func dsrMetrics(ch chan<- prometheus.Metric, st dsr.Stats) {
	fast := 0.0
	if st.FastPath {
		fast = 1
	}
	ch <- prometheus.MustNewConstMetric(descDSRFastPath, prometheus.GaugeValue, fast)
	ch <- prometheus.MustNewConstMetric(descDSRReceived, prometheus.CounterValue, float64(st.Received))
	// A slot that held servers of several addresses (the server's address
	// was changed) sums them: one series per slot, never decreasing.
	type perServer struct {
		frames, bytes uint64
		inTable       bool
	}
	var order []string
	servers := map[string]*perServer{}
	for _, s := range st.Servers {
		label := ServerLabel(s.Index)
		p := servers[label]
		if p == nil {
			p = &perServer{}
			servers[label] = p
			order = append(order, label)
		}
		p.frames += s.Frames
		p.bytes += s.Bytes
		p.inTable = p.inTable || s.InTable
	}
	for _, label := range order {
		p := servers[label]
		in := 0.0
		if p.inTable {
			in = 1
		}
		ch <- prometheus.MustNewConstMetric(descDSRForwarded, prometheus.CounterValue, float64(p.frames), label)
		ch <- prometheus.MustNewConstMetric(descDSRForwardedBytes, prometheus.CounterValue, float64(p.bytes), label)
		ch <- prometheus.MustNewConstMetric(descDSRInTable, prometheus.GaugeValue, in, label)
	}
	for _, r := range dsr.Reasons() {
		ch <- prometheus.MustNewConstMetric(descDSRDropped, prometheus.CounterValue, float64(st.Dropped[r]), r.String())
	}
	ch <- prometheus.MustNewConstMetric(descDSRARPSent, prometheus.CounterValue, float64(st.ARPRequests))
	ch <- prometheus.MustNewConstMetric(descDSRARPReplies, prometheus.CounterValue, float64(st.ARPLearnt))
	ch <- prometheus.MustNewConstMetric(descDSRARPAnswered, prometheus.CounterValue, float64(st.ARPAnswered))
	ch <- prometheus.MustNewConstMetric(descDSRRebuilds, prometheus.CounterValue, float64(st.Rebuilds))
	ch <- prometheus.MustNewConstMetric(descTarpitSYNs, prometheus.CounterValue, float64(st.TarpitSYNs))
	ch <- prometheus.MustNewConstMetric(descTarpitAddrs, prometheus.GaugeValue, float64(st.TarpitAddrs))
}

// ServerLabel is the server label of slot i: its number, or "emergency"
// and "abuse" for config.EmergencyServer and config.AbuseServer.
func ServerLabel(i int) string {
	switch i {
	case config.EmergencyServer:
		return "emergency"
	case config.AbuseServer:
		return "abuse"
	}
	return strconv.Itoa(i)
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
