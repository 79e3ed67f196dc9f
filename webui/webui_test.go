package webui

import (
	"bytes"
	"html"
	"io"
	"mime/multipart"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// mutating lists every state-changing endpoint with a form that would
// change something if it were accepted.
var mutating = map[string]url.Values{
	"/servers/add":       {"address": {"127.0.0.1"}, "port": {"11"}},
	"/servers/edit":      {"n": {"0"}, "address": {"127.0.0.1"}, "port": {"12"}},
	"/servers/blacklist": {"n": {"0"}, "seconds": {"60"}},
	"/servers/reinstate": {"n": {"0"}},
	"/servers/remove":    {"n": {"0"}},
	"/acls/add":          {"n": {"1"}, "permit": {"permit"}, "address": {"10.0.0.0/8"}},
	"/acls/delete":       {"n": {"1"}, "k": {"0"}},
	"/acls/clear":        {"n": {"1"}},
	"/acls/use":          {"client_acl": {"1"}, "control_acl": {"0"}, "tarpit_acl": {"-1"}, "admin_acl": {"-1"}},
	"/settings":          {"mode": {"hash"}, "blacklist": {"5"}},
	"/password":          {"current": {testPassword}, "new": {"another password"}, "confirm": {"another password"}},
	"/config/upload":     {},
	"/config/write":      {},
	"/logout":            {},
}

func TestAuthRequired(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	before := h.cfgText()
	for _, p := range []string{"/", "/servers", "/acls", "/settings", "/config", "/config/download"} {
		r := h.get(p)
		if r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/login?next="+url.QueryEscape(p) {
			t.Errorf("GET %s without login: HTTP %d, Location %q", p, r.code, r.hdr.Get("Location"))
		}
	}
	for _, p := range []string{"/api/state", "/api/samples"} {
		if r := h.get(p); r.code != http.StatusUnauthorized {
			t.Errorf("GET %s without login: HTTP %d", p, r.code)
		}
	}
	for p, form := range mutating {
		f := url.Values{"csrf": {"guess"}}
		for k, v := range form {
			f[k] = v
		}
		if r := h.do(h.c, "POST", p, f); r.code != http.StatusUnauthorized {
			t.Errorf("POST %s without login: HTTP %d", p, r.code)
		}
	}
	if got := h.cfgText(); got != before || h.webChanges() != 0 {
		t.Errorf("requests without login changed the configuration")
	}
	if b, _ := os.ReadFile(h.pwFile); string(b) != testPassword+"\n" {
		t.Errorf("password file changed: %q", b)
	}
	// Open to anyone admin_acl permits.
	for p, want := range map[string]string{
		"/metrics":          "pen_server_up{address=\"127.0.0.1:9\",server=\"0\"} 1",
		"/healthz":          "ok",
		"/login":            `name="password"`,
		"/assets/style.css": ".pill",
		"/assets/app.js":    "use strict",
	} {
		r := h.get(p)
		if r.code != http.StatusOK || !strings.Contains(r.body, want) {
			t.Errorf("GET %s: HTTP %d, want 200 with %q", p, r.code, want)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	for _, p := range []string{"/login", "/", "/metrics", "/assets/app.js"} {
		r := h.get(p)
		for k, want := range map[string]string{
			"Content-Security-Policy": "frame-ancestors 'none'",
			"Referrer-Policy":         "no-referrer",
			"X-Frame-Options":         "DENY",
			"X-Content-Type-Options":  "nosniff",
		} {
			if !strings.Contains(r.hdr.Get(k), want) {
				t.Errorf("GET %s: %s = %q, want %q", p, k, r.hdr.Get(k), want)
			}
		}
		if csp := r.hdr.Get("Content-Security-Policy"); strings.Contains(csp, "unsafe-inline") {
			t.Errorf("CSP allows inline code: %s", csp)
		}
	}
}

// TestNoInlineCode checks that no page needs what the CSP forbids: inline
// scripts, event handler attributes or style attributes.
func TestNoInlineCode(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	inline := regexp.MustCompile(`(?i)<script>|<script [^>]*>[^<]|\son[a-z]+=|\sstyle=|<style`)
	r := h.get("/login")
	if m := inline.FindString(r.body); m != "" {
		t.Errorf("/login has inline code: %q", m)
	}
	h.login()
	for _, p := range []string{"/", "/servers", "/acls", "/settings", "/config"} {
		r := h.get(p)
		if r.code != http.StatusOK {
			t.Errorf("GET %s: HTTP %d", p, r.code)
		}
		if m := inline.FindString(r.body); m != "" {
			t.Errorf("%s has inline code: %q", p, m)
		}
	}
}

func TestMutatingNeedPOST(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	for p := range mutating {
		if p == "/settings" {
			continue // GET /settings is the page
		}
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			if r := h.do(h.c, m, p, nil); r.code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: HTTP %d, want 405", m, p, r.code)
			}
		}
	}
	if r := h.do(h.c, "PUT", "/settings", nil); r.code != http.StatusMethodNotAllowed {
		t.Errorf("PUT /settings: HTTP %d, want 405", r.code)
	}
	if h.webChanges() != 0 {
		t.Error("configuration changed")
	}
}

