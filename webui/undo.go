package webui

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// Undo: beside each applied command whose inverse is known, the page
// offers a button that runs the inverse, computed from the configuration
// and server states just before the change. The inverse names server
// slots, so it carries their identities and is refused when a slot holds
// another server by then (someone removed or added one meanwhile).

// undoItem is the inverse of one applied command (or of a change to one
// access list, which takes several lines).
type undoItem struct {
	Cmd    string   // what was applied
	Lines  []string // what undoes it
	Guards []string // "N:ID": server slot N must still hold server ID
	Back   string   // the page to return to
}

var settingNumbers = map[string]func(c *config.Config) int{
	"blacklist": func(c *config.Config) int { return c.Blacklist }, "timeout": func(c *config.Config) int { return c.Timeout },
	"tracking": func(c *config.Config) int { return c.Tracking }, "idle_timeout": func(c *config.Config) int { return c.IdleTimeout },
	"pending_max": func(c *config.Config) int { return c.PendingMax }, "client_acl": func(c *config.Config) int { return c.ClientACL },
	"control_acl": func(c *config.Config) int { return c.ControlACL }, "tarpit_acl": func(c *config.Config) int { return c.TarpitACL },
	"admin_acl": func(c *config.Config) int { return c.Admin.ACL },
}

var settingFlags = map[string]func(c *config.Config) bool{
	"hash": func(c *config.Config) bool { return c.Hash }, "roundrobin": func(c *config.Config) bool { return c.RoundRobin },
	"weight": func(c *config.Config) bool { return c.Weight }, "prio": func(c *config.Config) bool { return c.Prio },
	"stubborn": func(c *config.Config) bool { return c.Stubborn }, "http": func(c *config.Config) bool { return c.HTTP },
}

// undos computes the inverses of lines, applied to cur with server
// states st at the time.
func (s *Server) undos(cur *config.Config, st []config.ServerState, lines []string) []undoItem {
	now := s.now()
	var out []undoItem
	aclDone := map[int]bool{}
	guard := func(n int) []string {
		if n < len(cur.Servers) {
			return []string{fmt.Sprintf("%d:%d", n, cur.Servers[n].ID())}
		}
		return nil
	}
	for _, line := range lines {
		w := config.Split(line)
		if len(w) == 0 {
			continue
		}
		item := undoItem{Cmd: strings.Join(w, " ")}
		switch {
		case w[0] == "server" && len(w) >= 4:
			n, err := strconv.Atoi(w[1])
			if err != nil || n < 0 || n > len(cur.Servers) {
				continue
			}
			if n == len(cur.Servers) { // a new slot
				item.Lines = []string{fmt.Sprintf("no server %d", n)}
				break
			}
			sv := cur.Servers[n]
			var words []string
			for k := 2; k+1 < len(w); k += 2 {
				switch key := w[k]; key {
				case "blacklist":
					left := 0
					if n < len(st) && st[n].Until.After(now) {
						left = int(st[n].Until.Sub(now).Seconds() + 0.5)
					}
					if left == 0 && w[k+1] == "0" {
						continue // reinstating a server that was not blacklisted
					}
					words = append(words, "blacklist", strconv.Itoa(left))
				case "drain":
					words = append(words, "drain", map[bool]string{true: "1", false: "0"}[sv.Drain])
				default:
					if v := current(sv, key); v != "" {
						words = append(words, key, v)
					}
				}
			}
			if len(words) == 0 {
				continue
			}
			item.Lines = []string{fmt.Sprintf("server %d %s", n, strings.Join(words, " "))}
			item.Guards = guard(n)
		case w[0] == "no" && len(w) == 3 && w[1] == "server":
			n, err := strconv.Atoi(w[2])
			if err != nil || n != len(cur.Servers)-1 { // only the last slot comes back where it was
				continue
			}
			sv := cur.Servers[n]
			if sv.Unused() {
				continue
			}
			item.Lines = []string{fmt.Sprintf("server %d acl %d address %s port %d max %d hard %d weight %d prio %d", n, sv.ACL, sv.Host, sv.ReportedPort(), sv.Max, sv.Hard, sv.Weight, sv.Prio)}
			if sv.Drain {
				item.Lines = append(item.Lines, fmt.Sprintf("server %d drain 1", n))
			}
			if sv.Name != "" {
				item.Lines = append(item.Lines, fmt.Sprintf("name server %d %s", n, sv.Name))
			}
		case w[0] == "acl" || (w[0] == "no" && len(w) >= 2 && w[1] == "acl"):
			num := w[1]
			if w[0] == "no" {
				if len(w) < 3 {
					continue
				}
				num = w[2]
			}
			n, err := strconv.Atoi(num)
			if err != nil || n < 0 || n >= len(cur.ACLs) || aclDone[n] {
				continue
			}
			aclDone[n] = true
			item.Cmd = fmt.Sprintf("the change to ACL %d", n)
			item.Lines = []string{fmt.Sprintf("no acl %d", n)}
			for _, e := range cur.ACLs[n] {
				item.Lines = append(item.Lines, fmt.Sprintf("acl %d %s", n, e))
			}
		case w[0] == "name" && len(w) >= 3:
			old := ""
			n, err := strconv.Atoi(w[2])
			if err != nil {
				continue
			}
			switch {
			case w[1] == "server" && n >= 0 && n < len(cur.Servers):
				old = cur.Servers[n].Name
				item.Guards = guard(n)
			case w[1] == "acl" && n >= 0 && n < len(cur.ACLNames):
				old = cur.ACLNames[n]
			default:
				continue
			}
			if old == "" {
				item.Lines = []string{fmt.Sprintf("no name %s %d", w[1], n)}
			} else {
				item.Lines = []string{fmt.Sprintf("name %s %d %s", w[1], n, old)}
			}
		case (w[0] == "check" && len(w) >= 3) || (w[0] == "no" && len(w) == 3 && w[1] == "check"):
			n, err := strconv.Atoi(w[len(w)-1])
			if w[0] == "check" {
				n, err = strconv.Atoi(w[1])
			}
			if err != nil || n < 0 || n >= len(cur.Servers) {
				continue
			}
			if old := cur.Servers[n].Check; old.Kind == "" {
				item.Lines = []string{fmt.Sprintf("no check %d", n)}
			} else {
				item.Lines = []string{fmt.Sprintf("check %d %s", n, old)}
			}
			item.Guards = guard(n)
		case w[0] == "no" && len(w) == 4 && w[1] == "name":
			continue // a name removed: its text is in the inverse of name only
		case len(w) == 2 && settingNumbers[w[0]] != nil:
			item.Lines = []string{fmt.Sprintf("%s %d", w[0], settingNumbers[w[0]](cur))}
		case len(w) == 1 && settingFlags[w[0]] != nil:
			item.Lines = []string{onOff(settingFlags[w[0]](cur), w[0])}
		case len(w) == 2 && w[0] == "no" && settingFlags[w[1]] != nil:
			item.Lines = []string{onOff(settingFlags[w[1]](cur), w[1])}
		default:
			continue
		}
		if len(item.Lines) > 0 {
			out = append(out, item)
		}
	}
	return out
}

