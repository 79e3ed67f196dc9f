package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ProcRoot is where process information is read from; tests point it at
// a fake tree.
var ProcRoot = "/proc"

// ParseVmRSS returns the VmRSS line of a /proc/PID/status file in bytes.
func ParseVmRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parsing VmRSS %q: want \"<n> kB\"", strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("parsing VmRSS %q: bad number", strings.TrimSpace(rest))
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading status: %w", err)
	}
	// Kernel threads and zombies have no VmRSS line.
	return 0, fmt.Errorf("no VmRSS line (a zombie or a kernel thread?)")
}

// ReadVmRSS returns the resident set size of process pid in bytes.
func ReadVmRSS(pid int) (int64, error) {
	f, err := os.Open(filepath.Join(ProcRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := ParseVmRSS(f)
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return n, nil
}

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ), which
// is 100 per second on every Linux architecture user space sees.
const clockTick = 10 * time.Millisecond

// ParseStatCPU returns the user plus system CPU time of all threads of a
// process from the contents of its /proc/PID/stat.
func ParseStatCPU(stat string) (time.Duration, error) {
	// The command name is in parentheses and may hold spaces and ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing stat: no ')' after the command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("parsing stat: bad CPU time %q", s)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// ReadCPU returns the CPU time process pid has used so far.
func ReadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(ProcRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	d, err := ParseStatCPU(string(b))
	if err != nil {
		return 0, fmt.Errorf("process %d: %w", pid, err)
	}
	return d, nil
}

// Alive reports whether process pid exists and is not a zombie.
func Alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join(ProcRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// MachineCPU is the CPU time all CPUs together have spent, from the
// first line of /proc/stat.
type MachineCPU struct {
	// Busy is time spent running processes (user, nice, system) or taken
	// by the hypervisor (steal).
	Busy time.Duration
	// IRQ is time spent in interrupts and softirqs. On loopback most of
	// it is the benchmark's own packets, which the kernel does not charge
	// to the processes that sent them.
	IRQ time.Duration
}

// ParseStat reads the machine's CPU times from the contents of /proc/stat.
func ParseStat(stat string) (MachineCPU, error) {
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		// user nice system idle iowait irq softirq steal ...; guest time
		// is already part of user.
		if len(f) < 9 {
			return MachineCPU{}, fmt.Errorf("parsing /proc/stat: %d fields on the cpu line, want at least 9", len(f))
		}
		var m MachineCPU
		for i, s := range f[1:9] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				return MachineCPU{}, fmt.Errorf("parsing /proc/stat: bad CPU time %q", s)
			}
			switch i {
			case 0, 1, 2, 7: // user, nice, system, steal
				m.Busy += time.Duration(n) * clockTick
			case 5, 6: // irq, softirq
				m.IRQ += time.Duration(n) * clockTick
			}
		}
		return m, nil
	}
	return MachineCPU{}, fmt.Errorf("parsing /proc/stat: no cpu line")
}

// ReadMachineCPU returns the CPU time the machine has spent so far.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile(filepath.Join(ProcRoot, "stat"))
	if err != nil {
		return MachineCPU{}, err
	}
	return ParseStat(string(b))
}

// CPUSampler measures how much CPU a set of named processes, and the
// machine as a whole, use over an interval, as fractions of one core.
type CPUSampler struct {
	Procs map[string]int // name → pid
	Wall  time.Duration  // between Start and Stop, set by Stop
	start map[string]time.Duration
	mach  MachineCPU
	ok    bool
	t0    time.Time
}

// Start takes the first sample. Processes that cannot be read are left out.
func (s *CPUSampler) Start() {
	s.start = map[string]time.Duration{}
	for name, pid := range s.Procs {
		if d, err := ReadCPU(pid); err == nil {
			s.start[name] = d
		}
	}
	m, err := ReadMachineCPU()
	s.mach, s.ok = m, err == nil
	s.t0 = time.Now()
}

// Stop returns each process's CPU use since Start, the whole machine's
// (processes only) under the name "all" and its interrupt time under
// "irq", as fractions of one core.
func (s *CPUSampler) Stop() map[string]float64 {
	wall := time.Since(s.t0)
	s.Wall = wall
	out := map[string]float64{}
	if wall <= 0 {
		return out
	}
	for name, d0 := range s.start {
		if d, err := ReadCPU(s.Procs[name]); err == nil {
			out[name] = float64(d-d0) / float64(wall)
		}
	}
	if m, err := ReadMachineCPU(); err == nil && s.ok {
		out["all"] = float64(m.Busy-s.mach.Busy) / float64(wall)
		out["irq"] = float64(m.IRQ-s.mach.IRQ) / float64(wall)
	}
	return out
}

// Other returns the CPU the rest of the machine used during a sample: all
// minus the named processes (interrupts aside), never below zero. ok is false when the
// machine-wide figure is missing.
func Other(shares map[string]float64) (other float64, ok bool) {
	all, ok := shares["all"]
	if !ok {
		return 0, false
	}
	other = all
	for name, v := range shares {
		if name != "all" && name != "irq" && name != "other" {
			other -= v
		}
	}
	return max(0, other), true
}