func TestCSRF(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	for p, form := range mutating {
		for _, tok := range []string{"", "wrong-token"} {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			if tok != "" {
				f.Set("csrf", tok)
			}
			if r := h.do(h.c, "POST", p, f); r.code != http.StatusForbidden {
				t.Errorf("POST %s with CSRF token %q: HTTP %d, want 403", p, tok, r.code)
			}
		}
	}
	// Another session's token does not work either.
	other := h.client()
	h.loginWith(other, testPassword)
	m := csrfRE.FindStringSubmatch(h.do(other, "GET", "/settings", nil).body)
	if r := h.do(h.c, "POST", "/servers/add", url.Values{"csrf": {m[1]}, "address": {"127.0.0.1"}, "port": {"11"}}); r.code != http.StatusForbidden {
		t.Errorf("POST with another session's token: HTTP %d", r.code)
	}
	// A cross-site POST is refused even with the right token.
	req, _ := http.NewRequest("POST", h.ts.URL+"/servers/add", strings.NewReader(url.Values{"csrf": {h.csrf()}, "address": {"127.0.0.1"}, "port": {"11"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if r, err := h.c.Do(req); err != nil || r.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST: %v %v", r.StatusCode, err)
	}
	if h.webChanges() != 0 || len(h.in.Config().Servers) != 2 {
		t.Fatalf("a refused request changed the configuration")
	}
	// With the token it works, and the next page shows the command.
	if r := h.post("/servers/add", url.Values{"address": {"127.0.0.1"}, "port": {"11"}}); r.code != http.StatusSeeOther {
		t.Fatalf("POST /servers/add: HTTP %d\n%s", r.code, r.body)
	}
	r := h.get("/servers")
	contains(t, "page after adding", r.body, "Applied command:", "server 2 address 127.0.0.1 port 11")
	if len(h.in.Config().Servers) != 3 || h.webChanges() != 1 {
		t.Errorf("server not added: %d servers, %d changes", len(h.in.Config().Servers), h.webChanges())
	}
}

func TestBadInputRefused(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	before := h.cfgText()
	id0 := h.in.Config().Servers[0].ID()
	for _, tc := range []struct {
		path  string
		form  url.Values
		field string // input whose error is shown
		want  string
	}{
		{"/servers/add", url.Values{"address": {"127.0.0.1"}, "port": {"70000"}}, "port", "port 70000 out of range"},
		{"/servers/add", url.Values{"address": {"not_an_address!"}, "port": {"80"}}, "address", "unknown or invalid address"},
		{"/servers/add", url.Values{"address": {"10.0.0.1 acl 3"}, "port": {"80"}}, "address", "One word"},
		{"/servers/add", url.Values{"address": {"10.0.0.1"}, "port": {"80"}, "max": {"lots"}}, "max", "is not a number"},
		{"/servers/add", url.Values{"address": {"host.invalid"}, "port": {"80"}}, "address", "unknown or invalid address"},
		{"/servers/add", url.Values{"port": {"80"}}, "address", "Required"},
		{"/servers/edit", url.Values{"n": {"0"}, "id": {itoa(id0)}, "address": {"127.0.0.1"}, "port": {"70000"}}, "port", "out of range"},
		{"/servers/blacklist", url.Values{"n": {"0"}, "id": {itoa(id0)}, "seconds": {"soon"}}, "seconds", "whole number"},
		{"/acls/add", url.Values{"n": {"1"}, "permit": {"permit"}, "address": {"10.0.0.300"}}, "address", "bogus address"},
		{"/acls/add", url.Values{"n": {"1"}, "permit": {"permit"}, "address": {"10.0.0.0"}, "mask": {"255.0.0"}}, "mask", "bogus mask"},
		{"/acls/add", url.Values{"n": {"1"}, "permit": {"permit"}, "address": {"2001:db8::/129"}}, "address", "prefix length"},
		{"/acls/add", url.Values{"n": {"1"}, "permit": {"maybe"}, "address": {"10.0.0.1"}}, "permit", "permit or deny"},
		{"/settings", settingsForm(h, "timeout", "0"), "timeout", "At least 1"},
		{"/settings", settingsForm(h, "blacklist", "-5"), "blacklist", "At least 0"},
		{"/settings", settingsForm(h, "clients_max", "10"), "clients_max", "only grows"},
		{"/settings", settingsForm(h, "tracking", "a while"), "tracking", "One word"},
	} {
		r := h.post(tc.path, tc.form)
		if r.code != http.StatusBadRequest {
			t.Errorf("%s %v: HTTP %d, want 400", tc.path, tc.form, r.code)
			continue
		}
		// The message follows the input it is about, before the next
		// input.
		if msg := errAfter(r.body, tc.field); !strings.Contains(msg, tc.want) {
			t.Errorf("%s %v: error next to %s is %q, want %q", tc.path, tc.form, tc.field, msg, tc.want)
		}
	}
	if got := h.cfgText(); got != before || h.webChanges() != 0 {
		t.Errorf("refused input changed the configuration:\n%s\n%s", before, got)
	}
}

var errRE = regexp.MustCompile(`<div class="err"[^>]*>([^<]*)</div>`)

// errAfter returns the error message shown after the first form field
// named field that has one, before the next field.
func errAfter(body, field string) string {
	for rest := body; ; {
		i := strings.Index(rest, `name="`+field+`"`)
		if i < 0 {
			return ""
		}
		rest = rest[i+1:]
		next := len(rest)
		for _, tag := range []string{"<input", "<select", "<textarea"} {
			if j := strings.Index(rest, tag); j >= 0 && j < next {
				next = j
			}
		}
		if m := errRE.FindStringSubmatch(rest[:next]); m != nil {
			return m[1]
		}
	}
}

func itoa(id uint64) string { return strconv.FormatUint(id, 10) }

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }

// settingsForm is the settings form as the page fills it, with one field
// changed.
func settingsForm(h *harness, field, value string) url.Values {
	c := h.in.Config()
	f := url.Values{
		"mode": {modeName(c)}, "blacklist": {"30"}, "timeout": {"3"}, "tracking": {"0"}, "idle_timeout": {"0"},
		"conn_max": {"500"}, "clients_max": {"2048"}, "pending_max": {"100"},
	}
	f.Set(field, value)
	return f
}

func TestLockoutRefused(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	h.exec("admin_acl 1") // ACL 1 is empty: everyone may
	render := h.cfgText
	before := render()
	for _, tc := range []struct {
		path string
		form url.Values
	}{
		// A permit for others only: the last entry permits, so
		// 127.0.0.1, which matches nothing, would be denied.
		{"/acls/add", url.Values{"n": {"1"}, "permit": {"permit"}, "address": {"10.0.0.0/8"}}},
		{"/acls/add", url.Values{"n": {"1"}, "permit": {"deny"}, "address": {"127.0.0.0/8"}}},
		{"/acls/use", url.Values{"client_acl": {"0"}, "control_acl": {"0"}, "tarpit_acl": {"-1"}, "admin_acl": {"2"}}},
	} {
		if tc.form.Get("admin_acl") == "2" {
			h.exec("acl 2 deny 127.0.0.1")
			before = render()
		}
		r := h.post(tc.path, tc.form)
		if r.code != http.StatusBadRequest {
			t.Errorf("%s %v: HTTP %d, want 400", tc.path, tc.form, r.code)
		}
		contains(t, tc.path, r.body, "Not applied", "your browser connects from 127.0.0.1", "lock yourself out")
	}
	if render() != before || h.webChanges() != 0 {
		t.Fatal("a lock-out was applied")
	}

	// Permitting 127.0.0.1 first makes the same change safe.
	if r := h.post("/acls/add", url.Values{"n": {"1"}, "permit": {"permit"}, "address": {"127.0.0.1"}}); r.code != http.StatusSeeOther {
		t.Fatalf("permit 127.0.0.1: HTTP %d", r.code)
	}
	if r := h.post("/acls/add", url.Values{"n": {"1"}, "permit": {"permit"}, "address": {"10.0.0.0/8"}}); r.code != http.StatusSeeOther {
		t.Fatalf("then permit 10/8: HTTP %d", r.code)
	}
	// Deleting the entry that lets us in is refused.
	if r := h.post("/acls/delete", url.Values{"n": {"1"}, "k": {"0"}, "entry": {"permit 127.0.0.1 255.255.255.255"}}); r.code != http.StatusBadRequest ||
		!strings.Contains(r.body, "lock yourself out") {
		t.Errorf("deleting our own permit: HTTP %d", r.code)
	}
	// So is an upload that turns the UI off or locks us out.
	for _, file := range []string{"no admin_listen\n", "no admin_password_file\n", "no acl 1\nacl 1 deny 127.0.0.1\n"} {
		r := h.upload("lock.cfg", file)
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, "Refused") {
			t.Errorf("upload %q: HTTP %d", file, r.code)
		}
	}
	if got := len(h.in.Config().ACLs[1]); got != 2 {
		t.Errorf("ACL 1 has %d entries, want 2", got)
	}

	// admin_acl guards /metrics and /healthz as well (changed from the
	// control socket, which has no such check).
	h.exec("acl 3 deny 127.0.0.1")
	h.exec("admin_acl 3")
	for _, p := range []string{"/metrics", "/healthz", "/login", "/", "/assets/app.js"} {
		if r := h.get(p); r.code != http.StatusForbidden {
			t.Errorf("GET %s denied by admin_acl: HTTP %d", p, r.code)
		}
	}
}

// upload uploads a configuration file and, when the page shows the
// difference and asks for confirmation, confirms it: the response is the
// confirmation's, or the refusal.
func (h *harness) upload(name, content string) resp {
	h.t.Helper()
	r := h.uploadPreview(name, content)
	if r.code != http.StatusOK || !strings.Contains(r.body, `id="confirm-apply"`) {
		return r
	}
	return h.post("/config/apply", confirmForm(h.t, r.body))
}

var hiddenRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// confirmForm is the form of the confirmation a page shows.
func confirmForm(t *testing.T, body string) url.Values {
	t.Helper()
	_, rest, ok := strings.Cut(body, `id="confirm"`)
	if !ok {
		t.Fatalf("no confirmation on the page:\n%s", body)
	}
	rest, _, _ = strings.Cut(rest, "</form>")
	f := url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(rest, -1) {
		f.Add(m[1], html.UnescapeString(m[2]))
	}
	return f
}

// uploadPreview uploads a configuration file: pen checks it and shows
// what would change.
func (h *harness) uploadPreview(name, content string) resp {
	h.t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	w.WriteField("csrf", h.csrf())
	fw, _ := w.CreateFormFile("file", name)
	fw.Write([]byte(content))
	w.Close()
	req, _ := http.NewRequest("POST", h.ts.URL+"/config/upload", &b)
	req.Header.Set("Content-Type", w.FormDataContentType())
	r, err := h.c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer r.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(r.Body)
	return resp{r.StatusCode, body.String(), r.Header}
}

func TestLoginBackoff(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	if r := h.loginWith(h.c, "wrong"); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "Wrong password") {
		t.Fatalf("wrong password: HTTP %d", r.code)
	}
	// Right away, even the right password is refused…
	if r := h.loginWith(h.c, testPassword); r.code != http.StatusTooManyRequests || !strings.Contains(r.body, "try again in 1 s") {
		t.Fatalf("second attempt at once: HTTP %d\n%s", r.code, r.body)
	}
	// …and each failure doubles the wait.
	h.clock.advance(1100 * time.Millisecond)
	h.loginWith(h.c, "wrong again")
	h.clock.advance(1100 * time.Millisecond)
	if r := h.loginWith(h.c, testPassword); r.code != http.StatusTooManyRequests {
		t.Fatalf("after the second failure: HTTP %d, want 429", r.code)
	}
	h.clock.advance(time.Second)
	h.login()
	if r := h.get("/"); r.code != http.StatusOK {
		t.Errorf("dashboard after login: HTTP %d", r.code)
	}
}

