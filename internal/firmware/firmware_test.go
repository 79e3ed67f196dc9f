package firmware

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/firmware/firmwaretest"
)

const guid = "60c24cc1-f3f9-427a-8199-1a2b3c4d0001"

var (
	v1 = Build{Root: 2, Version: "v1", BuildTime: "2026-12-01T10:00:00Z"}
	v2 = Build{Root: 3, Version: "v2", BuildTime: "2026-12-01T11:00:00Z"}
	v3 = Build{Root: 2, Version: "v3", BuildTime: "2026-12-01T12:00:00Z"}
)

func cmdline(root string) string {
	return "console=tty1 console=ttyS0,115200 root=" + root + " ro init=/gokrazy/init panic=10 oops=panic" + strings.Repeat(" ", 64)
}

func TestParseAndSetRoot(t *testing.T) {
	for _, c := range []struct {
		root      string
		partition int
		other     string
	}{
		{"PARTUUID=" + guid + "/PARTNROFF=1", 2, "PARTUUID=" + guid + "/PARTNROFF=2"},
		{"PARTUUID=" + strings.ToUpper(guid) + "/PARTNROFF=2", 3, "PARTUUID=" + strings.ToUpper(guid) + "/PARTNROFF=1"},
		{"PARTUUID=1a2b3c4d-02", 2, "PARTUUID=1a2b3c4d-03"},
		{"/dev/mmcblk0p3", 3, "/dev/mmcblk0p2"},
	} {
		line := cmdline(c.root)
		r, err := ParseRoot(line)
		if err != nil || r.Partition != c.partition {
			t.Errorf("ParseRoot(%q) = %+v, %v; want partition %d", c.root, r, err, c.partition)
			continue
		}
		got, err := SetRoot([]byte(line), OtherRoot(c.partition))
		if want := cmdline(c.other); err != nil || string(got) != want {
			t.Errorf("SetRoot(%q) = %q, %v; want %q", line, got, err, want)
		}
		// Entry form: the same line after "options ".
		entry := "title pen appliance\nlinux /vmlinuz\noptions " + line
		got, err = SetRoot([]byte(entry), OtherRoot(c.partition))
		if want := "title pen appliance\nlinux /vmlinuz\noptions " + cmdline(c.other); err != nil || string(got) != want {
			t.Errorf("SetRoot(entry) = %q, %v", got, err)
		}
	}
	for _, bad := range []string{"root=/dev/vda2", "root=PARTUUID=" + guid, "ro quiet", "root=PARTUUID=" + guid + "/PARTNROFF=3"} {
		if r, err := ParseRoot(bad); err == nil {
			t.Errorf("ParseRoot(%q) = %+v, want an error", bad, r)
		}
	}
}

func TestParseSettings(t *testing.T) {
	s, errs := ParseSettings("ro panic=10", "", "")
	if s.Timeout != DefaultTimeout || s.MaxBoots != DefaultMaxBoots || len(errs) != 0 {
		t.Errorf("defaults: %+v, %v", s, errs)
	}
	s, errs = ParseSettings("ro", "90s\n", "5\n")
	if s.Timeout != 90*time.Second || s.MaxBoots != 5 || len(errs) != 0 {
		t.Errorf("files: %+v, %v", s, errs)
	}
	s, errs = ParseSettings("ro pen.trial_timeout=25s pen.trial_boots=2", "90s", "5")
	if s.Timeout != 25*time.Second || s.MaxBoots != 2 || len(errs) != 0 {
		t.Errorf("the command line wins: %+v, %v", s, errs)
	}
	s, errs = ParseSettings("pen.trial_timeout=1s pen.trial_boots=0", "", "")
	if s.Timeout != DefaultTimeout || s.MaxBoots != DefaultMaxBoots || len(errs) != 2 {
		t.Errorf("out of range: %+v, %v", s, errs)
	}
}

