package webui

import (
	"html"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A client_acl that would refuse clients connected now is confirmed
// first, naming them; clients that stay permitted ask nothing. The
// clients are real TCP connections through pen to a backend.
func TestConfirmRefusedClients(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	b0, _ := backend(t, 0)
	h.exec("server 0 address 127.0.0.1 port " + b0)
	// pen's listen takes no port 0: a port the kernel chose, freed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h.exec("listen " + addr)
	var c net.Conn
	waitFor(t, "pen on "+addr, func() bool {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 10)
	if _, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf), "backend 0") {
		t.Fatalf("through pen: %q %v", buf, err)
	}
	use := func(client string) url.Values {
		return url.Values{"client_acl": {client}, "control_acl": {"0"}, "tarpit_acl": {"-1"}, "admin_acl": {"-1"}}
	}

	h.exec("acl 1 deny 10.0.0.0 255.0.0.0") // permits 127.0.0.1 (the last entry denies)
	if r := h.post("/acls/use", use("1")); r.code != http.StatusSeeOther {
		t.Fatalf("a list that permits the connected client: HTTP %d\n%s", r.code, r.body)
	}
	h.exec("acl 2 deny 127.0.0.1")
	before := h.cfgText()
	r := h.post("/acls/use", use("2"))
	if r.code != http.StatusOK || h.cfgText() != before {
		t.Fatalf("client_acl 2: HTTP %d, or applied at once", r.code)
	}
	contains(t, "confirmation", html.UnescapeString(r.body), "client_acl 2 would refuse 1 client connected now (127.0.0.1)", `id="confirm-apply"`)
	// A confirmation for other consequences (a stale page) asks again.
	f := confirmForm(t, r.body)
	stale := url.Values{}
	for k, v := range f {
		stale[k] = v
	}
	stale.Set("confirm", "0123456789abcdef")
	if r := h.post("/acls/use", stale); r.code != http.StatusOK || h.cfgText() != before {
		t.Fatalf("a wrong confirmation: HTTP %d", r.code)
	}
	if r := h.post("/acls/use", f); r.code != http.StatusSeeOther {
		t.Fatalf("confirmed: HTTP %d\n%s", r.code, r.body)
	}
	if n := h.in.Config().ClientACL; n != 2 {
		t.Errorf("client_acl %d after the confirmation, want 2", n)
	}
	// The open connection goes on.
	if _, err := c.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := c.Read(got); err != nil || string(got) != "still" {
		t.Errorf("the connected client after the change: %q %v", got, err)
	}
}

// Removing the last available server is confirmed; with another server
// up it is not.
func TestConfirmLastServer(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	id := func(n int) string { return itoa(h.in.Config().Servers[n].ID()) }
	if r := h.post("/servers/remove", url.Values{"n": {"1"}, "id": {id(1)}}); r.code != http.StatusSeeOther {
		t.Fatalf("removing one of two: HTTP %d\n%s", r.code, r.body)
	}
	r := h.post("/servers/remove", url.Values{"n": {"0"}, "id": {id(0)}})
	if r.code != http.StatusOK || len(h.in.Config().Servers) != 1 {
		t.Fatalf("removing the last: HTTP %d, %d servers", r.code, len(h.in.Config().Servers))
	}
	contains(t, "confirmation", r.body, "No server would be left to take clients", "every new client is refused", "no server 0")
	if r := h.post("/servers/remove", confirmForm(t, r.body)); r.code != http.StatusSeeOther || len(h.in.Config().Servers) != 0 {
		t.Fatalf("confirmed: HTTP %d", r.code)
	}
}
