package webui

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/pen-lb/pen-appliance/internal/atomicfile"
	"github.com/pen-lb/pen-appliance/internal/services"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/control"
	"github.com/pen-lb/pen-appliance/pen/dsr"
	"github.com/pen-lb/pen-appliance/pen/metrics"
	"github.com/pen-lb/pen-appliance/pen/proxy"
)

// The appliance's services (package services): a pen run by the
// appliance finds the services directory in its environment, and its
// admin UI then shows every service, not only its own. Another service's
// pen is reached through its control socket only: the state command for
// what the pages show, and commands of that pen's language for every
// change, previewed first with origin config.FromWeb on a copy of its
// configuration, as the UI's own changes are.

// servicesUI is the services part of the admin UI.
type servicesUI struct {
	layout services.Layout
	self   string // the service whose pen serves this UI

	mu      sync.Mutex
	mirrors map[string]*mirrorEntry
	pending map[string]*pendingUploads // uploads waiting for confirmation, per service
	live    map[string]*serviceLive    // the chart's samples and the servers' history, per service opened
}

// serviceLive keeps what a service's dashboard and servers page show over
// time (the live chart, when each server entered its state), sampled from
// the service's pen from the first time its pages are opened until the
// service is removed or renamed.
type serviceLive struct {
	sampler *Sampler
	hist    *history
}

// liveOf returns service name's samples, starting them if needed.
func (u *servicesUI) liveOf(name string) *serviceLive {
	u.mu.Lock()
	defer u.mu.Unlock()
	if l := u.live[name]; l != nil {
		return l
	}
	src := &liveSource{u: u, name: name}
	l := &serviceLive{sampler: NewSampler(src, src, SampleInterval, SampleWindow), hist: newHistory()}
	l.sampler.observe = l.hist.observe
	l.sampler.Start()
	if u.live == nil {
		u.live = map[string]*serviceLive{}
	}
	u.live[name] = l
	return l
}

// forget stops following service name (removed or renamed).
func (u *servicesUI) forget(name string) {
	u.mu.Lock()
	l := u.live[name]
	delete(u.live, name)
	delete(u.mirrors, name)
	delete(u.pending, name)
	u.mu.Unlock()
	if l != nil {
		l.sampler.Stop()
	}
}

// liveSource is a service's pen as the sampler reads it: the servers'
// counters from its state reply, the configuration from the copy the
// pages were made from.
type liveSource struct {
	u    *servicesUI
	name string

	mu   sync.Mutex
	last *remoteStatus
}

func (l *liveSource) fetch() *remoteStatus {
	st, err := l.u.fetch(l.name)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.last = st
		if _, err := l.u.mirrorOf(l.name, st); err != nil {
			l.last = nil
		}
	}
	return l.last
}

func (l *liveSource) Config() *config.Config {
	l.u.mu.Lock()
	defer l.u.mu.Unlock()
	if m := l.u.mirrors[l.name]; m != nil {
		return m.in.Config()
	}
	return config.Default()
}

func (l *liveSource) ChangesBy() map[config.Origin]uint64 { return nil }

func (l *liveSource) Servers() []config.ServerState {
	if st := l.fetch(); st != nil {
		return st.Runtime.Servers
	}
	return nil
}

func (l *liveSource) SpecialStates() (*config.ServerState, *config.ServerState) { return nil, nil }
func (l *liveSource) TrackedClients() int                                       { return 0 }
func (l *liveSource) ACLDenied(int) uint64                                      { return 0 }
func (l *liveSource) Stats() proxy.Stats                                        { return proxy.Stats{} }
func (l *liveSource) Serving() bool                                             { return true }

// pendingOf is the store of uploads waiting for confirmation of service
// name.
func (u *servicesUI) pendingOf(name string) *pendingUploads {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pending == nil {
		u.pending = map[string]*pendingUploads{}
	}
	p := u.pending[name]
	if p == nil {
		p = new(pendingUploads)
		u.pending[name] = p
	}
	return p
}

