package webui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/pen-lb/pen-appliance/internal/firmware"
	"github.com/pen-lb/pen-appliance/pen/acl"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/metrics"
	"github.com/pen-lb/pen-appliance/pen/proxy"
)

// serverRow is one server slot as the pages show it.
type serverRow struct {
	Slot    string // "0", "1"…, "emergency", "abuse"
	Index   int
	ID      uint64
	Address string // host:port, or a unix socket path
	Host    string
	Port    int
	Max     int
	Hard    int
	Weight  int
	Prio    int
	ACL     int
	Name    string // name server N …
	Check   string // check N … (config.Check.String), "" for none
	// The check's last result.
	CheckDone bool
	CheckOK   bool
	CheckAt   time.Time
	CheckErr  string
	State     string // "up", "untried", "draining", "blacklisted" or "unused" (stateOf)
	Until     time.Time
	Left      time.Duration // blacklisted for this much longer
	Conns     int
	Total     uint64
	Fails     uint64
	Sent      uint64 // to the server
	Recv      uint64 // from the server
	// LastFailure is the last failed connect (zero if none).
	LastFailure time.Time
	// Since is when the server entered its state as the UI saw it;
	// SinceKnown is false when the UI only saw it in that state from
	// the start of its watch.
	Since      time.Time
	SinceKnown bool
	Changes    []stateChange
	Now        time.Time
}

func row(slot string, i int, s config.Server, st config.ServerState, now time.Time) serverRow {
	r := serverRow{
		Slot: slot, Index: i, ID: s.ID(), Address: metrics.Address(s), Host: s.Host.String(), Port: s.ReportedPort(),
		Max: s.Max, Hard: s.Hard, Weight: s.Weight, Prio: s.Prio, ACL: s.ACL, Name: s.Name, Check: s.Check.String(),
		Conns: st.Conns, Total: st.Total, Fails: st.Failures, Sent: st.Sent, Recv: st.Received,
		LastFailure: st.Failed, Now: now,
	}
	r.State = stateOf(s, st, now)
	if r.State == "blacklisted" {
		r.Until, r.Left = st.Until, st.Until.Sub(now)
	}
	return r
}

// StateText is the state column: "up", "no failures yet" (nobody has
// connected to it yet), "blacklisted 25 s (until 12:00:00)", "unused".
func (r serverRow) StateText() string {
	switch r.State {
	case "blacklisted":
		if r.Check != "" && r.CheckDone && !r.CheckOK {
			// The check blacklists it again at every failed probe.
			return "down: check failed (" + r.CheckErr + ")"
		}
		return fmt.Sprintf("blacklisted %s (until %s)", humanDuration(r.Left), r.Until.Format("15:04:05"))
	case "untried":
		return "no failures yet"
	case "draining":
		if r.Conns == 0 {
			return "drained (empty)"
		}
		return fmt.Sprintf("draining, %d left", r.Conns)
	}
	return r.State
}

// StateLabel is the short state for the servers page's pill.
func (r serverRow) StateLabel() string {
	if r.State == "untried" || r.State == "draining" {
		return r.StateText()
	}
	return r.State
}

// StateSub is the line under the pill: how long in this state, how long
// a blacklisting lasts, the last failure.
func (r serverRow) StateSub() string {
	var parts []string
	switch {
	case r.State == "blacklisted":
		parts = append(parts, fmt.Sprintf("%s left, until %s", humanDuration(r.Left), r.Until.Format("15:04:05")))
	case r.State == "untried":
		parts = append(parts, "no client yet")
	case r.State == "draining" && r.Conns > 0:
		parts = append(parts, fmt.Sprintf("no new clients; %d %s left", r.Conns, plural(r.Conns, "connection", "connections")))
	case r.State == "draining":
		parts = append(parts, "no connection left: it can be taken out")
	}
	if t := r.checkText(); t != "" {
		parts = append(parts, t)
	}
	if !r.Since.IsZero() && r.State != "unused" {
		if r.SinceKnown {
			parts = append(parts, "for "+since(r.Now, r.Since))
		} else {
			parts = append(parts, "for at least "+since(r.Now, r.Since))
		}
	}
	// A blacklisting by command sets Pen's status time ahead: only a
	// counted failure in the past is one.
	if r.Fails > 0 && !r.LastFailure.IsZero() && !r.LastFailure.After(r.Now) {
		parts = append(parts, fmt.Sprintf("last failure %s (%s ago)", r.LastFailure.Format("15:04:05"), since(r.Now, r.LastFailure)))
	}
	return strings.Join(parts, " · ")
}

