package acceptance

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runBinary runs bin with args and returns its output and exit status.
func runBinary(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within 10s", filepath.Base(bin), strings.Join(args, " "))
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running %s: %v", bin, err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// TestHelpAndVersion: pen and penctl answer --help with their usage on
// standard output and --version with the version, both with status 0
// (pen used to print "invalid option -- '-'").
func TestHelpAndVersion(t *testing.T) {
	begin(t, 30*time.Second)
	for _, c := range []struct {
		bin, arg, want string
	}{
		{penBin, "--help", "usage:\n  pen "},
		{penBin, "--version", "pen "},
		{penctlBin, "--help", "usage: penctl "},
		{penctlBin, "--version", "penctl "},
	} {
		out, errOut, code := runBinary(t, c.bin, c.arg)
		if code != 0 || !strings.HasPrefix(out, c.want) || errOut != "" {
			t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want 0 and stdout starting %q", filepath.Base(c.bin), c.arg, code, firstLine(out), errOut, c.want)
		}
	}
	out, _, _ := runBinary(t, penBin, "--help")
	for _, want := range []string{"--version", "admin_listen", "autowrite", "-m N", "-q N"} {
		if !strings.Contains(out, want) {
			t.Errorf("pen --help does not mention %s", want)
		}
	}
	if strings.Contains(out, "use poll()") || strings.Contains(out, "kqueue") {
		t.Errorf("pen --help still offers -P or -Q, which pen does not have")
	}
	if out, errOut, code := runBinary(t, penBin, "--bogus"); code != 0 || !strings.Contains(errOut, "unrecognized option '--bogus'") || !strings.HasPrefix(out, "usage:") {
		t.Errorf("pen --bogus: exit %d, stderr %q; want Pen's way: the reason, the usage and 0", code, errOut)
	}
}

// TestHashOptionKept: -h still means hash, as in Pen, not help.
func TestHashOptionKept(t *testing.T) {
	begin(t, 30*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port}, "-h", lst(port), b.spec())
	p.expectCtl("mode", "hash no roundrobin no stubborn no weight no prio\n")
}

// TestMissingConfigFileRefused: a -F file that does not exist stops pen at
// start-up with a clear message (it used to be logged, and pen ran
// without the servers the file should have given).
func TestMissingConfigFileRefused(t *testing.T) {
	begin(t, 30*time.Second)
	dir := sharedDir(t)
	missing := filepath.Join(dir, "pen.cfg")
	port := freePort(t, "tcp")
	for _, fg := range [][]string{{"-f"}, nil} {
		_, errOut, code := runBinary(t, penBin, append(fg, "-F", missing, lst(port))...)
		if code != 1 || !strings.Contains(errOut, "can't read config file '"+missing+"'") {
			t.Errorf("pen %s -F %s: exit %d, stderr %q; want 1 and the file named", strings.Join(fg, " "), missing, code, errOut)
		}
		if listeningTCP(port) {
			t.Fatalf("pen listens on %d although its -F file is missing", port)
		}
	}
	if fileExists(missing) {
		t.Errorf("pen created %s", missing)
	}
}

