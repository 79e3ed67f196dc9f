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

// pfKthread marks kernel threads in the flags field of /proc/PID/stat.
const pfKthread = 0x00200000

// ProcTimes is what /proc/PID/stat says about a process's CPU use.
type ProcTimes struct {
	Self     time.Duration // user plus system time of all its threads
	Children time.Duration // the same of its children that it has waited for
	Kthread  bool          // a kernel thread
	State    byte          // e.g. 'R', 'S', 'Z'
}

// ParseProcStat parses the contents of a /proc/PID/stat file.
func ParseProcStat(stat string) (ProcTimes, error) {
	// The command name is in parentheses and may hold spaces and ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return ProcTimes{}, fmt.Errorf("parsing stat: no ')' after the command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), f[6] field 9 (flags); utime, stime,
	// cutime and cstime are fields 14 to 17.
	if len(f) < 15 || len(f[0]) != 1 {
		return ProcTimes{}, fmt.Errorf("parsing stat: %d fields after the command name, want at least 15", len(f))
	}
	var n [5]int64
	for k, s := range []string{f[6], f[11], f[12], f[13], f[14]} {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return ProcTimes{}, fmt.Errorf("parsing stat: bad number %q", s)
		}
		n[k] = v
	}
	return ProcTimes{
		Self:     time.Duration(n[1]+n[2]) * clockTick,
		Children: time.Duration(n[3]+n[4]) * clockTick,
		Kthread:  n[0]&pfKthread != 0,
		State:    f[0][0],
	}, nil
}

// ParseStatCPU returns the user plus system CPU time of all threads of a
// process from the contents of its /proc/PID/stat.
func ParseStatCPU(stat string) (time.Duration, error) {
	t, err := ParseProcStat(stat)
	return t.Self, err
}

func readProcStat(pid int) (ProcTimes, error) {
	b, err := os.ReadFile(filepath.Join(ProcRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return ProcTimes{}, err
	}
	t, err := ParseProcStat(string(b))
	if err != nil {
		return ProcTimes{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return t, nil
}

// ReadCPU returns the CPU time process pid has used so far.
func ReadCPU(pid int) (time.Duration, error) {
	t, err := readProcStat(pid)
	return t.Self, err
}

// Alive reports whether process pid exists and is not a zombie.
func Alive(pid int) bool {
	t, err := readProcStat(pid)
	return err == nil && t.State != 'Z' && t.State != 'X'
}

// MachineCPU is the CPU time all CPUs together have spent, from the
// first line of /proc/stat.
type MachineCPU struct {
	// Steal is time the hypervisor gave to other machines.
	Steal time.Duration
	// IRQ is time spent in interrupts and softirqs: on loopback mostly the
	// benchmark's own packets. With the kernel's tick-based accounting
	// the part that runs in a process's context also counts as that
	// process's system time.
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
			case 7:
				m.Steal = time.Duration(n) * clockTick
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

// OthersCPU returns the CPU time used so far by every user-space process
// except those in skip, each with the time of the children it has waited
// for. Between two readings the difference is what other work used, short
// processes included: when one ends, its time moves to its parent's
// children's time. Kernel threads are left out; they mostly serve the
// benchmark's own traffic.
func OthersCPU(skip map[int]bool) (map[int]time.Duration, error) {
	ents, err := os.ReadDir(ProcRoot)
	if err != nil {
		return nil, err
	}
	out := map[int]time.Duration{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] {
			continue
		}
		t, err := readProcStat(pid)
		if err != nil || t.Kthread {
			continue // gone meanwhile, or not a process we count
		}
		out[pid] = t.Self + t.Children
	}
	return out, nil
}

// othersUsed returns the CPU other processes used between two readings of
// OthersCPU: what the processes alive at the end have accumulated, minus
// what all those alive at the start had.
func othersUsed(start, end map[int]time.Duration) time.Duration {
	var d time.Duration
	for _, v := range end {
		d += v
	}
	for _, v := range start {
		d -= v
	}
	return max(0, d)
}

// CPUSampler measures how much CPU a set of named processes, the rest of
// the machine and interrupts use over an interval, as fractions of one
// core.
type CPUSampler struct {
	Procs map[string]int // name → pid
	Wall  time.Duration  // between Start and Stop, set by Stop
	start map[string]time.Duration
	other map[int]time.Duration
	mach  MachineCPU
	ok    bool
	t0    time.Time
}

// skip lists the processes that are not "other": the named ones and this
// one, which waits for the load generator it runs.
func (s *CPUSampler) skip() map[int]bool {
	m := map[int]bool{os.Getpid(): true}
	for _, pid := range s.Procs {
		m[pid] = true
	}
	return m
}

// Start takes the first sample. Processes that cannot be read are left out.
func (s *CPUSampler) Start() {
	s.start = map[string]time.Duration{}
	for name, pid := range s.Procs {
		if d, err := ReadCPU(pid); err == nil {
			s.start[name] = d
		}
	}
	s.other, _ = OthersCPU(s.skip())
	m, err := ReadMachineCPU()
	s.mach, s.ok = m, err == nil
	s.t0 = time.Now()
}

// Stop returns each named process's CPU use since Start, the rest of the
// machine's (other processes and time stolen by the hypervisor) under
// "other" and interrupt time under "irq", as fractions of one core.
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
	var steal time.Duration
	if m, err := ReadMachineCPU(); err == nil && s.ok {
		out["irq"] = float64(m.IRQ-s.mach.IRQ) / float64(wall)
		steal = m.Steal - s.mach.Steal
	}
	if s.other != nil {
		if end, err := OthersCPU(s.skip()); err == nil {
			out["other"] = float64(othersUsed(s.other, end)+steal) / float64(wall)
		}
	}
	return out
}
