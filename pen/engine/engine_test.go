package engine

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/control"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// namedServer is a TCP server on 127.0.0.1 that answers every connection
// with its name, so that a test sees which server pen chose.
func namedServer(t *testing.T, name string) string {
	t.Helper()
	return testenv.TCPServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, name) }).Addr().String()
}

// fixture is a running engine and the configuration it was started with.
type fixture struct {
	t   *testing.T
	eng *Engine
	dir string
	cfg *config.Config // in effect
}

// start runs an engine listening on a unix socket in a temporary
// directory, in front of one server that answers "A".
func start(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	log := diag.Discard()
	in := config.New(config.Default(), config.Process{}, log)
	eng, err := New(log, in)
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Listen = filepath.Join(dir, "listen.sock")
	c.SetServer(0, server(t, namedServer(t, "A")))
	if err := eng.Apply(c); err != nil {
		t.Fatalf("Apply of the first configuration: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- eng.Run() }()
	t.Cleanup(func() {
		eng.Quit()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("the engine did not stop within 5s of Quit")
		}
	})
	return &fixture{t: t, eng: eng, dir: dir, cfg: c}
}

func server(t *testing.T, addr string) config.Server {
	t.Helper()
	s, err := config.ParseServer(addr, 0, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s.WithID()
}

// fetch connects to a unix listen socket and returns what the server
// behind pen sent.
func fetch(path string) (string, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// serves checks that pen's listener at path leads to the server named want.
func (f *fixture) serves(step, path, want string) {
	f.t.Helper()
	if got, err := fetch(path); err != nil || got != want {
		f.t.Errorf("%s: a client of %s got %q (%v), want %q", step, path, got, err, want)
	}
}

// refused applies c, which must fail with an error containing want, and
// checks that the old configuration still serves.
func (f *fixture) refused(step string, c *config.Config, want string) {
	f.t.Helper()
	err := f.eng.Apply(c)
	if err == nil || !strings.Contains(err.Error(), want) {
		f.t.Errorf("%s: Apply = %v, want an error containing %q", step, err, want)
	}
	f.serves(step+", refused", f.cfg.Listen, "A")
	if got := f.eng.Servers(); len(got) != 1 {
		f.t.Errorf("%s, refused: the engine reports %d servers, want the 1 of the old configuration", step, len(got))
	}
}

// changed is the configuration in effect with another server, f(c) on
// top; a refused change must not bring that server in.
func (f *fixture) changed(mod func(c *config.Config)) *config.Config {
	c := f.cfg.Clone()
	c.SetServer(0, server(f.t, namedServer(f.t, "B")))
	c.SetServer(1, server(f.t, namedServer(f.t, "B")))
	mod(c)
	return c
}

// TestApplyRollsBack: a change with a part that cannot be put into effect
// changes nothing, and the old state keeps serving.
func TestApplyRollsBack(t *testing.T) {
	f := start(t)
	f.serves("at start", f.cfg.Listen, "A")

	f.refused("a listen address that cannot be bound", f.changed(func(c *config.Config) {
		c.Listen = filepath.Join(f.dir, "missing", "listen.sock")
	}), "missing")
	f.refused("a certificate that cannot be loaded", f.changed(func(c *config.Config) {
		c.TLS.Cert = filepath.Join(f.dir, "missing.pem")
	}), "Unable to create default context")
	f.refused("a request log that cannot be opened", f.changed(func(c *config.Config) {
		c.Log = filepath.Join(f.dir, "missing", "pen.log")
	}), "missing")
	busy := filepath.Join(f.dir, "busy.ctl")
	other, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	f.refused("a control socket another process owns", f.changed(func(c *config.Config) {
		c.Control = busy
	}), "another process listens")
	if addr := f.eng.ControlAddr(); addr != "" {
		t.Errorf("a control server is open (%s) after the refused change", addr)
	}
	f.refused("direct server return", f.changed(func(c *config.Config) {
		c.DSRIf = "lo"
	}), "dsr_if")

	// A change that can be put into effect moves the listener and brings
	// the new server in.
	moved := f.changed(func(c *config.Config) {
		c.Listen = filepath.Join(f.dir, "moved.sock")
		c.Control = filepath.Join(f.dir, "pen.ctl")
	})
	if err := f.eng.Apply(moved); err != nil {
		t.Fatalf("Apply of a good change: %v", err)
	}
	f.serves("after the move", moved.Listen, "B")
	if _, err := fetch(f.cfg.Listen); err == nil {
		t.Errorf("the old listener %s still accepts after the move", f.cfg.Listen)
	}
	if got := f.eng.ControlAddr(); got != moved.Control {
		t.Errorf("ControlAddr = %q, want %q", got, moved.Control)
	}
}

// controlEngine makes an engine, stopped when the test ends, and a
// configuration for it that is not applied yet: a control socket and a
// listener in dir, and one server that answers "A".
func controlEngine(t *testing.T) (*Engine, *config.Config, string) {
	t.Helper()
	dir := t.TempDir()
	log := diag.Discard()
	in := config.New(config.Default(), config.Process{}, log)
	eng, err := New(log, in)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Stop)
	c := config.Default()
	c.Control = filepath.Join(dir, "pen.ctl")
	c.Listen = filepath.Join(dir, "listen.sock")
	c.SetServer(0, server(t, namedServer(t, "A")))
	return eng, c, dir
}

// TestRefusedControlPortRefusesOnlyControl: as root without -u pen does
// not open the control port. Every later change used to be refused with
// that reason; now only a change that asks for another control port is.
func TestRefusedControlPortRefusesOnlyControl(t *testing.T) {
	const why = "Won't open control port running as root; use -u to run as different user"
	eng, c, dir := controlEngine(t)
	eng.RefuseControl(why)
	if err := eng.Apply(c); err != nil {
		t.Fatalf("Apply at start-up with a refused control port: %v (pen runs without one)", err)
	}
	if _, err := os.Stat(c.Control); err == nil || eng.ControlAddr() != "" {
		t.Fatalf("the control socket was opened although it was refused")
	}

	other := c.Clone()
	other.Blacklist = 10
	other.SetServer(1, server(t, namedServer(t, "B")))
	if err := eng.Apply(other); err != nil {
		t.Errorf("Apply of a change that keeps the refused control port: %v, want it applied", err)
	}

	moved := other.Clone()
	moved.Control = filepath.Join(dir, "other.ctl")
	if err := eng.Apply(moved); err == nil || err.Error() != why {
		t.Errorf("Apply of a change asking for another control port: %v, want %q", err, why)
	}
	if _, err := os.Stat(moved.Control); err == nil {
		t.Errorf("the refused control socket %s was opened", moved.Control)
	}

	none := other.Clone()
	none.Control = ""
	if err := eng.Apply(none); err != nil {
		t.Errorf("Apply of a change that drops the control port: %v", err)
	}
	if err := eng.Apply(other); err == nil || err.Error() != why {
		t.Errorf("Apply asking for the control port again: %v, want %q", err, why)
	}
}

// TestExitAnsweredBeforeStop: `exit` through the control socket gets its
// reply before Run returns (and the process ends): stopping waits for the
// command's handler, which no longer waits under a lock.
func TestExitAnsweredBeforeStop(t *testing.T) {
	dir := t.TempDir()
	log := diag.Discard()
	in := config.New(config.Default(), config.Process{ExitEnabled: true}, log)
	eng, err := New(log, in)
	if err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(dir, "pen.ctl")
	if err := in.Update(config.FromFlag, func(c *config.Config) error {
		c.Listen = filepath.Join(dir, "listen.sock")
		c.Control = ctl
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := in.SetEngine(eng); err != nil {
		t.Fatal(err)
	}
	eng.ServeControl() // as the daemon does once its privileges are dropped
	done := make(chan error, 1)
	go func() { done <- eng.Run() }()

	c, err := net.Dial("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "exit"+control.StatusRequest+"\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after exit")
	}
	// The answer is complete by now: a short deadline suffices.
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if b, err := io.ReadAll(c); err != nil || string(b) != control.StatusOK+"\n" {
		t.Errorf("the answer to exit once Run returned: %q (%v), want %q", b, err, control.StatusOK+"\n")
	}
}

// TestControlWaitsForServeControl: the control listener opens with the
// configuration, but commands run only after ServeControl, which the
// daemon calls once it has dropped its privileges. A client that connects
// before gets its answer after, and a control port moved later is served
// at once.
func TestControlWaitsForServeControl(t *testing.T) {
	eng, c, dir := controlEngine(t)
	if err := eng.Apply(c); err != nil {
		t.Fatal(err)
	}
	ask := func(path string) (net.Conn, chan string) {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("the control listener is not open: %v", err)
		}
		io.WriteString(conn, "blacklist\n")
		got := make(chan string, 1)
		go func() {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(conn)
			got <- string(b)
		}()
		return conn, got
	}
	conn, got := ask(c.Control)
	defer conn.Close()
	select {
	case s := <-got:
		t.Fatalf("a command was answered (%q) before ServeControl", s)
	case <-time.After(300 * time.Millisecond):
	}
	answered := func(got <-chan string, where string) {
		t.Helper()
		select {
		case s := <-got:
			if s != "30\n" {
				t.Errorf("blacklist answered %q %s, want \"30\\n\"", s, where)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no answer %s", where)
		}
	}
	eng.ServeControl()
	answered(got, "after ServeControl")

	moved := c.Clone()
	moved.Control = filepath.Join(dir, "other.ctl")
	if err := eng.Apply(moved); err != nil {
		t.Fatal(err)
	}
	conn2, got2 := ask(moved.Control)
	defer conn2.Close()
	answered(got2, "on the moved control port")
}
