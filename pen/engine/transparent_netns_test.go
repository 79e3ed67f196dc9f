package engine

// Transparent mode end to end: the pen binary runs in a namespace that
// routes between a client network and a backend network whose default
// route leads through pen, as in docs/TRANSPARENT.md. Nothing in the tests
// installs policy routing: pen does.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/internal/netnstest"
	"github.com/pen-lb/pen-appliance/pen/transparent"
)

var (
	penOnce sync.Once
	penPath string
	penErr  error
)

// TestMain removes the pen binary that penBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if penPath != "" {
		os.RemoveAll(filepath.Dir(penPath))
	}
	os.Exit(code)
}

// penBinary builds pen once for the package's tests.
func penBinary(t *testing.T) string {
	t.Helper()
	penOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pen-engine-test")
		if err != nil {
			penErr = err
			return
		}
		penPath = filepath.Join(dir, "pen")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", penPath, "github.com/pen-lb/pen-appliance/pen/cmd/pen").CombinedOutput()
		if err != nil {
			penErr = fmt.Errorf("go build pen: %v\n%s", err, out)
		}
	})
	if penErr != nil {
		t.Fatal(penErr)
	}
	return penPath
}

// gateway is the layout of docs/TRANSPARENT.md where pen is the backends'
// gateway: client 198.18.1.2 and 2001:db8:1::2; pen 198.18.1.1 and
// 2001:db8:1::1 towards the client, 198.18.2.1 and 2001:db8:2::1 towards
// the backends (a bridge); backends .2 and .3 in 198.18.2.0/24 and
// 2001:db8:2::/64 with their default routes through pen, each running
// nginx on port 80 that answers with its address and the client address
// it saw.
type gateway struct {
	client, pen *netnstest.Host
	backends    []*netnstest.Host
}

func newGateway(t *testing.T) *gateway {
	n := netnstest.New(t)
	g := &gateway{client: n.Host("client"), pen: n.Host("pen")}
	n.Link(g.client, "eth0", []string{"198.18.1.2/24", "2001:db8:1::2/64"}, g.pen, "c0", []string{"198.18.1.1/24", "2001:db8:1::1/64"})
	g.client.Route("default", "via", "198.18.1.1")
	g.client.Route("default", "via", "2001:db8:1::1")
	g.pen.Bridge("br0", "198.18.2.1/24", "2001:db8:2::1/64")
	g.pen.Sysctl("net.ipv4.ip_forward", "1")
	g.pen.Sysctl("net.ipv6.conf.all.forwarding", "1")
	for i, host := range []string{"2", "3"} {
		be := n.Host("be" + host)
		dev := fmt.Sprintf("b%d", i)
		n.Link(g.pen, dev, nil, be, "eth0", []string{"198.18.2." + host + "/24", "2001:db8:2::" + host + "/64"})
		g.pen.Port("br0", dev)
		be.Route("default", "via", "198.18.2.1")
		be.Route("default", "via", "2001:db8:2::1")
		be.Nginx("198.18.2."+host+":80", "[2001:db8:2::"+host+"]:80")
		g.backends = append(g.backends, be)
	}
	return g
}

// penProc is a pen running in a namespace.
type penProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startPen runs pen in h; wrap, if given, comes before pen on the command
// line (e.g. setpriv).
func startPen(t *testing.T, h *netnstest.Host, wrap []string, args ...string) *penProc {
	t.Helper()
	cmdline := append(slices.Clone(wrap), penBinary(t), "-f")
	p := &penProc{t: t, cmd: h.Command(append(cmdline, args...)...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("pen's output:\n%s", p.out)
		}
	})
	return p
}

// stop sends sig and waits (at most 10 s) for pen to end.
func (p *penProc) stop(sig syscall.Signal) {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("pen did not end within 10 s of %v", sig)
	}
}

// hup makes pen read its -F file again and waits until it did.
func (p *penProc) hup(want func() bool) {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGHUP)
	for range 100 {
		if want() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("after HUP: not as expected within 5 s")
}

// httpClient is a client in h; keepAlive decides whether requests share
// connections.
func httpClient(h *netnstest.Host, keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: !keepAlive,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return h.Dial(network, addr)
			},
		},
	}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// answers asks n times over keep-alive connections and n times over new
