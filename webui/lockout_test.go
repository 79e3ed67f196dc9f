package webui

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// configWith is the default configuration with lines applied as penctl
// would (file names allowed).
func configWith(t *testing.T, lines ...string) *config.Config {
	t.Helper()
	in := config.New(config.Default(), config.Process{}, diag.Discard())
	in.SetResolver(noResolver)
	for _, l := range lines {
		if _, err := in.Exec(l, config.FromControl); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	return in.Config()
}

// TestLockoutGuard checks every setting with which the browser making a
// change would lose the admin UI, against the guard itself: some of these
// changes the admin UI refuses earlier as well (file names), but the guard
// must not depend on that.
func TestLockoutGuard(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw.txt")
	empty := filepath.Join(dir, "empty.txt")
	other := filepath.Join(dir, "other.txt")
	os.WriteFile(pw, []byte(testPassword+"\n"), 0o600)
	os.WriteFile(empty, []byte("\n"), 0o600)
	os.WriteFile(other, []byte("another password\n"), 0o600)
	// A certificate pair that works, one file that holds a secret and no
	// certificate, and a regular file where a directory would have to be.
	goodCert, goodKey := filepath.Join(dir, "good.crt"), filepath.Join(dir, "good.key")
	if _, err := EnsureCert(goodCert, goodKey, []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "shadow")
	os.WriteFile(secret, []byte("root:$6$secret-hash:19000:0:99999:7:::\n"), 0o600)
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, []byte("x"), 0o600)

	base := []string{"admin_listen 127.0.0.1:8443", "admin_password_file " + pw}
	tcp := browser{client: netipMust("127.0.0.1"), local: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 8443}}
	tlsB := tcp
	tlsB.tls = true
	unixB := browser{local: &net.UnixAddr{Name: "/run/pen/admin.sock", Net: "unix"}}
	for _, tc := range []struct {
		name   string
		cur    []string // after base
		change []string
		b      browser
		want   string // in the refusal; "" = allowed
	}{
		{"listener off", nil, []string{"no admin_listen"}, tcp, "turns off the admin listener"},
		{"unix socket", nil, []string{"admin_listen " + filepath.Join(dir, "admin.sock")}, tcp, "is a unix socket"},
		{"address the browser did not use", nil, []string{"admin_listen 192.0.2.7:8443"}, tcp, "would listen only on 192.0.2.7"},
		{"other family", nil, []string{"admin_listen [::1]:8443"}, tcp, "would listen only on ::1"},
		{"another port", nil, []string{"admin_listen 127.0.0.1:9443"}, tcp, ""},
		{"port alone", nil, []string{"admin_listen 9443"}, tcp, ""},
		{"all IPv6 addresses", nil, []string{"admin_listen [::]:9443"}, tcp, ""},
		{"browser on a unix socket", []string{"admin_listen /run/pen/admin.sock"}, []string{"admin_listen 0.0.0.0:8443"}, unixB, "through the unix socket /run/pen/admin.sock"},
		{"browser at an unknown address", nil, []string{"admin_listen 127.0.0.1:9443"}, browser{client: netipMust("127.0.0.1")}, "unknown"},
		{"tls: certificate is not one", nil, []string{"admin_tls " + secret}, tcp, "not a usable certificate"},
		{"tls: directory is a file", nil, []string{"admin_tls " + filepath.Join(notDir, "a.crt") + " " + filepath.Join(notDir, "a.key")}, tcp, "not a directory"},
		{"tls: key is not one", nil, []string{"admin_tls " + filepath.Join(dir, "new.crt") + " " + secret}, tcp, "key " + secret + " is unusable"},
		{"tls: generated on first use", nil, []string{"admin_tls " + filepath.Join(dir, "tls", "new.crt") + " " + filepath.Join(dir, "tls", "new.key")}, tcp, ""},
		{"tls: existing pair", nil, []string{"admin_tls " + goodCert + " " + goodKey}, tcp, ""},
		{"tls off under https", []string{"admin_tls " + goodCert + " " + goodKey}, []string{"no admin_tls"}, tlsB, "turns off TLS"},
		{"tls off over plain http", []string{"admin_tls " + goodCert + " " + goodKey}, []string{"no admin_tls"}, tcp, ""},
		{"no password file", nil, []string{"no admin_password_file"}, tcp, "nobody could log in"},
		{"missing password file", nil, []string{"admin_password_file " + filepath.Join(dir, "missing.txt")}, tcp, "no admin password is set"},
		{"empty password file", nil, []string{"admin_password_file " + empty}, tcp, "no admin password is set"},
		{"empty first, good second", nil, []string{"admin_password_file " + empty + " " + pw}, tcp, "no admin password is set"},
		{"password file is a directory", nil, []string{"admin_password_file " + dir}, tcp, "nobody could log in"},
		{"another password file", nil, []string{"admin_password_file " + other}, tcp, ""},
		{"missing first, good second", nil, []string{"admin_password_file " + filepath.Join(dir, "missing.txt") + " " + pw}, tcp, ""},
		{"acl denies the browser", []string{"admin_acl 1"}, []string{"acl 1 deny 127.0.0.1"}, tcp, "lock yourself out"},
		{"admin_acl to a list that denies", []string{"acl 2 deny 127.0.0.0 255.0.0.0"}, []string{"admin_acl 2"}, tcp, "lock yourself out"},
		{"acl permits the browser", []string{"admin_acl 1"}, []string{"acl 1 permit 127.0.0.1", "acl 1 deny 0.0.0.0 0.0.0.0"}, tcp, ""},
		{"unrelated change", nil, []string{"blacklist 7"}, tlsB, ""},
	} {
		cur := configWith(t, append(base, tc.cur...)...)
		next := configWith(t, append(append(base, tc.cur...), tc.change...)...)
		err := lockout(cur, next, tc.b)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && err == nil:
			t.Errorf("%s: allowed, want refused with %q", tc.name, tc.want)
		case tc.want != "" && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: refused with %q, want %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret-hash") {
			t.Errorf("%s: the refusal shows a file's contents: %v", tc.name, err)
		}
	}
}

