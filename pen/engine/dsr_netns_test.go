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
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
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
	sw.Switch("br0")
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
	pw := filepath.Join(dir, "pw.txt")
	if err := os.WriteFile(pw, []byte("dsr test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(dir, "pen.ctl")
	if err := os.WriteFile(cfg, []byte("acl 1 permit 198.18.0.128 255.255.255.240\ntarpit_acl 1\nadmin_listen 127.0.0.1:8080\nadmin_password_file "+pw+"\n"), 0o644); err != nil {
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

	// The dashboard shows the mode, each server's MAC as the servers
	// have it, and the tarpit's counters; /healthz counts DSR as serving.
	ui := adminClient(t, pen, "dsr test")
	mode := "user space (pen)"
	if m["pen_dsr_fast_path"] == 1 {
		mode = "fast path (in the kernel)"
	}
	page := uiGet(t, ui, "/")
	for _, want := range []string{
		`Interface <span class="mono">eth0</span>, VIP <span class="mono">` + dsrVIP + `:80</span>, forwarding in ` + mode + `.`,
		`data-cell="dsr:0:mac">` + macOf(t, servers[0]) + `<`,
		`data-cell="dsr:1:mac">` + macOf(t, servers[1]) + `<`,
		`data-pill="dsr:0">taking flows<`, `data-pill="dsr:1">taking flows<`,
		`Tarpit (access list 1): <span data-cell="tarpit:syns">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("dashboard: no %q", want)
		}
	}
	if t.Failed() {
		t.Logf("dashboard:\n%s", page)
	}
	if a, err := get(httpClient(pen, false), "http://127.0.0.1:8080/healthz"); err != nil || a != "ok" {
		t.Errorf("/healthz in DSR mode: %q, %v", a, err)
	}

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
	if page := uiGet(t, ui, "/"); !strings.Contains(page, `data-pill="dsr:1">down: ARP unanswered<`) {
		t.Error("dashboard: server 1 not down after it stopped answering ARP")
	}
	p.stop(syscall.SIGTERM)
}

// macOf is the MAC address of h's eth0.
func macOf(t *testing.T, h *netnstest.Host) string {
	t.Helper()
	f := strings.Fields(h.IP("-br", "link", "show", "eth0"))
	if len(f) < 3 {
		t.Fatalf("ip -br link show eth0: %q", f)
	}
	return f[2]
}

var loginToken = regexp.MustCompile(`name="token" value="([^"]+)"`)

// adminClient logs in to pen's admin UI (admin_listen 127.0.0.1:8080 in
// h) with password.
func adminClient(t *testing.T, h *netnstest.Host, password string) *http.Client {
	t.Helper()
	c := httpClient(h, true)
	c.Jar, _ = cookiejar.New(nil)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	m := loginToken.FindStringSubmatch(uiGet(t, c, "/login"))
	if m == nil {
		t.Fatal("no login token on /login")
	}
	r, err := c.PostForm("http://127.0.0.1:8080/login", url.Values{"token": {m[1]}, "password": {password}, "next": {"/"}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: HTTP %d", r.StatusCode)
	}
	return c
}

// uiGet fetches path from the admin UI and expects 200.
func uiGet(t *testing.T, c *http.Client, path string) string {
	t.Helper()
	r, err := c.Get("http://127.0.0.1:8080" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("%s: HTTP %d, %v", path, r.StatusCode, err)
	}
	return string(b)
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

// TestTarpitWithoutDSR: with tarpit_if and no dsr_if, pen proxies on its
// listen address and tarpits on the interface; its server is never
// tarpitted, even in the list.
func TestTarpitWithoutDSR(t *testing.T) {
	n := netnstest.New(t)
	sw, client, pen, b := n.Host("sw"), n.Host("client"), n.Host("pen"), n.Host("b0")
	sw.Switch("br0")
	n.Link(sw, "vclient", nil, client, "eth0", []string{"198.18.0.1/16"})
	sw.Port("br0", "vclient")
	n.Link(sw, "vpen", nil, pen, "eth0", []string{"198.18.0.2/16"})
	sw.Port("br0", "vpen")
	// The server's address is in the tarpit's list.
	n.Link(sw, "vb0", nil, b, "eth0", []string{"198.18.0.140/16"})
	sw.Port("br0", "vb0")
	var ln net.Listener
	if err := b.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "198.18.0.140:80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "b0") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "pen.cfg")
	ctl := filepath.Join(dir, "pen.ctl")
	pw := filepath.Join(dir, "pw.txt")
	if err := os.WriteFile(pw, []byte("tarpit test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("acl 1 permit 198.18.0.128 255.255.255.240\ntarpit_acl 1\ntarpit_if eth0\nadmin_listen 127.0.0.1:8080\nadmin_password_file "+pw+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startPen(t, pen, nil, "-F", cfg, "-C", ctl, "-e", "198.18.0.141:80", "198.18.0.2:80", "198.18.0.140:80")
	client.WaitTCP("198.18.0.2:80")
	// Proxied: the server answers through pen.
	if a, err := get(httpClient(client, false), "http://198.18.0.2/"); err != nil || a != "b0" {
		t.Fatalf("GET through pen: %q, %v", a, err)
	}
	// A tarpitted address: the connect completes and then hangs.
	c, err := client.Dial("tcp", "198.18.0.130:22")
	if err != nil {
		t.Fatalf("connect to a tarpitted address: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("tarpitted connection: read %d bytes, %v; want a hang", n, err)
	}
	c.Close()
	// The servers, in the list, are not tarpitted: a port the server
	// does not listen on refuses, and the emergency server's address,
	// which no host holds, gets no answer at all.
	if c, err := client.Dial("tcp", "198.18.0.140:22"); err == nil {
		c.Close()
		t.Error("connect to the server's closed port completed: the server's address was tarpitted")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect to the server's closed port: %v, want refused", err)
	}
	if err := client.Do(func() error {
		c, err := net.DialTimeout("tcp", "198.18.0.141:80", 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err == nil {
		t.Error("connect to the emergency server's address, which no host holds, completed: it was tarpitted")
	}
	m := metricsOf(t, pen)
	if m["pen_tarpit_syns_answered_total"] < 1 || m["pen_tarpit_addresses_hit"] != 1 {
		t.Errorf("/metrics: %v tarpit SYNs answered, %v addresses hit; want at least 1 and 1",
			m["pen_tarpit_syns_answered_total"], m["pen_tarpit_addresses_hit"])
	}
	if a, err := get(httpClient(pen, false), "http://127.0.0.1:8080/healthz"); err != nil || a != "ok" {
		t.Errorf("/healthz: %q, %v", a, err)
	}
	page := uiGet(t, adminClient(t, pen, "tarpit test"), "/")
	if want := `Tarpit (access list 1) on <span class="mono">eth0</span>: <span data-cell="tarpit:syns">`; !strings.Contains(page, want) {
		t.Errorf("dashboard: no %q", want)
	}
	if strings.Contains(page, "Direct Server Return") {
		t.Error("dashboard: a DSR card without dsr_if")
	}
	// write saves tarpit_if.
	ask, err := net.Dial("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(ask, "write\n")
	io.ReadAll(ask)
	ask.Close()
	if b, err := os.ReadFile(cfg); err != nil || !strings.Contains(string(b), "tarpit_if eth0\n") {
		t.Errorf("the file write saved has no tarpit_if (%v):\n%s", err, b)
	}
	p.stop(syscall.SIGTERM)
}
