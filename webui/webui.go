// Package webui implements pen's admin web UI and its /metrics and
// /healthz endpoints.
//
// The UI changes pen only by running command lines of pen's command
// language (package config) with origin config.FromWeb, the same commands
// penctl sends, and shows every command it applied. It follows the admin_*
// commands at run time: admin_listen (the HTTPS or HTTP listener),
// admin_redirect (a plain HTTP listener that redirects to it), admin_tls
// (certificate and key; a self-signed pair is generated when the files do
// not exist), admin_acl (the access list every admin client must pass,
// /metrics and /healthz included) and admin_password_file (where the
// password is read, and where a new one is written).
//
// On the appliance (its init names the firmware state in pen's
// environment) the firmware page (firmware.go) shows the running build and
// the last update and writes update images through gokrazy's update API.
//
// Pages work without JavaScript; app.js only adds the live chart, the
// auto-refreshing dashboard and confirmations. Templates, style sheet and
// script are embedded (assets/), and the Content-Security-Policy allows no
// inline script or style.
//
// Security (docs/ADMIN.md, "Security model", says it for users): a session
// cookie (HttpOnly, SameSite=Strict, Secure under TLS) after a password
// login, compared in constant time or with bcrypt; a CSRF token on every
// state-changing request, which must be a POST; one login guess per
// client address per back-off window, counted before the password is
// checked, so one client guessing cannot lock out the others; sessions
// expire when idle and after a fixed lifetime; a change that would lock
// out the browser making it is refused (see lockout); commands that name
// files are refused for origin config.FromWeb by package config; at most
// MaxConns connections, with timeouts (see connLimit).
package webui

import (
	"html/template"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/dsr"
	"github.com/pen-lb/pen-appliance/pen/engine"
	"github.com/pen-lb/pen-appliance/pen/metrics"
)

// State is the running load balancer as the admin UI reads it.
type State interface {
	metrics.Source
	// Serving reports whether pen accepts clients (its listener is open).
	Serving() bool
}

// EngineState reads e.
func EngineState(e *engine.Engine) State { return engineState{metrics.EngineSource(e), e} }

type engineState struct {
	metrics.Source
	e *engine.Engine
}

// Serving: pen's listener is open, or, with dsr_if, DSR runs (the listen
// address is then served by frames, without a listener).
func (s engineState) Serving() bool {
	select {
	case <-s.e.Done():
		return false
	default:
	}
	if s.e.ListenAddr() != "" {
		return true
	}
	_, ok := s.e.DSRStats()
	return ok
}

// DSRStats makes engineState a metrics.DSRSource.
func (s engineState) DSRStats() (dsr.Stats, bool) { return s.e.DSRStats() }

// Options configure a Server.
type Options struct {
	Interp *config.Interp
	State  State
	Log    *diag.Logger
	// Gatherer serves /metrics; nil leaves /metrics out. Its collector
	// should read the configuration from Config, so that /metrics answers
	// while a change is being applied (see Snapshot).
	Gatherer prometheus.Gatherer
	// Config follows Interp's configuration; nil makes one.
	Config *Snapshot
}

// Limits and timings.
const (
	SessionIdle     = 30 * time.Minute // a session unused this long ends
	SessionLifetime = 12 * time.Hour   // and every session ends after this
	maxSessions     = 64
	maxForm         = 64 << 10 // body of an ordinary form
	// An uploaded configuration file may be as large as any configuration
	// file pen reads, so that what write saved uploads back.
	maxUpload = config.MaxConfigSize
)

// Server is the admin UI. It is an http.Handler (for tests); Start makes
// it serve on the listeners the configuration names.
type Server struct {
	in      *config.Interp
	snap    *Snapshot // what must not wait for a change in progress reads the configuration here
	state   State
	log     *diag.Logger
	metrics http.Handler
	handler http.Handler
	pages   map[string]*template.Template
	host    string

	sessions *sessions
	logins   *limiter
	sampler  *Sampler
	hist     *history
	pending  *pendingUploads // uploads waiting for confirmation (one store per service on the appliance)
	lst      *listeners

	fw *Firmware // nil unless pen runs on an appliance

	// The appliance's services (services.go): svc is nil for a pen not
	// run by the appliance. mux is the routes without the guard; a
	// service's pages run on a Server of that service, whose remote
	// sends its changes to the service's control socket and whose
	// service names it.
	svc     *servicesUI
	mux     *http.ServeMux
	remote  func(lines []string) error
	service string

	applyMu sync.Mutex // one change from the UI at a time
	bcrypt  chan struct{}

	now func() time.Time
}

