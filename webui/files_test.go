package webui

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The admin UI reads and writes no file that its configuration does not
// already name: these tests attack it from the outside, as an
// administrator of the load balancer who is not one of the machine.

const secretLine = "root:$6$Zb0nL9ySecretHash$q3:19000:0:99999:7:::"

// TestUploadNamesNoFiles uploads commands that name files: each is refused
// as a whole, no file is read into the answer and none is written.
func TestUploadNamesNoFiles(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	shadow := writeFile(t, filepath.Join(h.dir, "shadow"), secretLine+"\nbin:*:19000:0:99999:7:::\n")
	// A file that looks like a configuration: its lines must not be
	// applied or shown either.
	cfgLike := writeFile(t, filepath.Join(h.dir, "other.cfg"), "blacklist 99 # "+secretLine+"\n")
	out := filepath.Join(h.dir, "out")
	before := h.cfgText()
	for _, upload := range []string{
		"include " + shadow,
		"include " + cfgLike,
		"blacklist 5\ninclude " + shadow,
		"write " + out,
		"log " + out,
		"web_stats " + out,
		"pidfile " + out,
		"admin_password_file " + out,
		"admin_tls " + out + " " + out + ".key",
		"ssl_cert " + out,
		"ssl_key " + out,
		"ssl_ca_file " + shadow,
		"listen " + out + ".sock",
		"control " + out + ".sock",
		"server 0 address " + out + ".sock port 0",
	} {
		r := h.upload("evil.cfg", upload+"\n")
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, "nothing was applied") {
			t.Errorf("upload %q: HTTP %d, want 400 and nothing applied", upload, r.code)
		}
		for _, leak := range []string{secretLine, "Zb0nL9y", "bin:*"} {
			if strings.Contains(r.body, leak) {
				t.Errorf("upload %q: the answer shows %q from %s", upload, leak, shadow)
			}
		}
	}
	if got := h.cfgText(); got != before || h.webChanges() != 0 {
		t.Errorf("a refused upload changed the configuration:\n%s", got)
	}
	for _, f := range []string{out, out + ".key", out + ".sock"} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s was created", f)
		}
	}
	// A password change afterwards writes only the configured file.
	if r := h.post("/password", url.Values{"current": {testPassword}, "new": {"* * * * * root id"}, "confirm": {"* * * * * root id"}}); r.code != http.StatusSeeOther {
		t.Fatalf("password change: HTTP %d", r.code)
	}
	if _, err := os.Lstat(out); err == nil {
		t.Errorf("the password change wrote %s", out)
	}
}

// TestFormsNameNoFiles puts commands that name files into the fields of
// the forms: a field is one word of one command, so each is refused and
// nothing is written.
func TestFormsNameNoFiles(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	out := filepath.Join(h.dir, "out")
	before := h.cfgText()
	inject := []string{"5\nwrite " + out, "5\rlog " + out, "5 web_stats " + out, "5\tadmin_password_file " + out, "5;write " + out}
	for _, v := range inject {
		for _, field := range []string{"blacklist", "timeout", "tracking", "idle_timeout", "pending_max"} {
			if r := h.post("/settings", settingsForm(h, field, v)); r.code != http.StatusBadRequest {
				t.Errorf("settings %s=%q: HTTP %d, want 400", field, v, r.code)
			}
		}
		if r := h.post("/servers/add", url.Values{"address": {"127.0.0.1"}, "port": {v}}); r.code != http.StatusBadRequest {
			t.Errorf("server port %q: HTTP %d", v, r.code)
		}
		if r := h.post("/servers/add", url.Values{"address": {out + ".sock"}, "port": {"0"}}); r.code != http.StatusBadRequest {
			t.Errorf("server at a unix socket: HTTP %d", r.code)
		}
		if r := h.post("/acls/add", url.Values{"n": {"1"}, "permit": {"permit"}, "address": {v}}); r.code != http.StatusBadRequest {
			t.Errorf("acl address %q: HTTP %d", v, r.code)
		}
	}
	if got := h.cfgText(); got != before || h.webChanges() != 0 {
		t.Errorf("a refused form changed the configuration:\n%s", got)
	}
	if _, err := os.Lstat(out); err == nil {
		t.Errorf("%s was created", out)
	}
}

// TestDownloadUploadsBack: a configuration that names files (set with
// penctl) downloads from the UI and uploads back unchanged.
func TestDownloadUploadsBack(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	cert, key := filepath.Join(h.dir, "admin.crt"), filepath.Join(h.dir, "admin.key")
	if _, err := EnsureCert(cert, key, []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{
		"web_stats " + filepath.Join(h.dir, "status.html"),
		"log " + filepath.Join(h.dir, "requests.log"),
		"admin_tls " + cert + " " + key,
		"server 2 address " + filepath.Join(h.dir, "backend.sock") + " port 0",
	} {
		h.exec(l)
	}
	h.login()
	before := h.cfgText()
	r := h.get("/config/download")
	if r.code != http.StatusOK {
		t.Fatalf("download: HTTP %d", r.code)
	}
	contains(t, "download", r.body, "web_stats "+filepath.Join(h.dir, "status.html"), "admin_tls "+cert+" "+key,
		"admin_password_file ", "listen "+h.listen)
	if up := h.upload("pen.cfg", r.body); up.code != http.StatusSeeOther {
		t.Fatalf("upload of the download: HTTP %d\n%s", up.code, up.body)
	}
	if got := h.cfgText(); got != before {
		t.Errorf("the configuration changed:\n%s\nwas\n%s", got, before)
	}
}
