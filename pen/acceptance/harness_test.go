package acceptance

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const modulePath = "github.com/pen-lb/pen-appliance"

var (
	penBin    string // the pen binary built by TestMain
	penctlBin string // the penctl binary built by TestMain
	buildErr  error  // why building them failed, reported by every test
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pen-acceptance-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "acceptance: creating the binary directory:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// pen may drop to nobody with -u; its binary must stay reachable.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "acceptance:", err)
		return 1
	}
	penBin = filepath.Join(dir, "pen")
	penctlBin = filepath.Join(dir, "penctl")
	if prebuilt := os.Getenv("PEN_ACCEPTANCE_BINDIR"); prebuilt != "" {
		// Run the scenarios against binaries built elsewhere (bin/ of
		// `make build`, for example) instead of building them here.
		penBin = filepath.Join(prebuilt, "pen")
		penctlBin = filepath.Join(prebuilt, "penctl")
	} else {
		buildErr = errors.Join(
			goBuild(penBin, modulePath+"/pen/cmd/pen"),
			goBuild(penctlBin, modulePath+"/pen/cmd/penctl"),
		)
	}
	if buildErr != nil {
		fmt.Fprintln(os.Stderr, "acceptance: building the binaries failed; every test will fail:\n", buildErr)
	}
	return m.Run()
}

// goBuild builds pkg into out with the go command that runs the tests.
func goBuild(out, pkg string) error {
	goTool := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			goTool = p
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", out, pkg)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build -o %s %s: %w\n%s", out, pkg, err, buf.Bytes())
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// needBinaries fails the test when TestMain could not build pen or penctl.
func needBinaries(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("pen and penctl were not built: %v", buildErr)
	}
}

// asRoot reports whether the tests run as root, in which case pen needs
// -u to open a control port.
func asRoot() bool { return os.Geteuid() == 0 }

// asUser is `-u nobody` as root (so that pen opens its control port) and
// nothing otherwise.
func asUser() []string {
	if asRoot() {
		return []string{"-u", "nobody"}
	}
	return nil
}

// begin is the first call of every test: it checks the binaries and arms a
// watchdog that kills the test's pen processes if the test runs longer than
// limit, so that no wait can hang the package.
func begin(t *testing.T, limit time.Duration) {
	t.Helper()
	needBinaries(t)
	timer := time.AfterFunc(limit, func() {
		t.Errorf("test exceeded its time limit of %v; killing its pen processes", limit)
		procsMu.Lock()
		for _, p := range procs[t] {
			_ = p.cmd.Process.Kill()
		}
		procsMu.Unlock()
	})
	t.Cleanup(func() { timer.Stop() })
}

var (
	procsMu sync.Mutex
	procs   = map[*testing.T][]*penProc{}
)

// lockedBuffer collects a subprocess's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sharedDir returns a fresh directory that pen can write to after it has
// dropped to nobody (pidfile, control socket, written configuration, stats).
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pen-acc-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// penOpts says how to run one pen process and when it counts as started.
type penOpts struct {
	Name    string // label in the test log; "pen" when empty
	Control bool   // add `-p DIR/pen.pid -C DIR/pen.ctl` (and `-u nobody` as root)
	NoX     bool   // with Control: leave out -X
	TCP     int    // wait until this TCP port is listening
	UDP     int    // wait until this UDP port is bound
	CtlTCP  int    // wait until this TCP control port is listening
	NoWait  bool   // do not wait for anything (pen is expected to fail)
	Dir     string // working directory; a fresh shared one when empty
}

// penProc is one running pen.
type penProc struct {
	t       *testing.T
	name    string
	Dir     string // pen's working directory, writable by nobody
	Pidfile string // DIR/pen.pid when Control is set
	Ctl     string // DIR/pen.ctl when Control is set
	cmd     *exec.Cmd
	stdout  *lockedBuffer
	stderr  *lockedBuffer
	done    chan struct{}
	waitErr error
}

