package dsr

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

var wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// TestNetnsBenchWrk measures HTTP requests per second through DSR against
// straight to the backend, with keep-alive and with a new connection per
// request, in the namespace topology with offloads on, and the CPU time
// pen spends per forwarded frame. Contenders alternate over rounds; the
// report gives medians and ratios. It runs only with PEN_DSR_BENCH=1
// (PEN_DSR_BENCH_ROUNDS, default 3; PEN_DSR_BENCH_SECONDS, default 3).
func TestNetnsBenchWrk(t *testing.T) {
	if os.Getenv("PEN_DSR_BENCH") != "1" {
		t.Skip("a benchmark: set PEN_DSR_BENCH=1")
	}
	wrk := testenv.NeedProgram(t, "wrk", "wrk")
	rounds, secs := 3, 3
	if n, err := strconv.Atoi(os.Getenv("PEN_DSR_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	if n, err := strconv.Atoi(os.Getenv("PEN_DSR_BENCH_SECONDS")); err == nil && n > 0 {
		secs = n
	}
	for _, m := range forwarding {
		t.Run(m.name, func(t *testing.T) { benchWrk(t, wrk, rounds, secs, m.noFastPath) })
	}
}

func benchWrk(t *testing.T, wrk string, rounds, secs int, noFastPath bool) {
	tp := newTopo(t, 1)
	tp.backends[0].Nginx(topoVIP+":8080", backendIP(0)+":8080")
	tp.start(t, Config{Port: 8080, VIP: netip.MustParseAddr(topoVIP), NoFastPath: noFastPath}, 1)
	tp.checkMode(t, noFastPath)
	// run returns requests per second and the requests made.
	run := func(url string, keepAlive bool) (float64, float64) {
		args := []string{wrk, "-t1", "-c50", fmt.Sprintf("-d%ds", secs), "--timeout", "2s"}
		if !keepAlive {
			args = append(args, "-H", "Connection: close")
		}
		out, err := tp.client.Output(append(args, url)...)
		if err != nil {
			t.Fatalf("wrk: %v: %s", err, out)
		}
		m := wrkRate.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("wrk said: %s", out)
		}
		if strings.Contains(out, "Non-2xx") || strings.Contains(out, "Socket errors") {
			t.Logf("wrk %s: %s", url, out)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v, v * float64(secs)
	}
	// busy is the machine's CPU time spent other than idle (all
	// processes, interrupts and softirqs), from /proc/stat.
	busy := func() time.Duration {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
		var total int64
		for i, v := range f {
			n, _ := strconv.ParseInt(v, 10, 64)
			if i != 3 && i != 4 { // idle, iowait
				total += n
			}
		}
		return time.Duration(total) * 10 * time.Millisecond // USER_HZ = 100
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, mode := range []struct {
		name      string
		keepAlive bool
	}{{"keepalive", true}, {"close", false}} {
		var direct, dsr []float64
		var cpuUsed, busyDirect, busyDSR time.Duration
		var frames uint64
		var reqDirect, reqDSR float64
		for r := range rounds {
			for _, which := range []int{r % 2, 1 - r%2} {
				if which == 0 {
					b0 := busy()
					rate, n := run("http://"+backendIP(0)+":8080/", mode.keepAlive)
					busyDirect += busy() - b0
					direct = append(direct, rate)
					reqDirect += n
					continue
				}
				f0, c0, b0 := tp.dsr.Stats().Forwarded, cpu(), busy()
				rate, n := run("http://"+topoVIP+":8080/", mode.keepAlive)
				busyDSR += busy() - b0
				cpuUsed += cpu() - c0
				frames += tp.dsr.Stats().Forwarded - f0
				dsr = append(dsr, rate)
				reqDSR += n
			}
		}
		// What DSR costs the machine beyond a direct request, per
		// forwarded frame: the kernel's work included, which pen's own
		// CPU time leaves out when the fast path forwards.
		perReq := func(b time.Duration, n float64) float64 { return float64(b.Microseconds()) / max(n, 1) }
		framesPerReq := float64(frames) / max(reqDSR, 1)
		extra := (perReq(busyDSR, reqDSR) - perReq(busyDirect, reqDirect)) / max(framesPerReq, 1e-9)
		slices.Sort(direct)
		slices.Sort(dsr)
		md, ms := direct[len(direct)/2], dsr[len(dsr)/2]
		s := tp.dsr.Stats()
		mode.name = t.Name() + " " + mode.name
		t.Logf("bench: %s: direct %.0f req/s, dsr %.0f req/s, ratio %.2f; pen's process %.2f µs CPU per forwarded frame, the machine %.2f µs more per forwarded frame than direct (%d frames, %.1f per request, %.1f per batch read); direct %v dsr %v",
			mode.name, md, ms, ms/md, float64(cpuUsed.Microseconds())/float64(max(frames, 1)), extra, frames, framesPerReq, float64(s.Received)/float64(max(s.Batches, 1)), direct, dsr)
	}
}
