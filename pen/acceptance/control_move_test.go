package acceptance

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestControlMovesThroughItself: `penctl OLD control NEW` moves the control
// port through the control port itself. The command is answered, the new
// port answers, the old one is closed, and TERM still stops pen at once
// (the old listener's close used to wait for the very command that closed
// it, which held the interpreter: pen stopped answering anything).
func TestControlMovesThroughItself(t *testing.T) {
	begin(t, 60*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	dir := sharedDir(t)
	port, oldPort, newPort := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp")
	args := []string{"-C", lst(oldPort)}
	if asRoot() {
		args = append(args, "-u", "nobody")
	}
	p := startPen(t, penOpts{TCP: port, CtlTCP: oldPort, Dir: dir}, append(args, lst(port), b.spec())...)

	// TCP to TCP.
	if got := penctl(t, lst(oldPort), "control "+lst(newPort)); got != lst(newPort)+"\n" {
		t.Errorf("penctl control %s = %q, want %q", lst(newPort), got, lst(newPort)+"\n")
	}
	if got := penctl(t, lst(newPort), "control"); got != lst(newPort)+"\n" {
		t.Errorf("control on the new port = %q, want %q", got, lst(newPort)+"\n")
	}
	if c, err := net.DialTimeout("tcp", lst(oldPort), time.Second); err == nil {
		c.Close()
		t.Errorf("the old control port %d still accepts connections", oldPort)
	}

	// TCP to a unix socket, and back to TCP through the socket.
	sock := filepath.Join(dir, "moved.ctl")
	penctl(t, lst(newPort), "control "+sock)
	if !listeningUnix(sock) {
		t.Fatalf("no control socket listens at %s after `control %s`", sock, sock)
	}
	if listeningTCP(newPort) {
		t.Errorf("control port %d still listens after moving to %s", newPort, sock)
	}
	penctl(t, sock, "control "+lst(oldPort))
	if got := penctl(t, lst(oldPort), "blacklist"); got != "30\n" {
		t.Errorf("blacklist on the control port moved back = %q, want %q", got, "30\n")
	}
	if !waitFor(3*time.Second, func() bool { return !fileExists(sock) }) {
		t.Errorf("the unix control socket %s was left behind after the move", sock)
	}
	expectGet(t, "after moving the control port three times", ip1, lst(port), "100")

	start := time.Now()
	p.signal(syscall.SIGTERM)
	if !p.waitExit(5 * time.Second) {
		t.Fatalf("pen did not exit within 5s of TERM after the control port moved")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("pen took %v to exit after TERM", d)
	}
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit status after TERM = %d, want 0", code)
	}
}