func (s *Server) rows(c *config.Config) (servers, special []serverRow) {
	now := s.now()
	var st []config.ServerState
	var em, ab *config.ServerState
	if s.state != nil {
		st = s.state.Servers()
		em, ab = s.state.SpecialStates()
	}
	if s.hist != nil {
		s.hist.observe(now, c, st)
	}
	health := s.health()
	for i, sv := range c.Servers {
		var ss config.ServerState
		if i < len(st) {
			ss = st[i]
		}
		rw := row(strconv.Itoa(i), i, sv, ss, now)
		h, ok := health[sv.ID()]
		rw.withHealth(h, ok)
		if s.hist != nil {
			rw.Since, rw.SinceKnown, rw.Changes = s.hist.get(sv.ID())
		}
		servers = append(servers, rw)
	}
	if c.Emergency != nil {
		var ss config.ServerState
		if em != nil {
			ss = *em
		}
		special = append(special, row("emergency", -1, *c.Emergency, ss, now))
	}
	if c.Abuse != nil {
		var ss config.ServerState
		if ab != nil {
			ss = *ab
		}
		special = append(special, row("abuse", -2, *c.Abuse, ss, now))
	}
	return servers, special
}

// modeName describes how pen chooses a server for a new client, in the
// order of precedence pen applies.
func modeName(c *config.Config) string {
	switch {
	case c.Prio:
		return "prio"
	case c.Weight:
		return "weight"
	case c.Hash:
		return "hash"
	case c.RoundRobin:
		return "roundrobin"
	}
	return "tracking"
}

var modeText = map[string]string{
	"tracking":   "round-robin, returning clients keep their server (Pen's default)",
	"roundrobin": "round-robin, no client tracking",
	"hash":       "hash of the client address",
	"weight":     "least connections per weight",
	"prio":       "lowest prio value first",
}

type dashData struct {
	Serving    bool
	Listen     string
	Mode       string
	ModeText   string
	Stubborn   bool
	Stats      proxy.Stats
	Refused    uint64
	Tracked    int
	Changes    uint64
	Servers    []serverRow
	Special    []serverRow
	ConfigFile string
	AutoWrite  bool
	Now        time.Time
	// Rollback is the last firmware update if the appliance rolled it back.
	Rollback *firmware.Update
	// DSR is the DSR card, nil without dsr_if.
	DSR *dsrView
}

func (s *Server) dashData() dashData {
	c := s.in.Config()
	d := dashData{
		Listen: c.Listen, Mode: modeName(c), ModeText: modeText[modeName(c)], Stubborn: c.Stubborn,
		Changes: s.in.Changes(), ConfigFile: s.in.Process().ConfigFile, AutoWrite: c.AutoWrite, Now: s.now(),
	}
	if s.state != nil {
		d.Serving = s.state.Serving()
		d.Stats = s.state.Stats()
		d.Refused = d.Stats.RefusedFull + d.Stats.RefusedNoServer + d.Stats.RefusedACL
		d.Tracked = s.state.TrackedClients()
	}
	d.Servers, d.Special = s.rows(c)
	d.DSR = s.dsrData(c, d.Servers)
	d.Rollback = s.rollback()
	return d
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, x *session) {
	s.show(w, r, x, http.StatusOK, "dashboard", "Dashboard", nil, s.dashData())
}

