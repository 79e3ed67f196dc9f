// Package firmware is the appliance's view of its own firmware: which root
// partition runs which build, the trial of a newly installed root and the
// rollback when it fails, the boot partition's command line, gokrazy's
// update API, and update images.
//
// It does not import the gokrazy runtime, so that pen's admin UI (which
// reads the state and writes updates through gokrazy's API) can use it.
//
// # Trial boot
//
// gokrazy's /update/switch re-points root= in the boot partition's
// cmdline.txt and loader/entries/gokrazy.conf to the other root partition,
// for good; its /update/testboot does nothing on our images. So the
// appliance's init owns trials. It keeps a State on /perm, written
// atomically, recording the last root partition known good and its build.
// At every boot it compares the running root (from /proc/cmdline) and build
// with that record (Begin):
//
//   - No record (first boot): the running root is good.
//   - The running root and build are the good ones: nothing to do. If a
//     trial was pending, the boot came back to the good root without the
//     trial finishing (a rollback whose record a power cut lost): it is
//     recorded as rolled back.
//   - Otherwise this is a trial. Its boots are counted, atomically, before
//     anything else runs; more than MaxBoots boots without a verdict mean
//     a crash or panic loop, and the appliance rolls back at once. Else it
//     watches pen's health until the deadline: healthy makes the running
//     root the good one (Confirm); not healthy rolls back (RollBack).
//
// Rolling back rewrites root= in place to the good root, fsyncs, records
// the rollback and reboots. The order makes a power cut harmless at any
// point: before the rewrite the trial root boots again and its boot count
// grows; after it the good root boots and Begin records the rollback.
package firmware

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pen-lb/pen-appliance/internal/atomicfile"
)

// StatePath is where the appliance keeps its State.
const StatePath = "/perm/appliance/firmware.json"

// Build identifies the build in one root partition.
type Build struct {
	Root      int    `json:"root"`       // partition number, 2 (root A) or 3 (root B)
	Version   string `json:"version"`    // pen's version string
	BuildTime string `json:"build_time"` // the image's build timestamp (RFC 3339)
}

// Same reports whether b and o are the same build in the same partition.
func (b Build) Same(o Build) bool { return b.Root == o.Root && b.BuildTime == o.BuildTime }

// RootName is "A" for partition 2 and "B" for partition 3.
func RootName(n int) string {
	switch n {
	case 2:
		return "A"
	case 3:
		return "B"
	}
	return fmt.Sprintf("partition %d", n)
}

func (b Build) String() string {
	if b.Root == 0 {
		return "none"
	}
	return fmt.Sprintf("%s (built %s) on root %s", b.Version, b.BuildTime, RootName(b.Root))
}

// Pending is a trial in progress.
type Pending struct {
	Build   Build     `json:"build"`
	Boots   int       `json:"boots"`   // boots of this build so far, this one included
	Started time.Time `json:"started"` // its first boot
}

// Results of an update.
const (
	ResultTrial      = "trial"       // in progress
	ResultGood       = "good"        // the new build passed its health check
	ResultRolledBack = "rolled back" // the appliance returned to the previous build
)