// TestLoginBackoffParallel sends 60 wrong guesses at once, over 60
// connections: one is checked, the others are refused unchecked, with the
// password stored as plain text and as a bcrypt hash.
func TestLoginBackoffParallel(t *testing.T) {
	for _, hashed := range []bool{false, true} {
		h := newHarness(t, harnessOpt{})
		if hashed {
			hash, _ := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
			os.WriteFile(h.pwFile, append(hash, '\n'), 0o600)
		}
		r := h.do(h.c, "GET", "/login", nil)
		tok := tokenRE.FindStringSubmatch(r.body)[1]
		body := url.Values{"token": {tok}, "password": {"guess"}, "next": {"/"}}.Encode()
		const n = 60
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableKeepAlives: true}}
		codes := make(chan int, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("POST", h.ts.URL+"/login", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.AddCookie(&http.Cookie{Name: loginCookie, Value: tok})
				<-start
				resp, err := c.Do(req)
				if err != nil {
					t.Error(err)
					codes <- 0
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes <- resp.StatusCode
			}()
		}
		close(start)
		wg.Wait()
		close(codes)
		count := map[int]int{}
		for c := range codes {
			count[c]++
		}
		if count[http.StatusUnauthorized] != 1 || count[http.StatusTooManyRequests] != n-1 {
			t.Errorf("hashed=%v: %d parallel guesses answered %v; want one checked (401) and %d refused (429)", hashed, n, count, n-1)
		}
		// The right password is refused too until the window passes.
		if r := h.loginWith(h.client(), testPassword); r.code != http.StatusTooManyRequests {
			t.Errorf("hashed=%v: right password within the window: HTTP %d", hashed, r.code)
		}
		h.clock.advance(time.Second)
		if r := h.loginWith(h.client(), testPassword); r.code != http.StatusSeeOther {
			t.Errorf("hashed=%v: right password after the window: HTTP %d", hashed, r.code)
		}
	}
}

