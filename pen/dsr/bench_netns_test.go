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
	run := func(url string, keepAlive bool) float64 {
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
		return v
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
		var cpuUsed time.Duration
		var frames uint64
		for r := range rounds {
			for _, which := range []int{r % 2, 1 - r%2} {
				if which == 0 {
					direct = append(direct, run("http://"+backendIP(0)+":8080/", mode.keepAlive))
					continue
				}
				f0, c0 := tp.dsr.Stats().Forwarded, cpu()
				dsr = append(dsr, run("http://"+topoVIP+":8080/", mode.keepAlive))
				cpuUsed += cpu() - c0
				frames += tp.dsr.Stats().Forwarded - f0
			}
		}
		slices.Sort(direct)
		slices.Sort(dsr)
		md, ms := direct[len(direct)/2], dsr[len(dsr)/2]
		s := tp.dsr.Stats()
		mode.name = t.Name() + " " + mode.name
		t.Logf("bench: %s: direct %.0f req/s, dsr %.0f req/s, ratio %.2f; pen CPU %.2f µs per forwarded frame (%d frames, %.1f frames per batch overall); direct %v dsr %v",
			mode.name, md, ms, ms/md, float64(cpuUsed.Microseconds())/float64(max(frames, 1)), frames, float64(s.Received)/float64(max(s.Batches, 1)), direct, dsr)
	}
}
