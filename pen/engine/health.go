package engine

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// Active health checks (check N tcp|http ...): one goroutine per server
// with a check probes it every interval. A failed probe blacklists the
// server until the next probe is due (plus the probe's timeout), so it
// stays out while it fails: clients fail over as after a failed connect,
// the UI and pen_server_up see it blacklisted. The first probe that
// passes after a failure reinstates it. A server blacklisted by hand is
// left alone by passing probes.

// HealthResult is the last probe of a server's check.
type HealthResult struct {
	Check  config.Check
	OK     bool
	At     time.Time // when the last probe ended; zero before the first
	Err    string    // why it failed
	Probes uint64
}

type health struct {
	mu       sync.Mutex
	checkers map[uint64]*checker // by server identity
}

type checker struct {
	check   config.Check
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	result  HealthResult
	failing bool // the checker blacklisted the server
}

// Health reports the last probe of every server with a check, by server
// identity.
func (e *Engine) Health() map[uint64]HealthResult {
	e.hmu.Lock()
	h := e.health
	e.hmu.Unlock()
	out := map[uint64]HealthResult{}
	if h == nil {
		return out
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, c := range h.checkers {
		c.mu.Lock()
		out[id] = c.result
		c.mu.Unlock()
	}
	return out
}

// applyHealth starts, restarts and stops checkers to follow c.
func (e *Engine) applyHealth(c *config.Config) {
	e.hmu.Lock()
	if e.health == nil {
		e.health = &health{checkers: map[uint64]*checker{}}
	}
	h := e.health
	e.hmu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	want := map[uint64]config.Check{}
	for _, s := range c.Servers {
		if s.Check.Kind != "" && s.ID() != 0 && !s.Unused() {
			want[s.ID()] = s.Check
		}
	}
	for id, ck := range h.checkers {
		if w, ok := want[id]; !ok || w != ck.check {
			close(ck.stop)
			delete(h.checkers, id)
			if ck.failing { // the check that took it out is gone
				if i := e.slotOf(id); i >= 0 {
					e.table.Blacklist(i, 0)
				}
			}
		}
	}
	for id, chk := range want {
		if _, ok := h.checkers[id]; ok {
			continue
		}
		ck := &checker{check: chk, stop: make(chan struct{}), done: make(chan struct{}), result: HealthResult{Check: chk}}
		h.checkers[id] = ck
		go e.runChecker(id, ck)
	}
}

// stopHealth stops every checker and waits for them.
func (e *Engine) stopHealth() {
	e.hmu.Lock()
	h := e.health
	e.health = nil
	e.hmu.Unlock()
	if h == nil {
		return
	}
	h.mu.Lock()
	var done []chan struct{}
	for id, ck := range h.checkers {
		close(ck.stop)
		done = append(done, ck.done)
		delete(h.checkers, id)
	}
	h.mu.Unlock()
	for _, d := range done {
		<-d
	}
}

// slotOf is the slot that holds server id in the configuration in
// effect, or -1.
func (e *Engine) slotOf(id uint64) int {
	c := e.current()
	if c == nil {
		return -1
	}
	for i, s := range c.Servers {
		if s.ID() == id {
			return i
		}
	}
	return -1
}

func (e *Engine) current() *config.Config {
	e.hmu.Lock()
	defer e.hmu.Unlock()
	return e.checked
}

func (e *Engine) runChecker(id uint64, ck *checker) {
	defer close(ck.done)
	every := time.Duration(ck.check.Interval) * time.Second
	t := time.NewTimer(0) // the first probe at once
	defer t.Stop()
	for {
		select {
		case <-ck.stop:
			return
		case <-t.C:
		}
		c := e.current()
		i := e.slotOf(id)
		if c == nil || i < 0 {
			t.Reset(every)
			continue
		}
		s := c.Servers[i]
		timeout := time.Duration(c.Timeout) * time.Second
		if timeout <= 0 || timeout > every {
			timeout = min(every, 3*time.Second)
		}
		err := probe(s, ck.check, timeout, ck.stop)
		select {
		case <-ck.stop:
			return
		default:
		}
		ck.mu.Lock()
		ck.result.Probes++
		ck.result.At = time.Now()
		ck.result.OK = err == nil
		ck.result.Err = ""
		if err != nil {
			ck.result.Err = err.Error()
		}
		wasFailing := ck.failing
		ck.failing = err != nil
		ck.mu.Unlock()
		// Look the slot up again: a change may have moved the server
		// while the probe ran.
		if i = e.slotOf(id); i >= 0 {
			switch {
			case err != nil:
				e.table.Blacklist(i, every+timeout+time.Second)
				if !wasFailing {
					e.log.Printf("server %d (%s): health check failed: %v; blacklisted while it fails", i, s.Addr(), err)
				}
			case wasFailing:
				e.table.Blacklist(i, 0)
				e.log.Printf("server %d (%s): health check passes again; reinstated", i, s.Addr())
			}
		}
		t.Reset(every)
	}
}

// probe runs one check of s: connect, and for http send a GET and read
// the status line.
func probe(s config.Server, chk config.Check, timeout time.Duration, stop <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var d net.Dialer
	var conn net.Conn
	var err error
	host := ""
	if s.Host.IsUnix() {
		conn, err = d.DialContext(ctx, "unix", s.Host.Path)
		host = "localhost"
	} else {
		conn, err = d.DialContext(ctx, "tcp", s.Addr().String())
		host = s.Addr().String()
	}
	if err != nil {
		return fmt.Errorf("connect: %w", unwrapOp(err))
	}
	defer conn.Close()
	if chk.Kind != "http" {
		return nil
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: pen-health-check\r\nConnection: close\r\n\r\n", chk.Path, host); err != nil {
		return fmt.Errorf("send: %w", unwrapOp(err))
	}
	line, err := bufio.NewReaderSize(conn, 512).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no HTTP answer: %w", unwrapOp(err))
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return fmt.Errorf("not an HTTP answer: %q", strings.TrimSpace(line))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil {
		return fmt.Errorf("not an HTTP answer: %q", strings.TrimSpace(line))
	}
	if code != chk.Status {
		return fmt.Errorf("HTTP %d, want %d", code, chk.Status)
	}
	return nil
}

// unwrapOp drops the "dial tcp 1.2.3.4:80: connect:" prefixes of a
// net.OpError, leaving the reason ("connection refused").
func unwrapOp(err error) error {
	if oe, ok := err.(*net.OpError); ok && oe.Err != nil {
		err = oe.Err
	}
	if se, ok := err.(*os.SyscallError); ok && se.Err != nil {
		err = se.Err
	}
	return err
}
