package acceptance

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPenctlExitStatus: penctl exits 0 and prints the reply of a command
// that ran, and exits 1 with pen's reason on standard error for one that
// did not. A client speaking Pen's protocol (Pen's penctl) still gets
// Pen's bytes.
func TestPenctlExitStatus(t *testing.T) {
	begin(t, 60*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, NoX: true, TCP: port}, lst(port), b.spec())

	if r := runPenctlStatus(t, p.Ctl, "blacklist", "7"); r.Code != 0 || r.Stdout != "7\n" || r.Stderr != "" {
		t.Errorf("penctl blacklist 7: exit %d, stdout %q, stderr %q; want 0, %q, nothing", r.Code, r.Stdout, r.Stderr, "7\n")
	}
	if r := runPenctlStatus(t, p.Ctl, "acl", "1", "permit", "10.0.0.1"); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Errorf("penctl acl 1 permit 10.0.0.1: exit %d, stdout %q, stderr %q; want 0 and no output", r.Code, r.Stdout, r.Stderr)
	}
	penctlFails(t, p.Ctl, "bogus", "do_cmd: ignoring command starting with 'bogus'")
	penctlFails(t, p.Ctl, "blacklist -3", "blacklist")
	p.mustBeAlive()
	p.expectCtl("blacklist", "7\n")

	// Pen's protocol: the reply alone, or the reason alone.
	for _, c := range []struct{ line, want string }{
		{"blacklist", "7\n"},
		{"bogus", "do_cmd: ignoring command starting with 'bogus'\n"},
		{"exit", "Exit is not enabled; restart with -X flag\n"},
	} {
		if got, err := rawControl("unix", p.Ctl, "", c.line); err != nil || got != c.want {
			t.Errorf("%q in Pen's protocol answered %q (%v), want %q", c.line, got, err, c.want)
		}
	}
}

// TestPenctlUnderIdleControlClients: with more idle control clients than
// pen serves at once, a command is refused and penctl says so (it used to
// be dropped silently while penctl exited 0); the idle clients are dropped
// within seconds and commands run again.
func TestPenctlUnderIdleControlClients(t *testing.T) {
	begin(t, 60*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port, cport := freePort(t, "tcp"), freePort(t, "tcp")
	args := []string{"-C", lst(cport)}
	if asRoot() {
		args = append(args, "-u", "nobody")
	}
	startPen(t, penOpts{TCP: port, CtlTCP: cport}, append(args, lst(port), b.spec())...)

	const idleClients = 40
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range idleClients {
		c, err := net.DialTimeout("tcp", lst(cport), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// pen serves some of them and refuses the rest at once, with a reason.
	var refused atomic.Int32
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if b, _ := io.ReadAll(c); strings.Contains(string(b), "too many control connections") {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Fatalf("none of %d idle control clients was refused", idleClients)
	}
	// While the others hold every slot, a command is refused, loudly.
	penctlFails(t, lst(cport), "blacklist 7", "too many control connections")
	// pen drops idle clients within seconds (a client gets EOF), and then
	// commands run.
	for i, c := range idle {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("idle control client %d: read %v, want EOF once pen drops it", i, err)
		}
	}
	if got := penctl(t, lst(cport), "blacklist"); got != "30\n" {
		t.Errorf("blacklist after the refused command = %q, want %q (unchanged)", got, "30\n")
	}
	if got := penctl(t, lst(cport), "blacklist 7"); got != "7\n" {
		t.Errorf("blacklist 7 once the idle clients are gone = %q, want %q", got, "7\n")
	}
	expectGet(t, "after the control port was flooded", ip1, lst(port), "100")
}
