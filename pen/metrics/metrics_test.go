package metrics

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/pen-lb/pen-appliance/internal/testenv"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/dsr"
	"github.com/pen-lb/pen-appliance/pen/engine"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPen runs an engine in this process, listening on 127.0.0.1.
func startPen(t *testing.T, lines ...string) (*config.Interp, *engine.Engine, string) {
	t.Helper()
	in := config.New(config.Default(), config.Process{}, diag.Discard())
	eng, err := engine.New(diag.Discard(), in)
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for _, l := range append([]string{"listen " + listen}, lines...) {
		if _, err := in.Exec(l, config.FromFlag); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	if err := in.SetEngine(eng); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- eng.Run() }()
	t.Cleanup(func() {
		eng.Quit()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("engine did not stop")
		}
	})
	return in, eng, listen
}

// roundTrip sends payload through pen and checks that it comes back.
func roundTrip(t *testing.T, addr string, payload []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo through pen: got %d bytes, want %d", len(got), len(payload))
	}
}

// refused connects and expects pen to close without data.
func refused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x"))
	if n, _ := io.Copy(io.Discard, c); n != 0 {
		t.Errorf("refused client got %d bytes", n)
	}
}

// settle waits until pen holds no client connections.
func settle(t *testing.T, eng *engine.Engine) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for eng.Stats().Active != 0 || eng.Stats().Pending != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connections still open: %+v", eng.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// values gathers reg and returns every sample as "name{l=v,...}" -> value.
func values(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			out[key] = value(mf.GetType(), m)
		}
	}
	return out
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	}
	return 0
}

func TestCountersFollowTraffic(t *testing.T) {
	backend := testenv.EchoServer(t)
	host, port, _ := net.SplitHostPort(backend)
	in, eng, listen := startPen(t,
		"server 0 address "+host+" port "+port,
		"server 1 address "+host+" port "+port,
		"roundrobin")
	reg := prometheus.NewRegistry()
	if err := Register(reg, EngineSource(eng), in); err != nil {
		t.Fatal(err)
	}
	before := values(t, reg)
	for _, name := range []string{
		"pen_server_up{address=" + backend + ",server=0}",
		"pen_server_connections{server=0}",
		"pen_server_connections_total{server=0}",
		"pen_server_connect_failures_total{server=0}",
		"pen_server_bytes_total{direction=to_server,server=0}",
		"pen_clients_tracked{}",
		"pen_connections_active{}",
		"pen_connections_refused_total{reason=no_server}",
		"pen_acl_denied_total{acl=0}",
		"pen_config_changes_total{source=webui}",
		"pen_build_info{pen_version=0.35.0,version=dev}",
		"go_goroutines{}",
		"process_cpu_seconds_total{}",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("no sample %s", name)
		}
	}
	if before["pen_server_up{address="+backend+",server=0}"] != 1 {
		t.Error("server 0 not up")
	}

	// Round-robin starts at server 1 and alternates: 6 connections give
	// each server 3, with 3*size bytes each way.
	const conns, size = 6, 10000
	payload := bytes.Repeat([]byte("pen metrics "), size/12+1)[:size]
	for i := 0; i < conns; i++ {
		roundTrip(t, listen, payload)
	}
	settle(t, eng)
	after := values(t, reg)
	delta := func(name string) float64 { return after[name] - before[name] }
	for _, s := range []string{"0", "1"} {
		for name, want := range map[string]float64{
			"pen_server_connections_total{server=" + s + "}":                 conns / 2,
			"pen_server_bytes_total{direction=to_server,server=" + s + "}":   conns / 2 * size,
			"pen_server_bytes_total{direction=from_server,server=" + s + "}": conns / 2 * size,
			"pen_server_connect_failures_total{server=" + s + "}":            0,
		} {
			if got := delta(name); got != want {
				t.Errorf("%s rose by %v, want %v", name, got, want)
			}
		}
		if got := after["pen_server_connections{server="+s+"}"]; got != 0 {
			t.Errorf("server %s: %v connections after the clients left", s, got)
		}
	}
	t.Logf("server 0: %v connections, %v bytes to server", after["pen_server_connections_total{server=0}"], after["pen_server_bytes_total{direction=to_server,server=0}"])
	if got := delta("pen_connections_accepted_total{}"); got != conns {
		t.Errorf("accepted rose by %v, want %d", got, conns)
	}
	if got := after["pen_clients_tracked{}"]; got != 1 {
		t.Errorf("clients tracked = %v, want 1 (127.0.0.1)", got)
	}

	// A blacklisted server is down; with both down, clients are refused
	// for want of a server.
	before = after
	for _, cmd := range []string{"server 0 blacklist 60", "server 1 blacklist 60"} {
		if _, err := in.Exec(cmd, config.FromWeb); err != nil {
			t.Fatal(err)
		}
	}
	refused(t, listen)
	settle(t, eng)
	after = values(t, reg)
	if got := after["pen_server_up{address="+backend+",server=0}"]; got != 0 {
		t.Errorf("blacklisted server 0: up = %v", got)
	}
	if got := delta("pen_connections_refused_total{reason=no_server}"); got != 1 {
		t.Errorf("refused no_server rose by %v, want 1", got)
	}

	// client_acl denying 127.0.0.1 counts against that list.
	before = after
	for _, cmd := range []string{"server 0 blacklist 0", "acl 4 deny 127.0.0.1", "client_acl 4"} {
		if _, err := in.Exec(cmd, config.FromControl); err != nil {
			t.Fatal(err)
		}
	}
	refused(t, listen)
	settle(t, eng)
	after = values(t, reg)
	if got := delta("pen_acl_denied_total{acl=4}"); got != 1 {
		t.Errorf("acl 4 denials rose by %v, want 1", got)
	}
	if got := delta("pen_connections_refused_total{reason=acl}"); got != 1 {
		t.Errorf("refused acl rose by %v, want 1", got)
	}
	if got := delta("pen_config_changes_total{source=control}"); got != 2 {
		t.Errorf("changes by control rose by %v, want 2 (acl, client_acl; blacklisting is not a change)", got)
	}
}

