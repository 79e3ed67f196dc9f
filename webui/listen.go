package webui

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// RetryBind is how long the admin UI waits before trying again to open a
// listener it could not open.
const RetryBind = 10 * time.Second

// Timeouts of admin connections. A client must send its request headers
// within HeaderTimeout of connecting (or of its previous request), and the
// whole request, body included, within ReadTimeout: an upload of
// config.MaxConfigSize over a slow link fits, a connection held open by
// sending nothing does not. A kept-alive connection with no request closes
// after IdleTimeout.
const (
	HeaderTimeout = 10 * time.Second
	ReadTimeout   = 2 * time.Minute
	WriteTimeout  = 2 * time.Minute
	IdleTimeout   = 30 * time.Second
)

// endpoint is one serving listener.
type endpoint struct {
	spec string
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

func (e *endpoint) close(wait time.Duration) {
	e.ln.Close() // free the address at once
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		e.srv.Close()
	}
	<-e.done
}

// listeners opens, moves and closes the admin and redirect listeners as
// the configuration's admin_* settings say.
type listeners struct {
	s     *Server
	tls   atomic.Pointer[tls.Config] // for the admin listener; nil = plain HTTP
	certs certStore
	lim   *connLimit // connections of both listeners together

	// bind opens the listener for a spec: listen, or in tests one that
	// binds port 0 and reports what it got. headerTimeout is
	// HeaderTimeout (shorter in tests). Both are set before Start.
	bind          func(spec string) (net.Listener, error)
	headerTimeout time.Duration

	// bound is the address the admin listener serves on, or "", for the
	// redirect handler (which must not wait for an apply in progress).
	// Written by apply, with applyMu held.
	bound atomic.Pointer[string]

	applyMu  sync.Mutex // one apply at a time
	admin    *endpoint
	redirect *endpoint
	applied  *config.Admin // settings in effect after the last successful apply

	mu     sync.Mutex
	want   config.Admin
	err    error // of the last apply
	notify chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

func newListeners(s *Server) *listeners {
	return &listeners{s: s, notify: make(chan struct{}, 1), lim: newConnLimit(MaxConns), bind: listen, headerTimeout: HeaderTimeout}
}

// Start serves the admin UI on the listeners the configuration names and
// follows its changes until Close. A listener that cannot be opened is
// logged and tried again every RetryBind; pen keeps balancing meanwhile.
func (s *Server) Start() {
	l := s.lst
	l.mu.Lock()
	if l.stop != nil {
		l.mu.Unlock()
		return
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	l.mu.Unlock()
	s.in.AddOnChange(func(c *config.Config, _ config.Origin) { l.follow(c.Admin) })
	a := s.in.Config().Admin
	l.mu.Lock()
	l.want = a
	l.mu.Unlock()
	l.setErr(l.apply(a))
	go l.run()
	l.follow(s.in.Config().Admin) // a change made before AddOnChange took effect
}

// Close closes the listeners and stops following the configuration.
func (s *Server) Close() {
	l := s.lst
	l.mu.Lock()
	stop, done := l.stop, l.done
	l.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	for _, e := range []*endpoint{l.admin, l.redirect} {
		if e != nil {
			e.close(2 * time.Second)
		}
	}
	l.admin, l.redirect, l.applied = nil, nil, nil
	l.setBound()
	s.sampler.Stop()
}

// AdminAddr is the address the admin listener is bound to, or "".
func (s *Server) AdminAddr() string {
	return s.lst.addr(func(l *listeners) *endpoint { return l.admin })
}

// RedirectAddr is the address the redirect listener is bound to, or "".
func (s *Server) RedirectAddr() string {
	return s.lst.addr(func(l *listeners) *endpoint { return l.redirect })
}

// ListenerError is why the admin listeners are not as configured, or nil.
func (s *Server) ListenerError() error {
	s.lst.mu.Lock()
	defer s.lst.mu.Unlock()
	return s.lst.err
}

func (l *listeners) addr(which func(*listeners) *endpoint) string {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	if e := which(l); e != nil {
		return e.ln.Addr().String()
	}
	return ""
}

// setErr records the result of an apply; an error is logged when it is
// new, not at every retry.
func (l *listeners) setErr(err error) {
	l.mu.Lock()
	same := (err == nil && l.err == nil) || (err != nil && l.err != nil && err.Error() == l.err.Error())
	l.err = err
	l.mu.Unlock()
	if err != nil && !same {
		l.s.log.Printf("admin UI: %v (trying again every %v)", err, RetryBind)
	}
}

// follow asks the run loop to make the listeners match a. It does not
// block: it runs inside the interpreter's change hook.
func (l *listeners) follow(a config.Admin) {
	l.mu.Lock()
	l.want = a
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *listeners) run() {
	defer close(l.done)
	var retry <-chan time.Time
	for {
		select {
		case <-l.stop:
			return
		case <-l.notify:
		case <-retry:
		}
		l.mu.Lock()
		a := l.want
		l.mu.Unlock()
		retry = nil
		err := l.apply(a)
		l.setErr(err)
		if err != nil {
			retry = time.After(RetryBind)
		}
	}
}

// apply makes the listeners match a. When TLS is configured but its
// certificate cannot be had, nothing is served: falling back to plain
// HTTP would expose the password.
func (l *listeners) apply(a config.Admin) error {
	l.applyMu.Lock()
	defer l.applyMu.Unlock()
	if l.applied != nil && reflect.DeepEqual(*l.applied, a) && (a.TLSCert == "" || l.tls.Load() != nil) {
		return nil
	}
	l.applied = nil
	if a.Listen != "" && a.TLSCert != "" {
		gen, err := EnsureCert(a.TLSCert, a.TLSKey, certHosts(l.s.host), time.Now())
		if err == nil && gen {
			l.s.log.Printf("admin UI: generated a self-signed certificate in %s", a.TLSCert)
		}
		if err == nil {
			_, err = l.certs.load(a.TLSCert, a.TLSKey)
		}
		if err != nil {
			l.tls.Store(nil)
			l.closeAll()
			return fmt.Errorf("admin_tls %s: %w; the admin UI is off until this is fixed", a.TLSCert, err)
		}
		l.tls.Store(&tls.Config{
			GetCertificate: l.certs.get,
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"http/1.1"},
		})
	} else {
		l.tls.Store(nil)
	}
	var errs []error
	redirect := a.Redirect
	if a.Listen == "" {
		redirect = ""
	}
	var err error
	if l.admin, err = l.move(l.admin, a.Listen, l.s.handler, "admin UI"); err != nil {
		errs = append(errs, err)
	}
	if l.redirect, err = l.move(l.redirect, redirect, l.s.guard(http.HandlerFunc(l.s.redirectToAdmin)), "admin redirect"); err != nil {
		errs = append(errs, err)
	}
	if l.admin != nil {
		l.s.sampler.Start()
	} else {
		l.s.sampler.Stop()
	}
	l.setBound()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	applied := a
	l.applied = &applied
	return nil
}

func (l *listeners) closeAll() {
	for _, e := range []**endpoint{&l.admin, &l.redirect} {
		if *e != nil {
			(*e).close(5 * time.Second)
			*e = nil
		}
	}
	l.setBound()
	l.s.sampler.Stop()
}

// setBound publishes the admin listener's address; applyMu is held.
func (l *listeners) setBound() {
	a := ""
	if l.admin != nil {
		a = l.admin.ln.Addr().String()
	}
	l.bound.Store(&a)
}

// boundTCP is the TCP address the admin listener serves on, if it does.
func (l *listeners) boundTCP() (netip.AddrPort, bool) {
	p := l.bound.Load()
	if p == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(*p)
	return ap, err == nil
}

// move makes cur serve spec: it keeps cur when the spec is the same,
// closes it when spec is empty, and otherwise opens the new address first
// (so that a bad address leaves the old listener serving), closing the old
// one first only when the new one needs its address.
func (l *listeners) move(cur *endpoint, spec string, h http.Handler, what string) (*endpoint, error) {
	if cur != nil && cur.spec == spec {
		return cur, nil
	}
	if spec == "" {
		if cur != nil {
			go cur.close(5 * time.Second)
			l.s.log.Printf("%s: closed %s", what, cur.spec)
		}
		return nil, nil
	}
	ln, err := l.bind(spec)
	if err != nil && cur != nil && errors.Is(err, syscall.EADDRINUSE) && samePort(cur, spec) {
		// The old listener holds the port (say "8443" becoming
		// "0.0.0.0:8443"): it has to go first.
		cur.close(5 * time.Second)
		cur = nil
		ln, err = l.bind(spec)
	}
	if err != nil {
		return cur, fmt.Errorf("%s on %s: %w", what, spec, err)
	}
	if cur != nil {
		go cur.close(5 * time.Second)
	}
	e := l.serve(spec, ln, h, what == "admin UI")
	scheme := "http"
	if what == "admin UI" && l.tls.Load() != nil {
		scheme = "https"
	}
	l.s.log.Printf("%s: serving %s on %s", what, scheme, ln.Addr())
	return e, nil
}

// samePort reports whether e listens on the TCP port spec names.
func samePort(e *endpoint, spec string) bool {
	p, err := config.ParseListen(spec, false, nil)
	a, ok := e.ln.Addr().(*net.TCPAddr)
	return err == nil && ok && p.Path == "" && int(p.Addr.Port()) == a.Port
}

func listen(spec string) (net.Listener, error) {
	p, err := config.ParseListen(spec, false, nil)
	if err != nil {
		return nil, err
	}
	if p.Path != "" {
		os.Remove(p.Path)
		return net.Listen("unix", p.Path)
	}
	return net.Listen("tcp", p.Addr.String())
}

func (l *listeners) serve(spec string, ln net.Listener, h http.Handler, useTLS bool) *endpoint {
	// Count connections before TLS, so that a handshake that never
	// finishes holds a place only until it is pushed out or times out.
	ln = &limitListener{Listener: ln, lim: l.lim}
	if useTLS {
		ln = &switchTLS{Listener: ln, cfg: &l.tls}
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.headerTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ConnState:         l.lim.connState,
		// Browsers that do not trust a self-signed certificate fill
		// the log with handshake errors; show them only with -d.
		ErrorLog: log.New(debugWriter{l.s.log}, "admin UI: ", 0),
	}
	e := &endpoint{spec: spec, ln: ln, srv: srv, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		srv.Serve(ln)
	}()
	return e
}

// switchTLS serves TLS while cfg holds a configuration and plain HTTP
// otherwise, so that admin_tls can change without rebinding.
type switchTLS struct {
	net.Listener
	cfg *atomic.Pointer[tls.Config]
}

func (s *switchTLS) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if cfg := s.cfg.Load(); cfg != nil {
		return tls.Server(c, cfg), nil
	}
	return c, nil
}

type debugWriter struct{ log *diag.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debugf(1, "%s", string(p))
	return len(p), nil
}

// redirectToAdmin sends a browser from the plain HTTP port to the admin
// listener, on the host name the browser used and the port the admin
// listener is bound to (the one serving, also while a move to another
// port waits for its address).
func (s *Server) redirectToAdmin(w http.ResponseWriter, r *http.Request) {
	bound, ok := s.lst.boundTCP()
	if !ok {
		http.Error(w, "The admin UI is not served over TCP.", http.StatusServiceUnavailable)
		return
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		host = "localhost"
	}
	scheme := "http"
	if s.lst.tls.Load() != nil {
		scheme = "https"
	}
	target := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(int(bound.Port()))) + r.URL.RequestURI()
	http.Redirect(w, r, target, http.StatusTemporaryRedirect)
}
