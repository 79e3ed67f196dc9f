package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Contender is one way of reaching the service under test: directly or
// through a proxy.
type Contender struct {
	Name string // e.g. "direct", "pen", "haproxy"
	Addr string // a URL for HTTP, host:port for DNS
}

// ParseContender parses "name=addr".
func ParseContender(s string) (Contender, error) {
	name, addr, ok := strings.Cut(s, "=")
	if !ok || name == "" || addr == "" || strings.ContainsAny(name, " \t=") {
		return Contender{}, fmt.Errorf("contender %q: want name=address", s)
	}
	return Contender{Name: name, Addr: addr}, nil
}

// Rounds measures contenders in turn, several rounds over, so that a slow
// spell of a noisy machine hits every contender alike rather than one. The
// order rotates each round so that no contender always runs first, right
// after another's load has stopped.
type Rounds struct {
	Test   string
	Unit   string
	Rounds int
	Gap    time.Duration // pause between two measurements

	// Check tells whether a contender works at all (one request, say).
	// A contender that fails it is recorded as not working and skipped.
	Check func(ctx context.Context, c Contender) error
	// Measure measures a contender once.
	Measure func(ctx context.Context, c Contender) (value float64, detail string, err error)

	Rec *Recorder
	Log io.Writer // progress lines; may be nil
}

func (r Rounds) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

// Run measures the contenders. It returns an error only when recording
// fails; a contender that fails is recorded as such.
func (r Rounds) Run(ctx context.Context, cs []Contender) error {
	up := make([]bool, len(cs))
	for i, c := range cs {
		if err := r.Check(ctx, c); err != nil {
			r.logf("%s %s: not working: %v", r.Test, c.Name, err)
			if err := r.Rec.Add(Failed(r.Test, c.Name, 0, r.Unit, "not working: "+err.Error())); err != nil {
				return err
			}
			continue
		}
		up[i] = true
	}
	first := true
	for round := 1; round <= r.Rounds; round++ {
		for k := range cs {
			i := (k + round - 1) % len(cs)
			if !up[i] || ctx.Err() != nil {
				continue
			}
			if !first && r.Gap > 0 {
				time.Sleep(r.Gap)
			}
			first = false
			c := cs[i]
			v, detail, err := r.Measure(ctx, c)
			if err != nil {
				r.logf("%s %s round %d: failed: %v", r.Test, c.Name, round, err)
				if err := r.Rec.Add(Failed(r.Test, c.Name, round, r.Unit, "failed: "+err.Error())); err != nil {
					return err
				}
				if cerr := r.Check(ctx, c); cerr != nil {
					up[i] = false
					r.logf("%s %s: stopped working: %v", r.Test, c.Name, cerr)
					if err := r.Rec.Add(Failed(r.Test, c.Name, 0, r.Unit, "stopped working: "+cerr.Error())); err != nil {
						return err
					}
				}
				continue
			}
			r.logf("%s %s round %d: %.0f %s %s", r.Test, c.Name, round, v, r.Unit, detail)
			rec := Record{Test: r.Test, Contender: c.Name, Round: round, Value: v, Unit: r.Unit, Detail: detail}
			if err := r.Rec.Add(rec); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}