func TestLint(t *testing.T) {
	in, eng, _ := startPen(t, "server 0 address 127.0.0.1 port 9", "emergency_server 127.0.0.1:10")
	problems, err := testutil.CollectAndLint(NewCollector(EngineSource(eng), in))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestNoPerClientLabels(t *testing.T) {
	in, eng, listen := startPen(t, "server 0 address 127.0.0.1 port 9", "server 0 blacklist 60")
	refused(t, listen) // a client in the client table
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(EngineSource(eng), in))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "server", "address", "direction", "reason", "acl", "source", "version", "pen_version", "way":
				default:
					t.Errorf("%s has label %s", mf.GetName(), l.GetName())
				}
			}
		}
	}
}

// dsrSource is the engine with a DSR snapshot: DSR itself needs raw
// sockets in a network namespace, where pen/engine's TestDSR reads the
// real counters from the pen binary's /metrics.
type dsrSource struct {
	Source
	st dsr.Stats
	on bool
}

func (s dsrSource) DSRStats() (dsr.Stats, bool) { return s.st, s.on }

func TestDSRCounters(t *testing.T) {
	in, eng, _ := startPen(t, "server 0 address 198.18.0.11", "server 1 address 198.18.0.12", "emergency_server 198.18.0.13")
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 0x11}
	src := dsrSource{Source: EngineSource(eng), on: true, st: dsr.Stats{
		Received: 1000, Forwarded: 950, FastPath: true,
		Dropped:     map[dsr.Reason]uint64{dsr.DropNoServer: 7, dsr.DropRateLimit: 3},
		ARPAnswered: 4, ARPRequests: 12, ARPLearnt: 9, TarpitSYNs: 40, TarpitAddrs: 16, Rebuilds: 5,
		Servers: []dsr.ServerStats{
			{Index: -1, Addr: netip.MustParseAddr("198.18.0.13"), Frames: 10, Bytes: 600},
			{Index: 0, Addr: netip.MustParseAddr("198.18.0.11"), MAC: mac, InTable: true, Frames: 600, Bytes: 90000},
			// Slot 1 changed its address: both addresses' frames count for it.
			{Index: 1, Addr: netip.MustParseAddr("198.18.0.12"), Frames: 300, Bytes: 30000},
			{Index: 1, Addr: netip.MustParseAddr("198.18.0.14"), MAC: mac, InTable: true, Frames: 40, Bytes: 4000},
		},
	}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src, in))
	got := values(t, reg)
	for name, want := range map[string]float64{
		"pen_dsr_fast_path{}":                              1,
		"pen_dsr_frames_received_total{}":                  1000,
		"pen_dsr_forwarded_frames_total{server=0}":         600,
		"pen_dsr_forwarded_bytes_total{server=0}":          90000,
		"pen_dsr_forwarded_frames_total{server=1}":         340,
		"pen_dsr_forwarded_bytes_total{server=1}":          34000,
		"pen_dsr_forwarded_frames_total{server=emergency}": 10,
		"pen_dsr_server_in_table{server=0}":                1,
		"pen_dsr_server_in_table{server=1}":                1,
		"pen_dsr_server_in_table{server=emergency}":        0,
		"pen_dsr_dropped_frames_total{reason=no_server}":   7,
		"pen_dsr_dropped_frames_total{reason=rate_limit}":  3,
		"pen_dsr_dropped_frames_total{reason=send_error}":  0,
		"pen_dsr_arp_requests_sent_total{}":                12,
		"pen_dsr_arp_replies_total{}":                      9,
		"pen_dsr_arp_answered_total{}":                     4,
		"pen_dsr_table_rebuilds_total{}":                   5,
		"pen_tarpit_syns_answered_total{}":                 40,
		"pen_tarpit_addresses_hit{}":                       16,
	} {
		if v, ok := got[name]; !ok {
			t.Errorf("no sample %s", name)
		} else if v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	for _, r := range dsr.Reasons() {
		if _, ok := got["pen_dsr_dropped_frames_total{reason="+r.String()+"}"]; !ok {
			t.Errorf("no drop counter for reason %s", r)
		}
	}
	problems, err := testutil.CollectAndLint(NewCollector(src, in))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}

	// Without DSR (the engine itself, in proxy mode) there are none.
	reg = prometheus.NewRegistry()
	reg.MustRegister(NewCollector(EngineSource(eng), in))
	for name := range values(t, reg) {
		if strings.HasPrefix(name, "pen_dsr_") || strings.HasPrefix(name, "pen_tarpit_") {
			t.Errorf("%s without dsr_if", name)
		}
	}
}