// mirrorEntry is the copy of a service's configuration the pages were
// last made from. It is kept while the service's configuration stays the
// same, so that a form posted from a page finds the servers it showed
// (a server's identity is made when its line is read).
type mirrorEntry struct {
	key  string // the configuration without comments
	in   *config.Interp
	snap *Snapshot
}

// mirrorOf returns the copy of st's configuration for service name.
func (u *servicesUI) mirrorOf(name string, st *remoteStatus) (*mirrorEntry, error) {
	var b strings.Builder
	for _, l := range strings.Split(st.Config, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	key := st.ConfigFile + "\n" + b.String()
	u.mu.Lock()
	defer u.mu.Unlock()
	if e := u.mirrors[name]; e != nil && e.key == key {
		return e, nil
	}
	in, err := mirror(st)
	if err != nil {
		return nil, err
	}
	e := &mirrorEntry{key: key, in: in, snap: NewSnapshot(in)}
	if u.mirrors == nil {
		u.mirrors = map[string]*mirrorEntry{}
	}
	u.mirrors[name] = e
	return e, nil
}

// serviceCookie holds the service whose pages the browser is looking at
// (the pages have the same paths for every service).
const serviceCookie = "pen_service"

// controlTimeout bounds one command to another service's pen.
const controlTimeout = 10 * time.Second

func applianceServices() *servicesUI {
	l, name, ok := services.FromEnv()
	if !ok {
		return nil
	}
	return &servicesUI{layout: l, self: name}
}

// remoteStatus is another pen's reply to state.
type remoteStatus struct {
	config.State
	Runtime RuntimeStatus `json:"runtime"`
}

// fetch asks service name's pen for its state.
func (u *servicesUI) fetch(name string) (*remoteStatus, error) {
	out, err := control.Request(u.layout.Control(name), "state", controlTimeout)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	var st remoteStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("service %s: the state reply: %w", name, err)
	}
	return &st, nil
}

