package webui

import (
	"html"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// autowriteHarness is a harness whose -F file (dir/etc/pen.cfg, with
// autowrite) pen has read.
func autowriteHarness(t *testing.T) (h *harness, cfgFile string) {
	t.Helper()
	h = newHarness(t, harnessOpt{})
	etc := filepath.Join(h.dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgFile = writeFile(t, filepath.Join(etc, "pen.cfg"), "autowrite\nblacklist 30\n")
	p := h.in.Process()
	p.ConfigFile = cfgFile
	h.in.SetProcess(p)
	if _, err := h.in.ExecFile(cfgFile, config.FromFile); err != nil {
		t.Fatal(err)
	}
	h.login()
	return h, cfgFile
}

// TestUnsavedChangeSaysSo: when autowrite cannot save a change made in
// the admin UI (here the file's directory is gone), the change is in
// effect and the page says "Applied, but not saved" with the reason, for
// a form and for an upload.
func TestUnsavedChangeSaysSo(t *testing.T) {
	h, cfgFile := autowriteHarness(t)
	etc := filepath.Dir(cfgFile)
	if err := os.RemoveAll(etc); err != nil {
		t.Fatal(err)
	}
	writeFile(t, etc, "a file where the directory was\n")

	if r := h.post("/servers/add", url.Values{"address": {"127.0.0.1"}, "port": {"11"}}); r.code != http.StatusSeeOther {
		t.Fatalf("add: HTTP %d\n%s", r.code, r.body)
	}
	page := h.get("/servers").body
	contains(t, "page after an unsaved change", page, `class="flash warn"`, "Applied, but not saved:</strong> writing "+cfgFile+": ",
		"server 2 address 127.0.0.1 port 11")
	if strings.Contains(page, `class="flash ok"`) {
		t.Error("an unsaved change is shown as plainly applied")
	}
	if n := len(h.in.Config().Servers); n != 3 {
		t.Errorf("%d servers: the change is not in effect", n)
	}
	if r := h.upload("more.cfg", "blacklist 12\n"); r.code != http.StatusSeeOther {
		t.Fatalf("upload: HTTP %d\n%s", r.code, r.body)
	}
	contains(t, "page after an unsaved upload", html.UnescapeString(h.get("/config").body), "Applied, but not saved:", "Applied more.cfg.", "+ blacklist 12")
	if h.in.Config().Blacklist != 12 {
		t.Error("the upload is not in effect")
	}
}

// TestEditedFileKeptSaysSo: the -F file edited on disk (and not yet read
// again) is kept beside it when a change from the UI is saved, and the UI
// says where.
func TestEditedFileKeptSaysSo(t *testing.T) {
	h, cfgFile := autowriteHarness(t)
	edited := "autowrite\nblacklist 30\n# my edit, not read yet\nserver 7 address 127.0.0.1 port 77\n"
	writeFile(t, cfgFile, edited)
	if r := h.post("/servers/add", url.Values{"address": {"127.0.0.1"}, "port": {"11"}}); r.code != http.StatusSeeOther {
		t.Fatalf("add: HTTP %d\n%s", r.code, r.body)
	}
	kept := cfgFile + ".rejected"
	if data, err := os.ReadFile(kept); err != nil || string(data) != edited {
		t.Fatalf("%s: %q %v", kept, data, err)
	}
	contains(t, "page after the change", h.get("/servers").body, "pen kept that text in <span class=\"mono\">"+kept+"</span>")
	contains(t, "configuration page", h.get("/config").body, "pen kept that text in <span class=\"mono\">"+kept+"</span>")
}

// TestWriteFailureSaysSo: the Write button when the file cannot be written
// answers with the reason, as not saved.
func TestWriteFailureSaysSo(t *testing.T) {
	h, cfgFile := autowriteHarness(t)
	etc := filepath.Dir(cfgFile)
	if err := os.RemoveAll(etc); err != nil {
		t.Fatal(err)
	}
	writeFile(t, etc, "a file where the directory was\n")
	r := h.post("/config/write", nil)
	if r.code != http.StatusBadRequest {
		t.Fatalf("write: HTTP %d", r.code)
	}
	contains(t, "write page", r.body, "<strong>Not saved.</strong> write: not saved to "+cfgFile+": ")
}