// TestNoServersWarned: pen started without servers says so.
func TestNoServersWarned(t *testing.T) {
	begin(t, 30*time.Second)
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{TCP: port}, lst(port))
	if !waitFor(3*time.Second, func() bool { return strings.Contains(p.stderr.String(), "warning: no servers are configured") }) {
		t.Errorf("pen without servers did not warn; stderr:\n%s", p.stderr.String())
	}
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port2 := freePort(t, "tcp")
	q := startPen(t, penOpts{TCP: port2, Name: "pen with a server"}, lst(port2), b.spec())
	expectGet(t, "pen with a server", ip1, lst(port2), "100")
	if strings.Contains(q.stderr.String(), "no servers") {
		t.Errorf("pen with a server warned about having none: %s", q.stderr.String())
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// TestPidfileNeverDestroysAFile: -p names the pidfile, and Pen overwrites
// whatever is there. pen refuses, before it opens anything, a file that
// holds something other than a process id ("-p pen.cfg" typed for "-F
// pen.cfg") and a symbolic link (pen started as root, led by a link in a
// shared directory to another file), and leaves both untouched. A stale
// pidfile is replaced; at exit the pidfile is removed only while it holds
// pen's own process id.
func TestPidfileNeverDestroysAFile(t *testing.T) {
	begin(t, 60*time.Second)
	dir := sharedDir(t)
	echo := startEchoBackend(t)
	cfg := filepath.Join(dir, "pen.cfg")
	userText := "# my servers\nserver 0 address 127.0.0.1 port 81\n"
	writeFile(t, cfg, userText)
	link := filepath.Join(dir, "link.pid")
	if err := os.Symlink(cfg, link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ pidfile, why string }{
		{cfg, "holds something other than a process id"},
		{link, "symbolic link"},
	} {
		port := freePort(t, "tcp")
		_, stderr, code := runBinary(t, penBin, "-f", "-p", c.pidfile, lst(port), echo.spec())
		if code == 0 || !strings.Contains(stderr, "Can't create pidfile "+c.pidfile) || !strings.Contains(stderr, c.why) {
			t.Errorf("-p %s: status %d, %q; want a refusal saying %q", c.pidfile, code, stderr, c.why)
		}
		if got := readFileString(cfg); got != userText {
			t.Errorf("-p %s changed the configuration file: %q", c.pidfile, got)
		}
		if listeningTCP(port) {
			t.Errorf("-p %s: port %d is listening after the refusal", c.pidfile, port)
		}
	}

	// A stale pidfile is replaced, and removed at exit.
	pidfile := filepath.Join(dir, "pen.pid")
	writeFile(t, pidfile, "4000000\n")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{TCP: port, Dir: dir}, "-p", pidfile, lst(port), echo.spec())
	want := strconv.Itoa(p.pid())
	if !waitFor(5*time.Second, func() bool { return readFileString(pidfile) == want }) {
		t.Fatalf("stale pidfile holds %q, want %q", readFileString(pidfile), want)
	}
	p.signal(syscall.SIGTERM)
	if !p.waitExit(5*time.Second) || fileExists(pidfile) {
		t.Fatalf("after TERM: exited %v, pidfile still there %v", p.waitExit(0), fileExists(pidfile))
	}

	// A pidfile that another process took over meanwhile stays.
	p = startPen(t, penOpts{TCP: port, Dir: dir}, "-p", pidfile, lst(port), echo.spec())
	want = strconv.Itoa(p.pid())
	if !waitFor(5*time.Second, func() bool { return readFileString(pidfile) == want }) {
		t.Fatalf("pidfile holds %q, want %q", readFileString(pidfile), want)
	}
	writeFile(t, pidfile, "4000001")
	p.signal(syscall.SIGTERM)
	if !p.waitExit(5 * time.Second) {
		t.Fatal("pen still running 5 s after TERM")
	}
	if got := readFileString(pidfile); got != "4000001" {
		t.Errorf("pen removed or changed a pidfile that was no longer its own: %q", got)
	}
}

// penNoCore returns a command that runs pen with args and no core file: the
// abort tests only want the signal.
func penNoCore(args ...string) *exec.Cmd {
	return exec.Command("sh", append([]string{"-c", `ulimit -c 0; exec "$@"`, "sh", penBin}, args...)...)
}

// TestUSR2Aborts: USR2 ends pen with SIGABRT, as Pen's die() calls
// abort().
func TestUSR2Aborts(t *testing.T) {
	begin(t, 30*time.Second)
	port := freePort(t, "tcp")
	cmd := penNoCore("-f", lst(port), "127.0.0.1:1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if !waitFor(5*time.Second, func() bool { return listeningTCP(port) }) {
		cmd.Process.Kill()
		t.Fatalf("pen did not listen: %q", stderr.String())
	}
	cmd.Process.Signal(syscall.SIGUSR2)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("after USR2: %v", err)
		}
		if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
			t.Errorf("after USR2: %v, want SIGABRT", ws)
		}
		if !strings.Contains(stderr.String(), "Caught USR2, aborting") {
			t.Errorf("no log line: %q", stderr.String())
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("pen still running 5 s after USR2")
	}
}

// TestAbortOnError: with abort_on_error a fatal error ends pen with
// SIGABRT (a core dump where the system keeps them) instead of exit
// status 1, as in Pen; without it, status 1.
func TestAbortOnError(t *testing.T) {
	begin(t, 30*time.Second)
	dir := sharedDir(t)
	pidfile := filepath.Join(dir, "no-such-dir", "pen.pid")
	for _, abort := range []bool{false, true} {
		args := []string{"-f", "-p", pidfile}
		if abort {
			args = append(args, "-O", "abort_on_error")
		}
		args = append(args, lst(freePort(t, "tcp")), "127.0.0.1:1")
		cmd := penNoCore(args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("abort_on_error %v: %v, want pen to fail (%q)", abort, err, stderr.String())
		}
		ws := ee.Sys().(syscall.WaitStatus)
		if !strings.Contains(stderr.String(), "Can't create pidfile") {
			t.Errorf("abort_on_error %v: the error is not reported: %q", abort, stderr.String())
		}
		if abort && (!ws.Signaled() || ws.Signal() != syscall.SIGABRT) {
			t.Errorf("abort_on_error: %v, want SIGABRT", ws)
		}
		if !abort && (ws.Signaled() || ws.ExitStatus() != 1) {
			t.Errorf("no abort_on_error: %v, want exit status 1", ws)
		}
	}
}