// apiState is the dashboard's live data: the text of every cell that
// changes, keyed "slot:column", so that the script needs no formatting of
// its own.
func (s *Server) apiState(w http.ResponseWriter, r *http.Request, x *session) {
	d := s.dashData()
	cells := map[string]string{
		"serving":           map[bool]string{true: "serving", false: "not serving"}[d.Serving],
		"accepted":          strconv.FormatUint(d.Stats.Accepted, 10),
		"active":            strconv.Itoa(d.Stats.Active),
		"pending":           strconv.Itoa(d.Stats.Pending),
		"refused":           strconv.FormatUint(d.Refused, 10),
		"refused_acl":       strconv.FormatUint(d.Stats.RefusedACL, 10),
		"refused_full":      strconv.FormatUint(d.Stats.RefusedFull, 10),
		"refused_no_server": strconv.FormatUint(d.Stats.RefusedNoServer, 10),
		"tracked":           strconv.Itoa(d.Tracked),
		"changes":           strconv.FormatUint(d.Changes, 10),
	}
	states := map[string]string{}
	for _, rw := range append(d.Servers, d.Special...) {
		p := rw.Slot + ":"
		cells[p+"state"] = rw.StateText()
		cells[p+"conns"] = strconv.Itoa(rw.Conns)
		cells[p+"total"] = strconv.FormatUint(rw.Total, 10)
		cells[p+"fails"] = strconv.FormatUint(rw.Fails, 10)
		cells[p+"sent"] = humanBytes(rw.Sent)
		cells[p+"recv"] = humanBytes(rw.Recv)
		states[rw.Slot] = rw.State
	}
	d.DSR.cells(cells, states)
	writeJSON(w, map[string]any{
		"time":    d.Now.Unix(),
		"slots":   len(d.Servers),
		"cells":   cells,
		"states":  states,
		"serving": d.Serving,
	})
}

