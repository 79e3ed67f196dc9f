package acceptance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestControlSocketPathOwnedElsewhere: pen does not unlink what is at its
// -C path unless it is a stale socket: a second pen on a live pen's socket
// and a pen pointed at a regular file exit 1 with a clear message and
// leave the other's file alone; a stale socket (left by a killed pen) is
// replaced.
func TestControlSocketPathOwnedElsewhere(t *testing.T) {
	begin(t, 60*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port := freePort(t, "tcp")
	first := startPen(t, penOpts{Control: true, TCP: port}, lst(port), b.spec())

	// A second pen with the same -C path.
	port2 := freePort(t, "tcp")
	second := startPen(t, penOpts{Name: "second pen", NoWait: true}, append(asUser(), "-C", first.Ctl, lst(port2), b.spec())...)
	if !second.waitExit(10 * time.Second) {
		t.Fatalf("a second pen on a live control socket did not exit")
	}
	if code := second.exitCode(); code != 1 || !strings.Contains(second.stderr.String(), "another process listens on this socket") {
		t.Errorf("second pen on %s: exit %d, stderr %q; want exit 1 and a refusal", first.Ctl, code, second.stderr.String())
	}
	if got := penctl(t, first.Ctl, "blacklist"); got != "30\n" {
		t.Errorf("the first pen's control socket after the second pen gave up: %q, want %q", got, "30\n")
	}

	// A regular file at the -C path.
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "pen.cfg")
	writeFile(t, cfg, "blacklist 10\n")
	third := startPen(t, penOpts{Name: "pen on a file", NoWait: true}, append(asUser(), "-C", cfg, lst(port2), b.spec())...)
	if !third.waitExit(10 * time.Second) {
		t.Fatalf("pen with -C naming a regular file did not exit")
	}
	if code := third.exitCode(); code != 1 || !strings.Contains(third.stderr.String(), "a regular file is there and is not a socket") {
		t.Errorf("pen -C %s: exit %d, stderr %q; want exit 1 and a refusal", cfg, code, third.stderr.String())
	}
	if got := readFileString(cfg); got != "blacklist 10\n" {
		t.Errorf("%s after pen refused it: %q, want it untouched", cfg, got)
	}

	// A stale socket: the first pen is killed and leaves its socket.
	first.kill()
	if _, err := os.Lstat(first.Ctl); err != nil {
		t.Fatalf("a killed pen left no socket behind to test with: %v", err)
	}
	fourth := startPen(t, penOpts{Name: "pen after a killed one", TCP: port2}, append(asUser(), "-C", first.Ctl, lst(port2), b.spec())...)
	if !waitFor(5*time.Second, func() bool { return listeningUnix(first.Ctl) }) {
		t.Fatalf("pen did not replace the stale socket %s", first.Ctl)
	}
	if got := penctl(t, first.Ctl, "blacklist"); got != "30\n" {
		t.Errorf("control through the replaced socket: %q, want %q", got, "30\n")
	}
	fourth.mustBeAlive()
}
