package acceptance

// The -F file is never lost: pen does not write it before reading it,
// keeps a user's edit that it refused, writes through a symlink, and tells
// penctl when a change could not be saved.

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// userCfg is a configuration a user wrote: servers (nothing needs to
// answer there) and a listener on a unix socket in dir.
func userCfg(dir string) string {
	return "# written by hand\nlisten " + filepath.Join(dir, "l.sock") + "\n" +
		"server 0 address 127.0.0.1 port 1\nserver 1 address 127.0.0.1 port 2\n"
}

func readText(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// pen -F pen.cfg -O autowrite read pen.cfg only after autowrite had
// replaced it with the empty running configuration; -O write did the same.
func TestConfigNotWrittenBeforeRead(t *testing.T) {
	begin(t, 60*time.Second)
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "pen.cfg")
	writeFile(t, cfg, userCfg(dir))

	q := startPen(t, penOpts{NoWait: true, Dir: dir, Name: "pen -O write"}, "-F", cfg, "-O", "write")
	if !q.waitExit(10 * time.Second) {
		t.Fatal("pen -F pen.cfg -O write did not exit")
	}
	if q.exitCode() == 0 || !strings.Contains(q.output(), "has not been read yet") {
		t.Errorf("pen -F pen.cfg -O write: exit %d, output %q; want a refusal", q.exitCode(), q.output())
	}
	if got := readText(t, cfg); got != userCfg(dir) {
		t.Fatalf("-O write replaced the file before reading it:\n%s", got)
	}

	p := startPen(t, penOpts{Control: true, Dir: dir}, "-F", cfg, "-O", "autowrite")
	p.expectCtl("blacklist 7", "7\n")
	got := readText(t, cfg)
	for _, want := range []string{"\nserver 0 acl 0 address 127.0.0.1 port 1 ", "\nserver 1 acl 0 address 127.0.0.1 port 2 ", "\nblacklist 7\n", "\nautowrite\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("after pen -F pen.cfg -O autowrite and a change, pen.cfg lacks %q:\n%s", want, got)
		}
	}
}

// After a HUP refuses an edited file, the next autowrite keeps the user's
// text as pen.cfg.rejected and says so in the log.
func TestConfigRejectedEditKept(t *testing.T) {
	begin(t, 60*time.Second)
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "pen.cfg")
	writeFile(t, cfg, userCfg(dir)+"autowrite\n")
	p := startPen(t, penOpts{Control: true, Dir: dir}, "-F", cfg)
	edit := userCfg(dir) + "autowrite\nserver 2 address 127.0.0.1 port 3 wieght 2\n"
	writeFile(t, cfg, edit)
	// pen answers on its control socket a moment before it handles
	// signals; an early HUP would end it.
	time.Sleep(300 * time.Millisecond)
	p.signal(syscall.SIGHUP)
	if !waitFor(6*time.Second, func() bool { return strings.Contains(p.output(), "configuration not changed") }) {
		t.Fatalf("pen did not report the refused HUP; output:\n%s", p.output())
	}
	p.expectCtl("tracking 5", "5\n")
	if got := readText(t, cfg+".rejected"); got != edit {
		t.Errorf("pen.cfg.rejected holds %q, want the user's edit", got)
	}
	if !strings.Contains(readText(t, cfg), "\ntracking 5\n") {
		t.Error("the change was not saved")
	}
	if !strings.Contains(p.output(), "its text is kept in "+cfg+".rejected") {
		t.Errorf("the log does not say where the edit is kept:\n%s", p.output())
	}
}

// Autowrite through a symlinked pen.cfg replaces the link's target and
// keeps the link.
func TestConfigSymlinkKept(t *testing.T) {
	begin(t, 60*time.Second)
	dir := sharedDir(t)
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(real, 0o777); err != nil { // pen may run as nobody
		t.Fatal(err)
	}
	target := filepath.Join(real, "pen.cfg")
	writeFile(t, target, userCfg(dir)+"autowrite\n")
	cfg := filepath.Join(dir, "pen.cfg")
	if err := os.Symlink("real/pen.cfg", cfg); err != nil {
		t.Fatal(err)
	}
	p := startPen(t, penOpts{Control: true, Dir: dir}, "-F", cfg)
	p.expectCtl("blacklist 8", "8\n")
	fi, err := os.Lstat(cfg)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("pen.cfg is no longer a symlink: %v %v", fi.Mode(), err)
	}
	if !strings.Contains(readText(t, target), "\nblacklist 8\n") {
		t.Errorf("the symlink's target was not written:\n%s", readText(t, target))
	}
}

// A change that cannot be saved is applied, and penctl says it was not
// saved and exits non-zero; write that fails answers with the reason.
func TestConfigSaveFailureReported(t *testing.T) {
	begin(t, 60*time.Second)
	dir := sharedDir(t)
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(ro, "pen.cfg")
	writeFile(t, cfg, userCfg(dir)+"autowrite\n")
	// pen (nobody when the test runs as root) cannot create files in ro.
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(ro, 0o755) })
	if !asRoot() {
		// A user who owns the directory may still not write it with
		// mode 0555; root may, so pen runs as nobody there (-u).
		if f, err := os.CreateTemp(ro, "probe"); err == nil {
			f.Close()
			os.Remove(f.Name())
			t.Fatal("the read-only directory is writable; the test cannot make a save fail")
		}
	}
	p := startPen(t, penOpts{Control: true, Dir: dir}, "-F", cfg)
	r := runPenctlStatus(t, p.Ctl, "blacklist", "9")
	if r.Code == 0 || !strings.Contains(r.Stderr, "applied, but not saved to "+cfg+": ") {
		t.Errorf("penctl blacklist 9: exit %d, stdout %q, stderr %q; want exit 1 and \"applied, but not saved\"", r.Code, r.Stdout, r.Stderr)
	}
	p.expectCtl("blacklist", "9\n")
	r = runPenctlStatus(t, p.Ctl, "write")
	if r.Code == 0 || !strings.Contains(r.Stderr, "write: not saved to "+cfg+": ") {
		t.Errorf("penctl write: exit %d, stdout %q, stderr %q; want exit 1 and the reason", r.Code, r.Stdout, r.Stderr)
	}
	if got := readText(t, cfg); got != userCfg(dir)+"autowrite\n" {
		t.Errorf("pen.cfg changed although it could not be written:\n%s", got)
	}
}