// New makes the admin UI. It serves nothing until Start.
func New(o Options) *Server {
	log := o.Log
	if log == nil {
		log = diag.Discard()
	}
	host, _ := os.Hostname()
	snap := o.Config
	if snap == nil {
		snap = NewSnapshot(o.Interp)
	}
	s := &Server{
		in:       o.Interp,
		snap:     snap,
		state:    o.State,
		log:      log,
		host:     host,
		pages:    parseTemplates(),
		sessions: newSessions(),
		logins:   newLimiter(time.Second, time.Minute),
		bcrypt:   make(chan struct{}, 2),
		now:      time.Now,
		fw:       applianceFirmware(),
		svc:      applianceServices(),
		pending:  new(pendingUploads),
	}
	if o.Gatherer != nil && s.fw != nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(firmwareCollector{s.fw})
		o.Gatherer = prometheus.Gatherers{o.Gatherer, reg}
	}
	if o.Gatherer != nil {
		s.metrics = promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{ErrorLog: promLog{log}})
	}
	s.sampler = NewSampler(snap, o.State, SampleInterval, SampleWindow)
	s.hist = newHistory()
	s.sampler.observe = s.hist.observe
	s.lst = newListeners(s)
	s.handler = s.routes()
	return s
}

type promLog struct{ log *diag.Logger }

func (p promLog) Println(v ...any) { p.log.Printf("metrics: %v", v) }

// SetClock replaces the clock of sessions and login backoff (tests).
func (s *Server) SetClock(now func() time.Time) {
	s.sessions.now = now
	s.logins.now = now
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics)
	}
	mux.Handle("GET /assets/", assetHandler())
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.form(maxForm, s.login))
	mux.HandleFunc("POST /logout", s.action(maxForm, s.logout))

	mux.HandleFunc("GET /{$}", s.page(s.dashboard))
	mux.HandleFunc("GET /servers", s.page(s.serversPage))
	mux.HandleFunc("POST /servers/add", s.action(maxForm, s.serverAdd))
	mux.HandleFunc("POST /servers/edit", s.action(maxForm, s.serverEdit))
	mux.HandleFunc("POST /servers/blacklist", s.action(maxForm, s.serverBlacklist))
	mux.HandleFunc("POST /servers/reinstate", s.action(maxForm, s.serverReinstate))
	mux.HandleFunc("POST /servers/remove", s.action(maxForm, s.serverRemove))
	mux.HandleFunc("POST /servers/drain", s.action(maxForm, s.serverDrain))
	mux.HandleFunc("POST /servers/bulk", s.action(maxForm, s.serverBulk))
	mux.HandleFunc("POST /undo", s.action(maxForm, s.undo))
	mux.HandleFunc("GET /acls", s.page(s.aclsPage))
	mux.HandleFunc("POST /acls/add", s.action(maxForm, s.aclAdd))
	mux.HandleFunc("POST /acls/delete", s.action(maxForm, s.aclDelete))
	mux.HandleFunc("POST /acls/clear", s.action(maxForm, s.aclClear))
	mux.HandleFunc("POST /acls/use", s.action(maxForm, s.aclUse))
	mux.HandleFunc("POST /acls/name", s.action(maxForm, s.aclName))
	mux.HandleFunc("GET /settings", s.page(s.settingsPage))
	mux.HandleFunc("POST /settings", s.action(maxForm, s.settingsSave))
	mux.HandleFunc("POST /password", s.action(maxForm, s.passwordChange))
	mux.HandleFunc("GET /config", s.page(s.configPage))
	mux.HandleFunc("GET /config/download", s.page(s.configDownload))
	mux.HandleFunc("POST /config/upload", s.action(maxUpload+maxForm, s.configUpload))
	mux.HandleFunc("POST /config/apply", s.action(maxForm, s.configApply))
	mux.HandleFunc("POST /config/write", s.action(maxForm, s.configWrite))
	mux.HandleFunc("GET /firmware", s.page(s.firmwarePage))
	mux.HandleFunc("POST /firmware/upload", s.firmwareUpload)
	mux.HandleFunc("POST /firmware/reboot", s.action(maxForm, s.firmwareReboot))
	mux.HandleFunc("GET /api/state", s.api(s.apiState))
	mux.HandleFunc("GET /api/samples", s.api(s.apiSamples))
	return s.guard(s.servicesRoutes(mux))
}

// ServeHTTP serves the admin UI.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Content-Security-Policy: only our own script, style sheet and JSON.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// guard sets the security headers and refuses clients admin_acl denies,
// for every path.
func (s *Server) guard(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	next = cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !adminAllowed(s.snap.Config(), clientAddr(r)) {
			http.Error(w, "Forbidden: admin_acl does not permit "+clientAddr(r).String(), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientAddr is the address of the client (never a forwarded header); an
// invalid address means a unix socket client.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// adminAllowed applies admin_acl to a client, with the matching pen uses
// for its own lists.
func adminAllowed(c *config.Config, addr netip.Addr) bool {
	n := c.Admin.ACL
	if n < 0 || n >= len(c.ACLs) {
		return true
	}
	return c.ACLs[n].Match(addr, nil)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.state == nil || !s.state.Serving() {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not serving\n"))
		s.svc.healthLines(w)
		return
	}
	w.Write([]byte("ok\n"))
	s.svc.healthLines(w)
}
