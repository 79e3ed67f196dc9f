package webui

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pen-lb/pen-appliance/pen/acl"
)

type aclEntry struct {
	K    int
	Text string // as pen writes it: "permit 10.0.0.0 255.0.0.0"
}

type aclList struct {
	N       int
	Name    string // name acl N …
	Entries []aclEntry
	UsedBy  []string
}

type aclsData struct {
	Lists      []aclList
	ClientACL  int
	ControlACL int
	TarpitACL  int
	AdminACL   int
	Client     string // the browser's address
	Allowed    bool   // whether admin_acl permits it (always, or it would not see this)
}

func (s *Server) aclsView(w http.ResponseWriter, r *http.Request, x *session, status int, f *form) {
	c := s.in.Config()
	d := aclsData{ClientACL: c.ClientACL, ControlACL: c.ControlACL, TarpitACL: c.TarpitACL, AdminACL: c.Admin.ACL,
		Client: clientName(clientAddr(r)), Allowed: adminAllowed(c, clientAddr(r))}
	for n := range c.ACLs {
		l := aclList{N: n, Name: c.ACLNames[n]}
		for k, e := range c.ACLs[n] {
			l.Entries = append(l.Entries, aclEntry{K: k, Text: e.String()})
		}
		if c.ClientACL == n {
			l.UsedBy = append(l.UsedBy, "client_acl")
		}
		if c.ControlACL == n {
			l.UsedBy = append(l.UsedBy, "control_acl")
		}
		if c.TarpitACL == n {
			l.UsedBy = append(l.UsedBy, "tarpit_acl")
		}
		if c.Admin.ACL == n {
			l.UsedBy = append(l.UsedBy, "admin_acl")
		}
		var servers []string
		for i, sv := range c.Servers {
			if sv.ACL == n && !sv.Unused() {
				servers = append(servers, strconv.Itoa(i))
			}
		}
		switch {
		case len(servers) > 4:
			l.UsedBy = append(l.UsedBy, fmt.Sprintf("%d servers", len(servers)))
		case len(servers) > 1:
			l.UsedBy = append(l.UsedBy, "servers "+strings.Join(servers, ", "))
		case len(servers) == 1:
			l.UsedBy = append(l.UsedBy, "server "+servers[0])
		}
		d.Lists = append(d.Lists, l)
	}
	s.show(w, r, x, status, "acls", "Access lists", f, d)
}

func (s *Server) aclsPage(w http.ResponseWriter, r *http.Request, x *session) {
	s.aclsView(w, r, x, http.StatusOK, nil)
}

// aclNumber reads field as an access list number in low..9.
func aclNumber(r *http.Request, field string, low int) (int, bool) {
	n, err := strconv.Atoi(r.PostFormValue(field))
	return n, err == nil && n >= low && n < acl.Lists
}

// entryWords turns the add form's address and mask into the words of an
// acl command: "10.0.0.0 255.0.0.0", "2001:db8::/32", "country SE". An
// IPv4 prefix such as 10.0.0.0/8 is written with its mask, as pen does.
func entryWords(addr, mask string) (string, string, string) {
	addr, mask = strings.TrimSpace(addr), strings.TrimSpace(mask)
	if addr == "" {
		return "", "address", "Required."
	}
	if cc, ok := strings.CutPrefix(strings.ToLower(addr), "country "); ok || (len(addr) == 2 && isLetters(addr)) {
		if !ok {
			cc = addr
		}
		if mask != "" {
			return "", "mask", "A country entry has no mask."
		}
		cc = strings.TrimSpace(cc)
		if len(cc) != 2 || !isLetters(cc) {
			return "", "address", "A country is two letters, like SE."
		}
		return "country " + strings.ToUpper(cc), "", ""
	}
	if _, m := word(addr); m != "" {
		return "", "address", m
	}
	if mask != "" {
		if _, m := word(mask); m != "" {
			return "", "mask", m
		}
	}
	if p, err := netip.ParsePrefix(addr); err == nil && p.Addr().Is4() {
		if mask != "" {
			return "", "mask", "Give either a /length or a mask, not both."
		}
		b := [4]byte{}
		for i := 0; i < p.Bits(); i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return p.Addr().String() + " " + netip.AddrFrom4(b).String(), "", ""
	}
	if strings.Contains(addr, ":") && mask != "" {
		return "", "mask", "An IPv6 entry takes a /length, not a mask."
	}
	if mask != "" {
		return addr + " " + mask, "", ""
	}
	return addr, "", ""
}

func isLetters(s string) bool {
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') {
			return false
		}
	}
	return s != ""
}

