package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"time"
)

// RSSRun measures what idle proxied connections cost a proxy in resident
// memory: RSS while holding N connections minus RSS before, per connection.
type RSSRun struct {
	Test   string // e.g. "rss"
	Name   string // contender, e.g. "pen"
	PID    int    // the proxy's process
	Holder Holder // dials the proxy, which forwards to an echo backend
	N      int
	Settle time.Duration // wait before each RSS reading
	Log    io.Writer
}

func (r RSSRun) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

// rssUnit is the unit of RSSRun's value.
const rssUnit = "B/conn"

// Run measures once and returns the record to keep: a value, or why there
// is none.
func (r RSSRun) Run(ctx context.Context) Record {
	fail := func(why string) Record {
		r.logf("%s %s: %s", r.Test, r.Name, why)
		return Failed(r.Test, r.Name, 0, rssUnit, why)
	}
	if !Alive(r.PID) {
		return fail(fmt.Sprintf("not working: process %d is not running", r.PID))
	}
	// One connection first, so that whatever the proxy sets up on its
	// first connection is in the baseline.
	warm, err := r.Holder.Open(ctx, 1)
	if err != nil {
		return fail("not working: " + err.Error())
	}
	warm.Close()
	sleep(ctx, r.Settle)
	before, err := ReadVmRSS(r.PID)
	if err != nil {
		return fail("not working: " + err.Error())
	}
	t0 := time.Now()
	held, err := r.Holder.Open(ctx, r.N)
	if err != nil {
		return fail("failed: " + err.Error())
	}
	defer held.Close()
	r.logf("%s %s: %d connections open and echoed in %v", r.Test, r.Name, r.N, time.Since(t0).Round(time.Millisecond))
	sleep(ctx, r.Settle)
	if err := r.recheck(held); err != nil {
		return fail("failed: held connections: " + err.Error())
	}
	during, err := ReadVmRSS(r.PID)
	if err != nil {
		return fail("failed: " + err.Error())
	}
	held.Close()
	sleep(ctx, r.Settle/2)
	after, aerr := ReadVmRSS(r.PID)
	afterS := "-"
	if aerr == nil {
		afterS = strconv.FormatInt(after, 10)
	}
	per := float64(during-before) / float64(r.N)
	r.logf("%s %s: RSS before %d, holding %d, after closing %s: %.0f B/conn", r.Test, r.Name, before, during, afterS, per)
	return Record{
		Test: r.Test, Contender: r.Name, Round: 1, Value: math.Round(per), Unit: rssUnit,
		Detail: Details("conns", strconv.Itoa(r.N), "before", strconv.FormatInt(before, 10),
			"held", strconv.FormatInt(during, 10), "after_close", afterS),
	}
}

// recheck sends a line again over a sample of the held connections, which
// shows that they survived being idle.
func (r RSSRun) recheck(h *Held) error {
	h.mu.Lock()
	var conns []net.Conn
	for i := 0; i < len(h.conns); i += max(1, len(h.conns)/20) {
		conns = append(conns, h.conns[i])
	}
	h.mu.Unlock()
	if len(conns) == 0 {
		return errors.New("none open")
	}
	msg := []byte("still there?\n")
	for _, c := range conns {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("reading the echo: %w", err)
		}
		if string(got) != string(msg) {
			return fmt.Errorf("%w: sent %q, got %q", errMismatch, msg, got)
		}
		c.SetDeadline(time.Time{})
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
