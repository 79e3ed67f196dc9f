package services

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/control"
)

var penBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "services-test")
	if err != nil {
		panic(err)
	}
	penBinary = filepath.Join(dir, "pen")
	if out, err := exec.Command("go", "build", "-o", penBinary, "github.com/pen-lb/pen-appliance/pen/cmd/pen").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building pen: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"http", "HTTPS-2", "dns_53", "a", strings.Repeat("x", MaxName)} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "..", ".x", "a/b", "a b", "-x", "_x", "a\x00", "ä", "x\n", strings.Repeat("x", MaxName+1), "../etc"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
}

// shortTemp returns a temporary directory with a short path, since a unix
// socket's path is limited to 107 bytes.
func shortTemp(t *testing.T) string {
	d, err := os.MkdirTemp("/tmp", "svc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestMigrate(t *testing.T) {
	perm := shortTemp(t)
	single := filepath.Join(perm, "pen", "pen.cfg")
	os.MkdirAll(filepath.Dir(single), 0o755)
	os.WriteFile(single, []byte("listen 80\n"), 0o644)
	defaults := filepath.Join(perm, "defaults")
	os.MkdirAll(defaults, 0o755)
	os.WriteFile(filepath.Join(defaults, "https.cfg"), []byte("listen 443\n"), 0o644)
	os.WriteFile(filepath.Join(defaults, "bad name.cfg"), []byte("listen 1\n"), 0o644)
	l := Layout{Dir: filepath.Join(perm, "pen", "services"), Run: filepath.Join(perm, "run")}
	if err := l.Migrate(single, defaults); err != nil {
		t.Fatal(err)
	}
	names, err := l.List()
	if err != nil || strings.Join(names, ",") != "https,main" {
		t.Fatalf("services after migration: %v, %v", names, err)
	}
	if target, err := os.Readlink(l.Config(MainName)); err != nil || target != "../../pen.cfg" {
		t.Errorf("main's pen.cfg: link to %q, %v", target, err)
	}
	if b, _ := os.ReadFile(l.Config(MainName)); string(b) != "listen 80\n" {
		t.Errorf("main's configuration %q", b)
	}
	// Once only: a removed service stays removed.
	if err := l.Remove("https"); err != nil {
		t.Fatal(err)
	}
	if err := l.Migrate(single, defaults); err != nil {
		t.Fatal(err)
	}
	if names, _ := l.List(); strings.Join(names, ",") != "main" {
		t.Errorf("services after a second migration: %v", names)
	}
	if err := l.Rename("main", "../x"); err == nil {
		t.Error("rename to ../x accepted")
	}
	if err := l.Create("main", []byte("listen 1\n"), nil, nil); err == nil {
		t.Error("a second service main was created")
	}
}

// waitState waits until service name is in state want and returns it.
func waitState(t *testing.T, s *Supervisor, name string, want string, cond func(State) bool) State {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last State
	for time.Now().Before(deadline) {
		states, err := s.Layout.ReadStates()
		if err != nil {
			t.Fatal(err)
		}
		last = states[name]
		if last.State == want && (cond == nil || cond(last)) {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("service %s: %+v, want state %s", name, last, want)
	return last
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func echoThrough(t *testing.T, port int) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "ping\n" {
		return fmt.Errorf("echo %q", b)
	}
	return nil
}

// TestSupervisor runs real pens: a good service keeps serving while a
// broken one fails and is restarted with growing pauses; a crashed pen is
// restarted and shown failing until it has run for Stable; stop, start,
// rename and remove are followed.
func TestSupervisor(t *testing.T) {
	root := shortTemp(t)
	l := Layout{Dir: filepath.Join(root, "services"), Run: filepath.Join(root, "run")}
	echo := testenv.EchoServer(t)
	port := freePort(t)
	good := fmt.Sprintf("listen 127.0.0.1:%d\nserver 0 address %s\n", port, strings.Replace(echo, ":", " port ", 1))
	if err := l.Create("web", []byte(good), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Create("broken", []byte("listen 127.0.0.1:1\nno_such_command 1\n"), nil, nil); err != nil {
		t.Fatal(err)
	}
	var (
		logMu sync.Mutex
		logs  strings.Builder
	)
	home := filepath.Join(root, "home")
	s := &Supervisor{
		Layout: l, Binary: penBinary, Home: home,
		Scan: 50 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond,
		Stable: time.Second, StopTimeout: 2 * time.Second,
		Logf: func(f string, a ...any) { logMu.Lock(); fmt.Fprintf(&logs, f+"\n", a...); logMu.Unlock() },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		logMu.Lock()
		t.Logf("supervisor log:\n%s", logs.String())
		logMu.Unlock()
	}()

	web := waitState(t, s, "web", Running, func(st State) bool { return st.PID != 0 })
	var err error
	for i := 0; i < 100; i++ {
		if err = echoThrough(t, port); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("through web: %v", err)
	}
	// The broken service fails, with its reason, and is retried with
	// back-off.
	br := waitState(t, s, "broken", Failing, func(st State) bool { return st.Restarts >= 4 })
	logMu.Lock()
	var pauses []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.HasPrefix(l, "services: broken:") {
			pauses = append(pauses, l[strings.LastIndex(l, " ")+1:])
		}
	}
	logMu.Unlock()
	if len(pauses) < 4 || strings.Join(pauses[:4], " ") != "100ms 200ms 400ms 400ms" {
		t.Errorf("pauses before the restarts of broken: %v, want 100ms 200ms 400ms 400ms", pauses)
	}
	if !strings.Contains(br.LastExit, "pen.cfg:2: not a pen command") {
		t.Errorf("broken's last exit %q does not give pen's reason", br.LastExit)
	}
	t.Logf("broken: %+v", br)
	if web2 := waitState(t, s, "web", Running, nil); web2.PID != web.PID || web2.Restarts != 0 {
		t.Errorf("web was disturbed: %+v, first %+v", web2, web)
	}

	// The control socket answers the state command.
	out, err := ask(l.Control("web"), "state")
	if err != nil {
		t.Fatal(err)
	}
	var st config.State
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("state: %v: %s", err, out)
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", web.PID)); err != nil || cwd != home {
		t.Errorf("web's pen runs in %q (%v), want %s", cwd, err, home)
	}
	if st.PID != web.PID || st.Listen != fmt.Sprintf("127.0.0.1:%d", port) || !strings.Contains(st.Config, "address 127.0.0.1 port") {
		t.Errorf("state of web: %+v", st)
	}

	// A crash: restarted, failing until it has run for Stable.
	if err := syscall.Kill(web.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	crashed := waitState(t, s, "web", Failing, func(st State) bool { return st.PID != 0 && st.PID != web.PID })
	if !strings.Contains(crashed.LastExit, "killed") {
		t.Errorf("last exit after the crash: %q", crashed.LastExit)
	}
	again := waitState(t, s, "web", Running, nil)
	if again.Restarts != 1 {
		t.Errorf("restarts after one crash: %+v", again)
	}
	if err := echoThrough(t, port); err != nil {
		t.Errorf("through web after its restart: %v", err)
	}

	// Stop and start.
	if err := l.SetStopped("web", true); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "web", Stopped, nil)
	if err := processGone(again.PID); err != nil {
		t.Error(err)
	}
	if err := echoThrough(t, port); err == nil {
		t.Error("a stopped service still serves")
	}
	if err := l.SetStopped("web", false); err != nil {
		t.Fatal(err)
	}
	started := waitState(t, s, "web", Running, func(st State) bool { return st.PID != 0 })

	// Rename: the pen of the old name stops, one of the new name starts.
	if err := l.Rename("web", "www"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "www", Running, func(st State) bool { return st.PID != 0 })
	if err := processGone(started.PID); err != nil {
		t.Error(err)
	}
	if _, err := ask(l.Control("www"), "pid"); err != nil {
		t.Errorf("www's control socket: %v", err)
	}

	// Remove.
	if err := l.Remove("broken"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		states, _ := l.ReadStates()
		if _, ok := states["broken"]; !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broken still reported after its removal: %+v", states["broken"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func processGone(pid int) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("process %d still runs", pid)
}

// ask sends a command to a control socket, waiting up to 5 s for a pen
// that has just started to open it.
func ask(socket, command string) ([]byte, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := control.Request(socket, command, 3*time.Second)
		if err == nil || time.Now().After(deadline) {
			return out, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
