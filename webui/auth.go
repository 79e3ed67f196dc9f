package webui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/pen-lb/pen-appliance/pen/config"
)

const (
	sessionCookie = "pen_session"
	loginCookie   = "pen_login" // CSRF token of the login form (double submit)
)

// token returns 32 random bytes, base64url.
func token() string {
	b := make([]byte, 32)
	rand.Read(b) // crypto/rand does not fail (it crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// session is one logged-in browser.
type session struct {
	id      string
	csrf    string
	client  netip.Addr
	created time.Time
	seen    time.Time
	flash   []Flash
}

// Flash is a message shown once, on the next page: the commands a change
// applied, or a note.
type Flash struct {
	Cmds []string
	Note string
	// Unsaved is why an applied change could not be saved to the
	// configuration file, or "".
	Unsaved string
	// Rejected names the copy pen kept of a configuration file that had
	// been edited on disk before the change replaced it, or "".
	Rejected string
	// Changed is how an upload changed the saved configuration
	// ("- old line", "+ new line").
	Changed []string
	// Undo holds the inverses of the applied commands that have one.
	Undo []undoItem
}

type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	now func() time.Time
}

func newSessions() *sessions { return &sessions{m: map[string]*session{}, now: time.Now} }

func (ss *sessions) create(client netip.Addr) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := ss.now()
	ss.expireLocked(now)
	for len(ss.m) >= maxSessions { // drop the least recently used
		var old *session
		for _, x := range ss.m {
			if old == nil || x.seen.Before(old.seen) {
				old = x
			}
		}
		delete(ss.m, old.id)
	}
	x := &session{id: token(), csrf: token(), client: client, created: now, seen: now}
	ss.m[x.id] = x
	return x
}

func (ss *sessions) expireLocked(now time.Time) {
	for id, x := range ss.m {
		if now.Sub(x.seen) > SessionIdle || now.Sub(x.created) > SessionLifetime {
			delete(ss.m, id)
		}
	}
}

// get returns the live session with id and marks it used.
func (ss *sessions) get(id string) *session {
	if id == "" {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	x := ss.m[id]
	if x == nil {
		return nil
	}
	now := ss.now()
	if now.Sub(x.seen) > SessionIdle || now.Sub(x.created) > SessionLifetime {
		delete(ss.m, id)
		return nil
	}
	x.seen = now
	return x
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, id)
}

// removeOthers ends every session but keep (after a password change).
func (ss *sessions) removeOthers(keep string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for id := range ss.m {
		if id != keep {
			delete(ss.m, id)
		}
	}
}

func (ss *sessions) addFlash(x *session, f Flash) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	x.flash = append(x.flash, f)
}

func (ss *sessions) takeFlash(x *session) []Flash {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f := x.flash
	x.flash = nil
	return f
}

// limiter slows down password guessing per client: a client may make one
// guess per window, and after each failed guess the window doubles, from
// base up to max; other clients are not affected. The guess is counted
// (reserve) before the password is checked, so guesses sent in parallel
// cannot all pass the test before the first failure is recorded. Clients
// are IPv4 addresses or IPv6 /64 networks; the table is bounded.
type limiter struct {
	mu        sync.Mutex // guards m
	m         map[string]*attempts
	base, max time.Duration
	now       func() time.Time
}

type attempts struct {
	failures int
	next     time.Time // no attempt before this
	last     time.Time
}

const (
	maxLimited    = 4096
	limiterForget = 15 * time.Minute // a client that stops failing is forgotten
)

func newLimiter(base, max time.Duration) *limiter {
	return &limiter{m: map[string]*attempts{}, base: base, max: max, now: time.Now}
}

func limitKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// window is the wait after failures failed guesses.
func (l *limiter) window(failures int) time.Duration {
	d := l.base << min(max(failures-1, 0), 20)
	if d > l.max || d <= 0 {
		d = l.max
	}
	return d
}

// entryLocked returns client's entry, making a fresh one for a client
// that is new or was forgotten.
func (l *limiter) entryLocked(client netip.Addr, now time.Time) *attempts {
	k := limitKey(client)
	a := l.m[k]
	if a == nil || now.Sub(a.last) > limiterForget {
		if len(l.m) >= maxLimited {
			l.pruneLocked(now)
		}
		a = &attempts{}
		l.m[k] = a
	}
	return a
}