func TestLimiterPerClient(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(time.Second, 8*time.Second)
	l.now = c.now
	a, b := netipMust("192.0.2.1"), netipMust("192.0.2.2")
	for i, want := range []time.Duration{1, 2, 4, 8, 8} {
		if got := l.fail(a); got != want*time.Second {
			t.Errorf("failure %d: wait %v, want %v", i+1, got, want*time.Second)
		}
	}
	if l.wait(a) == 0 {
		t.Error("a may try again at once")
	}
	if l.wait(b) != 0 {
		t.Error("a's failures slow down b")
	}
	// IPv6 clients count per /64.
	l.fail(netipMust("2001:db8::1"))
	if l.wait(netipMust("2001:db8::ffff")) == 0 || l.wait(netipMust("2001:db8:0:1::1")) != 0 {
		t.Error("IPv6 clients not grouped by /64")
	}
	// The table is bounded.
	for i := 0; i < maxLimited+100; i++ {
		l.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if len(l.m) > maxLimited {
		t.Errorf("limiter holds %d clients, more than %d", len(l.m), maxLimited)
	}
	// Success and time forget.
	l.succeed(b)
	c.advance(limiterForget + time.Second)
	if got := l.fail(a); got != time.Second {
		t.Errorf("after a quiet while the wait starts again at 1s, got %v", got)
	}
}

func TestSessionCookie(t *testing.T) {
	for _, tls := range []bool{false, true} {
		h := newHarness(t, harnessOpt{tls: tls})
		r := h.loginWith(h.c, testPassword)
		var c *http.Cookie
		for _, x := range (&http.Response{Header: r.hdr}).Cookies() {
			if x.Name == sessionCookie {
				c = x
			}
		}
		if c == nil {
			t.Fatalf("tls=%v: no session cookie", tls)
		}
		if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure != tls || c.Path != "/" {
			t.Errorf("tls=%v: cookie %+v", tls, c)
		}
		if len(c.Value) < 40 {
			t.Errorf("session id %q is short", c.Value)
		}
	}
}

func TestSessionExpiry(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	h.clock.advance(SessionIdle - time.Minute)
	if r := h.get("/"); r.code != http.StatusOK {
		t.Fatalf("used within the idle time: HTTP %d", r.code)
	}
	h.clock.advance(SessionIdle + time.Second)
	if r := h.get("/"); r.code != http.StatusSeeOther {
		t.Fatalf("idle session still valid: HTTP %d", r.code)
	}
	// A busy session ends after its lifetime.
	h.login()
	for i := time.Duration(0); i <= SessionLifetime; i += SessionIdle / 2 {
		h.clock.advance(SessionIdle / 2)
		h.get("/")
	}
	if r := h.get("/"); r.code != http.StatusSeeOther {
		t.Errorf("session older than its lifetime still valid: HTTP %d", r.code)
	}
}

func TestLogout(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	u, _ := url.Parse(h.ts.URL)
	old := h.c.Jar.Cookies(u)
	if r := h.post("/logout", nil); r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/login" {
		t.Fatalf("logout: HTTP %d", r.code)
	}
	if r := h.get("/"); r.code != http.StatusSeeOther {
		t.Errorf("after logout: HTTP %d", r.code)
	}
	// The old cookie is dead on the server too.
	c := h.client()
	c.Jar.SetCookies(u, old)
	if r := h.do(c, "GET", "/", nil); r.code != http.StatusSeeOther {
		t.Errorf("old session cookie after logout: HTTP %d", r.code)
	}
}

