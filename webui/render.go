package webui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pen-lb/pen-appliance/pen/version"
)

//go:embed assets
var assets embed.FS

// pageNames are the templates in assets/templates, each rendered inside
// layout.html.
var pageNames = []string{"login", "dashboard", "servers", "acls", "settings", "config", "firmware", "rebooting", "services"}

var funcs = template.FuncMap{
	"bytes":    humanBytes,
	"duration": humanDuration,
	"clock":    func(t time.Time) string { return t.Format("15:04:05") },
	"add":      func(a, b int) int { return a + b },
	"series":   func(i int) int { return i % 10 }, // colour of a server in the chart
	"seq": func(from, to int) []int {
		var out []int
		for i := from; i <= to; i++ {
			out = append(out, i)
		}
		return out
	},
}

// parseTemplates parses the pages once; templates are safe for
// concurrent use, and the appliance's services make a Server per request
// of another service's page.
func parseTemplates() map[string]*template.Template {
	templatesOnce.Do(func() { parsedTemplates = parseAll() })
	return parsedTemplates
}

var (
	templatesOnce   sync.Once
	parsedTemplates map[string]*template.Template
)

func parseAll() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t := template.New("layout.html").Funcs(funcs)
		out[name] = template.Must(t.ParseFS(assets, "assets/templates/layout.html", "assets/templates/parts.html", "assets/templates/services-parts.html", "assets/templates/"+name+".html"))
	}
	return out
}

// assetHandler serves the style sheet and the script.
func assetHandler() http.Handler {
	sub, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// view is what every page template gets.
type view struct {
	Title    string
	Nav      string // the current section, for the menu
	CSRF     string
	Flash    []Flash
	Version  string
	Host     string
	LoggedIn bool
	Form     *form // the form that was just submitted, with its errors
	Data     any

	// Service is the appliance's service whose pages these are ("" for
	// a pen not run by the appliance); Services lists them all on the
	// dashboard.
	Service  string
	Services []serviceRow
}

// Err is the error to show next to field of form id, if that form was the
// one submitted. In a form that edits running values the message names
// what was refused, since the field shows the running value again.
func (v *view) Err(id, field string) string {
	if v.Form == nil || v.Form.ID != id {
		return ""
	}
	msg := v.Form.Errors[field]
	if msg == "" || v.Form.Keep {
		return msg
	}
	if vals := v.Form.Values[field]; len(vals) > 0 && strings.TrimSpace(vals[0]) != "" && !strings.Contains(msg, "Not applied") {
		return fmt.Sprintf("%s (you entered %q; the field shows the value in effect)", msg, vals[0])
	}
	return msg
}

// ErrID is the element id of the error of field in form id, the target
// of the "Not applied" banner's links.
func (v *view) ErrID(id, field string) string { return errID(id, field) }

func errID(id, field string) string { return "err-" + id + "-" + field }

// Val is the value to put into field of form id. A refused form that
// edits running values shows them again (nothing was applied, so the
// page tells the truth and the next Apply does not repeat the refused
// value); a refused form that adds something new keeps what was typed.
func (v *view) Val(id, field string, def any) string {
	if v.Form != nil && v.Form.ID == id && v.Form.Keep {
		if vals, ok := v.Form.Values[field]; ok && len(vals) > 0 {
			return vals[0]
		}
	}
	return fmt.Sprint(def)
}

// Failed reports whether form id was submitted and refused.
func (v *view) Failed(id string) bool {
	return v.Form != nil && v.Form.ID == id && len(v.Form.Errors) > 0
}

// form is a submitted form and its errors by field ("" for the form as a
// whole).
type form struct {
	ID     string
	Values url.Values
	Errors map[string]string
	// Keep: the form adds something new, so a refused form keeps what
	// was typed; other forms show the running values again.
	Keep bool
	// Confirm is set when the change waits for the user to confirm its
	// consequences.
	Confirm *confirmation
	Action  string // the path the form was posted to
	Back    string // the page it came from
}

// fieldError is one entry of the "Not applied" banner.
type fieldError struct {
	Target string // element id of the message
	Label  string
	Msg    string
}

// FieldErrors lists the errors of the form's fields (not the form-level
// one), in field order, for the banner at the top of the page.
func (f *form) FieldErrors() []fieldError {
	var out []fieldError
	for k, msg := range f.Errors {
		if k == "" {
			continue
		}
		out = append(out, fieldError{Target: errID(f.ID, k), Label: fieldLabel(f.ID, k), Msg: msg})
	}
	slices.SortFunc(out, func(a, b fieldError) int { return strings.Compare(a.Label, b.Label) })
	return out
}

// Count is the number of errors.
func (f *form) Count() int { return len(f.Errors) }

// settingLabels name the settings form's fields as the page does.
var settingLabels = map[string]string{
	"mode": "selection mode", "blacklist": "blacklist time", "timeout": "connect timeout", "tracking": "client tracking",
	"idle_timeout": "idle timeout", "conn_max": "connections (conn_max)", "clients_max": "tracked clients (clients_max)",
	"pending_max": "connects in progress (pending_max)",
}

func fieldLabel(id, field string) string {
	switch {
	case id == "settings" && settingLabels[field] != "":
		return settingLabels[field]
	case id == "bulk":
		return "selected servers, " + field
	case strings.HasPrefix(id, "edit-"):
		return "server " + strings.TrimPrefix(id, "edit-") + ", " + field
	case strings.HasPrefix(id, "bl-"):
		return "server " + strings.TrimPrefix(id, "bl-") + ", blacklist seconds"
	case id == "add":
		return "new server, " + field
	case strings.HasPrefix(id, "add-"):
		return "ACL " + strings.TrimPrefix(id, "add-") + ", " + field
	}
	return field
}

func newForm(id string, r *http.Request) *form {
	back := r.URL.Path
	if i := strings.Index(back[1:], "/"); i >= 0 {
		back = back[:i+1]
	}
	return &form{ID: id, Values: r.PostForm, Errors: map[string]string{}, Keep: id == "add" || strings.HasPrefix(id, "add-") || id == "upload",
		Action: r.URL.Path, Back: back}
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, v *view) {
	v.Version = version.Version
	v.Host = s.host
	var buf bytes.Buffer
	if err := s.pages[name].Execute(&buf, v); err != nil {
		s.log.Printf("admin UI: rendering %s: %v", name, err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// show renders a page for a logged-in session, with its pending messages.
func (s *Server) show(w http.ResponseWriter, r *http.Request, x *session, status int, name, title string, f *form, data any) {
	if f != nil && f.Confirm != nil && len(f.Errors) == 0 {
		status = http.StatusOK // a question, not a refusal
	}
	s.render(w, r, status, name, &view{
		Title: title, Nav: name, CSRF: x.csrf, Flash: s.sessions.takeFlash(x),
		LoggedIn: true, Form: f, Data: data, Service: s.pageService(), Services: s.dashboardServices(name),
	})
}

func humanBytes(v any) string {
	var n float64
	switch x := v.(type) {
	case uint64:
		n = float64(x)
	case int:
		n = float64(x)
	case int64:
		n = float64(x)
	case float64:
		n = x
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(n, 'f', 0, 64) + " B"
	}
	return strconv.FormatFloat(n, 'f', 1, 64) + " " + units[i]
}

func humanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%d s", int(d.Seconds()))
	}
	if d < time.Hour {
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