// reserve claims client's one guess of the current window. It returns 0
// if the guess may go ahead, else how long the client must wait. A
// granted guess closes the window until fail or succeed says how it
// ended.
func (l *limiter) reserve(client netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	a := l.entryLocked(client, now)
	if d := a.next.Sub(now); d > 0 {
		return d
	}
	a.last, a.next = now, now.Add(l.window(a.failures+1))
	return 0
}

// wait is how long client must wait before its next attempt.
func (l *limiter) wait(client netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.m[limitKey(client)]
	if a == nil {
		return 0
	}
	return max(a.next.Sub(l.now()), 0)
}

// fail records a failed guess and returns the wait before the next one.
func (l *limiter) fail(client netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	a := l.entryLocked(client, now)
	a.failures++
	d := l.window(a.failures)
	a.last, a.next = now, now.Add(d)
	return d
}

func (l *limiter) pruneLocked(now time.Time) {
	var oldest string
	for k, a := range l.m {
		if now.Sub(a.last) > limiterForget {
			delete(l.m, k)
		} else if oldest == "" || a.last.Before(l.m[oldest].last) {
			oldest = k
		}
	}
	if len(l.m) >= maxLimited {
		delete(l.m, oldest)
	}
}

func (l *limiter) succeed(client netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, limitKey(client))
}

// Password files.

var errNoPassword = errors.New("no admin password is set (admin_password_file names no file that exists, or it is empty)")

// readPassword returns the stored password (plain text or bcrypt hash)
// from the first of files that exists.
func readPassword(files []string) (string, error) {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading admin password: %w", err)
		}
		pw := strings.TrimSpace(string(data))
		if pw == "" {
			return "", errNoPassword
		}
		return pw, nil
	}
	return "", errNoPassword
}

func isBcrypt(s string) bool {
	return strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")
}