func TestBegin(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

	// First boot: the running build is good.
	st, a, _ := Begin(State{}, v1, now, 3)
	if a != Run || st.Good != v1 || st.Trial != nil {
		t.Fatalf("first boot: %v, %+v", a, st)
	}
	good := st

	// The good build boots again: nothing happens.
	if st, a, _ := Begin(good, v1, now, 3); a != Run || st.Trial != nil || st.LastUpdate != nil {
		t.Errorf("good boot: %v, %+v", a, st)
	}

	// An update to root B: a trial, its boots counted.
	st, a, _ = Begin(good, v2, now, 3)
	if a != Watch || st.Trial == nil || st.Trial.Boots != 1 || st.LastUpdate == nil || st.LastUpdate.Result != ResultTrial || st.LastUpdate.From != v1 {
		t.Fatalf("trial boot 1: %v, %+v", a, st)
	}
	for boot := 2; boot <= 3; boot++ {
		st, a, _ = Begin(st, v2, now.Add(time.Duration(boot)*time.Minute), 3)
		if a != Watch || st.Trial.Boots != boot || !st.Trial.Started.Equal(now) {
			t.Fatalf("trial boot %d: %v, %+v", boot, a, st.Trial)
		}
	}
	// A fourth boot without a verdict: a crash or panic loop.
	looping, a, _ := Begin(st, v2, now.Add(5*time.Minute), 3)
	if a != RollBackNow || looping.Trial.Boots != 4 {
		t.Errorf("boot 4: %v, %+v", a, looping.Trial)
	}

	// Healthy: v2 is good, v1 previous.
	ok := Confirm(st, v2, now.Add(time.Minute))
	if ok.Good != v2 || ok.Previous != v1 || ok.Trial != nil || ok.LastUpdate.Result != ResultGood || ok.LastUpdate.From != v1 || ok.LastUpdate.To != v2 || !ok.LastUpdate.Started.Equal(now) {
		t.Errorf("Confirm: %+v %+v", ok, ok.LastUpdate)
	}
	if st, a, _ := Begin(ok, v2, now, 3); a != Run || st.Trial != nil {
		t.Errorf("after confirming: %v, %+v", a, st)
	}

	// Not healthy: rolled back; the good build boots and nothing more
	// happens.
	rb := RolledBack(st, v2, now.Add(time.Minute), "pen never answered")
	if rb.Good != v1 || rb.Trial != nil || rb.Rollbacks != 1 || rb.LastUpdate.Result != ResultRolledBack || rb.LastUpdate.Reason != "pen never answered" {
		t.Errorf("RolledBack: %+v %+v", rb, rb.LastUpdate)
	}
	if st, a, note := Begin(rb, v1, now, 3); a != Run || st.Rollbacks != 1 || st.LastUpdate.Result != ResultRolledBack || !strings.Contains(note, "was rolled back") {
		t.Errorf("boot after the rollback: %v, %+v, %q", a, st, note)
	}

	// A power cut after root= was rewritten but before the rollback was
	// recorded: the good build boots with the trial pending.
	st2, a, note := Begin(st, v1, now.Add(2*time.Minute), 3)
	if a != Run || st2.Trial != nil || st2.Rollbacks != 1 || st2.LastUpdate.Result != ResultRolledBack || st2.Good != v1 {
		t.Errorf("back on the good root with a trial pending: %v, %+v (%s)", a, st2, note)
	}

	// A new build (v3) written to root A while v2 was on trial overwrote
	// the good build: no fallback.
	if st3, a, _ := Begin(st, v3, now, 3); a != NoFallback || st3.Trial != nil {
		t.Errorf("good root overwritten: %v, %+v", a, st3)
	}

	// Another update while the trial is pending (a different build in
	// the same partition) starts a new trial.
	v2b := v2
	v2b.BuildTime = "2026-12-01T11:30:00Z"
	if st4, a, _ := Begin(st, v2b, now.Add(time.Hour), 3); a != Watch || st4.Trial.Boots != 1 || !st4.Trial.Started.Equal(now.Add(time.Hour)) || st4.LastUpdate.To != v2b {
		t.Errorf("new build on trial: %v, %+v", a, st4.Trial)
	}
}

func TestStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "perm", "appliance", "firmware.json")
	if st, err := Load(path); err != nil || st.Good.Root != 0 {
		t.Fatalf("missing file: %+v, %v", st, err)
	}
	st := RolledBack(State{Good: v1, Trial: &Pending{Build: v2, Boots: 1}}, v2, time.Unix(1e9, 0).UTC(), "x")
	if err := Save(path, st); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil || got.Good != v1 || got.Rollbacks != 1 || got.LastUpdate.Reason != "x" || !got.LastUpdate.Finished.Equal(time.Unix(1e9, 0)) {
		t.Errorf("reloaded %+v, %v", got, err)
	}
	os.WriteFile(path, []byte("{"), 0o644)
	if _, err := Load(path); err == nil {
		t.Errorf("a damaged file loads")
	}
}

func bootImage(t *testing.T, line string, noEntry bool) []byte {
	return firmwaretest.BootFS(line, !noEntry)
}

// memDevice is a boot partition in memory.
type memDevice struct {
	b      []byte
	syncs  int
	failAt int // fail the write at this offset
}

func (d *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.b)) {
		return 0, errors.New("beyond the device")
	}
	return copy(p, d.b[off:]), nil
}

func (d *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if d.failAt != 0 && int(off) == d.failAt {
		return 0, errors.New("I/O error")
	}
	return copy(d.b[off:], p), nil
}

func (d *memDevice) Sync() error { d.syncs++; return nil }

