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
	for i := range 2 {
		b := n.Host(fmt.Sprintf("b%d", i))
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
	if err := os.WriteFile(cfg, []byte("acl 1 permit 198.18.0.128 255.255.255.240\ntarpit_acl 1\n"), 0o644); err != nil {
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
	p.stop(syscall.SIGTERM)
}