// checkPassword compares given with the stored password: a bcrypt hash, or
// plain text compared in constant time (hashing both first makes the time
// independent of the lengths too).
func (s *Server) checkPassword(stored, given string) bool {
	if isBcrypt(stored) {
		s.bcrypt <- struct{}{} // bound the CPU that guessing can take
		defer func() { <-s.bcrypt }()
		return bcrypt.CompareHashAndPassword([]byte(stored), []byte(given)) == nil
	}
	a, b := sha256.Sum256([]byte(stored)), sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// verify checks a password from client, with backoff; msg explains a
// refusal.
func (s *Server) verify(client netip.Addr, given string) (ok bool, msg string, status int) {
	stored, err := readPassword(s.snap.Config().Admin.PasswordFiles)
	if err != nil {
		s.log.Printf("admin UI: %v", err)
		return false, "Login is not possible: " + err.Error() + ".", http.StatusServiceUnavailable
	}
	// The guess is counted before it is checked: of guesses sent at
	// once, one is checked and the others wait.
	if d := s.logins.reserve(client); d > 0 {
		return false, fmt.Sprintf("Too many attempts from your address; try again in %d s.", int(d.Seconds()+0.999)), http.StatusTooManyRequests
	}
	if !s.checkPassword(stored, given) {
		d := s.logins.fail(client)
		s.log.Printf("admin UI: failed login from %s", clientName(client))
		return false, fmt.Sprintf("Wrong password. Wait %d s before the next attempt.", int(d.Seconds()+0.999)), http.StatusUnauthorized
	}
	s.logins.succeed(client)
	return true, "", http.StatusOK
}

func clientName(a netip.Addr) string {
	if !a.IsValid() {
		return "unix socket"
	}
	return a.String()
}

// Handlers and wrappers.

func (s *Server) session(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	return s.sessions.get(c.Value)
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

// page wraps a GET handler that needs a login; without one the browser
// goes to the login page and comes back afterwards.
func (s *Server) page(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		x := s.session(r)
		if x == nil {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h(w, r, x)
	}
}

// api wraps a JSON GET handler that needs a login.
func (s *Server) api(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		x := s.session(r)
		if x == nil {
			http.Error(w, "log in first", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h(w, r, x)
	}
}

// form limits and parses a POST body.
func (s *Server) form(limit int64, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		var err error
		if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
			err = r.ParseMultipartForm(limit)
		} else {
			err = r.ParseForm()
		}
		if err != nil {
			http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h(w, r)
	}
}

// action wraps a POST handler that changes something: it needs a login
// and the session's CSRF token. The login is checked before the body is
// read, so that only a logged-in browser can make the UI read an upload.
func (s *Server) action(limit int64, h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	parsed := s.form(limit, func(w http.ResponseWriter, r *http.Request) {
		x := s.session(r)
		if x == nil {
			http.Error(w, "Not logged in (or the session expired): log in again.", http.StatusUnauthorized)
			return
		}
		if !sameToken(r.PostFormValue("csrf"), x.csrf) {
			http.Error(w, "Missing or wrong CSRF token: reload the page and try again.", http.StatusForbidden)
			return
		}
		h(w, r, x)
	})
	return func(w http.ResponseWriter, r *http.Request) {
		if s.session(r) == nil {
			http.Error(w, "Not logged in (or the session expired): log in again.", http.StatusUnauthorized)
			return
		}
		parsed(w, r)
	}
}

// safeNext accepts only a clean path on this site as the page after
// login, and "/" for anything else. Browsers forgive a lot in a Location
// (they drop tabs and line breaks, read "\\" as "/"), so "/\t/evil.example"
// would take the browser off-site: the path must start with exactly one
// "/", hold no backslash, no control character and no white space, and
// parse as a URL without scheme or host.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || !utf8.ValidString(next) {
		return "/"
	}
	for _, r := range next {
		if r == '\\' || unicode.IsControl(r) || unicode.IsSpace(r) {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, "/") {
		return "/"
	}
	return next
}

type loginView struct {
	Next, Token, Error string
	NoPassword         string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.session(r) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := token()
	setCookie(w, r, loginCookie, tok, 3600)
	v := loginView{Next: safeNext(r.FormValue("next")), Token: tok, Error: msg}
	if _, err := readPassword(s.snap.Config().Admin.PasswordFiles); err != nil {
		v.NoPassword = err.Error()
	}
	w.Header().Set("Cache-Control", "no-store")
	s.render(w, r, status, "login", &view{Title: "Log in", Data: v})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.PostFormValue("token"), c.Value) {
		s.renderLogin(w, r, http.StatusForbidden, "The login form expired; please try again.")
		return
	}
	client := clientAddr(r)
	ok, msg, status := s.verify(client, r.PostFormValue("password"))
	if !ok {
		s.renderLogin(w, r, status, msg)
		return
	}
	x := s.sessions.create(client)
	setCookie(w, r, sessionCookie, x.id, 0)
	setCookie(w, r, loginCookie, "", -1)
	s.log.Printf("admin UI: login from %s", clientName(client))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, x *session) {
	s.sessions.remove(x.id)
	setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// passwordChange writes a new password to the first admin_password_file,
// atomically, in the form the current one has (a bcrypt hash stays a
// hash; plain text stays plain text, which gokrazy's update API needs).
func (s *Server) passwordChange(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("password", r)
	files := s.in.Config().Admin.PasswordFiles
	cur, nw, again := r.PostFormValue("current"), r.PostFormValue("new"), r.PostFormValue("confirm")
	switch {
	case len(files) == 0:
		f.Errors["new"] = "No admin_password_file is configured."
	case len(nw) < 8:
		f.Errors["new"] = "Use at least 8 characters."
	case strings.TrimSpace(nw) != nw || strings.ContainsAny(nw, "\r\n\x00"):
		f.Errors["new"] = "No spaces at the ends and no line breaks."
	case nw != again:
		f.Errors["confirm"] = "The two new passwords differ."
	}
	if len(f.Errors) == 0 {
		if ok, msg, _ := s.verify(clientAddr(r), cur); !ok {
			f.Errors["current"] = msg
		}
	}
	if len(f.Errors) > 0 {
		s.settingsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	stored, _ := readPassword(files)
	data := nw + "\n"
	if isBcrypt(stored) {
		h, err := bcrypt.GenerateFromPassword([]byte(nw), bcrypt.DefaultCost)
		if err != nil {
			f.Errors["new"] = err.Error()
			s.settingsView(w, r, x, http.StatusBadRequest, f)
			return
		}
		data = string(h) + "\n"
	}
	if err := config.WriteFileAtomic(files[0], []byte(data), 0o600); err != nil {
		f.Errors["new"] = "Could not save: " + err.Error()
		s.settingsView(w, r, x, http.StatusInternalServerError, f)
		return
	}
	s.sessions.removeOthers(x.id)
	s.log.Printf("admin UI: %s changed the admin password in %s", clientName(clientAddr(r)), files[0])
	s.sessions.addFlash(x, Flash{Note: "Password changed and written to " + files[0] + ". Other sessions were logged out."})
	http.Redirect(w, r, "/settings", http.StatusSeeOther)
}