func TestPasswordFiles(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		hash, _ := bcrypt.GenerateFromPassword([]byte("hashed secret"), bcrypt.MinCost)
		os.WriteFile(h.pwFile, []byte(prefix+string(hash[4:])+"\n"), 0o600)
		if r := h.loginWith(h.client(), "hashed secret"); r.code != http.StatusSeeOther {
			t.Errorf("%s hash: login HTTP %d", prefix, r.code)
		}
	}
	// The first file that exists wins.
	first := filepath.Join(h.dir, "missing.txt")
	os.WriteFile(first, []byte("first file\n"), 0o600)
	if r := h.loginWith(h.client(), "first file"); r.code != http.StatusSeeOther {
		t.Errorf("first file: login HTTP %d", r.code)
	}
	// An empty file means no password: nobody gets in.
	os.WriteFile(first, []byte("\n"), 0o600)
	c := h.client()
	if r := h.loginWith(c, ""); r.code != http.StatusServiceUnavailable {
		t.Errorf("empty password file: login HTTP %d", r.code)
	}
	if r := h.do(c, "GET", "/login", nil); !strings.Contains(r.body, "no admin password is set") {
		t.Error("login page does not say that no password is set")
	}
}

func TestPasswordChange(t *testing.T) {
	for _, hashed := range []bool{false, true} {
		h := newHarness(t, harnessOpt{})
		target := filepath.Join(h.dir, "missing.txt") // first in the list: where writes go
		if hashed {
			hash, _ := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
			os.WriteFile(h.pwFile, append(hash, '\n'), 0o600)
		}
		h.login()
		other := h.client()
		h.loginWith(other, testPassword)

		r := h.post("/password", url.Values{"current": {testPassword}, "new": {"short"}, "confirm": {"short"}})
		contains(t, "short password", r.body, "at least 8")
		r = h.post("/password", url.Values{"current": {testPassword}, "new": {"new password 1"}, "confirm": {"new password 2"}})
		contains(t, "mismatch", r.body, "differ")
		if _, err := os.Stat(target); err == nil {
			t.Fatal("refused password change wrote a file")
		}
		r = h.post("/password", url.Values{"current": {testPassword}, "new": {"new password 1"}, "confirm": {"new password 1"}})
		if r.code != http.StatusSeeOther {
			t.Fatalf("change: HTTP %d\n%s", r.code, r.body)
		}
		data, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
			t.Errorf("password file mode %v", fi.Mode().Perm())
		}
		if got := strings.TrimSpace(string(data)); hashed != isBcrypt(got) || (!hashed && got != "new password 1") {
			t.Errorf("hashed=%v: file holds %q", hashed, got)
		}
		if r := h.loginWith(h.client(), "new password 1"); r.code != http.StatusSeeOther {
			t.Errorf("new password: HTTP %d", r.code)
		}
		if r := h.do(other, "GET", "/", nil); r.code != http.StatusSeeOther {
			t.Errorf("the other session survived the password change: HTTP %d", r.code)
		}
		if r := h.get("/settings"); !strings.Contains(r.body, "Password changed") {
			t.Error("no confirmation")
		}
		entries, _ := os.ReadDir(h.dir)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp") {
				t.Errorf("temporary file left: %s", e.Name())
			}
		}
	}
}

