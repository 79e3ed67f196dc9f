package webui

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pen-lb/pen-appliance/pen/config"
)

type settingsData struct {
	Modes       []modeChoice
	Stubborn    bool
	HTTP        bool
	Blacklist   int
	Timeout     int
	Tracking    int
	IdleTimeout int
	ConnMax     int
	ClientsMax  int
	PendingMax  int
	// The network modes.
	Transparent bool
	Source      string
	DSRIf       string
	TarpitIf    string
	Admin       config.Admin
	AutoWrite   bool
	ConfigFile  string
	// ListenerError is why the admin listeners are not as configured.
	ListenerError string
}

type modeChoice struct {
	Value, Text string
	Checked     bool
}

func (s *Server) settingsView(w http.ResponseWriter, r *http.Request, x *session, status int, f *form) {
	c := s.in.Config()
	d := settingsData{
		Stubborn: c.Stubborn, HTTP: c.HTTP, Blacklist: c.Blacklist, Timeout: c.Timeout, Tracking: c.Tracking,
		IdleTimeout: c.IdleTimeout, ConnMax: c.ConnMax, ClientsMax: c.ClientsMax, PendingMax: c.PendingMax,
		Admin: c.Admin, AutoWrite: c.AutoWrite, ConfigFile: s.in.Process().ConfigFile,
		Transparent: c.Transparent, Source: addrText(c.Source), DSRIf: c.DSRIf, TarpitIf: c.TarpitIf,
	}
	if err := s.ListenerError(); err != nil {
		d.ListenerError = err.Error()
	}
	mode := modeName(c)
	for _, m := range []string{"tracking", "roundrobin", "hash", "weight", "prio"} {
		d.Modes = append(d.Modes, modeChoice{m, modeText[m], m == mode})
	}
	s.show(w, r, x, status, "settings", "Settings", f, d)
}

func (s *Server) settingsPage(w http.ResponseWriter, r *http.Request, x *session) {
	s.settingsView(w, r, x, http.StatusOK, nil)
}

// settingsSave turns the settings form into the commands for what
// changed, checks each with the grammar and applies them as one change.
func (s *Server) settingsSave(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("settings", r)
	c := s.in.Config()
	var lines []string

	mode := r.PostFormValue("mode")
	if _, ok := modeText[mode]; !ok {
		f.Errors["mode"] = "Choose a selection mode."
	} else if mode != modeName(c) {
		for _, fl := range []struct {
			name string
			on   bool
		}{{"hash", c.Hash}, {"roundrobin", c.RoundRobin}, {"weight", c.Weight}, {"prio", c.Prio}} {
			if want := fl.name == mode; want != fl.on {
				lines = append(lines, onOff(want, fl.name))
			}
		}
	}
	for _, fl := range []struct {
		name string
		on   bool
	}{{"stubborn", c.Stubborn}, {"http", c.HTTP}} {
		if want := r.PostFormValue(fl.name) != ""; want != fl.on {
			lines = append(lines, onOff(want, fl.name))
		}
	}
	for _, n := range []struct {
		cmd  string
		cur  int
		low  int
		grow bool // the table only grows
	}{
		{"blacklist", c.Blacklist, 0, false},
		{"timeout", c.Timeout, 1, false},
		{"tracking", c.Tracking, 0, false},
		{"idle_timeout", c.IdleTimeout, 0, false},
		{"conn_max", c.ConnMax, 1, true},
		{"clients_max", c.ClientsMax, 1, true},
		{"pending_max", c.PendingMax, 1, false},
	} {
		v, msg := word(r.PostFormValue(n.cmd))
		if msg != "" {
			f.Errors[n.cmd] = msg
			continue
		}
		if v == strconv.Itoa(n.cur) {
			continue
		}
		i, err := strconv.Atoi(v)
		switch {
		case err != nil:
			f.Errors[n.cmd] = "A whole number."
		case i < n.low:
			f.Errors[n.cmd] = fmt.Sprintf("At least %d.", n.low)
		case n.grow && i < n.cur:
			f.Errors[n.cmd] = fmt.Sprintf("This table only grows while pen runs (it has %d slots); restart pen to shrink it.", n.cur)
		default:
			line := fmt.Sprintf("%s %d", n.cmd, i)
			if e := s.check(line); e != "" {
				f.Errors[n.cmd] = e
			} else {
				lines = append(lines, line)
			}
		}
	}
	if r.PostFormValue("netmodes") != "" {
		lines = append(lines, s.netModeLines(r, f, c)...)
	}
	if len(f.Errors) == 0 && len(lines) > 0 {
		if err := s.apply(r, x, lines); err != nil {
			f.fail(err)
		}
	}
	if f.refused() {
		s.settingsView(w, r, x, http.StatusBadRequest, f)
		return
	}
	if len(lines) == 0 {
		s.sessions.addFlash(x, Flash{Note: "Nothing changed."})
	}
	http.Redirect(w, r, "/settings", http.StatusSeeOther)
}