// undoPages are the pages an undo may return to.
var undoPages = []string{"/servers", "/acls", "/settings", "/config", "/"}

// undo runs the inverse of an applied command (undos), checking that the
// servers it names are still in their slots.
func (s *Server) undo(w http.ResponseWriter, r *http.Request, x *session) {
	back := r.PostFormValue("back")
	if !slices.Contains(undoPages, back) {
		back = "/servers"
	}
	f := newForm("undo", r)
	f.Back = back
	lines := r.PostForm["line"]
	c := s.in.Config()
	for _, g := range r.PostForm["guard"] {
		n, id, _ := strings.Cut(g, ":")
		i, err := strconv.Atoi(n)
		if err != nil || i < 0 || i >= len(c.Servers) || strconv.FormatUint(c.Servers[i].ID(), 10) != id {
			f.Errors[""] = fmt.Sprintf("Server %s is not the server it was when the command was applied (servers were added or removed since). Nothing was changed.", n)
			break
		}
	}
	for _, l := range lines {
		if strings.IndexFunc(l, func(r rune) bool { return unicode.IsControl(r) }) >= 0 || strings.TrimSpace(l) == "" {
			f.Errors[""] = "Not a command line."
		}
	}
	if len(lines) == 0 {
		f.Errors[""] = "Nothing to undo."
	}
	if len(f.Errors) == 0 {
		if err := s.apply(r, x, lines); err != nil {
			f.fail(err)
		}
	}
	if f.refused() {
		s.undoView(w, r, x, back, f)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// undoView shows the page an undo came from with its refusal or its
// confirmation.
func (s *Server) undoView(w http.ResponseWriter, r *http.Request, x *session, back string, f *form) {
	status := http.StatusBadRequest
	switch back {
	case "/acls":
		s.aclsView(w, r, x, status, f)
	case "/settings":
		s.settingsView(w, r, x, status, f)
	case "/config":
		s.configView(w, r, x, status, f, "")
	default:
		s.serversView(w, r, x, status, f)
	}
}

// pageOf is the page a change came from: the first part of the path it
// was posted to (/servers/edit: /servers), or the undo's page.
func pageOf(r *http.Request) string {
	if r.URL.Path == "/undo" {
		if b := r.PostFormValue("back"); slices.Contains(undoPages, b) {
			return b
		}
	}
	p := r.URL.Path
	if i := strings.Index(p[1:], "/"); i >= 0 {
		p = p[:i+1]
	}
	if !slices.Contains(undoPages, p) {
		return "/servers"
	}
	return p
}
