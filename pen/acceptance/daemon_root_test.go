package acceptance

import (
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHUPAppliesAsRootWithRefusedControlPort: as root with -C but no -u,
// pen runs without a control port; a HUP must still apply the edited -F
// file (every change used to fail with "Won't open control port running
// as root").
func TestHUPAppliesAsRootWithRefusedControlPort(t *testing.T) {
	begin(t, 60*time.Second)
	if !asRoot() {
		t.Skip("the control port is refused only to root")
	}
	a := startHTTPBackend(t, "100", "127.0.0.1")
	b := startHTTPBackend(t, "101", "127.0.0.1")
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "pen.cfg")
	writeFile(t, cfg, "server 0 address 127.0.0.1 port "+strconv.Itoa(a.port)+"\n")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{TCP: port, Dir: dir}, "-F", cfg, "-C", filepath.Join(dir, "pen.ctl"), lst(port))
	expectGet(t, "before the HUP", ip1, lst(port), "100")

	writeFile(t, cfg, "server 0 address 127.0.0.1 port "+strconv.Itoa(b.port)+"\n")
	p.signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { body, err := httpGet(ip2, lst(port)); return err == nil && body == "101" }) {
		t.Errorf("pen did not apply the edited file after HUP; output:\n%s", p.output())
	}
	if strings.Count(p.output(), "Won't open control port") != 1 {
		t.Errorf("pen should say once, at start-up, that it does not open the control port; output:\n%s", p.output())
	}
}