// TestLockoutOverHTTP makes the changes the guard refuses through the
// admin UI itself, uploads and forms: each is refused, nothing changes,
// and autowrite saves nothing.
func TestLockoutOverHTTP(t *testing.T) {
	h := newHarness(t, harnessOpt{tls: true})
	cert, key := filepath.Join(h.dir, "admin.crt"), filepath.Join(h.dir, "admin.key")
	if _, err := EnsureCert(cert, key, []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	h.exec("admin_tls " + cert + " " + key)
	cfgFile := filepath.Join(h.dir, "pen.cfg")
	if _, err := h.in.ExecFile(writeFile(t, cfgFile, "blacklist 30\n"), config.FromFile); err != nil {
		t.Fatal(err)
	}
	h.exec("autowrite")
	saved, _ := os.ReadFile(cfgFile)
	h.login()
	before := h.cfgText()
	for _, file := range []string{
		"admin_listen 192.0.2.7:8443\n",
		"admin_listen " + filepath.Join(h.dir, "admin.sock") + "\n",
		"no admin_tls\n",
		"admin_tls " + filepath.Join(h.dir, "pw-is-no-cert") + "\n",
		"admin_password_file " + filepath.Join(h.dir, "missing.txt") + "\n",
		"no admin_password_file\n",
		"no admin_listen\n",
	} {
		r := h.upload("lock.cfg", file)
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, "Refused") && !strings.Contains(r.body, "cannot be set from the admin UI") {
			t.Errorf("upload %q: HTTP %d\n%s", file, r.code, r.body)
		}
	}
	if got := h.cfgText(); got != before || h.webChanges() != 0 {
		t.Errorf("a refused change was applied:\n%s", got)
	}
	if now, _ := os.ReadFile(cfgFile); string(now) != string(saved) {
		t.Errorf("autowrite saved a refused change:\n%s", now)
	}
	// An address the browser uses, on another port, is fine.
	if r := h.upload("move.cfg", "admin_listen 127.0.0.1:2\n"); r.code != http.StatusSeeOther {
		t.Errorf("moving the listener to another port of 127.0.0.1: HTTP %d\n%s", r.code, r.body)
	}
}

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestExitRefused: with exit enabled (-X), an upload with exit is refused
// (it would stop pen and the admin UI), and pen keeps running.
func TestExitRefused(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	p := h.in.Process()
	p.ExitEnabled = true
	h.in.SetProcess(p)
	h.login()
	for _, file := range []string{"exit\n", "blacklist 9\n  exit  \n", "exit\r\n"} {
		r := h.upload("stop.cfg", file)
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, "exit stops pen") {
			t.Errorf("upload %q: HTTP %d", file, r.code)
		}
	}
	select {
	case <-h.eng.Done():
		t.Fatal("pen stopped")
	case <-time.After(100 * time.Millisecond):
	}
	if h.webChanges() != 0 || h.in.Config().Blacklist == 9 {
		t.Error("a refused upload changed the configuration")
	}
	if r := h.get("/healthz"); r.code != http.StatusOK {
		t.Errorf("/healthz: HTTP %d", r.code)
	}
}
