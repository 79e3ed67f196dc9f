package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const statusSample = `Name:	pen
Umask:	0022
State:	S (sleeping)
VmPeak:	 1257764 kB
VmSize:	 1257764 kB
VmHWM:	   44204 kB
VmRSS:	   43980 kB
RssAnon:	   30140 kB
Threads:	7
`

func TestParseVmRSS(t *testing.T) {
	got, err := ParseVmRSS(strings.NewReader(statusSample))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(43980 * 1024); got != want {
		t.Errorf("ParseVmRSS = %d, want %d", got, want)
	}
	for _, bad := range []string{
		"Name:\tkthreadd\nState:\tS (sleeping)\n", // no VmRSS
		"VmRSS:\t  12 MB\n",
		"VmRSS:\t  twelve kB\n",
		"VmRSS:\t  -1 kB\n",
		"VmRSS:\n",
	} {
		if n, err := ParseVmRSS(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseVmRSS(%q) = %d, want an error", bad, n)
		}
	}
}

func TestReadVmRSSSelf(t *testing.T) {
	n, err := ReadVmRSS(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if n < 1<<20 {
		t.Errorf("our own RSS is %d bytes, want at least 1 MiB", n)
	}
}

func fakeProc(t *testing.T, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := ProcRoot
	ProcRoot = dir
	t.Cleanup(func() { ProcRoot = old })
}

// statLine is a /proc/PID/stat line for a command whose name holds a space
// and a parenthesis, with utime 250, stime 50, cutime 40 and cstime 30
// ticks.
const statLine = "4242 (pen (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 40 30 20 0 7 0 100 1257764 10995 18446744073709551615\n"

// kthreadLine is a kernel thread's: flags has PF_KTHREAD (0x00200000).
const kthreadLine = "14 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 20 100 0 0 20 0 1 0 9 0 0 18446744073709551615\n"

func TestParseProcStat(t *testing.T) {
	got, err := ParseProcStat(statLine)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ProcTimes{Self: 3 * time.Second, Children: 70 * clockTick, State: 'S'}); got != want {
		t.Errorf("ParseProcStat = %+v, want %+v", got, want)
	}
	if d, err := ParseStatCPU(statLine); err != nil || d != 3*time.Second {
		t.Errorf("ParseStatCPU = %v, %v", d, err)
	}
	kt, err := ParseProcStat(kthreadLine)
	if err != nil || !kt.Kthread || kt.Self != 120*clockTick {
		t.Errorf("ParseProcStat(kernel thread) = %+v, %v", kt, err)
	}
	for _, bad := range []string{"4242 pen S 1", "4242 (pen) S 1 2 3",
		"4242 (pen) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 50 0 0 20",
		"4242 (pen) SS 1 4242 4242 0 -1 4194560 1000 0 0 0 1 50 0 0 20"} {
		if _, err := ParseProcStat(bad); err == nil {
			t.Errorf("ParseProcStat(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseStat(t *testing.T) {
	stat := "cpu  100 5 50 1000 7 3 2 40 0 0\ncpu0 50 2 25 500 3 1 1 20 0 0\nintr 1\n"
	got, err := ParseStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	// steal 40 ticks; irq+softirq 3+2
	if want := (MachineCPU{Steal: 40 * clockTick, IRQ: 5 * clockTick}); got != want {
		t.Errorf("ParseStat = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"intr 1\n", "cpu 1 2 3\n", "cpu 1 2 3 4 5 6 x 8\n"} {
		if _, err := ParseStat(bad); err == nil {
			t.Errorf("ParseStat(%q) succeeded", bad)
		}
	}
}

func TestAliveAndCPUFake(t *testing.T) {
	fakeProc(t, map[string]string{
		"4242/stat":   statLine,
		"4242/status": statusSample,
		"4343/stat":   strings.Replace(statLine, ") S ", ") Z ", 1),
		"stat":        "cpu  100 0 50 1000 0 0 0 7 0 0\n",
		"14/stat":     kthreadLine,
		"4545/stat":   strings.Replace(statLine, "250 50 40 30", "5 5 0 0", 1),
	})
	if !Alive(4242) {
		t.Error("Alive(4242) = false for a sleeping process")
	}
	if Alive(4343) {
		t.Error("Alive(4343) = true for a zombie")
	}
	if Alive(4444) {
		t.Error("Alive(4444) = true for a missing process")
	}
	if n, err := ReadVmRSS(4242); err != nil || n != 43980*1024 {
		t.Errorf("ReadVmRSS(4242) = %d, %v", n, err)
	}
	if d, err := ReadCPU(4242); err != nil || d != 3*time.Second {
		t.Errorf("ReadCPU(4242) = %v, %v", d, err)
	}
	if m, err := ReadMachineCPU(); err != nil || m.Steal != 7*clockTick {
		t.Errorf("ReadMachineCPU() = %+v, %v", m, err)
	}
}

func TestCPUSamplerSelf(t *testing.T) {
	if _, err := ReadCPU(os.Getpid()); err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	s := &CPUSampler{Procs: map[string]int{"self": os.Getpid(), "gone": 1 << 30}}
	s.Start()
	// Burn CPU until the kernel has counted some, however loaded the
	// machine is.
	c0, _ := ReadCPU(os.Getpid())
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, _ := ReadCPU(os.Getpid()); c-c0 >= 50*time.Millisecond {
			break
		}
	}
	shares := s.Stop()
	if _, ok := shares["gone"]; ok {
		t.Error("a missing process has a share")
	}
	if v := shares["self"]; v <= 0 || v > float64(runtime.NumCPU()+1) {
		t.Errorf("self share %v after a busy loop", v)
	}
	if _, ok := shares["other"]; !ok {
		t.Error("no share for the rest of the machine")
	}
	if _, ok := shares["irq"]; !ok {
		t.Error("no interrupt share")
	}
}

func TestOthersCPU(t *testing.T) {
	fakeProc(t, map[string]string{
		"4242/stat":      statLine,
		"4545/stat":      strings.Replace(statLine, "250 50 40 30", "5 5 0 0", 1),
		"14/stat":        kthreadLine,
		"self/stat":      statLine,
		"stat":           "cpu  1 0 1 1 0 0 0 0 0 0\n",
		"4646/status":    statusSample, // no stat: skipped
		"4747/stat":      "garbage",
		"notapid/status": "",
	})
	got, err := OthersCPU(map[int]bool{4545: true})
	if err != nil {
		t.Fatal(err)
	}
	// 4242 counts with its children; 4545 is skipped; 14 is a kernel
	// thread; the rest are not processes or unreadable.
	if len(got) != 1 || got[4242] != 370*clockTick {
		t.Errorf("OthersCPU = %v", got)
	}
}

func TestOthersUsed(t *testing.T) {
	s := time.Second
	start := map[int]time.Duration{1: 10 * s, 2: 5 * s, 3: 2 * s}
	// 3 ended and 1, its parent, collected its 2.5 s; 2 used 1 s more; 4
	// started and used 0.5 s.
	end := map[int]time.Duration{1: 12*s + s/2, 2: 6 * s, 4: s / 2}
	if got, want := othersUsed(start, end), 2*s; got != want {
		t.Errorf("othersUsed = %v, want %v", got, want)
	}
	if got := othersUsed(start, map[int]time.Duration{}); got != 0 {
		t.Errorf("othersUsed with everything gone = %v, want 0", got)
	}
}
