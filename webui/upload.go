package webui

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// An uploaded configuration is first previewed: the page shows how the
// configuration pen would save differs from the running one, and the
// upload is applied only when the user confirms. Until then it waits
// here, one per session, at most maxPending in all, for pendingTTL.

const (
	maxPending = 4
	pendingTTL = 15 * time.Minute
)

type pendingUpload struct {
	name    string
	data    []byte
	token   string
	created time.Time
}

type pendingUploads struct {
	mu sync.Mutex
	m  map[string]*pendingUpload // by session id
}

func (p *pendingUploads) put(x *session, u *pendingUpload) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]*pendingUpload{}
	}
	for id, o := range p.m {
		if u.created.Sub(o.created) > pendingTTL {
			delete(p.m, id)
		}
	}
	delete(p.m, x.id)
	for len(p.m) >= maxPending { // the oldest goes
		var oldest string
		for id, o := range p.m {
			if oldest == "" || o.created.Before(p.m[oldest].created) {
				oldest = id
			}
		}
		delete(p.m, oldest)
	}
	p.m[x.id] = u
}

// take returns and removes the session's upload if token names it.
func (p *pendingUploads) take(x *session, token string, now time.Time) *pendingUpload {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.m[x.id]
	if u == nil || u.token != token || now.Sub(u.created) > pendingTTL {
		return nil
	}
	delete(p.m, x.id)
	return u
}

// configDiff is how the configuration write would save changes from cur
// to next: the lines that go ("-") and the lines that come ("+"), each
// in its file's order. write's layout is canonical (one line per
// setting, in a fixed order), so a line that differs is a setting that
// changes.
func configDiff(cur, next []byte) []string {
	lines := func(b []byte) []string {
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if l == "" || strings.HasPrefix(l, "# Generated") {
				continue
			}
			out = append(out, l)
		}
		return out
	}
	a, b := lines(cur), lines(next)
	inA, inB := map[string]int{}, map[string]int{}
	for _, l := range a {
		inA[l]++
	}
	for _, l := range b {
		inB[l]++
	}
	var out []string
	for _, l := range a {
		if inB[l] > 0 {
			inB[l]--
			continue
		}
		out = append(out, "- "+l)
	}
	for _, l := range b {
		if inA[l] > 0 {
			inA[l]--
			continue
		}
		out = append(out, "+ "+l)
	}
	return out
}

// uploadPreview checks an upload as applyFile will and shows the
// difference with a confirmation; nothing is applied.
func (s *Server) uploadPreview(w http.ResponseWriter, r *http.Request, x *session, f *form, name string, data []byte) {
	lines := strings.Split(string(data), "\n")
	cur := s.in.Config()
	next, err := s.in.Preview(name, data)
	if err == nil {
		err = lockout(cur, next, browserOf(r))
	}
	if err == nil {
		err = stopsPen(data)
	}
	if err != nil {
		bad := ""
		if le, ok := err.(*config.LineError); ok && le.Line >= 1 && le.Line <= len(lines) {
			bad = strings.TrimRight(lines[le.Line-1], "\r")
		}
		if _, ok := err.(*config.LineError); ok {
			f.Errors["file"] = "nothing was applied: " + err.Error()
		} else {
			f.Errors["file"] = err.Error()
		}
		s.configView(w, r, x, http.StatusBadRequest, f, bad)
		return
	}
	now := s.now()
	p := s.in.Process()
	diff := configDiff(config.Render(cur, p, s.configFile(), now), config.Render(next, p, s.configFile(), now))
	sum := sha256.Sum256(append([]byte(x.id+"\n"+name+"\n"), data...))
	u := &pendingUpload{name: name, data: data, token: hex.EncodeToString(sum[:12]), created: now}
	s.pending.put(x, u)
	var cmds []string
	for _, l := range lines {
		if w := config.Split(l); len(w) > 0 && !strings.HasPrefix(w[0], "#") {
			cmds = append(cmds, strings.Join(w, " "))
		}
	}
	f.Confirm = &confirmation{
		Consequences: s.consequences(cur, next, cmds),
		Action:       "/config/apply", Values: []hiddenValue{{"name", name}}, Token: u.token, Back: "/config",
		Submit: "Apply " + name,
	}
	d := s.configData("")
	d.Preview, d.PreviewName, d.Diff = true, name, diff
	s.show(w, r, x, http.StatusOK, "config", "Configuration", f, d)
}

// configApply applies the upload the user confirmed.
func (s *Server) configApply(w http.ResponseWriter, r *http.Request, x *session) {
	f := newForm("upload", r)
	u := s.pending.take(x, r.PostFormValue("confirm"), s.now())
	if u == nil {
		f.Errors["file"] = "That upload is not waiting any more (it was applied, replaced by another upload, or waited longer than 15 minutes). Nothing was applied; upload it again."
		s.configView(w, r, x, http.StatusConflict, f, "")
		return
	}
	before := s.in.Render(s.configFile())
	fl, badLine, err := s.applyFile(r, x, u.name, u.data)
	if err != nil {
		f.Errors["file"] = err.Error()
		s.configView(w, r, x, http.StatusBadRequest, f, badLine)
		return
	}
	fl.Changed = configDiff(before, s.in.Render(s.configFile()))
	n := len(fl.Changed)
	switch n {
	case 0:
		fl.Note = "Applied " + u.name + ": the configuration did not change."
	default:
		fl.Note = "Applied " + u.name + "."
	}
	fl.Cmds = nil
	s.sessions.addFlash(x, fl)
	http.Redirect(w, r, "/config", http.StatusSeeOther)
}