func TestServerActions(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	id := func(n int) string { return itoa(h.in.Config().Servers[n].ID()) }
	flash := func(wants ...string) {
		t.Helper()
		contains(t, "flash", h.get("/servers").body, wants...)
	}
	ok := func(r resp) {
		t.Helper()
		if r.code != http.StatusSeeOther {
			t.Fatalf("HTTP %d\n%s", r.code, r.body)
		}
	}
	ok(h.post("/servers/add", url.Values{"address": {"127.0.0.2"}, "port": {"8080"}, "max": {"10"}, "weight": {"3"}, "acl": {"0"}}))
	flash("server 2 address 127.0.0.2 port 8080 max 10 weight 3")
	ok(h.post("/servers/edit", url.Values{"n": {"2"}, "id": {id(2)}, "address": {"127.0.0.2"}, "port": {"8081"}, "max": {"10"},
		"hard": {"0"}, "weight": {"3"}, "prio": {"0"}, "acl": {"0"}}))
	flash("server 2 port 8081")
	ok(h.post("/servers/blacklist", url.Values{"n": {"1"}, "id": {id(1)}, "seconds": {"120"}}))
	flash("server 1 blacklist 120")
	if st := h.eng.Servers()[1]; st.Until.IsZero() {
		t.Error("server 1 not blacklisted")
	}
	if !regexp.MustCompile(`blacklisted (1m59s|2m00s) \(until`).MatchString(h.get("/").body) {
		t.Error("dashboard does not show server 1 blacklisted for 2 minutes")
	}
	ok(h.post("/servers/reinstate", url.Values{"n": {"1"}, "id": {id(1)}}))
	flash("server 1 blacklist 0")
	if st := h.eng.Servers()[1]; !st.Until.IsZero() {
		t.Error("server 1 still blacklisted")
	}
	// A stale form (the server moved) changes nothing.
	stale := id(1)
	ok(h.post("/servers/remove", url.Values{"n": {"0"}, "id": {id(0)}}))
	flash("no server 0")
	c := h.in.Config()
	if len(c.Servers) != 2 || c.Servers[0].Port != 10 || c.Servers[1].Port != 8081 {
		t.Fatalf("after removing server 0: %+v", c.Servers)
	}
	if r := h.post("/servers/remove", url.Values{"n": {"1"}, "id": {stale}}); r.code != http.StatusConflict || !strings.Contains(r.body, "has changed") {
		t.Errorf("stale remove: HTTP %d", r.code)
	}
	if len(h.in.Config().Servers) != 2 {
		t.Error("stale remove removed a server")
	}
	// The file autowrite would save has the real removal.
	h.exec("autowrite")
	ok(h.post("/servers/blacklist", url.Values{"n": {"0"}, "id": {id(0)}, "seconds": {"5"}}))
	h.exec("write")
	data, _ := os.ReadFile(filepath.Join(h.dir, "pen.cfg"))
	contains(t, "pen.cfg", string(data), "server 0 acl 0 address 127.0.0.1 port 10 ", "server 1 acl 0 address 127.0.0.2 port 8081 max 10 ")
	if strings.Contains(string(data), "server 2 ") {
		t.Error("pen.cfg still has three servers")
	}
}

