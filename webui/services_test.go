package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/pen-lb/pen-appliance/internal/services"
	"github.com/pen-lb/pen-appliance/pen/control"
	"github.com/pen-lb/pen-appliance/pen/metrics"
)

// servicesEnv is an appliance's services in temporary directories: the
// environment that makes the admin UI of a harness show them, and a
// supervisor running real pens.
type servicesEnv struct {
	layout services.Layout
	sup    *services.Supervisor
}

func newServicesEnv(t *testing.T) *servicesEnv {
	t.Helper()
	pen := buildBinary(t, "go", t.TempDir(), "pen/cmd/pen")
	root, err := os.MkdirTemp("/tmp", "svcui") // a unix socket's path is short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	l := services.Layout{Dir: filepath.Join(root, "services"), Run: filepath.Join(root, "run")}
	t.Setenv(services.EnvDir, l.Dir)
	t.Setenv(services.EnvRun, l.Run)
	t.Setenv(services.EnvName, services.MainName)
	sup := &services.Supervisor{Layout: l, Binary: pen, Scan: 50 * time.Millisecond,
		MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Second, Stable: time.Second, StopTimeout: 3 * time.Second,
		Logf: t.Logf}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sup.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &servicesEnv{layout: l, sup: sup}
}

func (e *servicesEnv) wait(t *testing.T, name, state string) services.State {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		states, _ := e.layout.ReadStates()
		st, ok := states[name]
		if ok && st.State == state && (state != services.Running || st.PID != 0) {
			if state != services.Running {
				return st
			}
			// Running, and its control socket answers.
			if _, err := control.Request(e.layout.Control(name), "pid", time.Second); err == nil {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s: %+v, want %s", name, st, state)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// banner connects to port and returns the backend's first line.
func banner(port int) (string, error) {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "hello\n")
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if echo, err := r.ReadString('\n'); err != nil || echo != "hello\n" {
		return "", fmt.Errorf("echo %q, %v", echo, err)
	}
	return strings.TrimSpace(line), nil
}

func waitBanner(t *testing.T, port int, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := banner(port)
		if err == nil && strings.HasPrefix(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("through port %d: %q, %v; want %q", port, got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServices drives the appliance's services through the admin UI with
// real pens under a real supervisor: a service added from a template,
// its servers added on its own servers page (commands through its control
// socket), its traffic on the services page and in /metrics with its
// service label, /healthz per service; a bad upload and a file-naming
// command refused while the service keeps serving; a broken service shown
// failing beside the others; stop, start, rename and remove.
func TestServices(t *testing.T) {
	env := newServicesEnv(t)
	h := newHarness(t, harnessOpt{})
	if h.s.svc == nil {
		t.Fatal("the admin UI does not see the services in its environment")
	}
	h.login()
	p1, _ := backend(t, 1)
	p2, _ := backend(t, 2)

	// A service that cannot start: failing, restarted, the others fine.
	if err := env.layout.Create("broken", []byte("listen 127.0.0.1:1\nno_such_command\n"), nil, nil); err != nil {
		t.Fatal(err)
	}

	port := freeTCPPort(t)
	r := h.post("/services/add", url.Values{"name": {"web"}, "kind": {"tcp"}, "port": {strconv.Itoa(port)}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("adding a service: HTTP %d\n%s", r.code, r.body)
	}
	for _, bad := range []url.Values{
		{"name": {"../etc"}, "kind": {"tcp"}, "port": {"1"}},
		{"name": {"web"}, "kind": {"tcp"}, "port": {"1"}},
		{"name": {"x"}, "kind": {"tcp"}, "port": {"70000"}},
		{"name": {"y"}, "kind": {"https"}, "port": {"1"}},
	} {
		if r := h.post("/services/add", bad); r.code != http.StatusBadRequest {
			t.Errorf("adding %v: HTTP %d, want 400", bad, r.code)
		}
	}
	env.wait(t, "web", services.Running)

	// A link from another site does not choose the service.
	req, _ := http.NewRequest("GET", h.ts.URL+"/services/open/web", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := h.c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("opening a service from another site: %v, %v", resp.Status, err)
	} else {
		resp.Body.Close()
	}
	// Its own servers page, through its control socket.
	if r := h.get("/services/open/web"); r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/servers" {
		t.Fatalf("opening web: HTTP %d %q", r.code, r.hdr.Get("Location"))
	}
	for _, p := range []string{p1, p2} {
		if r := h.post("/servers/add", url.Values{"address": {"127.0.0.1"}, "port": {p}}); r.code != http.StatusSeeOther {
			t.Fatalf("adding server port %s to web: HTTP %d\n%s", p, r.code, r.body)
		}
	}
	r = h.get("/servers")
	contains(t, "web's servers page", r.body, "127.0.0.1:"+p1, "127.0.0.1:"+p2, ">web:<")
	cfg, _ := os.ReadFile(env.layout.Config("web"))
	if !strings.Contains(string(cfg), "port "+p2) {
		t.Errorf("web's pen.cfg was not saved (autowrite):\n%s", cfg)
	}
	waitBanner(t, port, "backend ")
	for i := 0; i < 5; i++ {
		banner(port)
	}

	// Several lines at once (an upload) arrive as one transaction; a bad
	// one and a file-naming command change nothing.
	upload := func(text string) resp {
		return h.upload("pen.cfg", text)
	}
	if r := upload("server 1 address 127.0.0.1 port " + p2 + " weight 3\nno_such_command\n"); r.code != http.StatusBadRequest {
		t.Errorf("a bad upload to web: HTTP %d", r.code)
	}
	if r := upload("include /etc/passwd\n"); r.code != http.StatusBadRequest || !strings.Contains(r.body, "files cannot be read from the admin UI") {
		t.Errorf("include from the admin UI to web: HTTP %d\n%s", r.code, r.body)
	}
	if r := upload("weight\nserver 1 address 127.0.0.1 port " + p2 + " weight 3\n"); r.code != http.StatusSeeOther {
		t.Errorf("a good upload to web: HTTP %d\n%s", r.code, r.body)
	}
	cfg, _ = os.ReadFile(env.layout.Config("web"))
	if !strings.Contains(string(cfg), "weight 3") || !strings.Contains(string(cfg), "\nweight\n") {
		t.Errorf("web's pen.cfg after the upload:\n%s", cfg)
	}
	waitBanner(t, port, "backend ")

	// The live chart's samples come from web's pen.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := h.get("/api/samples")
		var sm Samples
		json.Unmarshal([]byte(r.body), &sm)
		if len(sm.Times) >= 2 && len(sm.Servers) == 2 && sm.Servers[0].Address != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web's samples: HTTP %d %s", r.code, r.body)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The services page: state, listener, connections and traffic.
	r = h.get("/services")
	contains(t, "services page", r.body, `id="service-web" data-state="running"`, fmt.Sprintf("%d", port),
		`id="service-broken" data-state="failing"`, "not a pen command")
	if !strings.Contains(r.body, "B / ") {
		t.Errorf("no traffic on the services page:\n%s", r.body)
	}
	// Every service's dashboard lists the services.
	for _, svc := range []string{"main", "web"} {
		h.get("/services/open/" + svc + "?page=dashboard")
		r = h.get("/")
		contains(t, svc+"'s dashboard", r.body, `id="summary-web" data-state="running"`, `id="summary-broken" data-state="failing"`, ">"+svc+":<")
	}
	// /metrics (as Attach gathers it) carries both services' pens with
	// their labels.
	g, err := serviceMetrics(prometheus.NewRegistry(), metrics.EngineSource(h.eng), NewSnapshot(h.in))
	if err != nil {
		t.Fatal(err)
	}
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, f := range fams {
		expfmt.MetricFamilyToText(&text, f)
	}
	contains(t, "/metrics", text.String(), `service="web"`, `service="main"`, `address="127.0.0.1:`+p1+`"`, "go_goroutines")
	// /healthz per service, and every service's state on /healthz.
	if r := h.get("/healthz"); r.code != http.StatusOK || !strings.Contains(r.body, "service web: running\n") || !strings.Contains(r.body, "service broken: failing\n") {
		t.Errorf("/healthz: HTTP %d %q", r.code, r.body)
	}
	if r := h.get("/healthz/web"); r.code != http.StatusOK {
		t.Errorf("/healthz/web: HTTP %d %s", r.code, r.body)
	}
	if r := h.get("/healthz/broken"); r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "failing") {
		t.Errorf("/healthz/broken: HTTP %d %s", r.code, r.body)
	}

	// Stop, start, rename, remove (the forms of the services page).
	post := func(path string, f url.Values) resp {
		m := csrfRE.FindStringSubmatch(h.get("/services").body)
		if m == nil {
			t.Fatal("no CSRF token on /services")
		}
		f.Set("csrf", m[1])
		return h.do(h.c, "POST", path, f)
	}
	if r := post("/services/stop", url.Values{"name": {"main"}}); r.code != http.StatusBadRequest {
		t.Errorf("stopping the UI's own service: HTTP %d", r.code)
	}
	post("/services/stop", url.Values{"name": {"web"}})
	env.wait(t, "web", services.Stopped)
	if r := h.get("/healthz/web"); r.code != http.StatusServiceUnavailable {
		t.Errorf("/healthz/web of a stopped service: HTTP %d", r.code)
	}
	post("/services/start", url.Values{"name": {"web"}})
	env.wait(t, "web", services.Running)
	waitBanner(t, port, "backend ")
	if r := post("/services/rename", url.Values{"name": {"web"}, "to": {"a/b"}}); r.code != http.StatusBadRequest {
		t.Errorf("renaming to a/b: HTTP %d", r.code)
	}
	if r := post("/services/rename", url.Values{"name": {"web"}, "to": {"www"}}); r.code != http.StatusSeeOther {
		t.Fatalf("renaming: HTTP %d\n%s", r.code, r.body)
	}
	env.wait(t, "www", services.Running)
	waitBanner(t, port, "backend ")
	r = h.get("/servers") // the cookie followed the rename
	contains(t, "www's servers page", r.body, "127.0.0.1:"+p2, ">www:<")
	if r := post("/services/remove", url.Values{"name": {"www"}}); r.code != http.StatusSeeOther {
		t.Fatalf("removing: HTTP %d", r.code)
	}
	if _, err := os.Stat(env.layout.ServiceDir("www")); err == nil {
		t.Error("www's directory is still there")
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, err := banner(port); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a removed service still serves")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Back to the UI's own pages.
	r = h.get("/servers")
	contains(t, "main's servers page", r.body, "127.0.0.1:9")
}