// netModeLines turns the settings form's network modes into commands for
// what changed: transparent, source, dsr_if and tarpit_if (an empty field
// turns the setting off; tarpit_acl is chosen on the ACL page). Interfaces
// and addresses name no file, so the web origin may set them.
func (s *Server) netModeLines(r *http.Request, f *form, c *config.Config) []string {
	var lines []string
	if want := r.PostFormValue("transparent") != ""; want != c.Transparent {
		lines = append(lines, onOff(want, "transparent"))
	}
	for _, t := range []struct{ name, cur string }{
		{"source", addrText(c.Source)}, {"dsr_if", c.DSRIf}, {"tarpit_if", c.TarpitIf},
	} {
		v := strings.TrimSpace(r.PostFormValue(t.name))
		if v == t.cur {
			continue
		}
		line := "no " + t.name
		if v != "" {
			w, msg := word(v)
			if msg != "" {
				f.Errors[t.name] = msg
				continue
			}
			line = t.name + " " + w
		}
		if e := s.check(line); e != "" {
			f.Errors[t.name] = e
		} else {
			lines = append(lines, line)
		}
	}
	return lines
}

// addrText is an address as a form shows it: empty when unset.
func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func onOff(on bool, name string) string {
	if on {
		return name
	}
	return "no " + name
}

// The configuration page.

type configData struct {
	Text      string
	File      string
	AutoWrite bool
	BadLine   string // the upload's line that failed
	// Rejected is the copy pen kept of the configuration file when it
	// had been edited on disk before a change replaced it, or "".
	Rejected string
	// Preview: an upload waits for confirmation; Diff is how the saved
	// configuration would change ("- old", "+ new").
	Preview     bool
	PreviewName string
	Diff        []string
}

func (s *Server) configFile() string {
	if f := s.in.Process().ConfigFile; f != "" {
		return f
	}
	return "pen.cfg"
}

func (s *Server) configData(bad string) configData {
	d := configData{
		Text: string(s.in.Render(s.configFile())), File: s.in.Process().ConfigFile,
		AutoWrite: s.in.Config().AutoWrite, BadLine: bad,
	}
	if kept := s.in.Rejected(); kept != "" {
		if _, err := os.Stat(kept); err == nil {
			d.Rejected = kept
		}
	}
	return d
}

func (s *Server) configView(w http.ResponseWriter, r *http.Request, x *session, status int, f *form, bad string) {
	s.show(w, r, x, status, "config", "Configuration", f, s.configData(bad))
}

func (s *Server) configPage(w http.ResponseWriter, r *http.Request, x *session) {
	s.configView(w, r, x, http.StatusOK, nil, "")
}

func (s *Server) configDownload(w http.ResponseWriter, r *http.Request, x *session) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", filepath.Base(s.configFile())))
	w.Write(s.in.Render(s.configFile()))
}

// configUpload checks an uploaded configuration file the way pen reads
// -F (on top of the running configuration): every line, and that it
// would not lock out this browser; then it shows what would change and
// waits for the user's confirmation (configApply).
func (s *Server) configUpload(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("upload", r)
	file, hdr, err := r.FormFile("file")
	if err != nil {
		f.Errors["file"] = "Choose a file to upload."
		s.configView(w, r, x, http.StatusBadRequest, f, "")
		return
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, maxUpload+1))
	if err == nil && len(data) > maxUpload {
		err = fmt.Errorf("the file is larger than %d bytes", maxUpload)
	}
	if err != nil {
		f.Errors["file"] = err.Error()
		s.configView(w, r, x, http.StatusBadRequest, f, "")
		return
	}
	name := filepath.Base(hdr.Filename)
	if name == "." || name == "/" || strings.ContainsAny(name, "\r\n") {
		name = "upload"
	}
	s.uploadPreview(w, r, x, f, name, data)
}

// applyFile is apply for an uploaded file: errors name the line, and bad
// is that line's text. The flash lists the commands applied.
func (s *Server) applyFile(r *http.Request, x *session, name string, data []byte) (fl Flash, bad string, err error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	lines := strings.Split(string(data), "\n")
	lineOf := func(err error) string {
		var le *config.LineError
		if errors.As(err, &le) && le.Line >= 1 && le.Line <= len(lines) {
			return strings.TrimRight(lines[le.Line-1], "\r")
		}
		return ""
	}
	cur := s.in.Config()
	next, err := s.in.Preview(name, data)
	if err != nil {
		return fl, lineOf(err), fmt.Errorf("nothing was applied: %w", err)
	}
	if err := lockout(cur, next, browserOf(r)); err != nil {
		return fl, "", err
	}
	if err := stopsPen(data); err != nil {
		return fl, "", err
	}
	rejected := s.in.Rejected()
	if s.remote != nil {
		err = s.remote(lines) // another service's pen (services.go)
	} else {
		_, err = s.in.ExecLines(name, data, config.FromWeb)
	}
	if err := s.saved(&fl, err, rejected); err != nil {
		return fl, lineOf(err), fmt.Errorf("nothing was applied: %w", err)
	}
	for _, l := range lines {
		w := config.Split(l)
		if len(w) > 0 && !strings.HasPrefix(w[0], "#") {
			fl.Cmds = append(fl.Cmds, strings.Join(w, " "))
		}
	}
	s.log.Printf("admin UI: %s applied %s (%d commands)", clientName(clientAddr(r)), name, len(fl.Cmds))
	return fl, "", nil
}

func (s *Server) configWrite(w http.ResponseWriter, r *http.Request, x *session) {
	if s.in.Process().ConfigFile == "" {
		f := newForm("write", r)
		f.Errors[""] = "pen runs without a configuration file (-F), so write has nowhere to write."
		s.configView(w, r, x, http.StatusBadRequest, f, "")
		return
	}
	if err := s.apply(r, x, []string{"write"}); err != nil {
		f := newForm("write", r)
		f.fail(err)
		s.configView(w, r, x, http.StatusBadRequest, f, "")
		return
	}
	http.Redirect(w, r, "/config", http.StatusSeeOther)
}