// ones and counts the answers ("SERVER CLIENT-AS-SEEN").
func answers(t *testing.T, h *netnstest.Host, url string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, keep := range []bool{true, false} {
		c := httpClient(h, keep)
		for i := 0; i < n; i++ {
			a, err := get(c, url)
			if err != nil {
				t.Fatalf("GET %s (keep-alive %v) #%d: %v", url, keep, i+1, err)
			}
			seen[a]++
		}
		c.CloseIdleConnections()
	}
	return seen
}

// rulesOf lists pen's rules and routes in h as ip shows them.
func rulesOf(h *netnstest.Host) []string {
	return rulesAt(h, transparent.DefaultTable, transparent.DefaultPriority)
}

// rulesAt lists the rules at priority and the routes in table.
func rulesAt(h *netnstest.Host, table, priority int) []string {
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for _, args := range [][]string{
			{fam, "rule", "show", "priority", fmt.Sprint(priority)},
			{fam, "route", "show", "table", fmt.Sprint(table)},
		} {
			o, err := h.Output(append([]string{"ip"}, args...)...)
			if err != nil {
				if strings.Contains(o, "FIB table does not exist") {
					continue // never made, or made in another namespace
				}
				h.IP(args...) // fails the test with the error
			}
			for _, l := range strings.Split(strings.TrimSpace(o), "\n") {
				if l = strings.Join(strings.Fields(l), " "); l != "" {
					out = append(out, l)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func rule(from string, port int) string {
	return fmt.Sprintf("%d: from %s ipproto tcp sport %d lookup %d", transparent.DefaultPriority, from, port, transparent.DefaultTable)
}

const (
	route4 = "local default dev lo scope host"
	route6 = "local default dev lo metric 1024 pref medium"
)

func waitRules(t *testing.T, h *netnstest.Host, want []string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	for range 100 {
		if got = rulesOf(h); slices.Equal(got, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pen's rules and routes:\n got %q\nwant %q", got, want)
}

func TestTransparentTCPv4(t *testing.T) {
	g := newGateway(t)
	cfg := filepath.Join(t.TempDir(), "pen.cfg")
	if err := os.WriteFile(cfg, []byte("transparent\nroundrobin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startPen(t, g.pen, nil, "-F", cfg, "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")
	g.client.WaitTCP("198.18.1.1:80")
	want := []string{rule("198.18.2.2", 80), rule("198.18.2.3", 80), route4}
	waitRules(t, g.pen, want)

	seen := answers(t, g.client, "http://198.18.1.1/", 10)
	for a, n := range seen {
		if !strings.HasSuffix(a, " 198.18.1.2") {
			t.Errorf("%d answers %q: the backend did not see the client's address 198.18.1.2", n, a)
		}
	}
	for _, be := range []string{"198.18.2.2:80", "198.18.2.3:80"} {
		if seen[be+" 198.18.1.2"] == 0 {
			t.Errorf("no answer from %s; answers %v", be, seen)
		}
	}
	t.Logf("answers: %v", seen)

	// The rules follow the server list: a server is added, one moves to
	// another port, one is removed.
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("server 2 address 198.18.2.3 port 8080\n")
	p.hup(func() bool { return slices.Contains(rulesOf(g.pen), rule("198.18.2.3", 8080)) })
	waitRules(t, g.pen, append(want, rule("198.18.2.3", 8080)))
	write("server 0 address 198.18.2.2 port 81\n")
	p.hup(func() bool { return slices.Contains(rulesOf(g.pen), rule("198.18.2.2", 81)) })
	waitRules(t, g.pen, []string{rule("198.18.2.2", 81), rule("198.18.2.3", 80), rule("198.18.2.3", 8080), route4})
	write("no server 2\n")
	p.hup(func() bool { return !slices.Contains(rulesOf(g.pen), rule("198.18.2.3", 8080)) })
	waitRules(t, g.pen, []string{rule("198.18.2.2", 81), rule("198.18.2.3", 80), route4})
	// Blacklisting changes nothing; transparency off removes all.
	write("server 0 blacklist 60\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	waitRules(t, g.pen, []string{rule("198.18.2.2", 81), rule("198.18.2.3", 80), route4})
	write("no transparent\n")
	p.hup(func() bool { return len(rulesOf(g.pen)) == 0 })
	if a, err := get(httpClient(g.client, false), "http://198.18.1.1/"); err != nil || a != "198.18.2.3:80 198.18.2.1" {
		t.Errorf("without transparency: %q, %v; want the backend to see pen's address 198.18.2.1", a, err)
	}
	write("transparent\nserver 0 address 198.18.2.2 port 80\n")
	p.hup(func() bool { return len(rulesOf(g.pen)) == 3 })
	waitRules(t, g.pen, want)

	// TERM: nothing of pen's is left.
	p.stop(syscall.SIGTERM)
	waitRules(t, g.pen, nil)

	// kill -9 leaves the rules; the next pen keeps exactly one set.
	write("transparent\nroundrobin\n")
	p = startPen(t, g.pen, nil, "-F", cfg, "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")
	g.client.WaitTCP("198.18.1.1:80")
	waitRules(t, g.pen, want)
	p.stop(syscall.SIGKILL)
	waitRules(t, g.pen, want)
	p = startPen(t, g.pen, nil, "-F", cfg, "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")
	g.client.WaitTCP("198.18.1.1:80")
	waitRules(t, g.pen, want)
	if a, err := get(httpClient(g.client, false), "http://198.18.1.1/"); err != nil || !strings.HasSuffix(a, " 198.18.1.2") {
		t.Errorf("after the restart: %q, %v", a, err)
	}
	// A pen started without transparency removes a predecessor's rules.
	p.stop(syscall.SIGKILL)
	write("roundrobin\n")
	p = startPen(t, g.pen, nil, "-F", cfg, "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")
	g.client.WaitTCP("198.18.1.1:80")
	waitRules(t, g.pen, nil)
	p.stop(syscall.SIGTERM)
}

func TestTransparentTCPv6(t *testing.T) {
	g := newGateway(t)
	p := startPen(t, g.pen, nil, "-r", "-O", "transparent", "[2001:db8:1::1]:80", "[2001:db8:2::2]:80", "[2001:db8:2::3]:80")
	g.client.WaitTCP("[2001:db8:1::1]:80")
	waitRules(t, g.pen, []string{rule("2001:db8:2::2", 80), rule("2001:db8:2::3", 80), route6})
	seen := answers(t, g.client, "http://[2001:db8:1::1]/", 10)
	for a, n := range seen {
		if !strings.HasSuffix(a, " 2001:db8:1::2") {
			t.Errorf("%d answers %q: the backend did not see the client's address 2001:db8:1::2", n, a)
		}
	}
	for _, be := range []string{"[2001:db8:2::2]:80", "[2001:db8:2::3]:80"} {
		if seen[be+" 2001:db8:1::2"] == 0 {
			t.Errorf("no answer from %s; answers %v", be, seen)
		}
	}
	t.Logf("answers: %v", seen)
	p.stop(syscall.SIGTERM)
	waitRules(t, g.pen, nil)
}

// TestTransparentUDP: a UDP echo backend that answers with the address
// it saw, IPv4 and IPv6.
func TestTransparentUDP(t *testing.T) {
	g := newGateway(t)
	for _, c := range []struct{ listen, server, client string }{
		{"198.18.1.1:5300", "198.18.2.2:5300", "198.18.1.2"},
		{"[2001:db8:1::1]:5300", "[2001:db8:2::2]:5300", "2001:db8:1::2"},
	} {
		var pc net.PacketConn
		if err := g.backends[0].Do(func() error {
			var err error
			pc, err = net.ListenPacket("udp", c.server)
			return err
		}); err != nil {
			t.Fatal(err)
		}
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
		p := startPen(t, g.pen, nil, "-U", "-O", "transparent", c.listen, c.server)
		got, err := askUDP(g.client, c.listen)
		pc.Close()
		if err != nil {
			t.Errorf("UDP through pen to %s: %v", c.server, err)
		} else if got != c.client {
			t.Errorf("UDP through pen to %s: the backend saw %q, want the client's %s", c.server, got, c.client)
		}
		p.stop(syscall.SIGTERM)
		waitRules(t, g.pen, nil)
	}
}

// askUDP sends datagrams from h to addr until one is answered (at most
// 5 s: pen may not be listening yet) and returns the answer.
func askUDP(h *netnstest.Host, addr string) (string, error) {
	c, err := h.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for range 25 {
		if _, err := c.Write([]byte("hello\n")); err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if s, err := r.ReadString('\n'); err == nil {
			return strings.TrimSpace(s), nil
		}
	}
	return "", fmt.Errorf("no answer from %s within 5 s", addr)
}

// Without CAP_NET_ADMIN pen cannot install the routing: it says so once,
// and proxies from its own address.
func TestTransparentRefused(t *testing.T) {
	g := newGateway(t)
	p := startPen(t, g.pen, []string{"setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"},
		"-r", "-O", "transparent", "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")
	g.client.WaitTCP("198.18.1.1:80")
	seen := answers(t, g.client, "http://198.18.1.1/", 3)
	for a, n := range seen {
		if !strings.HasSuffix(a, " 198.18.2.1") {
			t.Errorf("%d answers %q: want the backend to see pen's address 198.18.2.1", n, a)
		}
	}
	waitRules(t, g.pen, nil)
	p.stop(syscall.SIGTERM)
	out := p.out.String()
	const msg = "transparent: adding rule from 198.18.2.2 ipproto tcp sport 80: pen may not change the routing: it needs CAP_NET_ADMIN (operation not permitted); pen goes on without transparency"
	if strings.Count(out, msg) != 1 {
		t.Errorf("pen's output should say once %q; it is:\n%s", msg, out)
	}
}

// TLS-terminated connections leave from the client's address too.
func TestTransparentTLS(t *testing.T) {
	g := newGateway(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile)
	p := startPen(t, g.pen, nil, "-r", "-O", "transparent", "-E", certFile, "-K", keyFile,
		"198.18.1.1:443", "198.18.2.2:80", "198.18.2.3:80")
	g.client.WaitTCP("198.18.1.1:443")
	waitRules(t, g.pen, []string{rule("198.18.2.2", 80), rule("198.18.2.3", 80), route4})
	seen := map[string]int{}
	for _, keep := range []bool{true, false} {
		c := httpClient(g.client, keep)
		c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		for range 4 {
			a, err := get(c, "https://198.18.1.1/")
			if err != nil {
				t.Fatalf("GET over TLS (keep-alive %v): %v", keep, err)
			}
			seen[a]++
		}
		c.CloseIdleConnections()
	}
	for a, n := range seen {
		if !strings.HasSuffix(a, " 198.18.1.2") {
			t.Errorf("%d answers %q: the backend did not see the client's address 198.18.1.2", n, a)
		}
	}
	t.Logf("answers: %v", seen)
	p.stop(syscall.SIGTERM)
	waitRules(t, g.pen, nil)
}

// source ADDR binds the connections to servers to ADDR, with and without
// transparent (which it overrides, as in Pen: no rules are needed then).
func TestSourceWithAndWithoutTransparent(t *testing.T) {
	g := newGateway(t)
	g.pen.IP("addr", "add", "198.18.2.100/24", "dev", "br0")
	for _, opts := range [][]string{
		{"-O", "source 198.18.2.100"},
		{"-O", "source 198.18.2.100", "-O", "transparent"},
	} {
		args := append(append([]string{"-r"}, opts...), "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")
		p := startPen(t, g.pen, nil, args...)
		g.client.WaitTCP("198.18.1.1:80")
		seen := answers(t, g.client, "http://198.18.1.1/", 4)
		for a, n := range seen {
			if !strings.HasSuffix(a, " 198.18.2.100") {
				t.Errorf("pen %v: %d answers %q; want the backend to see the source address 198.18.2.100", opts, n, a)
			}
		}
		if len(seen) != 2 {
			t.Errorf("pen %v: answers %v; want both backends", opts, seen)
		}
		waitRules(t, g.pen, nil)
		p.stop(syscall.SIGTERM)
	}
}

// writeCert writes a self-signed certificate for 198.18.1.1 and its key.
func writeCert(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "198.18.1.1"},
		IPAddresses:  []net.IP{net.ParseIP("198.18.1.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Two pens on one host, each with a table and priority of its own
// (transparent_table, transparent_priority), serve side by side; each
// removes only its own routing.
func TestTwoTransparentPens(t *testing.T) {
	g := newGateway(t)
	a := startPen(t, g.pen, nil, "-r", "-O", "transparent", "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")
	b := startPen(t, g.pen, nil, "-r", "-O", "transparent", "-O", "transparent_table 737", "-O", "transparent_priority 7370",
		"[2001:db8:1::1]:80", "[2001:db8:2::2]:80", "[2001:db8:2::3]:80")
	g.client.WaitTCP("198.18.1.1:80")
	g.client.WaitTCP("[2001:db8:1::1]:80")
	wantA := []string{rule("198.18.2.2", 80), rule("198.18.2.3", 80), route4}
	wantB := []string{
		"7370: from 2001:db8:2::2 ipproto tcp sport 80 lookup 737",
		"7370: from 2001:db8:2::3 ipproto tcp sport 80 lookup 737",
		route6,
	}
	waitRules(t, g.pen, wantA)
	if got := rulesAt(g.pen, 737, 7370); !slices.Equal(got, wantB) {
		t.Errorf("second pen's rules and routes:\n got %q\nwant %q", got, wantB)
	}
	for url, client := range map[string]string{"http://198.18.1.1/": "198.18.1.2", "http://[2001:db8:1::1]/": "2001:db8:1::2"} {
		for a, n := range answers(t, g.client, url, 4) {
			if !strings.HasSuffix(a, " "+client) {
				t.Errorf("%s: %d answers %q: the backend did not see the client's address %s", url, n, a, client)
			}
		}
	}
	a.stop(syscall.SIGTERM)
	waitRules(t, g.pen, nil)
	if got := rulesAt(g.pen, 737, 7370); !slices.Equal(got, wantB) {
		t.Errorf("second pen's rules and routes after the first ended:\n got %q\nwant %q", got, wantB)
	}
	b.stop(syscall.SIGTERM)
	if got := rulesAt(g.pen, 737, 7370); len(got) != 0 {
		t.Errorf("second pen's rules and routes after it ended: %q", got)
	}
}

// Pen on a stick (docs/TRANSPARENT.md): pen and the backends share one
// network behind a router; the backends' default route points at pen,
// pen's at the router.
func TestTransparentOnAStick(t *testing.T) {
	n := netnstest.New(t)
	client, router, pen := n.Host("client"), n.Host("router"), n.Host("pen")
	n.Link(client, "eth0", []string{"198.18.1.2/24"}, router, "c0", []string{"198.18.1.1/24"})
	client.Route("default", "via", "198.18.1.1")
	router.Sysctl("net.ipv4.ip_forward", "1")
	router.Bridge("br0", "198.18.3.1/24")
	n.Link(router, "p0", nil, pen, "eth0", []string{"198.18.3.10/24"})
	router.Port("br0", "p0")
	pen.Route("default", "via", "198.18.3.1")
	for i, host := range []string{"20", "21"} {
		be := n.Host("be" + host)
		dev := fmt.Sprintf("b%d", i)
		n.Link(router, dev, nil, be, "eth0", []string{"198.18.3." + host + "/24"})
		router.Port("br0", dev)
		be.Route("default", "via", "198.18.3.10")
		be.Nginx("198.18.3." + host + ":80")
	}
	p := startPen(t, pen, nil, "-r", "-O", "transparent", "198.18.3.10:80", "198.18.3.20:80", "198.18.3.21:80")
	client.WaitTCP("198.18.3.10:80")
	waitRules(t, pen, []string{rule("198.18.3.20", 80), rule("198.18.3.21", 80), route4})
	seen := answers(t, client, "http://198.18.3.10/", 6)
	for a, n := range seen {
		if !strings.HasSuffix(a, " 198.18.1.2") {
			t.Errorf("%d answers %q: the backend did not see the client's address 198.18.1.2", n, a)
		}
	}
	if len(seen) != 2 {
		t.Errorf("answers %v; want both backends", seen)
	}
	t.Logf("answers: %v", seen)
	p.stop(syscall.SIGTERM)
	waitRules(t, pen, nil)
}
