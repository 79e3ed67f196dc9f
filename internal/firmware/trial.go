package firmware

import (
	"context"
	"fmt"
	"time"
)

// Trial runs the trial logic of one boot (see the package
// documentation). Its fields other than the settings are seams: the init
// process fills them with the real clock, health check, boot partition and
// reboot; tests with fakes.
type Trial struct {
	StatePath string
	Running   Build
	Settings  Settings
	// Interval between health probes; Stable consecutive successful probes
	// make the build healthy.
	Interval time.Duration
	Stable   int

	Now        func() time.Time
	Healthy    func(ctx context.Context) error // one probe of pen's health
	SwitchRoot func(partition int) error       // re-point root= for the next boot
	Reboot     func() error
	Logf       func(format string, args ...any)
}

// Verdicts of Run.
const (
	VerdictNone       = "none"        // no trial (the good build, or nothing to return to and unhealthy)
	VerdictGood       = "good"        // the trial build is now the good one
	VerdictRolledBack = "rolled back" // root= points to the good build again; Reboot was called
)

// Run decides, watches and acts; it returns when the verdict is in (or,
// after a rollback, when Reboot returned). deadline is measured from the
// call.
func (t *Trial) Run(ctx context.Context) (string, error) {
	start := t.Now()
	deadline := start.Add(t.Settings.Timeout)
	st, err := Load(t.StatePath)
	if err != nil {
		t.Logf("firmware state: %v; starting afresh", err)
		st = State{}
	}
	next, action, note := Begin(st, t.Running, start, t.Settings.MaxBoots)
	t.Logf("firmware: %s", note)
	if err := Save(t.StatePath, next); err != nil {
		// Without the state there is no boot count, but a rollback after
		// a failed health check still works.
		t.Logf("firmware state: saving: %v", err)
	}
	st = next
	switch action {
	case Run:
		return VerdictNone, nil
	case RollBackNow:
		return t.rollBack(st, note)
	}

	interval := t.Interval
	if interval <= 0 {
		interval = time.Second
	}
	stable := max(t.Stable, 1)
	ok := 0
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, interval*3)
		last = t.Healthy(pctx)
		cancel()
		if last == nil {
			ok++
		} else {
			ok = 0
		}
		if ok >= stable {
			st = Confirm(st, t.Running, t.Now())
			if err := Save(t.StatePath, st); err != nil {
				t.Logf("firmware state: saving: %v", err)
			}
			t.Logf("firmware: %v is healthy after %v: it is the good build now", t.Running, t.Now().Sub(start).Round(100*time.Millisecond))
			return VerdictGood, nil
		}
		if !t.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return VerdictNone, ctx.Err()
		case <-time.After(interval):
		}
	}
	reason := fmt.Sprintf("not healthy within %v: %v", t.Settings.Timeout, last)
	if action == NoFallback {
		t.Logf("firmware: %v is %s, and there is no known good build to return to", t.Running, reason)
		return VerdictNone, nil
	}
	return t.rollBack(st, reason)
}

func (t *Trial) rollBack(st State, reason string) (string, error) {
	to := st.Good
	t.Logf("firmware: ROLLBACK from %v to %v: %s", t.Running, to, reason)
	if err := t.SwitchRoot(to.Root); err != nil {
		return VerdictNone, fmt.Errorf("rolling back: re-pointing root= to root %s: %w", RootName(to.Root), err)
	}
	st = RolledBack(st, t.Running, t.Now(), reason)
	if err := Save(t.StatePath, st); err != nil {
		// The next boot records the rollback from the trial it finds.
		t.Logf("firmware state: saving: %v", err)
	}
	t.Logf("firmware: root= points to root %s again; rebooting", RootName(to.Root))
	return VerdictRolledBack, t.Reboot()
}
