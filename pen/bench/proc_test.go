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
// and a parenthesis, with utime 250 and stime 50 ticks.
const statLine = "4242 (pen (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 100 1257764 10995 18446744073709551615\n"

func TestParseStatCPU(t *testing.T) {
	got, err := ParseStatCPU(statLine)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("ParseStatCPU = %v, want %v", got, want)
	}
	for _, bad := range []string{"4242 pen S 1", "4242 (pen) S 1 2 3", "4242 (pen) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 50 0"} {
		if _, err := ParseStatCPU(bad); err == nil {
			t.Errorf("ParseStatCPU(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseStat(t *testing.T) {
	stat := "cpu  100 5 50 1000 7 3 2 40 0 0\ncpu0 50 2 25 500 3 1 1 20 0 0\nintr 1\n"
	got, err := ParseStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	// busy: user+nice+system+steal = 100+5+50+40 ticks; irq: 3+2
	if want := (MachineCPU{Busy: 195 * clockTick, IRQ: 5 * clockTick}); got != want {
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
		"stat":        "cpu  100 0 50 1000 0 0 0 0 0 0\n",
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
	if m, err := ReadMachineCPU(); err != nil || m.Busy != 150*clockTick {
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
	if _, ok := shares["all"]; !ok {
		t.Error("no machine-wide share")
	}
	if _, ok := shares["irq"]; !ok {
		t.Error("no interrupt share")
	}
}

func TestOther(t *testing.T) {
	o, ok := Other(map[string]float64{"all": 1.9, "load": 0.9, "backend": 0.6, "irq": 0.5})
	if !ok || o < 0.39 || o > 0.41 {
		t.Errorf("Other = %v, %v; want 0.4", o, ok)
	}
	if o, ok := Other(map[string]float64{"all": 0.5, "load": 0.9}); !ok || o != 0 {
		t.Errorf("Other below zero = %v, %v; want 0", o, ok)
	}
	if _, ok := Other(map[string]float64{"load": 0.9}); ok {
		t.Error("Other without a machine-wide figure says ok")
	}
}