func (s *Server) apiSamples(w http.ResponseWriter, r *http.Request, x *session) {
	writeJSON(w, s.sampler.Snapshot())
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// The servers page.

// aclChoice is an access list in a select: its number and name.
type aclChoice struct {
	N    int
	Name string
}

type serversData struct {
	Servers   []serverRow
	Special   []serverRow
	Blacklist int
	Next      int
	ACLs      []aclChoice
	Weight    bool
	Prio      bool
}

func (s *Server) serversView(w http.ResponseWriter, r *http.Request, x *session, status int, f *form) {
	c := s.in.Config()
	d := serversData{Blacklist: c.Blacklist, Next: len(c.Servers), Weight: c.Weight, Prio: c.Prio}
	for i := 0; i < acl.Lists; i++ {
		d.ACLs = append(d.ACLs, aclChoice{i, c.ACLNames[i]})
	}
	d.Servers, d.Special = s.rows(c)
	s.show(w, r, x, status, "servers", "Servers", f, d)
}

func (s *Server) serversPage(w http.ResponseWriter, r *http.Request, x *session) {
	s.serversView(w, r, x, http.StatusOK, nil)
}

// serverFields are the settings of a server slot, in command order.
var serverFields = []string{"address", "port", "max", "hard", "weight", "prio", "acl"}

func current(sv config.Server, field string) string {
	switch field {
	case "address":
		return sv.Host.String()
	case "port":
		return strconv.Itoa(sv.ReportedPort())
	case "max":
		return strconv.Itoa(sv.Max)
	case "hard":
		return strconv.Itoa(sv.Hard)
	case "weight":
		return strconv.Itoa(sv.Weight)
	case "prio":
		return strconv.Itoa(sv.Prio)
	case "acl":
		return strconv.Itoa(sv.ACL)
	}
	return ""
}

// serverWords validates the submitted fields for slot n one by one with
// the grammar, so that each error lands next to its field, and returns
// the "key value" words of the command. With old set, only fields that
// differ from it are included.
func (s *Server) serverWords(r *http.Request, f *form, n int, old *config.Server) []string {
	var words []string
	for _, k := range serverFields {
		raw := strings.TrimSpace(r.PostFormValue(k))
		if raw == "" && (old == nil && k != "address" && k != "port") {
			continue
		}
		v, msg := word(raw)
		if msg != "" {
			f.Errors[k] = msg
			continue
		}
		if old != nil && v == current(*old, k) {
			continue
		}
		if k == "port" && v == "0" {
			f.Errors[k] = "Port 0 is not a server; use Remove to take a server out."
			continue
		}
		if e := s.check(fmt.Sprintf("server %d %s %s", n, k, v)); e != "" {
			f.Errors[k] = e
			continue
		}
		words = append(words, k, v)
	}
	return words
}

// nameLine is the command that gives server n the name in the form's
// name field, if it differs from old ("" when it does not).
func nameLine(r *http.Request, f *form, n int, old string) string {
	name := strings.Join(strings.Fields(r.PostFormValue("name")), " ")
	if name == old {
		return ""
	}
	switch {
	case len(name) > config.MaxNameLen:
		f.Errors["name"] = fmt.Sprintf("At most %d characters.", config.MaxNameLen)
	case strings.HasPrefix(name, "#"):
		f.Errors["name"] = "Must not start with #."
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		f.Errors["name"] = "Printable text only."
	case name == "":
		return fmt.Sprintf("no name server %d", n)
	default:
		return fmt.Sprintf("name server %d %s", n, name)
	}
	return ""
}

func (s *Server) serverAdd(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("add", r)
	n := len(s.in.Config().Servers)
	words := s.serverWords(r, f, n, nil)
	lines := []string{fmt.Sprintf("server %d %s", n, strings.Join(words, " "))}
	if l := nameLine(r, f, n, ""); l != "" {
		lines = append(lines, l)
	}
	if l := checkLine(r, f, n, config.Check{}); l != "" {
		lines = append(lines, l)
	}
	if len(f.Errors) == 0 {
		if err := s.apply(r, x, lines); err != nil {
			f.fail(err)
		}
	}
	if f.refused() {
		s.serversView(w, r, x, http.StatusBadRequest, f)
		return
	}
	http.Redirect(w, r, "/servers", http.StatusSeeOther)
}

// slot finds the server a row's form is about, and checks that it is
// still the server the page showed (another change may have moved it).
func (s *Server) slot(r *http.Request) (int, config.Server, string) {
	n, err := strconv.Atoi(r.PostFormValue("n"))
	c := s.in.Config()
	if err != nil || n < 0 || n >= len(c.Servers) {
		return 0, config.Server{}, "There is no such server (any more). Nothing was changed."
	}
	if id := r.PostFormValue("id"); id != strconv.FormatUint(c.Servers[n].ID(), 10) {
		return 0, config.Server{}, fmt.Sprintf("Server %d has changed since the page was loaded (someone else removed or replaced a server). Nothing was changed; check and try again.", n)
	}
	return n, c.Servers[n], ""
}

// rowAction runs the command build makes for the server a row's form
// names; form errors go next to field.
func (s *Server) rowAction(w http.ResponseWriter, r *http.Request, x *session, prefix string, build func(n int, sv config.Server, f *form) []string) {
	n, sv, msg := s.slot(r)
	f := newForm(prefix+"-"+r.PostFormValue("n"), r)
	if msg != "" {
		f.ID = "page"
		f.Errors[""] = msg
		s.serversView(w, r, x, http.StatusConflict, f)
		return
	}
	lines := build(n, sv, f)
	if len(f.Errors) == 0 && len(lines) > 0 {
		if err := s.apply(r, x, lines); err != nil {
			f.fail(err)
		}
	}
	if f.refused() {
		s.serversView(w, r, x, http.StatusBadRequest, f)
		return
	}
	if len(lines) == 0 {
		s.sessions.addFlash(x, Flash{Note: fmt.Sprintf("Server %d: nothing changed.", n)})
	}
	http.Redirect(w, r, "/servers", http.StatusSeeOther)
}

func (s *Server) serverEdit(w http.ResponseWriter, r *http.Request, x *session) {
	s.rowAction(w, r, x, "edit", func(n int, sv config.Server, f *form) []string {
		words := s.serverWords(r, f, n, &sv)
		var lines []string
		if len(words) > 0 {
			lines = append(lines, fmt.Sprintf("server %d %s", n, strings.Join(words, " ")))
		}
		if l := nameLine(r, f, n, sv.Name); l != "" {
			lines = append(lines, l)
		}
		if l := checkLine(r, f, n, sv.Check); l != "" {
			lines = append(lines, l)
		}
		return lines
	})
}

func (s *Server) serverBlacklist(w http.ResponseWriter, r *http.Request, x *session) {
	s.rowAction(w, r, x, "bl", func(n int, sv config.Server, f *form) []string {
		v, msg := word(r.PostFormValue("seconds"))
		if msg == "" {
			if t, err := strconv.Atoi(v); err != nil || t < 1 {
				msg = "Seconds: a whole number, at least 1."
			}
		}
		if msg != "" {
			f.Errors["seconds"] = msg
			return nil
		}
		return []string{fmt.Sprintf("server %d blacklist %s", n, v)}
	})
}

func (s *Server) serverReinstate(w http.ResponseWriter, r *http.Request, x *session) {
	s.rowAction(w, r, x, "bl", func(n int, sv config.Server, f *form) []string {
		return []string{fmt.Sprintf("server %d blacklist 0", n)}
	})
}

func (s *Server) serverRemove(w http.ResponseWriter, r *http.Request, x *session) {
	s.rowAction(w, r, x, "rm", func(n int, sv config.Server, f *form) []string {
		return []string{fmt.Sprintf("no server %d", n)}
	})
}

// serverDrain starts (on=1) or ends (on=0) draining a server: it takes
// no new connections, its open ones finish (server N drain 1|0).
func (s *Server) serverDrain(w http.ResponseWriter, r *http.Request, x *session) {
	s.rowAction(w, r, x, "bl", func(n int, sv config.Server, f *form) []string {
		on := r.PostFormValue("on") == "1"
		if on == sv.Drain {
			return nil
		}
		return []string{fmt.Sprintf("server %d drain %s", n, map[bool]string{true: "1", false: "0"}[on])}
	})
}

// bulkActions are what the servers page does to the selected servers.
var bulkActions = map[string]string{"blacklist": "blacklist", "reinstate": "reinstate", "drain": "drain", "undrain": "end drain"}

// serverBulk blacklists, reinstates, drains or ends draining of the
// selected servers, as one change. Each selection carries the server's
// identity; a page that is out of date changes nothing.
func (s *Server) serverBulk(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("bulk", r)
	c := s.in.Config()
	action := r.PostFormValue("action")
	if _, ok := bulkActions[action]; !ok {
		f.Errors[""] = "Choose what to do with the selected servers."
	}
	secs := ""
	if action == "blacklist" {
		v, msg := word(r.PostFormValue("seconds"))
		if msg == "" {
			if t, err := strconv.Atoi(v); err != nil || t < 1 {
				msg = "Seconds: a whole number, at least 1."
			}
		}
		if msg != "" {
			f.Errors["seconds"] = msg
		}
		secs = v
	}
	var lines []string
	sel := r.PostForm["sel"]
	if len(sel) == 0 && len(f.Errors) == 0 {
		f.Errors[""] = "Select one or more servers first (the boxes in the first column)."
	}
	for _, v := range sel {
		ns, id, _ := strings.Cut(v, ":")
		n, err := strconv.Atoi(ns)
		if err != nil || n < 0 || n >= len(c.Servers) || strconv.FormatUint(c.Servers[n].ID(), 10) != id {
			f.Errors[""] = fmt.Sprintf("Server %s has changed since the page was loaded (someone else removed or replaced a server). Nothing was changed; check and try again.", ns)
			break
		}
		switch action {
		case "blacklist":
			lines = append(lines, fmt.Sprintf("server %d blacklist %s", n, secs))
		case "reinstate":
			lines = append(lines, fmt.Sprintf("server %d blacklist 0", n))
		case "drain":
			if !c.Servers[n].Drain {
				lines = append(lines, fmt.Sprintf("server %d drain 1", n))
			}
		case "undrain":
			if c.Servers[n].Drain {
				lines = append(lines, fmt.Sprintf("server %d drain 0", n))
			}
		}
	}
	if len(f.Errors) == 0 && len(lines) > 0 {
		if err := s.apply(r, x, lines); err != nil {
			f.fail(err)
		}
	}
	if f.refused() {
		s.serversView(w, r, x, http.StatusBadRequest, f)
		return
	}
	if len(lines) == 0 {
		s.sessions.addFlash(x, Flash{Note: "Nothing changed."})
	}
	http.Redirect(w, r, "/servers", http.StatusSeeOther)
}