func TestACLActions(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	for _, tc := range []struct {
		form url.Values
		cmd  string
	}{
		{url.Values{"permit": {"permit"}, "address": {"10.0.0.0/8"}}, "acl 2 permit 10.0.0.0 255.0.0.0"},
		{url.Values{"permit": {"deny"}, "address": {"192.0.2.0"}, "mask": {"255.255.255.0"}}, "acl 2 deny 192.0.2.0 255.255.255.0"},
		{url.Values{"permit": {"deny"}, "address": {"2001:db8::/32"}}, "acl 2 deny 2001:db8::/32"},
		{url.Values{"permit": {"permit"}, "address": {"se"}}, "acl 2 permit country SE"},
	} {
		tc.form.Set("n", "2")
		if r := h.post("/acls/add", tc.form); r.code != http.StatusSeeOther {
			t.Fatalf("%v: HTTP %d\n%s", tc.form, r.code, r.body)
		}
		contains(t, "flash", h.get("/acls").body, tc.cmd)
	}
	entries := func() []string {
		var out []string
		for _, e := range h.in.Config().ACLs[2] {
			out = append(out, e.String())
		}
		return out
	}
	if got := strings.Join(entries(), "|"); got != "permit 10.0.0.0 255.0.0.0|deny 192.0.2.0 255.255.255.0|deny 2001:db8::/32|permit country SE" {
		t.Fatalf("ACL 2: %s", got)
	}
	// Delete the second entry: one change of "no acl 2" and the rest.
	r := h.post("/acls/delete", url.Values{"n": {"2"}, "k": {"1"}, "entry": {"deny 192.0.2.0 255.255.255.0"}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("delete: HTTP %d", r.code)
	}
	contains(t, "flash", h.get("/acls").body, "no acl 2\nacl 2 permit 10.0.0.0 255.0.0.0\nacl 2 deny 2001:db8::/32\nacl 2 permit country SE")
	if got := strings.Join(entries(), "|"); got != "permit 10.0.0.0 255.0.0.0|deny 2001:db8::/32|permit country SE" {
		t.Errorf("after delete: %s", got)
	}
	if n := h.webChanges(); n != 5 {
		t.Errorf("%d changes, want 5 (the delete is one)", n)
	}
	// A stale delete does nothing.
	if r := h.post("/acls/delete", url.Values{"n": {"2"}, "k": {"1"}, "entry": {"deny 192.0.2.0 255.255.255.0"}}); r.code != http.StatusConflict {
		t.Errorf("stale delete: HTTP %d", r.code)
	}
	if r := h.post("/acls/use", url.Values{"client_acl": {"2"}, "control_acl": {"0"}, "tarpit_acl": {"-1"}, "admin_acl": {"-1"}}); r.code != http.StatusSeeOther {
		t.Fatalf("use: HTTP %d", r.code)
	}
	if c := h.in.Config(); c.ClientACL != 2 {
		t.Errorf("client_acl %d", c.ClientACL)
	}
	if r := h.post("/acls/clear", url.Values{"n": {"2"}}); r.code != http.StatusSeeOther || len(h.in.Config().ACLs[2]) != 0 {
		t.Errorf("clear: HTTP %d, %d entries", r.code, len(h.in.Config().ACLs[2]))
	}
}

func TestSettings(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	f := settingsForm(h, "mode", "weight")
	f.Set("http", "on")
	f.Set("timeout", "7")
	f.Set("conn_max", "600")
	// Every weight is 0: weight mode asks for a confirmation first.
	r := h.post("/settings", f)
	if r.code != http.StatusOK || h.in.Config().Weight {
		t.Fatalf("HTTP %d\n%s", r.code, r.body)
	}
	contains(t, "confirmation", r.body, "every server&#39;s weight is 0")
	if r := h.post("/settings", confirmForm(t, r.body)); r.code != http.StatusSeeOther {
		t.Fatalf("HTTP %d\n%s", r.code, r.body)
	}
	contains(t, "flash", h.get("/settings").body, "weight\nhttp\ntimeout 7\nconn_max 600")
	c := h.in.Config()
	if !c.Weight || c.Hash || !c.HTTP || c.Timeout != 7 || c.ConnMax != 600 {
		t.Errorf("config: weight %v http %v timeout %d conn_max %d", c.Weight, c.HTTP, c.Timeout, c.ConnMax)
	}
	f = settingsForm(h, "mode", "tracking")
	f.Set("timeout", "7")
	f.Set("conn_max", "600")
	h.post("/settings", f)
	contains(t, "flash", h.get("/settings").body, "no weight\nno http")
	if c := h.in.Config(); c.Weight || c.HTTP {
		t.Error("mode not back to tracking")
	}
	h.post("/settings", f)
	contains(t, "no change", h.get("/settings").body, "Nothing changed.")
}

func TestConfigPage(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	r := h.get("/config/download")
	if r.code != http.StatusOK || !strings.Contains(r.hdr.Get("Content-Disposition"), `filename="pen.cfg"`) {
		t.Fatalf("download: HTTP %d %v", r.code, r.hdr)
	}
	contains(t, "download", r.body, "server 1 acl 0 address 127.0.0.1 port 10 max 0 hard 0", "admin_password_file ")

	before := h.cfgText()
	bad := "server 5 address 127.0.0.1 port 80\nblacklist 9\nserver 6 address 127.0.0.1 port 70000\n"
	r = h.upload("bad.cfg", bad)
	if r.code != http.StatusBadRequest {
		t.Fatalf("bad upload: HTTP %d", r.code)
	}
	contains(t, "bad upload", r.body, "nothing was applied: bad.cfg:3: server 6: port 70000 out of range",
		`<pre class="badline">server 6 address 127.0.0.1 port 70000</pre>`)
	if h.cfgText() != before || h.webChanges() != 0 {
		t.Fatal("a bad upload changed the configuration")
	}
	// A good upload first shows what it would change and applies
	// nothing; the confirmation applies it, and the message lists what
	// changed in the saved configuration.
	good := "# comment\nserver 5 address 127.0.0.1 port 80\nblacklist 9\n"
	r = h.uploadPreview("good.cfg", good)
	if r.code != http.StatusOK || h.cfgText() != before || h.webChanges() != 0 {
		t.Fatalf("preview of good.cfg: HTTP %d, or applied\n%s", r.code, r.body)
	}
	contains(t, "preview", html.UnescapeString(r.body), `id="diff"`, `<span class="del">- blacklist 30</span>`, `<span class="ins">+ blacklist 9</span>`,
		`<span class="ins">+ server 5 acl 0 address 127.0.0.1 port 80 max 0 hard 0</span>`, `id="confirm-apply"`)
	r = h.post("/config/apply", confirmForm(t, r.body))
	if r.code != http.StatusSeeOther {
		t.Fatalf("good upload: HTTP %d\n%s", r.code, r.body)
	}
	contains(t, "flash", html.UnescapeString(h.get("/config").body), "Applied good.cfg.", "- blacklist 30\n", "+ blacklist 9\n",
		"+ server 5 acl 0 address 127.0.0.1 port 80 max 0 hard 0\n")
	if c := h.in.Config(); c.Blacklist != 9 || len(c.Servers) != 6 || h.webChanges() != 1 {
		t.Errorf("upload not applied as one change: blacklist %d, %d servers, %d changes", c.Blacklist, len(c.Servers), h.webChanges())
	}
	// The downloaded file uploads again unchanged.
	r = h.get("/config/download")
	if up := h.upload("pen.cfg", r.body); up.code != http.StatusSeeOther {
		t.Errorf("re-upload of the download: HTTP %d\n%s", up.code, up.body)
	}
	if r := h.post("/config/write", nil); r.code != http.StatusSeeOther {
		t.Errorf("write: HTTP %d", r.code)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "pen.cfg")); err != nil {
		t.Errorf("write wrote nothing: %v", err)
	}
}

func TestHealthz(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	if r := h.get("/healthz"); r.code != http.StatusOK {
		t.Errorf("serving: HTTP %d", r.code)
	}
	h.exec("no listen")
	if r := h.get("/healthz"); r.code != http.StatusServiceUnavailable {
		t.Errorf("no listener: HTTP %d", r.code)
	}
	h.exec("listen " + h.listen)
	if r := h.get("/healthz"); r.code != http.StatusOK {
		t.Errorf("listening again: HTTP %d", r.code)
	}
	h.eng.Quit()
	if r := h.get("/healthz"); r.code != http.StatusServiceUnavailable {
		t.Errorf("stopped: HTTP %d", r.code)
	}
}

func TestAPI(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	h.s.sampler.Sample(time.Now())
	r := h.get("/api/state")
	// Nobody has connected to server 0 yet: it is not "up".
	contains(t, "/api/state", r.body, `"0:state":"no failures yet"`, `"1:conns":"0"`, `"serving":"serving"`)
	r = h.get("/api/samples")
	contains(t, "/api/samples", r.body, `"interval":1`, `"slot":0,"address":"127.0.0.1:9"`)
	if r.hdr.Get("Cache-Control") != "no-store" || !strings.HasPrefix(r.hdr.Get("Content-Type"), "application/json") {
		t.Errorf("headers %v", r.hdr)
	}
}

