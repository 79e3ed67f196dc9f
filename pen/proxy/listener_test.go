package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
)

// echoRound checks that a client of h gets its bytes back.
func echoRound(t *testing.T, h *harness) {
	t.Helper()
	c := h.dial()
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through pen: %q, %v", buf, err)
	}
}

// A listener that falls out of the epoll set while paused (as during
// pending_max) used to stay unwatched for good: the failed re-arm was
// ignored. It is now put back, and the log says so.
func TestListenerRearmRecovers(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	echoRound(t, h)
	h.loop.do(func() {
		if err := unix.EpollCtl(h.loop.ep, unix.EPOLL_CTL_DEL, h.loop.lfd, nil); err != nil {
			t.Errorf("epoll_ctl(del): %v", err)
		}
		h.loop.lArmed = false
	})
	echoRound(t, h)
	if !strings.Contains(h.logText(), "was not watched any more; watching it again") {
		t.Errorf("the recovery is not in the log:\n%s", h.logText())
	}
}

// newLoop makes a loop that is configured but not running.
func newLoop(t *testing.T) *Loop {
	t.Helper()
	l, err := New(balance.New(), diag.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Stop)
	return l
}

func listenOn(t *testing.T, l *Loop, udp bool, spec config.Listen) error {
	t.Helper()
	return l.Configure(Settings{UDP: udp, ConnMax: 4, PendingMax: 4, MultiAccept: 4}, &spec, 16)
}

// A second pen on a port that a pen serves is refused with a clear
// message, for TCP, UDP and unix sockets, and the first keeps its port.
func TestSecondListenerRefused(t *testing.T) {
	for _, udp := range []bool{false, true} {
		first := newLoop(t)
		if err := listenOn(t, first, udp, config.Listen{Addr: netip.MustParseAddrPort("127.0.0.1:0")}); err != nil {
			t.Fatal(err)
		}
		addr := netip.MustParseAddrPort(first.ListenAddr())
		second := newLoop(t)
		err := listenOn(t, second, udp, config.Listen{Addr: addr})
		want := fmt.Sprintf("listen %s: address already in use (another process serves it)", addr)
		if err == nil || err.Error() != want || !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("udp=%v: second listener on %s: %v, want %q", udp, addr, err, want)
		}
		if got := first.ListenAddr(); got != addr.String() {
			t.Errorf("udp=%v: first listener now at %q", udp, got)
		}
		// The wildcard address on the same port is refused too.
		err = listenOn(t, second, udp, config.Listen{Addr: netip.AddrPortFrom(netip.IPv4Unspecified(), addr.Port())})
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("udp=%v: wildcard listener on port %d: %v", udp, addr.Port(), err)
		}
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "pen.sock")
	first := newLoop(t)
	if err := listenOn(t, first, false, config.Listen{Path: path}); err != nil {
		t.Fatal(err)
	}
	err := listenOn(t, newLoop(t), false, config.Listen{Path: path})
	if want := "listen " + path + ": address already in use (another process serves it)"; err == nil || err.Error() != want {
		t.Errorf("second unix listener: %v, want %q", err, want)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Errorf("the first pen lost its socket: %v", err)
	} else {
		c.Close()
	}
	// A regular file is not taken for a socket and removed.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("data"), 0o600)
	if err := listenOn(t, newLoop(t), false, config.Listen{Path: file}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen on a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Errorf("the file was touched: %q", b)
	}
	// A socket left behind by a pen that is gone is replaced.
	stale := filepath.Join(dir, "stale.sock")
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	unix.Bind(fd, &unix.SockaddrUnix{Name: stale})
	unix.Close(fd)
	if err := listenOn(t, newLoop(t), false, config.Listen{Path: stale}); err != nil {
		t.Errorf("listen on a stale socket: %v", err)
	}
}

// A pen moving its own listener to another address on the same port is
// not refused: the old listener makes room.
func TestListenerMovesOnSamePort(t *testing.T) {
	be := tcpServer(t, "tcp", "127.0.0.1:0", echo)
	h := start(t, "127.0.0.1:0", nil, fmt.Sprintf("server 0 address 127.0.0.1 port %d", port(be)))
	p := netip.MustParseAddrPort(h.addr).Port()
	to := config.Listen{Addr: netip.AddrPortFrom(netip.IPv4Unspecified(), p)}
	if err := h.loop.Configure(h.settings, &to, 16); err != nil {
		t.Fatalf("move to %s: %v", to, err)
	}
	if got := h.loop.ListenAddr(); got != to.Addr.String() {
		t.Errorf("listener at %q, want %s", got, to)
	}
	echoRound(t, h)
}
