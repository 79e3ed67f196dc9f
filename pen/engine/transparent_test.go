package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/transparent"
)

// fakeRouter records what the engine asks of the routing.
type fakeRouter struct {
	calls   *[]string
	syncErr error
}

func (f *fakeRouter) Sync(s []transparent.Server) error {
	*f.calls = append(*f.calls, fmt.Sprintf("sync %v", s))
	return f.syncErr
}

func (f *fakeRouter) Cleanup() error {
	*f.calls = append(*f.calls, "cleanup")
	return nil
}

func (f *fakeRouter) Close() { *f.calls = append(*f.calls, "close") }

type logLines []string

func (l *logLines) printf(format string, args ...any) {
	*l = append(*l, fmt.Sprintf(format, args...))
}

func transparentConfig(t *testing.T, servers ...string) *config.Config {
	c := config.Default()
	c.Transparent = true
	for i, s := range servers {
		c.SetServer(i, server(t, s))
	}
	return c
}

func TestRoutingFollowsTheConfiguration(t *testing.T) {
	var calls []string
	f := &fakeRouter{calls: &calls}
	rt := routing{open: func(table, prio int) (router, error) {
		calls = append(calls, fmt.Sprintf("open %d %d", table, prio))
		return f, nil
	}}
	var log logLines
	step := func(c *config.Config, wantOn bool, want ...string) {
		t.Helper()
		calls = nil
		if on := rt.apply(c, log.printf); on != wantOn {
			t.Errorf("apply: transparent %v, want %v", on, wantOn)
		}
		if !slices.Equal(calls, want) {
			t.Errorf("calls %q, want %q", calls, want)
		}
	}
	// Start-up without transparent: a predecessor's leftovers go.
	step(config.Default(), false, "open 736 7360", "cleanup", "close")
	step(config.Default(), false)
	c := transparentConfig(t, "198.18.2.2:80", "198.18.2.3:80")
	step(c, true, "open 736 7360", "sync [tcp 198.18.2.2:80 tcp 198.18.2.3:80]")
	step(c.Clone(), true) // nothing changed: no netlink traffic
	c = c.Clone()
	c.SetServer(2, server(t, "[2001:db8:2::2]:80"))
	c.Emergency = &config.Server{Host: config.Host{IP: netip.MustParseAddr("198.18.2.9")}, Port: 80}
	c.UDP = true
	step(c, true, "sync [udp 198.18.2.2:80 udp 198.18.2.3:80 udp [2001:db8:2::2]:80 udp 198.18.2.9:80]")
	src := c.Clone()
	src.Source = netip.MustParseAddr("198.18.2.100")
	step(src, false, "cleanup", "close") // source wins over transparent
	step(c, true, "open 736 7360", "sync [udp 198.18.2.2:80 udp 198.18.2.3:80 udp [2001:db8:2::2]:80 udp 198.18.2.9:80]")
	calls = nil
	rt.stop(log.printf)
	if want := []string{"cleanup", "close"}; !slices.Equal(calls, want) {
		t.Errorf("stop: calls %q, want %q", calls, want)
	}
	if len(log) != 0 {
		t.Errorf("log: %q", log)
	}
}

func TestRoutingRefusedIsLoggedOnce(t *testing.T) {
	var calls []string
	f := &fakeRouter{calls: &calls, syncErr: errors.New("transparent: adding rule: pen may not change the routing")}
	rt := routing{open: func(int, int) (router, error) { return f, nil }}
	var log logLines
	c := transparentConfig(t, "198.18.2.2:80")
	for i := range 3 {
		c = c.Clone()
		c.SetServer(1, server(t, fmt.Sprintf("198.18.2.3:%d", 80+i)))
		if rt.apply(c, log.printf) {
			t.Fatalf("apply #%d: transparent although the routing was refused", i+1)
		}
	}
	if len(log) != 1 || !strings.Contains(log[0], "pen may not change the routing; pen goes on without transparency") {
		t.Errorf("log: %q; want the refusal once", log)
	}
	if n := strings.Count(strings.Join(calls, "\n"), "sync"); n != 3 {
		t.Errorf("%d attempts, want one per change: %q", n, calls)
	}
	// Success, then a refusal again: said again.
	f.syncErr = nil
	if !rt.apply(c.Clone(), log.printf) {
		t.Fatal("apply: not transparent after the routing was installed")
	}
	f.syncErr = errors.New("transparent: adding rule: pen may not change the routing")
	c = c.Clone()
	c.SetServer(2, server(t, "198.18.2.4:80"))
	rt.apply(c, log.printf)
	if len(log) != 2 {
		t.Errorf("log: %q; want the refusal said again after a success", log)
	}
}

func TestRoutingDefaults(t *testing.T) {
	if config.DefaultTransparentTable != transparent.DefaultTable || config.DefaultTransparentPriority != transparent.DefaultPriority {
		t.Errorf("config's defaults (table %d, priority %d) are not transparent's (%d, %d)",
			config.DefaultTransparentTable, config.DefaultTransparentPriority, transparent.DefaultTable, transparent.DefaultPriority)
	}
}

// transparent_table and transparent_priority move what is installed.
func TestRoutingMoves(t *testing.T) {
	var calls []string
	rt := routing{open: func(table, prio int) (router, error) {
		calls = append(calls, fmt.Sprintf("open %d %d", table, prio))
		return &fakeRouter{calls: &calls}, nil
	}}
	var log logLines
	c := transparentConfig(t, "198.18.2.2:80")
	rt.apply(c, log.printf)
	c = c.Clone()
	c.TransparentTable, c.TransparentPriority = 1000, 500
	calls = nil
	if !rt.apply(c, log.printf) {
		t.Fatal("not transparent after the move")
	}
	want := []string{"cleanup", "close", "open 1000 500", "sync [tcp 198.18.2.2:80]"}
	if !slices.Equal(calls, want) {
		t.Errorf("calls %q, want %q", calls, want)
	}
}

// An engine removes the routing at Stop.
func TestEngineStopRemovesTheRouting(t *testing.T) {
	var calls []string
	f := &fakeRouter{calls: &calls}
	log := diag.Discard()
	in := config.New(config.Default(), config.Process{}, log)
	eng, err := New(log, in)
	if err != nil {
		t.Fatal(err)
	}
	eng.rt.open = func(int, int) (router, error) { return f, nil }
	c := transparentConfig(t, namedServer(t, "A"))
	c.Listen = filepath.Join(t.TempDir(), "listen.sock")
	if err := eng.Apply(c); err != nil {
		t.Fatal(err)
	}
	eng.Stop()
	if n := len(calls); n < 2 || calls[n-2] != "cleanup" || calls[n-1] != "close" {
		t.Errorf("calls %q; want cleanup and close at Stop", calls)
	}
}
