package webui

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/dsr"
)

// TestDashboardDSR serves the dashboard of a pen with dsr_if from its
// state as the appliance's services carry it (RuntimeStatus through
// JSON), DSR's counters included: pen/engine's TestDSR reads the same
// card from the pen binary with DSR running in network namespaces.
func TestDashboardDSR(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()

	in := config.New(config.Default(), config.Process{}, diag.Discard())
	for _, l := range []string{
		"listen 198.18.0.100:80", "dsr_if eth1",
		"server 0 address 198.18.0.11 port 80", "server 1 address 198.18.0.12 port 80",
		"server 2 address 198.18.0.13 port 80", "server 3 address 198.18.0.14 port 80",
		"server 3 blacklist 60",
		"acl 1 permit 198.18.0.128 255.255.255.240", "tarpit_acl 1",
	} {
		if _, err := in.Exec(l, config.FromFlag); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	mac0 := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	mac1 := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x12}
	rs := RuntimeStatus{Serving: true, Servers: make([]config.ServerState, 4), ACLDenied: make([]uint64, 10), DSR: &dsr.Stats{
		Received: 70, Forwarded: 1234, FastPath: true,
		Dropped:     map[dsr.Reason]uint64{dsr.DropNoServer: 5, dsr.DropTarpit: 2},
		ARPRequests: 9, ARPLearnt: 6, ARPAnswered: 3, TarpitSYNs: 17, TarpitAddrs: 4,
		Servers: []dsr.ServerStats{
			{Index: 0, Addr: netip.MustParseAddr("198.18.0.11"), MAC: mac0, InTable: true, Frames: 1000, Bytes: 2 << 20},
			{Index: 1, Addr: netip.MustParseAddr("198.18.0.12"), Frames: 234, Bytes: 30000},
		},
		Neighbours: []dsr.NeighbourState{
			{Addr: netip.MustParseAddr("198.18.0.11"), MAC: mac0},
			{Addr: netip.MustParseAddr("198.18.0.12"), MAC: mac1, Down: true},
		},
	}}
	rs.Servers[3].Until = h.clock.now().Add(60e9)
	// As a service's state reply carries it.
	b, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var got RuntimeStatus
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	sub := New(Options{Interp: in, State: remoteState{got}, Log: diag.Discard()})
	sub.sessions, sub.logins, sub.now, sub.pages = h.s.sessions, h.s.logins, h.clock.now, h.s.pages
	ts := httptest.NewServer(sub)
	t.Cleanup(ts.Close)
	// The session cookie is the harness's (cookies do not depend on the port).
	get := func(path string) string {
		t.Helper()
		r, err := h.c.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, err := io.ReadAll(r.Body)
		if err != nil || r.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d, %v\n%s", path, r.StatusCode, err, b)
		}
		return string(b)
	}
	page := get("/")
	contains(t, "dashboard", page,
		`id="dsr"`,
		`Interface <span class="mono">eth1</span>, VIP <span class="mono">198.18.0.100:80</span>, forwarding in fast path (in the kernel).`,
		`<span data-cell="dsr:forwarded">1234</span> frames forwarded, <span data-cell="dsr:dropped">7</span> dropped (no_server: 5, tarpit: 2)`,
		`<span data-cell="dsr:arp_sent">9</span> requests sent for servers, <span data-cell="dsr:arp_replies">6</span> replies taken, <span data-cell="dsr:arp_answered">3</span> requests answered`,
		`<td class="mono" data-cell="dsr:0:mac">02:00:00:00:00:11</td>`,
		`<span class="pill up" data-cell="dsr:0:state" data-pill="dsr:0">taking flows</span>`,
		`<td class="num" data-cell="dsr:0:frames">1000</td>`,
		`<td class="mono" data-cell="dsr:1:mac">02:00:00:00:00:12</td>`,
		`<span class="pill down" data-cell="dsr:1:state" data-pill="dsr:1">down: ARP unanswered</span>`,
		`<td class="mono" data-cell="dsr:2:mac"></td>`,
		`<span class="pill untried" data-cell="dsr:2:state" data-pill="dsr:2">MAC not learnt yet</span>`,
		`<span class="pill blacklisted" data-cell="dsr:3:state" data-pill="dsr:3">blacklisted</span>`,
		`Tarpit (access list 1): <span data-cell="tarpit:syns">17</span> SYNs answered, <span data-cell="tarpit:addrs">4</span> addresses hit.`,
	)
	contains(t, "/api/state", get("/api/state"),
		`"dsr:forwarded":"1234"`, `"dsr:0:mac":"02:00:00:00:00:11"`, `"dsr:1:state":"down: ARP unanswered"`,
		`"dsr:0:frames":"1000"`, `"dsr:0:bytes":"2.0 MiB"`, `"tarpit:syns":"17"`, `"dsr:1":"down"`, `"dsr:0":"up"`)

	// Without a tarpit list, no tarpit line; DSR not running: said so.
	if _, err := in.Exec("tarpit_acl -1", config.FromFlag); err != nil {
		t.Fatal(err)
	}
	if page := get("/"); strings.Contains(page, `id="tarpit"`) {
		t.Error("tarpit counters shown without tarpit_acl")
	}
	sub.state = remoteState{RuntimeStatus{Serving: false, Servers: make([]config.ServerState, 4)}}
	contains(t, "dashboard without DSR running", get("/"), `DSR on <span class="mono">eth1</span> is not running`)

	// The harness's pen has no dsr_if: no DSR card.
	if page := h.get("/").body; strings.Contains(page, `id="dsr"`) {
		t.Error("DSR card without dsr_if")
	}
}