// Update is the last update the appliance booted.
type Update struct {
	From     Build     `json:"from"`
	To       Build     `json:"to"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Result   string    `json:"result"`
	Reason   string    `json:"reason,omitempty"` // why it was rolled back
}

// State is what the appliance remembers about its firmware.
type State struct {
	Good       Build    `json:"good"`              // the last build known good
	Previous   Build    `json:"previous,omitzero"` // the good build before it
	Trial      *Pending `json:"trial,omitempty"`   // the trial in progress
	LastUpdate *Update  `json:"last_update,omitempty"`
	Rollbacks  int      `json:"rollbacks"` // rollbacks since the state was created
}

// Load reads the state at path. A missing file is a zero State and no
// error.
func Load(path string) (State, error) {
	var st State
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	} else if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// Save writes st to path atomically (see package atomicfile).
func Save(path string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}

// OtherRoot returns the other root partition: 3 for 2 and 2 for 3.
func OtherRoot(n int) int { return 5 - n }

// Action is what Begin decides for a boot.
type Action int

const (
	// Run: the running build is the good one (or just became it on first
	// boot); nothing to watch.
	Run Action = iota
	// Watch: a trial; watch health until the deadline.
	Watch
	// RollBackNow: a trial that has booted too often; roll back at once.
	RollBackNow
	// NoFallback: the running build is not known good, but the other root
	// does not hold the good build either; run without a trial.
	NoFallback
)

func (a Action) String() string {
	return [...]string{"run", "watch", "roll back now", "no fallback"}[a]
}

// Begin decides what to do for a boot of running at time now, and
// returns the state to save before anything else happens. maxBoots is the
// number of trial boots allowed without a verdict. note says what happened,
// for the log.
func Begin(st State, running Build, now time.Time, maxBoots int) (next State, a Action, note string) {
	next = st
	if st.Good.Root == 0 {
		next.Good = running
		next.Trial = nil
		return next, Run, fmt.Sprintf("no firmware state yet: %v is good", running)
	}
	if running.Same(st.Good) {
		if st.Good.Version != running.Version {
			next.Good.Version = running.Version
		}
		if t := st.Trial; t != nil {
			next.Trial = nil
			next.Rollbacks++
			next.LastUpdate = finished(st.LastUpdate, st.Good, t.Build, now, ResultRolledBack,
				fmt.Sprintf("the boot returned to %v before the trial of %v ended (after %d boots of it)", running, t.Build, t.Boots))
			return next, Run, "rolled back: " + next.LastUpdate.Reason
		}
		if u := st.LastUpdate; u != nil && u.Result == ResultRolledBack && u.From.Same(running) {
			return next, Run, fmt.Sprintf("running the good build %v; the update to %v was rolled back at %s: %s", running, u.To, u.Finished.UTC().Format(time.RFC3339), u.Reason)
		}
		return next, Run, fmt.Sprintf("running the good build %v", running)
	}
	if st.Good.Root != OtherRoot(running.Root) {
		// The good build's partition was overwritten (an update written
		// while this one was on trial): there is nothing known good to
		// return to.
		next.Trial = nil
		return next, NoFallback, fmt.Sprintf("running %v, not known good, but root %s no longer holds the good build %v: no trial", running, RootName(OtherRoot(running.Root)), st.Good)
	}
	t := st.Trial
	if t == nil || !t.Build.Same(running) {
		t = &Pending{Build: running, Started: now}
		next.LastUpdate = &Update{From: st.Good, To: running, Started: now, Result: ResultTrial}
	} else {
		t = &Pending{Build: t.Build, Boots: t.Boots, Started: t.Started}
		t.Build.Version = running.Version
	}
	t.Boots++
	next.Trial = t
	if next.LastUpdate == nil || !next.LastUpdate.To.Same(running) {
		next.LastUpdate = &Update{From: st.Good, To: running, Started: t.Started, Result: ResultTrial}
	}
	if t.Boots > maxBoots {
		return next, RollBackNow, fmt.Sprintf("trial of %v: boot %d, more than %d without becoming healthy", running, t.Boots, maxBoots)
	}
	return next, Watch, fmt.Sprintf("trial of %v: boot %d of at most %d; previous good build %v", running, t.Boots, maxBoots, st.Good)
}

// Confirm records that the running build (on trial) passed its health
// check: it becomes the good build.
func Confirm(st State, running Build, now time.Time) State {
	next := st
	next.Previous = st.Good
	next.Good = running
	next.Trial = nil
	next.LastUpdate = finished(st.LastUpdate, st.Good, running, now, ResultGood, "")
	return next
}

// RolledBack records a rollback from the running build (on trial) to the
// good build, for the reason given.
func RolledBack(st State, running Build, now time.Time, reason string) State {
	next := st
	next.Trial = nil
	next.Rollbacks++
	next.LastUpdate = finished(st.LastUpdate, st.Good, running, now, ResultRolledBack, reason)
	return next
}

func finished(u *Update, from, to Build, now time.Time, result, reason string) *Update {
	out := &Update{From: from, To: to, Started: now}
	if u != nil && u.To.Same(to) {
		out.Started = u.Started
		out.From = u.From
	}
	out.Finished = now
	out.Result = result
	out.Reason = reason
	return out
}

// Environment variables the appliance's init gives pen, so that the admin
// UI knows it runs on an appliance and which build it is.
const (
	EnvState     = "PEN_APPLIANCE_STATE"      // path of the State file
	EnvRoot      = "PEN_APPLIANCE_ROOT"       // the running root partition, 2 or 3
	EnvBuildTime = "PEN_APPLIANCE_BUILD_TIME" // the running build's timestamp
)

// Env returns the environment variables for pen.
func Env(statePath string, running Build) []string {
	return []string{EnvState + "=" + statePath, EnvRoot + "=" + strconv.Itoa(running.Root), EnvBuildTime + "=" + running.BuildTime}
}

// FromEnv returns what Env set, with ok false when pen does not run on an
// appliance.
func FromEnv(getenv func(string) string) (statePath string, running Build, ok bool) {
	statePath = getenv(EnvState)
	root, err := strconv.Atoi(getenv(EnvRoot))
	if statePath == "" || err != nil {
		return "", Build{}, false
	}
	return statePath, Build{Root: root, BuildTime: getenv(EnvBuildTime)}, true
}
