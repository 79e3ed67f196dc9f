package engine

// DSR end to end: the pen binary with dsr_if in a namespace on a bridge
// with a client and two servers that hold the VIP on their loopback, as
// docs/DSR.md sets them up.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/internal/netnstest"
)

const dsrVIP = "198.18.0.100"

// dsrServer answers every HTTP request on VIP:80 in h with "NAME CLIENT".
func dsrServer(t *testing.T, h *netnstest.Host, name string) {
	var ln net.Listener
	if err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", dsrVIP+":80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s %s\n", name, host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func TestDSR(t *testing.T) {
	n := netnstest.New(t)
	sw, client, pen := n.Host("sw"), n.Host("client"), n.Host("pen")
	sw.Bridge("br0")
	n.Link(sw, "vclient", nil, client, "eth0", []string{"198.18.0.1/16"})
	sw.Port("br0", "vclient")
	n.Link(sw, "vpen", nil, pen, "eth0", nil)
	sw.Port("br0", "vpen")
	var servers []*netnstest.Host
	for i := range 2 {
		b := n.Host(fmt.Sprintf("b%d", i))
		servers = append(servers, b)
		n.Link(sw, fmt.Sprintf("vb%d", i), nil, b, "eth0", []string{fmt.Sprintf("198.18.0.%d/16", 11+i)})
		sw.Port("br0", fmt.Sprintf("vb%d", i))
		b.IP("addr", "add", dsrVIP+"/32", "dev", "lo")
		for _, dev := range []string{"all", "eth0"} {
			b.Sysctl("net.ipv4.conf."+dev+".arp_ignore", "1")
			b.Sysctl("net.ipv4.conf."+dev+".arp_announce", "2")
		}
		dsrServer(t, b, fmt.Sprintf("b%d", i))
	}
	dir := t.TempDir()
	// Private to root: pen opens a control socket here when run as root.
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "pen.cfg")
	ctl := filepath.Join(dir, "pen.ctl")
	if err := os.WriteFile(cfg, []byte("acl 1 permit 198.18.0.128 255.255.255.240\ntarpit_acl 1\nadmin_listen 127.0.0.1:8080\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startPen(t, pen, nil, "-O", "dsr_if eth0", "-F", cfg, "-C", ctl, dsrVIP+":80", "198.18.0.11", "198.18.0.12")
	client.WaitTCP(dsrVIP + ":80")
	seen := map[string]bool{}
	for i := range 20 {
		src := fmt.Sprintf("198.18.4.%d", i+1)
		client.IP("addr", "add", src+"/16", "dev", "eth0")
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := client.Do(func() error {
				var err error
				c, err = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
		a, err := get(c, "http://"+dsrVIP+"/")
		if err != nil {
			t.Fatalf("GET from %s: %v", src, err)
		}
		f := strings.Fields(a)
		if len(f) != 2 || f[1] != src {
			t.Errorf("answer %q from %s: the server did not see the client's address", a, src)
		}
		if len(f) > 0 {
			seen[f[0]] = true
		}
	}
	if len(seen) != 2 {
		t.Errorf("20 clients reached %v, want both servers", seen)
	}
	// tarpit_acl: a connect to an address in the list completes and
	// then hangs.
	c, err := client.Dial("tcp", "198.18.0.130:22")
	if err != nil {
		t.Fatalf("connect to a tarpitted address: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("tarpitted connection: read %d bytes, %v; want a hang", n, err)
	}
	c.Close()
	// The control socket answers in DSR mode, and write saves dsr_if.
	ask := func(cmd string) string {
		t.Helper()
		c, err := net.Dial("unix", ctl)
		if err != nil {
			t.Fatalf("control socket: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "%s\n", cmd)
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if out := ask("servers"); !strings.Contains(out, "198.18.0.11") || !strings.Contains(out, "198.18.0.12") {
		t.Errorf("servers: %q", out)
	}
	ask("write")
	if b, err := os.ReadFile(cfg); err != nil || !strings.Contains(string(b), "dsr_if eth0\n") {
		t.Errorf("the file write saved has no dsr_if (%v):\n%s", err, b)
	}

	// /metrics carries DSR's real counters.
	m := metricsOf(t, pen)
	for _, name := range []string{
		`pen_dsr_forwarded_frames_total{server="0"}`, `pen_dsr_forwarded_frames_total{server="1"}`,
		`pen_dsr_forwarded_bytes_total{server="0"}`, `pen_dsr_forwarded_bytes_total{server="1"}`,
		`pen_dsr_server_in_table{server="0"}`, `pen_dsr_server_in_table{server="1"}`,
		`pen_dsr_arp_answered_total`, `pen_tarpit_syns_answered_total`, `pen_tarpit_addresses_hit`,
		`pen_server_up{address="198.18.0.11:80",server="0"}`, `pen_server_up{address="198.18.0.12:80",server="1"}`,
	} {
		if m[name] < 1 {
			t.Errorf("/metrics: %s = %v, want at least 1", name, m[name])
		}
	}
	if m["pen_dsr_arp_requests_sent_total"] < 2 || m["pen_dsr_arp_replies_total"] < 2 {
		t.Errorf("/metrics: %v ARP requests sent, %v replies; want at least one of each per server",
			m["pen_dsr_arp_requests_sent_total"], m["pen_dsr_arp_replies_total"])
	}
	if _, ok := m["pen_dsr_fast_path"]; !ok {
		t.Error("/metrics: no pen_dsr_fast_path")
	}
	if _, ok := m[`pen_dsr_dropped_frames_total{reason="no_server"}`]; !ok {
		t.Error("/metrics: no pen_dsr_dropped_frames_total for no_server")
	}
	t.Logf("/metrics: fast path %v, frames to server 0: %v, to server 1: %v, ARP sent %v, tarpit SYNs %v",
		m["pen_dsr_fast_path"], m[`pen_dsr_forwarded_frames_total{server="0"}`], m[`pen_dsr_forwarded_frames_total{server="1"}`],
		m["pen_dsr_arp_requests_sent_total"], m["pen_tarpit_syns_answered_total"])

	// A server that stops answering ARP is down in pen_server_up, as a
	// failed connect makes it, and leaves the table.
	servers[1].IP("link", "set", "eth0", "arp", "off")
	up1 := `pen_server_up{address="198.18.0.12:80",server="1"}`
	deadline := time.Now().Add(20 * time.Second)
	for {
		m = metricsOf(t, pen)
		if m[up1] == 0 && m[`pen_dsr_server_in_table{server="1"}`] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics 20 s after server 1 stopped answering ARP: %s = %v, in table %v", up1, m[up1], m[`pen_dsr_server_in_table{server="1"}`])
		}
		time.Sleep(200 * time.Millisecond)
	}
	if m[`pen_server_up{address="198.18.0.11:80",server="0"}`] != 1 {
		t.Error("server 0 went down with server 1")
	}
	p.stop(syscall.SIGTERM)
}

// metricsOf reads pen's /metrics (admin_listen 127.0.0.1:8080 in h) as
// "name{labels}" -> value.
func metricsOf(t *testing.T, h *netnstest.Host) map[string]float64 {
	t.Helper()
	a, err := get(httpClient(h, false), "http://127.0.0.1:8080/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(a, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}
