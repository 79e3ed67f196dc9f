package webui

import (
	"html"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// tcpListen points the harness's pen at a loopback TCP port (pen's
// listen takes no port 0: a port the kernel chose, freed) and waits
// until it accepts.
func (h *harness) tcpListen() string {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h.exec("listen " + addr)
	waitFor(h.t, "pen on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}

// dialBanner connects through pen and returns the backend's greeting and the
// open connection.
func dialBanner(t *testing.T, addr string) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 10)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("through pen: %v", err)
	}
	return strings.TrimSpace(string(buf[:n])), c
}

var undoRE = regexp.MustCompile(`(?s)<form method="post" action="/undo".*?</form>`)

// undoForms are the undo buttons' forms on a page, by the command each
// undoes.
func undoForms(t *testing.T, body string) map[string]url.Values {
	t.Helper()
	out := map[string]url.Values{}
	for _, f := range undoRE.FindAllString(body, -1) {
		v := url.Values{}
		for _, m := range hiddenRE.FindAllStringSubmatch(f, -1) {
			if m[1] != "csrf" {
				v.Add(m[1], html.UnescapeString(m[2]))
			}
		}
		cmd := regexp.MustCompile(`Undo <code>([^<]*)</code>`).FindStringSubmatch(f)
		if cmd != nil {
			out[html.UnescapeString(cmd[1])] = v
		}
	}
	return out
}

// Drain through the UI against real connections: the draining server
// takes no new client while its open connection goes on, the page says
// how many are left and then that it is empty; drain, bulk blacklisting
// and names are undone with the undo buttons.
func TestDrainBulkUndo(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	b0, _ := backend(t, 0)
	b1, _ := backend(t, 1)
	h.exec("server 0 address 127.0.0.1 port " + b0)
	h.exec("server 1 address 127.0.0.1 port " + b1)
	addr := h.tcpListen()
	id := func(n int) string { return itoa(h.in.Config().Servers[n].ID()) }

	// One client holds a connection to server 1 (the tracking mode's
	// first choice).
	first, held := dialBanner(t, addr)
	defer held.Close()
	n := map[string]int{"backend 0": 0, "backend 1": 1}[first]
	if r := h.post("/servers/drain", url.Values{"n": {itoa(uint64(n))}, "id": {id(n)}, "on": {"1"}}); r.code != http.StatusSeeOther {
		t.Fatalf("drain: HTTP %d\n%s", r.code, r.body)
	}
	page := h.get("/servers").body
	contains(t, "after drain", page, "server "+itoa(uint64(n))+" drain 1", "draining, 1 left", "no new clients; 1 connection left")
	for i := 0; i < 4; i++ { // the same client address, tracked to the draining server
		got, c := dialBanner(t, addr)
		c.Close()
		if got == first {
			t.Fatalf("new connection %d went to the draining server", i)
		}
	}
	if _, err := held.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 1); func() error { _, err := held.Read(b); return err }() != nil {
		t.Fatal("the open connection to the draining server stopped")
	}
	held.Close()
	waitFor(t, "the drained server to be empty", func() bool {
		return strings.Contains(h.get("/servers").body, "drained (empty)")
	})
	undo := undoForms(t, page)
	u, ok := undo["server "+itoa(uint64(n))+" drain 1"]
	if !ok {
		t.Fatalf("no undo for the drain: %v", undo)
	}
	if r := h.post("/undo", u); r.code != http.StatusSeeOther || h.in.Config().Servers[n].Drain {
		t.Fatalf("undo drain: HTTP %d\n%s", r.code, r.body)
	}

	// Bulk: blacklist both; that leaves no server, so it asks first.
	bulk := url.Values{"sel": {"0:" + id(0), "1:" + id(1)}, "action": {"blacklist"}, "seconds": {"120"}}
	r := h.post("/servers/bulk", bulk)
	if r.code != http.StatusOK || h.eng.Servers()[0].Until.After(time.Now()) {
		t.Fatalf("bulk blacklist: HTTP %d, or applied before confirming", r.code)
	}
	contains(t, "confirmation", r.body, "No server would be left")
	if r = h.post("/servers/bulk", confirmForm(t, r.body)); r.code != http.StatusSeeOther {
		t.Fatalf("confirmed bulk: HTTP %d\n%s", r.code, r.body)
	}
	for i, st := range h.eng.Servers() {
		if !st.Until.After(time.Now().Add(100 * time.Second)) {
			t.Errorf("server %d not blacklisted for 120 s: %v", i, st.Until)
		}
	}
	page = h.get("/servers").body
	contains(t, "after bulk", page, "server 0 blacklist 120\nserver 1 blacklist 120")
	undo = undoForms(t, page)
	if r := h.post("/undo", undo["server 1 blacklist 120"]); r.code != http.StatusSeeOther {
		t.Fatalf("undo: HTTP %d\n%s", r.code, r.body)
	}
	if st := h.eng.Servers(); !st[0].Until.After(time.Now()) || st[1].Until.After(time.Now()) {
		t.Errorf("after undoing server 1's blacklisting: %v %v", st[0].Until, st[1].Until)
	}
	// Bulk reinstate, without a selection: refused, nothing changes.
	if r := h.post("/servers/bulk", url.Values{"action": {"reinstate"}}); r.code != http.StatusBadRequest || !strings.Contains(r.body, "Select one or more servers") {
		t.Errorf("bulk without selection: HTTP %d", r.code)
	}

	// Names, shown on the pages and saved by write.
	h.exec("server 0 blacklist 0")
	f := url.Values{"n": {"0"}, "id": {id(0)}, "address": {"127.0.0.1"}, "port": {b0}, "max": {"0"}, "hard": {"0"}, "weight": {"0"}, "prio": {"0"}, "acl": {"0"}, "name": {"web one"}}
	if r := h.post("/servers/edit", f); r.code != http.StatusSeeOther {
		t.Fatalf("name: HTTP %d\n%s", r.code, r.body)
	}
	if r := h.post("/acls/name", url.Values{"n": {"4"}, "name": {"office"}}); r.code != http.StatusSeeOther {
		t.Fatalf("acl name: HTTP %d\n%s", r.code, r.body)
	}
	aclsPage := h.get("/acls").body // with the flash of the change
	contains(t, "dashboard", h.get("/").body, `<span class="muted small server-name">web one</span>`)
	contains(t, "acls", aclsPage, `<span class="acl-name">office</span>`)
	contains(t, "servers", h.get("/servers").body, `value="web one"`, `>4 office</option>`)
	contains(t, "download", h.get("/config/download").body, "name server 0 web one\n", "name acl 4 office\n")
	undo = undoForms(t, aclsPage)
	if r := h.post("/undo", undo["name acl 4 office"]); r.code != http.StatusSeeOther || h.in.Config().ACLNames[4] != "" {
		t.Errorf("undo acl name: HTTP %d, name %q", r.code, h.in.Config().ACLNames[4])
	}

	// An undo whose server moved is refused.
	stale := undoForms(t, page)["server 0 blacklist 120"]
	h.exec("no server 0")
	if r := h.post("/undo", stale); r.code != http.StatusBadRequest || !strings.Contains(r.body, "is not the server it was") {
		t.Errorf("stale undo: HTTP %d", r.code)
	}
}