func (s *Server) aclAdd(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("add-"+r.PostFormValue("n"), r)
	n, ok := aclNumber(r, "n", 0)
	if !ok {
		f.ID = "page"
		f.Errors[""] = "No such access list."
		s.aclsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	pd := r.PostFormValue("permit")
	if pd != "permit" && pd != "deny" {
		f.Errors["permit"] = "Choose permit or deny."
	}
	what, field, msg := entryWords(r.PostFormValue("address"), r.PostFormValue("mask"))
	if msg != "" {
		f.Errors[field] = msg
	}
	if len(f.Errors) == 0 {
		line := fmt.Sprintf("acl %d %s %s", n, pd, what)
		if e := s.check(line); e != "" {
			field := "address"
			if strings.Contains(e, "mask") {
				field = "mask"
			}
			f.Errors[field] = e
		} else if err := s.apply(r, x, []string{line}); err != nil {
			f.fail(err)
		}
	}
	if f.refused() {
		s.aclsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	http.Redirect(w, r, "/acls#acl"+strconv.Itoa(n), http.StatusSeeOther)
}

// aclDelete removes entry k of a list. The language has no command for
// that, so it is one change: clear the list and add back the others.
func (s *Server) aclDelete(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("list-"+r.PostFormValue("n"), r)
	n, ok := aclNumber(r, "n", 0)
	k, err := strconv.Atoi(r.PostFormValue("k"))
	c := s.in.Config()
	if !ok || err != nil || k < 0 || k >= len(c.ACLs[n]) || c.ACLs[n][k].String() != r.PostFormValue("entry") {
		f.ID = "page"
		f.Errors[""] = "That entry is not there any more (the list changed since the page was loaded). Nothing was changed."
		s.aclsView(w, r, x, http.StatusConflict, f)
		return
	}
	lines := []string{fmt.Sprintf("no acl %d", n)}
	for i, e := range c.ACLs[n] {
		if i != k {
			lines = append(lines, fmt.Sprintf("acl %d %s", n, e))
		}
	}
	s.aclApply(w, r, x, f, n, lines)
}

func (s *Server) aclClear(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("list-"+r.PostFormValue("n"), r)
	n, ok := aclNumber(r, "n", 0)
	if !ok {
		f.ID = "page"
		f.Errors[""] = "No such access list."
		s.aclsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	s.aclApply(w, r, x, f, n, []string{fmt.Sprintf("no acl %d", n)})
}

func (s *Server) aclApply(w http.ResponseWriter, r *http.Request, x *session, f *form, n int, lines []string) {
	if err := s.apply(r, x, lines); err != nil {
		f.fail(err)
		s.aclsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	http.Redirect(w, r, "/acls#acl"+strconv.Itoa(n), http.StatusSeeOther)
}

// aclUse chooses the lists for clients, the control port, the tarpit and
// the admin UI.
func (s *Server) aclUse(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("use", r)
	c := s.in.Config()
	var lines []string
	for _, u := range []struct {
		cmd string
		low int
		cur int
	}{{"client_acl", 0, c.ClientACL}, {"control_acl", 0, c.ControlACL}, {"tarpit_acl", -1, c.TarpitACL}, {"admin_acl", -1, c.Admin.ACL}} {
		n, ok := aclNumber(r, u.cmd, u.low)
		if !ok {
			f.Errors[u.cmd] = fmt.Sprintf("Choose a list %d..9.", u.low)
			continue
		}
		if n != u.cur {
			lines = append(lines, fmt.Sprintf("%s %d", u.cmd, n))
		}
	}
	if len(f.Errors) == 0 && len(lines) > 0 {
		if err := s.apply(r, x, lines); err != nil {
			f.fail(err)
			var le *LockoutError
			if errors.As(err, &le) && r.PostFormValue("admin_acl") != strconv.Itoa(c.Admin.ACL) {
				f.Errors["admin_acl"] = fmt.Sprintf("Not applied: list %s would lock you out; admin_acl stays %d.", r.PostFormValue("admin_acl"), c.Admin.ACL)
			}
		}
	}
	if f.refused() {
		s.aclsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	if len(lines) == 0 {
		s.sessions.addFlash(x, Flash{Note: "Nothing changed."})
	}
	http.Redirect(w, r, "/acls", http.StatusSeeOther)
}

// aclName sets or clears a list's name (name acl N TEXT, no name acl N).
func (s *Server) aclName(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("name-"+r.PostFormValue("n"), r)
	n, ok := aclNumber(r, "n", 0)
	if !ok {
		f.ID = "page"
		f.Errors[""] = "No such access list."
		s.aclsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	name := strings.Join(strings.Fields(r.PostFormValue("name")), " ")
	var lines []string
	switch {
	case name == s.in.Config().ACLNames[n]:
	case name == "":
		lines = append(lines, fmt.Sprintf("no name acl %d", n))
	default:
		line := fmt.Sprintf("name acl %d %s", n, name)
		if e := s.check(line); e != "" {
			f.Errors["name"] = e
		} else {
			lines = append(lines, line)
		}
	}
	if len(f.Errors) == 0 && len(lines) > 0 {
		if err := s.apply(r, x, lines); err != nil {
			f.fail(err)
		}
	}
	if f.refused() {
		s.aclsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	if len(lines) == 0 {
		s.sessions.addFlash(x, Flash{Note: "Nothing changed."})
	}
	http.Redirect(w, r, "/acls#acl"+strconv.Itoa(n), http.StatusSeeOther)
}
