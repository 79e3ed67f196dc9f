package webui

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/engine"
	"github.com/pen-lb/pen-appliance/pen/metrics"
)

const testPassword = "correct horse battery"

// clock is a settable clock for sessions and login backoff.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// harness is the admin UI of an in-process pen, behind httptest.
type harness struct {
	t      *testing.T
	dir    string
	pwFile string
	in     *config.Interp
	eng    *engine.Engine
	s      *Server
	ts     *httptest.Server
	c      *http.Client
	clock  *clock
	listen string // pen's own listener
}

// placeholderBind opens the admin UI's listeners for tests: a TCP spec
// with a port below 100 (a placeholder, as in "127.0.0.1:1") binds port 0
// of its address instead, and the server reports the port it got
// (AdminAddr, RedirectAddr); other specs bind as named.
func placeholderBind(spec string) (net.Listener, error) {
	p, err := config.ParseListen(spec, false, nil)
	if err == nil && p.Path == "" && p.Addr.Port() < 100 {
		return net.Listen("tcp", netip.AddrPortFrom(p.Addr.Addr(), 0).String())
	}
	return listen(spec)
}

// noResolver keeps tests off DNS: names that are not literal addresses
// do not resolve.
func noResolver(ctx context.Context, host string) (netip.Addr, error) {
	return netip.Addr{}, errors.New("no DNS in tests")
}

type harnessOpt struct {
	tls   bool
	lines []string
}

func newHarness(t *testing.T, o harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), clock: &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	h.pwFile = filepath.Join(h.dir, "gokr-pw.txt")
	if err := os.WriteFile(h.pwFile, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.in = config.New(config.Default(), config.Process{ConfigFile: filepath.Join(h.dir, "pen.cfg")}, diag.Discard())
	h.in.SetResolver(noResolver)
	eng, err := engine.New(diag.Discard(), h.in)
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	h.listen = filepath.Join(h.dir, "pen.sock") // a unix socket: no port to find
	lines := append([]string{
		"listen " + h.listen,
		"server 0 address 127.0.0.1 port 9",
		"server 1 address 127.0.0.1 port 10",
		"admin_listen 127.0.0.1:1", // a placeholder: opened only by tests that Start
		"admin_password_file " + filepath.Join(h.dir, "missing.txt") + " " + h.pwFile,
	}, o.lines...)
	for _, l := range lines {
		if _, err := h.in.Exec(l, config.FromFlag); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	if err := h.in.SetEngine(eng); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- eng.Run() }()
	t.Cleanup(func() {
		eng.Quit()
		<-done
	})
	// As Attach does.
	snap := NewSnapshot(h.in)
	reg := prometheus.NewRegistry()
	if err := metrics.Register(reg, metrics.EngineSource(eng), snap); err != nil {
		t.Fatal(err)
	}
	h.s = New(Options{Interp: h.in, State: EngineState(eng), Gatherer: reg, Config: snap})
	h.s.lst.bind = placeholderBind
	h.s.SetClock(h.clock.now)
	h.s.logins = newLimiter(time.Second, time.Minute)
	h.s.logins.now = h.clock.now
	if o.tls {
		h.ts = httptest.NewTLSServer(h.s)
	} else {
		h.ts = httptest.NewServer(h.s)
	}
	t.Cleanup(h.ts.Close)
	h.c = h.client()
	return h
}

// client returns a browser-like client: its own cookies, no redirects
// followed.
func (h *harness) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	c := h.ts.Client()
	return &http.Client{
		Transport:     c.Transport,
		Jar:           jar,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type resp struct {
	code int
	body string
	hdr  http.Header
}

func (h *harness) do(c *http.Client, method, path string, form url.Values) resp {
	h.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, h.ts.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	r, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, string(b), r.Header}
}

func (h *harness) get(path string) resp { h.t.Helper(); return h.do(h.c, "GET", path, nil) }

// post sends a form with the session's CSRF token.
func (h *harness) post(path string, form url.Values) resp {
	h.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if form.Get("csrf") == "" {
		form.Set("csrf", h.csrf())
	}
	return h.do(h.c, "POST", path, form)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (h *harness) csrf() string {
	h.t.Helper()
	r := h.get("/settings")
	m := csrfRE.FindStringSubmatch(r.body)
	if m == nil {
		h.t.Fatalf("no CSRF token on /settings (HTTP %d)", r.code)
	}
	return m[1]
}

var tokenRE = regexp.MustCompile(`name="token" value="([^"]+)"`)

// loginWith logs c in with password and returns the response.
func (h *harness) loginWith(c *http.Client, password string) resp {
	h.t.Helper()
	r := h.do(c, "GET", "/login", nil)
	m := tokenRE.FindStringSubmatch(r.body)
	if m == nil {
		h.t.Fatalf("no login token (HTTP %d)", r.code)
	}
	return h.do(c, "POST", "/login", url.Values{"token": {m[1]}, "password": {password}, "next": {"/servers"}})
}

func (h *harness) login() {
	h.t.Helper()
	if r := h.loginWith(h.c, testPassword); r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/servers" {
		h.t.Fatalf("login: HTTP %d, Location %q\n%s", r.code, r.hdr.Get("Location"), r.body)
	}
}

func (h *harness) webChanges() uint64 { return h.in.ChangesBy()[config.FromWeb] }

func (h *harness) exec(line string) {
	h.t.Helper()
	if _, err := h.in.Exec(line, config.FromControl); err != nil {
		h.t.Fatalf("%q: %v", line, err)
	}
}

func contains(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
}

// cfgText is the configuration as write would save it, without the line
// that holds the time.
func (h *harness) cfgText() string {
	_, rest, _ := strings.Cut(string(h.in.Render("x")), "\n")
	return rest
}
