package firmware

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The forms of root= the gokrazy runtime accepts (its rootdev package),
// with the partition number or offset in the second group.
var (
	gptRootRe = regexp.MustCompile(`(?:^|\s)root=PARTUUID=([0-9a-fA-F-]+)/PARTNROFF=([12])(?:\s|$)`)
	mbrRootRe = regexp.MustCompile(`(?:^|\s)root=PARTUUID=([0-9a-fA-F]+)-0([23])(?:\s|$)`)
	devRootRe = regexp.MustCompile(`(?:^|\s)root=(/dev/(?:mmcblk[01]p|sda|loop0p|nvme0n1p))([23])(?:\s|$)`)
	anyRootRe = regexp.MustCompile(`root=[^ \n]+`)
)

// Root is the root= of a kernel command line.
type Root struct {
	Partition int    // 2 or 3
	GUID      string // the GPT partition GUID of partition 1 (lower case), for the GPT form
	form      int    // 0 GPT, 1 MBR, 2 device
	prefix    string // what precedes the number
}

// ParseRoot finds root= in a kernel command line.
func ParseRoot(cmdline string) (Root, error) {
	if m := gptRootRe.FindStringSubmatch(cmdline); m != nil {
		off, _ := strconv.Atoi(m[2])
		return Root{Partition: 1 + off, GUID: strings.ToLower(m[1]), form: 0, prefix: "PARTUUID=" + m[1] + "/PARTNROFF="}, nil
	}
	if m := mbrRootRe.FindStringSubmatch(cmdline); m != nil {
		n, _ := strconv.Atoi(m[2])
		return Root{Partition: n, form: 1, prefix: "PARTUUID=" + m[1] + "-0"}, nil
	}
	if m := devRootRe.FindStringSubmatch(cmdline); m != nil {
		n, _ := strconv.Atoi(m[2])
		return Root{Partition: n, form: 2, prefix: m[1]}, nil
	}
	return Root{}, fmt.Errorf("no root partition 2 or 3 in the kernel command line %q", strings.TrimSpace(cmdline))
}

// Arg returns root='s value for partition n in r's form.
func (r Root) Arg(n int) string {
	if r.form == 0 {
		return "root=" + r.prefix + strconv.Itoa(n-1)
	}
	return "root=" + r.prefix + strconv.Itoa(n)
}

// SetRoot returns cmdline (a cmdline.txt or a loader entry) with root=
// pointing to partition n, and the same length, as gokrazy's
// /update/switch rewrites it.
func SetRoot(cmdline []byte, n int) ([]byte, error) {
	r, err := ParseRoot(string(cmdline))
	if err != nil {
		return nil, err
	}
	if n != 2 && n != 3 {
		return nil, fmt.Errorf("root partition %d: want 2 or 3", n)
	}
	out := anyRootRe.ReplaceAllLiteral(cmdline, []byte(r.Arg(n)))
	if len(out) != len(cmdline) {
		return nil, fmt.Errorf("rewriting root= changed the command line's length (%d to %d bytes)", len(cmdline), len(out))
	}
	return out, nil
}

// Settings of the trial, from the kernel command line (pen.trial_timeout=,
// pen.trial_boots=), which wins, or from files on /perm.
type Settings struct {
	Timeout  time.Duration // from boot to a verdict
	MaxBoots int           // trial boots without a verdict before rolling back at once
}

// Defaults.
const (
	DefaultTimeout  = 60 * time.Second
	DefaultMaxBoots = 3
	MinTimeout      = 10 * time.Second
	MaxTimeout      = time.Hour
)

// Paths of the settings files below /perm.
const (
	TimeoutFile  = "appliance/trial-timeout" // a duration, e.g. "90s"
	MaxBootsFile = "appliance/trial-boots"   // a number
)

// ParseSettings reads the settings from the kernel command line and the
// contents of the two files (empty when missing). A value that does not
// parse or is out of range is reported and replaced by the default.
func ParseSettings(cmdline, timeoutFile, bootsFile string) (Settings, []error) {
	s := Settings{Timeout: DefaultTimeout, MaxBoots: DefaultMaxBoots}
	var errs []error
	timeout, boots := strings.TrimSpace(timeoutFile), strings.TrimSpace(bootsFile)
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "pen.trial_timeout="); ok {
			timeout = v
		}
		if v, ok := strings.CutPrefix(f, "pen.trial_boots="); ok {
			boots = v
		}
	}
	if timeout != "" {
		d, err := time.ParseDuration(timeout)
		if err != nil || d < MinTimeout || d > MaxTimeout {
			errs = append(errs, fmt.Errorf("trial timeout %q: want a duration from %v to %v; using %v", timeout, MinTimeout, MaxTimeout, DefaultTimeout))
		} else {
			s.Timeout = d
		}
	}
	if boots != "" {
		n, err := strconv.Atoi(boots)
		if err != nil || n < 1 || n > 100 {
			errs = append(errs, fmt.Errorf("trial boots %q: want 1 to 100; using %d", boots, DefaultMaxBoots))
		} else {
			s.MaxBoots = n
		}
	}
	return s, errs
}