// exec sends lines to service name's pen: one line as it is, several as
// one transaction (include of a file in the run directory, which only
// the appliance's root may enter).
func (u *servicesUI) exec(name string, lines []string) error {
	ctl := u.layout.Control(name)
	if len(lines) == 1 {
		_, err := control.Request(ctl, lines[0], controlTimeout)
		return remoteErr(err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	f := filepath.Join(u.layout.Run, "webui-"+name+"-"+hex.EncodeToString(rnd[:])+".cfg")
	if err := atomicfile.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(f)
	_, err := control.Request(ctl, "include "+f, 3*controlTimeout)
	return remoteErr(err)
}

// remoteErr turns the pen's refusal into its reason.
func remoteErr(err error) error {
	var r *control.Refused
	if errors.As(err, &r) {
		return errors.New(strings.TrimSpace(r.Reason))
	}
	return err
}

// mirror makes an interpreter holding a copy of a remote pen's
// configuration: the pages read it, and a change is previewed on it.
func mirror(st *remoteStatus) (*config.Interp, error) {
	in := config.New(config.Default(), config.Process{ConfigFile: st.ConfigFile}, nil)
	in.SetResolver(noResolve)
	if _, err := in.ExecLines("service", []byte(st.Config), config.FromFile); err != nil {
		return nil, fmt.Errorf("reading the service's configuration: %w", err)
	}
	return in, nil
}

// noResolve keeps a copy of a configuration from waiting for DNS: write
// saves addresses, and names stay with the pen that runs them.
func noResolve(context.Context, string) (netip.Addr, error) {
	return netip.Addr{}, errors.New("names are resolved by the service's pen")
}

// remoteState is State read from a state reply.
type remoteState struct{ r RuntimeStatus }

func (s remoteState) Servers() []config.ServerState { return s.r.Servers }
func (s remoteState) SpecialStates() (*config.ServerState, *config.ServerState) {
	return s.r.Emergency, s.r.Abuse
}
func (s remoteState) TrackedClients() int { return s.r.Tracked }
func (s remoteState) ACLDenied(n int) uint64 {
	if n >= 0 && n < len(s.r.ACLDenied) {
		return s.r.ACLDenied[n]
	}
	return 0
}
func (s remoteState) Stats() proxy.Stats { return s.r.Stats }
func (s remoteState) Serving() bool      { return s.r.Serving }
func (s remoteState) DSRStats() (dsr.Stats, bool) {
	if s.r.DSR == nil {
		return dsr.Stats{}, false
	}
	return *s.r.DSR, true
}

// mirrorConfig is metrics.Config for a remote pen.
type mirrorConfig struct {
	c       *config.Config
	changes map[config.Origin]uint64
}

func (m mirrorConfig) Config() *config.Config              { return m.c }
func (m mirrorConfig) ChangesBy() map[config.Origin]uint64 { return m.changes }

// serviceServer is the admin UI of service name, for one request: the
// same pages on a copy of its configuration, changing it through its
// control socket; sessions are this UI's.
func (s *Server) serviceServer(name string) (*Server, error) {
	st, err := s.svc.fetch(name)
	if err != nil {
		return nil, err
	}
	m, err := s.svc.mirrorOf(name, st)
	if err != nil {
		return nil, err
	}
	sub := New(Options{Interp: m.in, Config: m.snap, State: remoteState{st.Runtime}, Log: s.log})
	sub.sessions, sub.logins, sub.now, sub.host, sub.fw = s.sessions, s.logins, s.now, s.host, s.fw
	sub.pages = s.pages
	sub.service = name
	sub.pending = s.svc.pendingOf(name)
	live := s.svc.liveOf(name)
	sub.sampler, sub.hist = live.sampler, live.hist
	sub.remote = func(lines []string) error { return s.svc.exec(name, lines) }
	return sub, nil
}

// servicePaths are the pages that belong to one service.
func servicePath(p string) bool {
	if p == "/" {
		return true
	}
	for _, pre := range []string{"/servers", "/acls", "/settings", "/config", "/undo", "/api/state", "/api/samples"} {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

// selected is the service the browser looks at, "" for this pen's own.
func (s *Server) selected(r *http.Request) string {
	c, err := r.Cookie(serviceCookie)
	if err != nil || services.ValidName(c.Value) != nil || c.Value == s.svc.self {
		return ""
	}
	return c.Value
}

// servicesRoutes adds the services pages to mux (on the appliance) and
// returns the handler that sends a service's pages to that service.
func (s *Server) servicesRoutes(mux *http.ServeMux) http.Handler {
	s.mux = mux
	if s.svc == nil {
		return mux
	}
	mux.HandleFunc("GET /services", s.page(s.servicesPage))
	mux.HandleFunc("GET /services/open/{name}", s.page(s.serviceOpen))
	mux.HandleFunc("POST /services/add", s.action(maxUpload+maxForm, s.serviceAdd))
	mux.HandleFunc("POST /services/rename", s.action(maxForm, s.serviceRename))
	mux.HandleFunc("POST /services/stop", s.action(maxForm, s.serviceStop))
	mux.HandleFunc("POST /services/start", s.action(maxForm, s.serviceStart))
	mux.HandleFunc("POST /services/remove", s.action(maxForm, s.serviceRemove))
	mux.HandleFunc("GET /healthz/{name}", s.serviceHealthz)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := s.selected(r)
		if name == "" || !servicePath(r.URL.Path) || s.session(r) == nil {
			mux.ServeHTTP(w, r)
			return
		}
		sub, err := s.serviceServer(name)
		if err != nil {
			if x := s.session(r); x != nil && r.Method == "GET" && !strings.HasPrefix(r.URL.Path, "/api/") {
				s.sessions.addFlash(x, Flash{Note: "Service " + name + " does not answer (" + err.Error() + "); showing the services."})
				http.Redirect(w, r, "/services", http.StatusSeeOther)
				return
			}
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		sub.mux.ServeHTTP(w, r)
	})
}

// serviceOpen selects a service's pages.
func (s *Server) serviceOpen(w http.ResponseWriter, r *http.Request, x *session) {
	name := r.PathValue("name")
	if services.ValidName(name) != nil {
		http.Error(w, "no such service", http.StatusNotFound)
		return
	}
	// A link on another site must not choose the service the next
	// change of this browser goes to.
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		http.Error(w, "Open services from this admin UI's own pages.", http.StatusForbidden)
		return
	}
	c := &http.Cookie{Name: serviceCookie, Value: name, Path: "/", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode}
	if name == s.svc.self {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
	next := "/servers"
	if p := r.URL.Query().Get("page"); p == "acls" || p == "settings" || p == "config" || p == "dashboard" {
		next = "/" + p
		if p == "dashboard" {
			next = "/"
		}
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// serviceRow is one service on the services page.
type serviceRow struct {
	Name, State, Listen, Kind, Error string
	Self, Stopped                    bool
	PID, Restarts                    int
	LastExit                         string
	Since, NextStart                 time.Time
	Servers, Active                  int
	Accepted, Sent, Received         uint64
	Serving                          bool
}

func (s *Server) serviceRows() ([]serviceRow, error) {
	names, err := s.svc.layout.List()
	if err != nil {
		return nil, err
	}
	states, err := s.svc.layout.ReadStates()
	if err != nil {
		s.log.Printf("admin UI: %v", err)
	}
	var rows []serviceRow
	for _, n := range names {
		st := states[n]
		rw := serviceRow{Name: n, State: st.State, Self: n == s.svc.self, PID: st.PID, Restarts: st.Restarts,
			LastExit: st.LastExit, Since: st.Since, NextStart: st.NextStart, Stopped: s.svc.layout.Stopped(n)}
		if rw.State == "" {
			rw.State = "starting"
			if rw.Stopped {
				rw.State = services.Stopped
			}
		}
		if rw.State == services.Running {
			if rs, err := s.svc.fetch(n); err != nil {
				rw.Error = err.Error()
			} else {
				rw.Listen, rw.Serving = rs.Listen, rs.Runtime.Serving
				switch {
				case rs.DSR != "":
					rw.Kind = "DSR on " + rs.DSR
				case rs.UDP:
					rw.Kind = "UDP"
				case strings.Contains(rs.Config, "\nssl_cert "):
					rw.Kind = "TLS"
				default:
					rw.Kind = "TCP"
				}
				rw.Servers, rw.Active, rw.Accepted = len(rs.Runtime.Servers), rs.Runtime.Stats.Active, rs.Runtime.Stats.Accepted
				for _, sv := range rs.Runtime.Servers {
					rw.Sent += sv.Sent
					rw.Received += sv.Received
				}
			}
		}
		rows = append(rows, rw)
	}
	return rows, nil
}

// Pill is the state's colour class in the style sheet.
func (r serviceRow) Pill() string {
	switch r.State {
	case services.Running:
		if r.Error != "" || !r.Serving {
			return "warn"
		}
		return "up"
	case services.Failing:
		return "down"
	case services.Stopped:
		return "unused"
	}
	return "untried"
}

// StateText is the state with how long and why.
func (r serviceRow) StateText() string {
	switch r.State {
	case services.Failing:
		t := "failing"
		if r.Restarts > 0 {
			t += fmt.Sprintf(", restarted %d times", r.Restarts)
		}
		if !r.NextStart.IsZero() {
			t += ", next start " + r.NextStart.Format("15:04:05")
		}
		return t
	case services.Running:
		if !r.Serving && r.Error == "" {
			return "running, not serving"
		}
	}
	return r.State
}

type servicesData struct {
	Services  []serviceRow
	Templates []services.Template
	Error     string
	Self      string
}

func (s *Server) servicesPage(w http.ResponseWriter, r *http.Request, x *session) {
	s.servicesView(w, r, x, http.StatusOK, nil)
}

func (s *Server) servicesView(w http.ResponseWriter, r *http.Request, x *session, status int, f *form) {
	rows, err := s.serviceRows()
	d := servicesData{Services: rows, Templates: services.Templates, Self: s.svc.self}
	if err != nil {
		d.Error = err.Error()
	}
	s.show(w, r, x, status, "services", "Services", f, d)
}

// serviceDone notes a change to the services and shows the page again.
func (s *Server) serviceDone(w http.ResponseWriter, r *http.Request, x *session, note string) {
	s.log.Printf("admin UI: %s: %s", clientName(clientAddr(r)), note)
	s.sessions.addFlash(x, Flash{Note: note})
	http.Redirect(w, r, "/services", http.StatusSeeOther)
}

func (s *Server) serviceAdd(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("add-service", r)
	name := strings.TrimSpace(r.PostFormValue("name"))
	if err := services.ValidName(name); err != nil {
		f.Errors["name"] = err.Error()
	}
	t, ok := services.TemplateOf(r.PostFormValue("kind"))
	if !ok {
		f.Errors["kind"] = "Choose a template."
	}
	var p services.Params
	port := strings.TrimSpace(r.PostFormValue("port"))
	if port == "" && t.Port != 0 {
		p.Port = t.Port
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		f.Errors["port"] = "A port from 1 to 65535."
	} else {
		p.Port = n
	}
	var cert, key []byte
	if ok && t.TLS {
		var err error
		if cert, key, err = uploadedPair(r); err != nil {
			f.Errors["cert"] = err.Error()
		}
	}
	if ok && t.Interface {
		p.Interface = strings.TrimSpace(r.PostFormValue("interface"))
		if a, err := netip.ParseAddr(strings.TrimSpace(r.PostFormValue("vip"))); err != nil {
			f.Errors["vip"] = "The virtual address, as 192.0.2.10 or 2001:db8::10."
		} else {
			p.VIP = a
		}
	}
	var text string
	if len(f.Errors) == 0 {
		var err error
		if text, err = s.svc.layout.Render(t, name, p); err != nil {
			f.Errors[""] = err.Error()
		}
	}
	if len(f.Errors) == 0 {
		files := map[string][]byte{}
		if t.TLS {
			files[filepath.Join(services.CertDir, "cert.pem")] = cert
			files[filepath.Join(services.CertDir, "key.pem")] = key
		}
		// The configuration must pass pen's grammar before it is
		// stored (it names the certificate's files, so it is checked
		// where they are).
		check := func(dir string) error {
			in := config.New(config.Default(), config.Process{}, nil)
			in.SetResolver(noResolve)
			_, err := in.ExecLines(services.ConfigName, []byte(strings.ReplaceAll(text, s.svc.layout.ServiceDir(name), dir)), config.FromFile)
			return err
		}
		if err := s.svc.layout.Create(name, []byte(text), files, check); err != nil {
			f.Errors["name"] = err.Error()
		}
	}
	if len(f.Errors) > 0 {
		s.servicesView(w, r, x, http.StatusBadRequest, f)
		return
	}
	s.serviceDone(w, r, x, fmt.Sprintf("Service %s added from the %s template; the appliance starts it within a second. Add its servers next.", name, t.Title))
}

// uploadedPair reads the certificate and key of an HTTPS service's form
// and checks that they belong together.
func uploadedPair(r *http.Request) (cert, key []byte, err error) {
	read := func(field string) ([]byte, error) {
		f, _, err := r.FormFile(field)
		if err != nil {
			return nil, fmt.Errorf("upload the certificate (PEM) and its private key")
		}
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, 1<<20))
	}
	if cert, err = read("cert"); err != nil {
		return nil, nil, err
	}
	if key, err = read("key"); err != nil {
		return nil, nil, err
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, nil, fmt.Errorf("the certificate and key are not a usable pair: %v", err)
	}
	return cert, key, nil
}

// serviceName reads and checks the form's service name.
func (s *Server) serviceName(w http.ResponseWriter, r *http.Request, x *session) (string, bool) {
	name := r.PostFormValue("name")
	if err := services.ValidName(name); err != nil {
		f := newForm("service", r)
		f.Errors[""] = err.Error()
		s.servicesView(w, r, x, http.StatusBadRequest, f)
		return "", false
	}
	return name, true
}

// refuseSelf refuses to stop, rename or remove the service whose pen
// serves this page.
func (s *Server) refuseSelf(w http.ResponseWriter, r *http.Request, x *session, name, what string) bool {
	if name != s.svc.self {
		return false
	}
	f := newForm("service", r)
	f.Errors[""] = fmt.Sprintf("Refused: service %s's pen serves this admin UI; %s it would take this page with it. Use penctl or the configuration file for that.", name, what)
	s.servicesView(w, r, x, http.StatusBadRequest, f)
	return true
}

func (s *Server) serviceStop(w http.ResponseWriter, r *http.Request, x *session) {
	name, ok := s.serviceName(w, r, x)
	if !ok || s.refuseSelf(w, r, x, name, "stopping") {
		return
	}
	if err := s.svc.layout.SetStopped(name, true); err != nil {
		f := newForm("service", r)
		f.Errors[""] = err.Error()
		s.servicesView(w, r, x, http.StatusBadRequest, f)
		return
	}
	s.serviceDone(w, r, x, "Service "+name+" stopped; it stays stopped until you start it.")
}

func (s *Server) serviceStart(w http.ResponseWriter, r *http.Request, x *session) {
	name, ok := s.serviceName(w, r, x)
	if !ok {
		return
	}
	if err := s.svc.layout.SetStopped(name, false); err != nil {
		f := newForm("service", r)
		f.Errors[""] = err.Error()
		s.servicesView(w, r, x, http.StatusBadRequest, f)
		return
	}
	s.serviceDone(w, r, x, "Service "+name+" started.")
}

func (s *Server) serviceRemove(w http.ResponseWriter, r *http.Request, x *session) {
	name, ok := s.serviceName(w, r, x)
	if !ok || s.refuseSelf(w, r, x, name, "removing") {
		return
	}
	if err := s.svc.layout.Remove(name); err != nil {
		f := newForm("service", r)
		f.Errors[""] = err.Error()
		s.servicesView(w, r, x, http.StatusBadRequest, f)
		return
	}
	s.svc.forget(name)
	if s.selectedName(r) == name {
		http.SetCookie(w, &http.Cookie{Name: serviceCookie, Path: "/", MaxAge: -1})
	}
	s.serviceDone(w, r, x, "Service "+name+" removed, with its configuration and certificate.")
}

func (s *Server) selectedName(r *http.Request) string {
	c, err := r.Cookie(serviceCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

func (s *Server) serviceRename(w http.ResponseWriter, r *http.Request, x *session) {
	name, ok := s.serviceName(w, r, x)
	if !ok || s.refuseSelf(w, r, x, name, "renaming") {
		return
	}
	to := strings.TrimSpace(r.PostFormValue("to"))
	if err := s.svc.layout.Rename(name, to); err != nil {
		f := newForm("service", r)
		f.Errors[""] = err.Error()
		s.servicesView(w, r, x, http.StatusBadRequest, f)
		return
	}
	s.svc.forget(name)
	if s.selectedName(r) == name {
		http.SetCookie(w, &http.Cookie{Name: serviceCookie, Value: to, Path: "/", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	}
	s.serviceDone(w, r, x, "Service "+name+" renamed to "+to+"; its pen restarts under the new name.")
}

// healthLines adds one line per service to /healthz on the appliance
// ("service NAME: running", "failing", "stopped"), as the supervisor last
// reported them; /healthz/NAME asks the service's pen itself. The status
// code of /healthz stays that of the UI's own pen: the trial boot and a
// monitor of the appliance ask whether the admin UI's pen serves, and a
// service stopped on purpose must not fail them. Nothing here waits for a
// pen. u is nil for a pen that runs no services.
func (u *servicesUI) healthLines(w io.Writer) {
	if u == nil {
		return
	}
	states, err := u.layout.ReadStates()
	if err != nil {
		fmt.Fprintf(w, "services: unknown (%v)\n", err)
		return
	}
	names := make([]string, 0, len(states))
	for name := range states {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(w, "service %s: %s\n", name, states[name].State)
	}
}

// serviceHealthz is /healthz/NAME: 200 when service NAME's pen runs and
// serves, 503 with the reason otherwise.
func (s *Server) serviceHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	name := r.PathValue("name")
	fail := func(msg string) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%s\n", msg)
	}
	if services.ValidName(name) != nil {
		http.Error(w, "no such service", http.StatusNotFound)
		return
	}
	if name == s.svc.self {
		s.healthz(w, r)
		return
	}
	states, _ := s.svc.layout.ReadStates()
	st, ok := states[name]
	if !ok {
		http.Error(w, "no such service", http.StatusNotFound)
		return
	}
	if st.State != services.Running {
		fail(st.State)
		return
	}
	rs, err := s.svc.fetch(name)
	if err != nil {
		fail("not answering")
		return
	}
	if !rs.Runtime.Serving {
		fail("not serving")
		return
	}
	w.Write([]byte("ok\n"))
}

// servicesGatherer gathers the metrics of the other services' pens, each
// with its service label, at scrape time.
type servicesGatherer struct{ u *servicesUI }

func (g servicesGatherer) Gather() ([]*dto.MetricFamily, error) {
	names, err := g.u.layout.List()
	if err != nil {
		return nil, nil
	}
	states, _ := g.u.layout.ReadStates()
	var gs prometheus.Gatherers
	for _, n := range names {
		if n == g.u.self || states[n].State != services.Running {
			continue
		}
		st, err := g.u.fetch(n)
		if err != nil {
			continue
		}
		in, err := mirror(st)
		if err != nil {
			continue
		}
		reg := prometheus.NewRegistry()
		c := metrics.NewCollector(remoteState{st.Runtime}, mirrorConfig{c: in.Config(), changes: st.Changes})
		if err := prometheus.WrapRegistererWith(prometheus.Labels{"service": n}, reg).Register(c); err != nil {
			continue
		}
		gs = append(gs, reg)
	}
	return gs.Gather()
}

// serviceMetrics registers pen's collector for src on reg, labelled with
// this pen's service on the appliance, and returns the gatherer of
// /metrics: reg, plus the other services' pens on the appliance.
func serviceMetrics(reg *prometheus.Registry, src metrics.Source, cfg metrics.Config) (prometheus.Gatherer, error) {
	u := applianceServices()
	if u == nil {
		return reg, metrics.Register(reg, src, cfg)
	}
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	own := prometheus.NewRegistry()
	if err := prometheus.WrapRegistererWith(prometheus.Labels{"service": u.self}, own).Register(metrics.NewCollector(src, cfg)); err != nil {
		return nil, err
	}
	return prometheus.Gatherers{reg, own, servicesGatherer{u}}, nil
}

// serviceName_ is the service these pages belong to, for the menu: this
// Server's remote service, or this pen's own on the appliance.
func (s *Server) pageService() string {
	if s.service != "" {
		return s.service
	}
	if s.svc != nil {
		return s.svc.self
	}
	return ""
}

// dashboardServices lists the services for the dashboard of any service
// on the appliance.
func (s *Server) dashboardServices(page string) []serviceRow {
	if s.svc == nil || page != "dashboard" {
		return nil
	}
	rows, err := s.serviceRows()
	if err != nil {
		s.log.Printf("admin UI: %v", err)
	}
	return rows
}
