package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestEarlyHUP sends HUP while pen is still starting (before its
// privileges are dropped and its hooks have run): the signal must not end
// the process, and the configuration file it asks for is read once pen
// runs.
func TestEarlyHUP(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pen.cfg")
	sock := filepath.Join(dir, "pen.sock")
	if err := os.WriteFile(cfg, []byte("blacklist 20\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := New()
	var out, errb bytes.Buffer
	d.Stdout, d.Stderr = &out, &errb
	d.BeforeDrop(func(d *Daemon) error {
		if err := os.WriteFile(cfg, []byte("blacklist 33\n"), 0o644); err != nil {
			return err
		}
		return syscall.Kill(os.Getpid(), syscall.SIGHUP)
	})
	started := make(chan *Daemon, 1)
	d.AfterStart(func(d *Daemon) error { started <- d; return nil })
	done := make(chan int, 1)
	go func() { done <- d.Main([]string{"-f", "-F", cfg, sock, "127.0.0.1:1"}) }()
	select {
	case <-started:
	case code := <-done:
		t.Fatalf("pen exited with %d before it started: %s", code, errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("pen did not start")
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.Interp().Config().Blacklist != 33 {
		if time.Now().After(deadline) {
			t.Fatalf("the HUP sent during start-up was not acted on: blacklist %d\n%s", d.Interp().Config().Blacklist, errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.Engine().Quit()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("pen did not stop")
	}
}