func TestSwitchRoot(t *testing.T) {
	a, b := cmdline("PARTUUID="+guid+"/PARTNROFF=1"), cmdline("PARTUUID="+guid+"/PARTNROFF=2")
	dev := &memDevice{b: bootImage(t, b, false)}
	if got, err := ReadCmdline(dev); err != nil || string(got) != b {
		t.Fatalf("ReadCmdline = %q, %v", got, err)
	}
	if err := SwitchRoot(dev, 2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(dev.b, []byte("CMDLINE TXT")) || bytes.Count(dev.b, []byte(a)) != 2 || bytes.Contains(dev.b, []byte(b)) {
		t.Errorf("after SwitchRoot(2), cmdline.txt and the loader entry do not both say root A")
	}
	if dev.syncs != 2 {
		t.Errorf("%d syncs, want one after each file", dev.syncs)
	}
	// Again: nothing to write.
	if err := SwitchRoot(dev, 2); err != nil || dev.syncs != 2 {
		t.Errorf("second SwitchRoot: %v, %d syncs", err, dev.syncs)
	}

	// The Pi has no loader entry.
	pi := &memDevice{b: bootImage(t, b, true)}
	if err := SwitchRoot(pi, 2); err != nil || !bytes.Contains(pi.b, []byte(a)) {
		t.Errorf("without a loader entry: %v", err)
	}

	// A failed write is reported.
	bad := &memDevice{b: bootImage(t, b, true)}
	bad.failAt = (4+4)*512 + 16*32
	if err := SwitchRoot(bad, 2); err == nil {
		t.Errorf("SwitchRoot succeeded through an I/O error")
	}
	// Not a boot file system.
	if err := SwitchRoot(&memDevice{b: make([]byte, 4096)}, 2); err == nil {
		t.Errorf("SwitchRoot on zeros succeeded")
	}
}

func TestFindBootPartition(t *testing.T) {
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	disk := func(name string, g string, parts ...string) {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		os.MkdirAll(dev, 0o755)
		img := make([]byte, 3*512)
		if g != "" {
			copy(img[512:], "EFI PART")
			var raw [16]byte
			// Encode in the mixed-endian form.
			var a, b, c uint64
			var d [8]byte
			parseHex := func(s string) uint64 {
				var v uint64
				for _, ch := range s {
					v = v*16 + uint64(strings.IndexRune("0123456789abcdef", ch))
				}
				return v
			}
			f := strings.Split(g, "-")
			a, b, c = parseHex(f[0]), parseHex(f[1]), parseHex(f[2])
			binary.BigEndian.PutUint16(d[0:], uint16(parseHex(f[3])))
			for i := 0; i < 6; i++ {
				d[2+i] = byte(parseHex(f[4][2*i : 2*i+2]))
			}
			binary.LittleEndian.PutUint32(raw[0:], uint32(a))
			binary.LittleEndian.PutUint16(raw[4:], uint16(b))
			binary.LittleEndian.PutUint16(raw[6:], uint16(c))
			copy(raw[8:], d[:])
			copy(img[1024+16:], raw[:])
		}
		os.WriteFile(filepath.Join(dev, name), img, 0o644)
		for i, p := range parts {
			os.MkdirAll(filepath.Join(sys, name, p), 0o755)
			os.WriteFile(filepath.Join(sys, name, p, "partition"), []byte{byte('1' + i), '\n'}, 0o644)
		}
	}
	disk("loop0", "")
	disk("sda", "60c24cc1-f3f9-427a-8199-ffffffff0001", "sda1", "sda2")
	disk("mmcblk0", guid, "mmcblk0p1", "mmcblk0p2", "mmcblk0p3", "mmcblk0p4")
	got, err := FindBootPartition(sys, dev, strings.ToUpper(guid))
	if want := filepath.Join(dev, "mmcblk0p1"); err != nil || got != want {
		t.Errorf("FindBootPartition = %q, %v; want %q", got, err, want)
	}
	if got, err := FindBootPartition(sys, dev, "60c24cc1-f3f9-427a-8199-000000000001"); err == nil {
		t.Errorf("FindBootPartition of a missing disk = %q", got)
	}
}

// fakeBoot is a boot of the trial runner with an injected clock, health,
// boot partition and reboot.
type fakeBoot struct {
	t        *testing.T
	now      time.Time
	healthy  func(n int) error // answer to the nth probe
	probes   int
	switched []int
	reboots  int
	log      []string
}

func (f *fakeBoot) trial(path string, running Build, s Settings) *Trial {
	return &Trial{
		StatePath: path, Running: running, Settings: s, Interval: time.Millisecond, Stable: 3,
		Now: func() time.Time { return f.now },
		Healthy: func(ctx context.Context) error {
			f.probes++
			f.now = f.now.Add(time.Second) // each probe takes a second of the fake clock
			return f.healthy(f.probes)
		},
		SwitchRoot: func(n int) error { f.switched = append(f.switched, n); return nil },
		Reboot:     func() error { f.reboots++; return nil },
		Logf: func(format string, args ...any) {
			f.log = append(f.log, fmt.Sprintf(format, args...))
		},
	}
}

func TestTrialRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "firmware.json")
	s := Settings{Timeout: 60 * time.Second, MaxBoots: 2}
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	never := func(int) error { return errors.New("connection refused") }
	always := func(int) error { return nil }
	ctx := context.Background()

	// First boot of v1: good at once, no probes.
	f := &fakeBoot{t: t, now: start, healthy: never}
	if v, err := f.trial(path, v1, s).Run(ctx); v != VerdictNone || err != nil || f.probes != 0 {
		t.Fatalf("first boot: %s, %v, %d probes", v, err, f.probes)
	}

	// v2 on trial, never healthy: rolled back after the timeout.
	f = &fakeBoot{t: t, now: start, healthy: never}
	v, err := f.trial(path, v2, s).Run(ctx)
	if v != VerdictRolledBack || err != nil || len(f.switched) != 1 || f.switched[0] != 2 || f.reboots != 1 {
		t.Fatalf("unhealthy trial: %s, %v, switched %v, %d reboots\n%s", v, err, f.switched, f.reboots, strings.Join(f.log, "\n"))
	}
	if el := f.now.Sub(start); el < 60*time.Second || el > 62*time.Second {
		t.Errorf("rolled back after %v, want the 60 s timeout", el)
	}
	st, _ := Load(path)
	if st.Good != v1 || st.Rollbacks != 1 || st.Trial != nil || st.LastUpdate.Result != ResultRolledBack || !strings.Contains(st.LastUpdate.Reason, "connection refused") {
		t.Errorf("state after the rollback: %+v %+v", st, st.LastUpdate)
	}
	if !strings.Contains(strings.Join(f.log, "\n"), "ROLLBACK") {
		t.Errorf("the log does not say ROLLBACK:\n%s", strings.Join(f.log, "\n"))
	}

	// The next boot is v1 again: nothing to do, the rollback stays
	// recorded.
	f = &fakeBoot{t: t, now: start.Add(2 * time.Minute), healthy: never}
	if v, _ := f.trial(path, v1, s).Run(ctx); v != VerdictNone || f.probes != 0 {
		t.Errorf("boot after the rollback: %s, %d probes", v, f.probes)
	}

	// v2 again, healthy only from the 5th probe with a flap at the 6th:
	// three consecutive good probes count.
	f = &fakeBoot{t: t, now: start.Add(time.Hour), healthy: func(n int) error {
		if n < 5 || n == 6 {
			return errors.New("pen not running")
		}
		return nil
	}}
	if v, err := f.trial(path, v2, s).Run(ctx); v != VerdictGood || err != nil || f.probes != 9 || f.reboots != 0 {
		t.Fatalf("healthy trial: %s, %v, %d probes, %d reboots", v, err, f.probes, f.reboots)
	}
	st, _ = Load(path)
	if st.Good != v2 || st.Previous != v1 || st.Trial != nil || st.LastUpdate.Result != ResultGood || st.Rollbacks != 1 {
		t.Errorf("state after a good trial: %+v", st)
	}

	// v3 in root A crashes the appliance before a verdict, boot after
	// boot (the runner never gets to probe): after MaxBoots boots it
	// rolls back at once, without probing.
	for boot := 1; boot <= 2; boot++ {
		st, _ := Load(path)
		next, a, _ := Begin(st, v3, start.Add(2*time.Hour), s.MaxBoots)
		if a != Watch {
			t.Fatalf("boot %d: %v", boot, a)
		}
		Save(path, next) // then the power goes or the kernel panics
	}
	f = &fakeBoot{t: t, now: start.Add(3 * time.Hour), healthy: always}
	if v, err := f.trial(path, v3, s).Run(ctx); v != VerdictRolledBack || err != nil || f.probes != 0 || len(f.switched) != 1 || f.switched[0] != 3 {
		t.Fatalf("crash loop: %s, %v, %d probes, switched %v", v, err, f.probes, f.switched)
	}
	st, _ = Load(path)
	if st.Good != v2 || st.Rollbacks != 2 || !strings.Contains(st.LastUpdate.Reason, "boot 3") {
		t.Errorf("state after the crash loop: %+v %+v", st, st.LastUpdate)
	}

	// A boot partition that cannot be rewritten: no reboot, an error.
	Save(path, State{Good: v2})
	f = &fakeBoot{t: t, now: start, healthy: never}
	tr := f.trial(path, v3, s)
	tr.SwitchRoot = func(int) error { return errors.New("read-only") }
	if v, err := tr.Run(ctx); v != VerdictNone || err == nil || f.reboots != 0 {
		t.Errorf("failed switch: %s, %v, %d reboots", v, err, f.reboots)
	}
}

func TestTrialWithoutPerm(t *testing.T) {
	// /perm is not writable (a file where the directory should be): the
	// trial still watches and rolls back.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "appliance"), nil, 0o444)
	path := filepath.Join(dir, "appliance", "firmware.json")
	f := &fakeBoot{t: t, now: time.Now(), healthy: func(int) error { return nil }}
	// No state: the running build is taken as good, saving fails.
	if v, err := f.trial(path, v2, Settings{Timeout: time.Minute, MaxBoots: 3}).Run(context.Background()); v != VerdictNone || err != nil {
		t.Errorf("without /perm: %s, %v", v, err)
	}
	if !strings.Contains(strings.Join(f.log, "\n"), "saving") {
		t.Errorf("the failed save is not logged:\n%s", strings.Join(f.log, "\n"))
	}
}