// startPen starts `pen -f [control args] args...` and waits until it
// listens. It is killed when the test ends; if the test failed, its output
// goes into the test log.
func startPen(t *testing.T, o penOpts, args ...string) *penProc {
	t.Helper()
	p := &penProc{t: t, name: o.Name, Dir: o.Dir, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	if p.name == "" {
		p.name = "pen"
	}
	if p.Dir == "" {
		p.Dir = sharedDir(t)
	}
	full := []string{"-f"}
	if o.Control {
		p.Pidfile = filepath.Join(p.Dir, "pen.pid")
		p.Ctl = filepath.Join(p.Dir, "pen.ctl")
		if asRoot() {
			full = append(full, "-u", "nobody")
		}
		full = append(full, "-p", p.Pidfile, "-C", p.Ctl)
		if !o.NoX {
			full = append(full, "-X")
		}
	}
	full = append(full, args...)
	p.cmd = exec.Command(penBin, full...)
	p.cmd.Dir = p.Dir
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	t.Logf("%s: starting pen %s", p.name, strings.Join(quoteArgs(full), " "))
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: starting pen: %v", p.name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	procsMu.Lock()
	procs[t] = append(procs[t], p)
	procsMu.Unlock()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s (pid %d) exit: %v\n--- %s stdout ---\n%s--- %s stderr ---\n%s--- end of %s output ---",
				p.name, p.cmd.Process.Pid, p.waitErr, p.name, p.stdout.String(), p.name, p.stderr.String(), p.name)
		}
		procsMu.Lock()
		delete(procs, t)
		procsMu.Unlock()
	})
	if o.NoWait {
		return p
	}
	ready := func() bool {
		if o.TCP != 0 && !listeningTCP(o.TCP) {
			return false
		}
		if o.UDP != 0 && !boundUDP(o.UDP) {
			return false
		}
		if o.CtlTCP != 0 && !listeningTCP(o.CtlTCP) {
			return false
		}
		if o.Control && !listeningUnix(p.Ctl) {
			return false
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for !ready() {
		if p.exited() {
			t.Fatalf("%s exited before it was ready (%v); stderr:\n%s", p.name, p.waitErr, p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start listening within 10s; stderr:\n%s", p.name, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return out
}

func (p *penProc) pid() int { return p.cmd.Process.Pid }

func (p *penProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for pen to exit and reports whether it did.
func (p *penProc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exitCode is pen's exit status once it has exited (-1 if killed by a signal).
func (p *penProc) exitCode() int { return p.cmd.ProcessState.ExitCode() }

func (p *penProc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	if !p.waitExit(5 * time.Second) {
		p.t.Errorf("%s (pid %d) did not die after SIGKILL", p.name, p.pid())
	}
}

func (p *penProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: sending %v: %v", p.name, sig, err)
	}
}

// output is everything pen wrote to stdout and stderr so far.
func (p *penProc) output() string { return p.stdout.String() + p.stderr.String() }

// mustBeAlive fails the test if pen has exited.
func (p *penProc) mustBeAlive() {
	p.t.Helper()
	if p.exited() {
		p.t.Fatalf("%s exited unexpectedly (%v); stderr:\n%s", p.name, p.waitErr, p.stderr.String())
	}
}

// ctl runs `penctl DIR/pen.ctl command...` (command split at spaces, as a
// shell would) and returns its standard output.
func (p *penProc) ctl(command string) string {
	p.t.Helper()
	if p.Ctl == "" {
		p.t.Fatalf("%s has no control socket", p.name)
	}
	return penctl(p.t, p.Ctl, command)
}

// expectCtl checks that `penctl DIR/pen.ctl command` prints exactly want.
func (p *penProc) expectCtl(command, want string) {
	p.t.Helper()
	if got := p.ctl(command); got != want {
		p.t.Errorf("penctl %q:\n got %q\nwant %q", command, got, want)
	}
}

// penctl runs the penctl binary against target and fails the test if it
// does not succeed within 10 seconds.
func penctl(t *testing.T, target, command string) string {
	t.Helper()
	out, err := runPenctl(target, strings.Fields(command)...)
	if err != nil {
		t.Fatalf("penctl %s %s: %v", target, command, err)
	}
	return out
}

// runPenctl runs `penctl target args...` and returns its standard output.
func runPenctl(target string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, penctlBin, append([]string{target}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return stdout.String(), fmt.Errorf("penctl did not finish within 10s (stdout %q, stderr %q)", stdout.String(), stderr.String())
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%v (stdout %q, stderr %q)", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// penctlResult is what one run of penctl did.
type penctlResult struct {
	Stdout, Stderr string
	Code           int // exit status; -1 if it did not finish
}

// runPenctlStatus runs `penctl target args...` and returns its output and
// exit status, whatever they are.
func runPenctlStatus(t *testing.T, target string, args ...string) penctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, penctlBin, append([]string{target}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	r := penctlResult{Stdout: stdout.String(), Stderr: stderr.String(), Code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		t.Fatalf("penctl %s %s did not finish within 10s (stdout %q, stderr %q)", target, strings.Join(args, " "), r.Stdout, r.Stderr)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running penctl: %v", err)
	}
	return r
}

// penctlFails runs penctl and fails the test unless penctl exits non-zero,
// prints nothing on standard output and names reason on standard error.
func penctlFails(t *testing.T, target, command, reason string) {
	t.Helper()
	r := runPenctlStatus(t, target, strings.Fields(command)...)
	if r.Code == 0 || r.Stdout != "" || !strings.Contains(r.Stderr, reason) {
		t.Errorf("penctl %s %s: exit %d, stdout %q, stderr %q; want a non-zero exit, no output and %q on stderr",
			target, command, r.Code, r.Stdout, r.Stderr, reason)
	}
}

// expectCtlRefused checks that command is refused with the reply want:
// Pen's protocol (rawControl, as Pen's penctl speaks it) gets exactly want,
// and penctl exits non-zero with it on standard error.
func (p *penProc) expectCtlRefused(command, want string) {
	p.t.Helper()
	if got, err := rawControl("unix", p.Ctl, "", command); err != nil || got != want {
		p.t.Errorf("%q in Pen's protocol answered %q (%v), want %q", command, got, err, want)
	}
	penctlFails(p.t, p.Ctl, command, strings.TrimSuffix(want, "\n"))
}

// rawControl sends one command line over the control protocol itself and
// returns everything pen sends back before it closes the connection.
func rawControl(network, addr, from, line string) (string, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// freePort returns a port that is free for TCP and UDP on every local
// address; network ("tcp" or "udp") only says what the caller will use it for. It is taken below the kernel's ephemeral range, so that no
// client socket of another test can be using it by the time pen binds it,
// and no port is handed out twice in one run.
func freePort(t *testing.T, network string) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	low := ephemeralLow()
	if low > 20000+1000 {
		for i := 0; i < 200; i++ {
			port := 20000 + portRand.IntN(low-20000)
			if portsUsed[port] || !portFree(port) {
				continue
			}
			portsUsed[port] = true
			return port
		}
	}
	// Fall back to a port the kernel picks.
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		var port int
		switch a := l.Addr().(type) {
		case *net.TCPAddr:
			port = a.Port
		}
		l.Close()
		if port != 0 && !portsUsed[port] && portFree(port) {
			portsUsed[port] = true
			return port
		}
	}
	t.Fatalf("no free %s port found", network)
	return 0
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
	portRand  = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
)

// portFree reports whether port can be bound for TCP and UDP on the
// wildcard address (which conflicts with any address in use).
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return false
	}
	l.Close()
	c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
	if err != nil {
		return false
	}
	c.Close()
	return !listeningTCP(port) && !boundUDP(port)
}

// ephemeralLow is the lowest port the kernel hands out to client sockets.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) < 1 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// listeningTCP reports whether some socket listens on TCP port (IPv4 or
// IPv6). It reads /proc so that checking never opens a connection through
// pen, which would disturb client tracking and round-robin.
func listeningTCP(port int) bool {
	return procNetHas([]string{"/proc/net/tcp", "/proc/net/tcp6"}, port, "0A")
}

// boundUDP reports whether an unconnected UDP socket is bound to port.
func boundUDP(port int) bool {
	return procNetHas([]string{"/proc/net/udp", "/proc/net/udp6"}, port, "07")
}

func procNetHas(files []string, port int, state string) bool {
	want := fmt.Sprintf(":%04X", port)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 {
				continue
			}
			if strings.HasSuffix(fields[1], want) && fields[3] == state {
				return true
			}
		}
	}
	return false
}

// listeningUnix reports whether a unix stream socket listens at path.
func listeningUnix(path string) bool {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// Num RefCount Protocol Flags Type St Inode Path; flag 00010000 = listening
		if len(fields) >= 8 && fields[7] == path && fields[3] == "00010000" {
			return true
		}
	}
	return false
}

// waitFor polls cond every 20ms for up to d and reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hostPort joins an address and a port the way pen's server specs and Go
// both accept ("127.0.0.1:80", "[::1]:80").
func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// lst is a listen spec on 127.0.0.1.
func lst(port int) string { return hostPort("127.0.0.1", port) }

// writeFile writes a configuration file that pen (possibly as nobody) can read.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
}