func TestLoginForm(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	// Without the form's token (a login posted from elsewhere) nothing
	// happens.
	r := h.do(h.c, "POST", "/login", url.Values{"password": {testPassword}})
	if r.code != http.StatusForbidden || h.session(h.c) {
		t.Errorf("login without token: HTTP %d", r.code)
	}
	for next, want := range map[string]string{
		"/acls":                 "/acls",
		"/servers?x=1#top":      "/servers?x=1#top",
		"/config/download":      "/config/download",
		"/%2F/evil.example":     "/%2F/evil.example", // one path segment on this site
		"":                      "/",
		"acls":                  "/",
		"//evil.example":        "/",
		"https://evil":          "/",
		"/\\evil":               "/",
		"/a\\b":                 "/",
		"/\t/evil.example":      "/",
		"\t//evil.example":      "/",
		"/\n/evil.example":      "/",
		"/\r\n//evil.example":   "/",
		"/ /evil.example":       "/",
		"/\u00a0/evil.example":  "/",
		"/\x00/evil.example":    "/",
		"/\x7f/evil.example":    "/",
		"/\u2028/evil.example":  "/",
		"/\xff/evil.example":    "/",
		"/%zz":                  "/",
		"http:/evil.example":    "/",
		"\\/evil.example":       "/",
		"/evil.example:80/path": "/evil.example:80/path", // a path: no scheme, no host
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

// TestLoginRedirectStaysLocal logs in with the next page of an open
// redirect, over real HTTP: the browser goes to "/", on this site.
func TestLoginRedirectStaysLocal(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	for i, next := range []string{"/\t/evil.example", "//evil.example", "/\\evil.example", "https://evil.example/"} {
		h.clock.advance(time.Minute) // past any back-off
		c := h.client()
		r := h.do(c, "GET", "/login?next="+url.QueryEscape(next), nil)
		tok := tokenRE.FindStringSubmatch(r.body)[1]
		if strings.Contains(r.body, "evil.example") {
			t.Errorf("login page for next=%q carries it on", next)
		}
		// The form posted as if the field had been tampered with.
		r = h.do(c, "POST", "/login", url.Values{"token": {tok}, "password": {testPassword}, "next": {next}})
		if r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/" {
			t.Errorf("%d: login with next=%q: HTTP %d, Location %q; want 303 to /", i, next, r.code, r.hdr.Get("Location"))
		}
		// Logged in, GET /login?next= redirects the same way.
		r = h.do(c, "GET", "/login?next="+url.QueryEscape(next), nil)
		if r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/" {
			t.Errorf("%d: GET /login?next=%q logged in: HTTP %d, Location %q", i, next, r.code, r.hdr.Get("Location"))
		}
	}
}

// session reports whether c holds a live session.
func (h *harness) session(c *http.Client) bool {
	return h.do(c, "GET", "/api/state", nil).code == http.StatusOK
}

// TestSettingsNetworkModes sets transparent, source, dsr_if and tarpit_if
// from the settings page, refuses a bad address where it was typed, and
// turns them off again with empty fields.
func TestSettingsNetworkModes(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	f := settingsForm(h, "netmodes", "1")
	f.Set("transparent", "on")
	f.Set("source", "127.0.0.9")
	f.Set("tarpit_if", "lo")
	if r := h.post("/settings", f); r.code != http.StatusSeeOther {
		t.Fatalf("HTTP %d\n%s", r.code, r.body)
	}
	contains(t, "flash", h.get("/settings").body, "transparent\nsource 127.0.0.9\ntarpit_if lo")
	if c := h.in.Config(); !c.Transparent || c.Source.String() != "127.0.0.9" || c.TarpitIf != "lo" {
		t.Fatalf("config: transparent %v source %v tarpit_if %q", c.Transparent, c.Source, c.TarpitIf)
	}
	before := h.cfgText()
	bad := settingsForm(h, "netmodes", "1")
	bad.Set("transparent", "on")
	bad.Set("source", "not-an-address!")
	bad.Set("tarpit_if", "lo")
	r := h.post("/settings", bad)
	if r.code != http.StatusBadRequest || h.cfgText() != before {
		t.Fatalf("a bad source: HTTP %d, or the configuration changed", r.code)
	}
	contains(t, "refusal", r.body, "Not applied", `value="127.0.0.9"`)
	// A form without the network modes (an older page) leaves them alone.
	if r := h.post("/settings", settingsForm(h, "blacklist", "31")); r.code != http.StatusSeeOther {
		t.Fatalf("HTTP %d", r.code)
	}
	if c := h.in.Config(); !c.Transparent || c.TarpitIf != "lo" {
		t.Error("a form without the network modes turned them off")
	}
	if r := h.post("/settings", settingsForm(h, "netmodes", "1")); r.code != http.StatusSeeOther {
		t.Fatalf("HTTP %d", r.code)
	}
	contains(t, "flash", h.get("/settings").body, "no transparent\nno source\nno tarpit_if")
	if c := h.in.Config(); c.Transparent || c.Source.IsValid() || c.TarpitIf != "" {
		t.Errorf("not turned off: transparent %v source %v tarpit_if %q", c.Transparent, c.Source, c.TarpitIf)
	}
}