// Health checks set on the servers page run against real servers: the
// one that answers is shown up with its check passed (before any client
// used it), the closed port blacklisted with the reason, in the state
// column and in pen_server_up; the check is saved by write.
func TestHealthCheckPage(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	b0, _ := backend(t, 0)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(closed.Addr().String())
	closed.Close()
	h.exec("server 0 address 127.0.0.1 port " + b0)
	id := func(n int) string { return itoa(h.in.Config().Servers[n].ID()) }
	edit := func(n int, port, check string) resp {
		return h.post("/servers/edit", url.Values{"n": {itoa(uint64(n))}, "id": {id(n)}, "address": {"127.0.0.1"}, "port": {port},
			"max": {"0"}, "hard": {"0"}, "weight": {"0"}, "prio": {"0"}, "acl": {"0"}, "check": {check}})
	}
	if r := edit(0, b0, "tcp 1"); r.code != http.StatusSeeOther {
		t.Fatalf("check on server 0: HTTP %d\n%s", r.code, r.body)
	}
	if r := edit(1, closedPort, "http /health 200 1"); r.code != http.StatusSeeOther {
		t.Fatalf("check on server 1: HTTP %d\n%s", r.code, r.body)
	}
	if r := edit(1, closedPort, "http health"); r.code != http.StatusBadRequest || !strings.Contains(errAfter(r.body, "check"), "path starting with /") {
		t.Errorf("a bad check: HTTP %d, %q", r.code, errAfter(r.body, "check"))
	}
	var page string
	waitFor(t, "both checks' results", func() bool {
		page = h.get("/servers").body
		return strings.Contains(page, "check passed") && strings.Contains(page, "check failed")
	})
	contains(t, "servers", page, "connect: connection refused", `value="tcp 1"`, `value="http /health 200 1"`)
	st := h.eng.Servers()
	if st[0].Until.After(time.Now()) || !st[1].Until.After(time.Now()) {
		t.Errorf("server 0 should be up, server 1 blacklisted: %+v", st)
	}
	if !strings.Contains(page, `<span class="pill up">up</span>`) {
		t.Error("server 0, which passes its check, is not shown up")
	}
	contains(t, "/metrics", h.get("/metrics").body, `pen_server_up{address="127.0.0.1:`+closedPort+`",server="1"} 0`, `pen_server_up{address="127.0.0.1:`+b0+`",server="0"} 1`)
	contains(t, "download", h.get("/config/download").body, "check 0 tcp 1\n", "check 1 http /health 200 1\n")
	contains(t, "dashboard", h.get("/").body, "down: check failed (connect: connection refused)")
}
