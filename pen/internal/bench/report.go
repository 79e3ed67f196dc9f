package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Stat is what the records say about one contender in one test.
type Stat struct {
	Contender string
	Unit      string
	Values    []float64          // successful rounds, in round order
	Failures  []string           // why rounds or the whole contender failed
	Median    float64            // of Values; NaN when there are none
	Details   map[string]float64 // median of each numeric detail

	// Quiet holds the values of the runs during which the rest of the
	// machine used at most QuietOther of a core.
	Quiet []float64

	others []float64 // cpu.other of every successful run, for Noise
}

// Working reports whether the contender has at least one measurement.
func (s Stat) Working() bool { return len(s.Values) > 0 }

// Status describes a contender's health in a few words: "ok", "not working:
// …" or "k of n rounds failed: …".
func (s Stat) Status() string {
	switch {
	case len(s.Failures) == 0:
		return "ok"
	case !s.Working():
		return s.Failures[0]
	default:
		return fmt.Sprintf("%d of %d rounds failed: %s", len(s.Failures), len(s.Failures)+len(s.Values), s.Failures[0])
	}
}

// TestSummary gathers the contenders of one test.
type TestSummary struct {
	Test  string
	Stats []Stat // in order of first appearance
}

// Stat returns the named contender's Stat.
func (t TestSummary) Stat(contender string) (Stat, bool) {
	for _, s := range t.Stats {
		if s.Contender == contender {
			return s, true
		}
	}
	return Stat{}, false
}

// Ratio returns median(a)/median(b), or false when either has no value.
func (t TestSummary) Ratio(a, b string) (float64, bool) {
	sa, ok1 := t.Stat(a)
	sb, ok2 := t.Stat(b)
	if !ok1 || !ok2 || !sa.Working() || !sb.Working() || sb.Median == 0 {
		return math.NaN(), false
	}
	return sa.Median / sb.Median, true
}

// Median returns the median of vs, or NaN for none.
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Summarize groups records by test and contender, in the order they first
// appear, and takes medians.
func Summarize(recs []Record) []TestSummary {
	var tests []TestSummary
	type key struct{ test, contender string }
	details := map[key]map[string][]float64{}
	find := func(test, contender string) *Stat {
		ti := slices.IndexFunc(tests, func(t TestSummary) bool { return t.Test == test })
		if ti < 0 {
			tests = append(tests, TestSummary{Test: test})
			ti = len(tests) - 1
		}
		t := &tests[ti]
		si := slices.IndexFunc(t.Stats, func(s Stat) bool { return s.Contender == contender })
		if si < 0 {
			t.Stats = append(t.Stats, Stat{Contender: contender})
			si = len(t.Stats) - 1
		}
		return &t.Stats[si]
	}
	for _, r := range recs {
		s := find(r.Test, r.Contender)
		if s.Unit == "" {
			s.Unit = r.Unit
		}
		if !r.OK() {
			s.Failures = append(s.Failures, r.Err)
			continue
		}
		s.Values = append(s.Values, r.Value)
		k := key{r.Test, r.Contender}
		if details[k] == nil {
			details[k] = map[string][]float64{}
		}
		for name, v := range ParseDetails(r.Detail) {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				details[k][name] = append(details[k][name], f)
				if name == "cpu.other" {
					s.others = append(s.others, f)
					if f <= QuietOther {
						s.Quiet = append(s.Quiet, r.Value)
					}
				}
			}
		}
	}
	for ti := range tests {
		slices.SortStableFunc(tests[ti].Stats, func(a, b Stat) int {
			return contenderRank(a.Contender) - contenderRank(b.Contender)
		})
		for si := range tests[ti].Stats {
			s := &tests[ti].Stats[si]
			s.Median = Median(s.Values)
			s.Details = map[string]float64{}
			for name, vs := range details[key{tests[ti].Test, s.Contender}] {
				s.Details[name] = Median(vs)
			}
		}
	}
	return tests
}

// contenderOrder is the order the report lists contenders in; others follow
// in order of first appearance.
var contenderOrder = []string{"direct", "pen", "haproxy", "pen-loop", "pen-user", "pen-1loop", "haproxy-1thread", "haproxy-http"}

// pairs are the comparisons the report makes besides each contender
// against direct: pen against HAProxy with as many threads as pen has
// loops, the same with one each, pen on every core against pen on one,
// pen carrying every byte in its loop (no kernel_relay) against HAProxy,
// pen (which splices connections in the kernel by default) against that,
// and pen (udp_kernel) against pen carrying every datagram itself.
var pairs = [][2]string{
	{"pen", "haproxy"},
	{"pen-1loop", "haproxy-1thread"},
	{"pen", "pen-1loop"},
	{"pen-loop", "haproxy"},
	{"pen", "pen-loop"},
	{"pen", "pen-user"},
}

func contenderRank(c string) int {
	if i := slices.Index(contenderOrder, c); i >= 0 {
		return i
	}
	return len(contenderOrder)
}

// Target is a goal the report checks.
type Target struct {
	Test string
	Key  string // the target's word in the summary line; Test when empty
	Name string // e.g. "pen/haproxy>=1.10"
	// Eval returns the figure compared and whether it meets the goal; ok is
	// false when the figure is missing.
	Eval func(TestSummary) (figure float64, met, ok bool)
}

// Targets are the project's goals for pen.
var Targets = []Target{
	{Test: "keepalive", Name: "pen/haproxy >= 1.10", Eval: ratioAtLeast("pen", "haproxy", 1.1)},
	{Test: "close", Name: "pen/haproxy >= 1.10", Eval: ratioAtLeast("pen", "haproxy", 1.1)},
	// The in-kernel relay's target: pen splices by default.
	{Test: "keepalive", Key: "keepalive-relay", Name: "pen/haproxy >= 1.30 (in-kernel relay)", Eval: ratioAtLeast("pen", "haproxy", 1.3)},
	{Test: "rss", Name: "pen <= 4096 B/conn", Eval: medianAtMost("pen", 4096)},
	{Test: "rss-spliced", Name: "pen <= 4096 B/conn", Eval: medianAtMost("pen", 4096)},
	{Test: "bulk", Name: "pen/direct >= 0.90", Eval: ratioAtLeast("pen", "direct", 0.9)},
	{Test: "dns", Name: "pen/direct >= 0.85", Eval: ratioAtLeast("pen", "direct", 0.85)},
	{Test: "dns6", Name: "pen/direct >= 0.85", Eval: ratioAtLeast("pen", "direct", 0.85)},
	{Test: "tls-keepalive", Name: "pen/haproxy >= 1.00", Eval: ratioAtLeast("pen", "haproxy", 1.0)},
	{Test: "tls-ecdsa", Name: "pen/haproxy >= 1.00", Eval: ratioAtLeast("pen", "haproxy", 1.0)},
}

func ratioAtLeast(a, b string, min float64) func(TestSummary) (float64, bool, bool) {
	return func(t TestSummary) (float64, bool, bool) {
		r, ok := t.Ratio(a, b)
		return r, ok && r >= min, ok
	}
}

func medianAtMost(c string, limit float64) func(TestSummary) (float64, bool, bool) {
	return func(t TestSummary) (float64, bool, bool) {
		s, ok := t.Stat(c)
		if !ok || !s.Working() {
			return math.NaN(), false, false
		}
		return s.Median, s.Median <= limit, true
	}
}

// testTitles describe the tests scripts/bench.sh runs.
var testTitles = map[string]string{
	"keepalive":   "HTTP, keep-alive (wrk)",
	"close":       "HTTP, new connection per request (wrk)",
	"rss":         "RSS per idle proxied connection",
	"rss-spliced": "RSS per idle proxied connection after three exchanges (pen splices them)",
	"dns":         "DNS over UDP (dnsperf)",
	"dns6":        "DNS over UDP and IPv6 (dnsperf, ::1)",
	"bulk":        "bulk download of one large response (MB/s)",

	"tls-keepalive": "HTTPS, keep-alive, ECDSA P-256 certificate (wrk)",
	"tls-ecdsa":     "HTTPS, a full handshake per request, ECDSA P-256 (wrk)",
	"tls-rsa":       "HTTPS, a full handshake per request, RSA 2048 (wrk)",
}

// Title returns a test's description.
func Title(test string) string {
	if t, ok := testTitles[test]; ok {
		return t
	}
	return test
}

// reference is the contender the others are compared against: "direct"
// where the test has it, else none.
func (t TestSummary) reference() string {
	if _, ok := t.Stat("direct"); ok {
		return "direct"
	}
	return ""
}

func formatValue(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func formatRatio(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func formatValues(vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = formatValue(v)
	}
	return strings.Join(parts, " ")
}

// cpuColumn shows the CPU shares measured during a contender's runs as
// percent of one core: load generator / backend / proxy / interrupts
// (mostly the loopback traffic itself, partly also counted in the
// processes' shares) / everything else on the machine (other users' work
// and time stolen by the hypervisor: noise).
func cpuColumn(s Stat) string {
	var parts []string
	seen := false
	for _, k := range []string{"cpu.load", "cpu.backend", "cpu.proxy", "cpu.irq", "cpu.other"} {
		if v, ok := s.Details[k]; ok {
			parts = append(parts, strconv.FormatFloat(100*v, 'f', 0, 64))
			seen = true
		} else {
			parts = append(parts, "-")
		}
	}
	if !seen {
		return ""
	}
	return strings.Join(parts, "/")
}

// WriteTable writes the human-readable report.
func WriteTable(w io.Writer, tests []TestSummary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "test\tcontender\tmedian\tunit\tvs direct\trounds\tcpu% load/backend/proxy/irq/other\tproxy us/op\tstatus")
	for _, t := range tests {
		ref := t.reference()
		for _, s := range t.Stats {
			ratio := "-"
			if ref != "" {
				r, ok := t.Ratio(s.Contender, ref)
				ratio = formatRatio(r, ok)
			}
			rounds := formatValues(s.Values)
			if rounds == "" {
				rounds = "-"
			}
			us := ""
			if v, ok := s.Details["proxy_us"]; ok {
				us = strconv.FormatFloat(v, 'f', 1, 64)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Test, s.Contender, formatValue(s.Median),
				s.Unit, ratio, rounds, cpuColumn(s), us, s.Status())
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, t := range tests {
		fmt.Fprintf(w, "%-9s %s: %s\n", t.Test, Title(t.Test), strings.Join(ratioWords(t), " "))
		if n := Noise(t); n.Disturbed > 0 {
			fmt.Fprintf(w, "%-9s %d of %d runs disturbed by other work\n", "", n.Disturbed, n.Runs)
		}
		if q := quietWords(t); len(q) > 0 {
			fmt.Fprintf(w, "%-9s quiet runs only (rest of the machine <= %.0f%% of a core): %s\n", "",
				100*QuietOther, strings.Join(q, " "))
		}
		if c := costWords(t); len(c) > 0 {
			fmt.Fprintf(w, "%-9s proxy CPU per operation, lower is cheaper: %s\n", "", strings.Join(c, " "))
		}
		if m := memoryWords(t); len(m) > 0 {
			fmt.Fprintf(w, "%-9s %s\n", "", strings.Join(m, "; "))
		}
	}
	if n := Noise(tests...); n.Runs > 0 {
		fmt.Fprintf(w, "noise: %d of %d runs disturbed by other work (more than %.0f%% of a core); on average it used %.0f%% of a core",
			n.Disturbed, n.Runs, 100*QuietOther, 100*n.Mean)
		if n.Busy() {
			fmt.Fprint(w, ": BUSY, plain medians unreliable; prefer the quiet-run and CPU figures or run again")
		}
		fmt.Fprintln(w)
	}
	for _, tg := range Targets {
		ti := slices.IndexFunc(tests, func(t TestSummary) bool { return t.Test == tg.Test })
		verdict := "not measured"
		if ti >= 0 {
			fig, met, ok := tg.Eval(tests[ti])
			switch {
			case !ok:
				verdict = "not measured"
			case met:
				verdict = "met (" + strconv.FormatFloat(fig, 'f', 2, 64) + ")"
			default:
				verdict = "MISSED (" + strconv.FormatFloat(fig, 'f', 2, 64) + ")"
			}
			if ok && Noise(tests[ti]).Busy() {
				verdict += ", but too many runs were disturbed to be sure"
			}
		}
		fmt.Fprintf(w, "target %-9s %-20s %s\n", tg.Test, tg.Name, verdict)
	}
	return nil
}

// costWords lists the proxies' median CPU time per operation in
// microseconds, then pen's against HAProxy's.
func costWords(t TestSummary) []string {
	var words []string
	cost := map[string]float64{}
	for _, s := range t.Stats {
		if v, ok := s.Details["proxy_us"]; ok {
			cost[s.Contender] = v
			words = append(words, s.Contender+"="+strconv.FormatFloat(v, 'f', 1, 64))
		}
	}
	for _, pr := range pairs {
		if p, ok := cost[pr[0]]; ok {
			if h, ok := cost[pr[1]]; ok && h > 0 {
				words = append(words, pr[0]+"/"+pr[1]+"="+strconv.FormatFloat(p/h, 'f', 2, 64))
			}
		}
	}
	return words
}

// memoryWords describes the RSS figures behind a memory test: before,
// while holding, and the whole RSS while holding per connection, which
// also counts what a proxy allocates up front (e.g. pen's -x table).
func memoryWords(t TestSummary) []string {
	const mib = 1 << 20
	var words []string
	for _, s := range t.Stats {
		before, ok1 := s.Details["before"]
		held, ok2 := s.Details["held"]
		conns, ok3 := s.Details["conns"]
		if !ok1 || !ok2 || !ok3 || conns <= 0 {
			continue
		}
		words = append(words, fmt.Sprintf("%s: %.1f MiB before, %.1f MiB holding %.0f (%.0f B/conn counting the baseline)",
			s.Contender, before/mib, held/mib, conns, held/conns))
	}
	return words
}

// ratioWords lists a test's comparisons as key=value words: each
// contender against direct (or its median when there is no direct), then
// pen against HAProxy.
func ratioWords(t TestSummary) []string {
	var words []string
	ref := t.reference()
	for _, s := range t.Stats {
		if s.Contender == ref {
			continue
		}
		if !s.Working() {
			words = append(words, s.Contender+"=not-working")
			continue
		}
		if ref == "" {
			words = append(words, s.Contender+"="+formatValue(s.Median))
			continue
		}
		r, ok := t.Ratio(s.Contender, ref)
		words = append(words, s.Contender+"/"+ref+"="+formatRatio(r, ok))
	}
	if ref != "" {
		if s, ok := t.Stat(ref); ok && !s.Working() {
			words = append(words, ref+"=not-working")
		}
	}
	for _, pr := range pairs {
		if r, ok := t.Ratio(pr[0], pr[1]); ok {
			words = append(words, pr[0]+"/"+pr[1]+"="+formatRatio(r, true))
		}
	}
	if ref == "" && len(t.Stats) > 0 && t.Stats[0].Unit != "" {
		words = append(words, "unit="+t.Stats[0].Unit)
	}
	return words
}

// QuietOther is the CPU share (of one core) other processes may use during
// a run for it to count as quiet.
const QuietOther = 0.15

// quietWords compares contenders on their quiet runs only: each against
// direct, then pen against HAProxy, then how many quiet runs each had.
func quietWords(t TestSummary) []string {
	med := map[string]float64{}
	var counts []string
	for _, s := range t.Stats {
		if len(s.Quiet) > 0 {
			med[s.Contender] = Median(s.Quiet)
			counts = append(counts, s.Contender+":"+strconv.Itoa(len(s.Quiet)))
		}
	}
	var words []string
	ref := t.reference()
	if d, ok := med[ref]; ok && ref != "" && d > 0 {
		for _, s := range t.Stats {
			if v, ok := med[s.Contender]; ok && s.Contender != ref {
				words = append(words, s.Contender+"/"+ref+"="+formatRatio(v/d, true))
			}
		}
	}
	for _, pr := range pairs {
		if p, ok := med[pr[0]]; ok {
			if h, ok := med[pr[1]]; ok && h > 0 {
				words = append(words, pr[0]+"/"+pr[1]+"="+formatRatio(p/h, true))
			}
		}
	}
	if len(words) == 0 {
		return nil
	}
	return append(words, "runs="+strings.Join(counts, ","))
}

// NoiseSummary says how much other work disturbed the runs.
type NoiseSummary struct {
	Runs      int     // runs with a measurement of the rest of the machine
	Disturbed int     // of which the rest used more than QuietOther
	Mean      float64 // mean CPU the rest used, in cores
}

// Busy reports whether more than a third of the runs were disturbed, which
// makes the plain medians unreliable.
func (n NoiseSummary) Busy() bool { return 3*n.Disturbed > n.Runs }

// Noise sums up the CPU that processes other than the load generator,
// backend and proxy used during the runs of the given tests.
func Noise(tests ...TestSummary) NoiseSummary {
	var n NoiseSummary
	var sum float64
	for _, t := range tests {
		for _, s := range t.Stats {
			for _, v := range s.others {
				n.Runs++
				sum += v
				if v > QuietOther {
					n.Disturbed++
				}
			}
		}
	}
	if n.Runs > 0 {
		n.Mean = sum / float64(n.Runs)
	}
	return n
}

// WriteSummary writes one machine-readable line per test, e.g.
// "bench: keepalive pen/direct=0.71 haproxy/direct=0.68 pen/haproxy=1.04",
// one per test comparing runs on a quiet machine only (when there were
// any), e.g. "bench: keepalive-quiet pen/direct=0.70 pen/haproxy=1.02
// runs=direct:2,pen:1,haproxy:2", one per test with the proxies' CPU time
// per operation, e.g.
// "bench: keepalive-cpu pen=15.1 haproxy=14.2 pen/haproxy=1.06 unit=us/op",
// one for the targets and one for the noise.
func WriteSummary(w io.Writer, tests []TestSummary) error {
	for _, t := range tests {
		if _, err := fmt.Fprintf(w, "bench: %s %s\n", t.Test, strings.Join(ratioWords(t), " ")); err != nil {
			return err
		}
	}
	for _, t := range tests {
		if q := quietWords(t); len(q) > 0 {
			if _, err := fmt.Fprintf(w, "bench: %s-quiet %s\n", t.Test, strings.Join(q, " ")); err != nil {
				return err
			}
		}
	}
	for _, t := range tests {
		if c := costWords(t); len(c) > 0 {
			if _, err := fmt.Fprintf(w, "bench: %s-cpu %s unit=us/op\n", t.Test, strings.Join(c, " ")); err != nil {
				return err
			}
		}
	}
	var words []string
	for _, tg := range Targets {
		ti := slices.IndexFunc(tests, func(t TestSummary) bool { return t.Test == tg.Test })
		v := "unknown"
		if ti >= 0 {
			if _, met, ok := tg.Eval(tests[ti]); ok && met {
				v = "met"
			} else if ok {
				v = "missed"
			}
			if v != "unknown" && Noise(tests[ti]).Busy() {
				v += "-noisy"
			}
		}
		key := tg.Key
		if key == "" {
			key = tg.Test
		}
		words = append(words, key+"="+v)
	}
	if _, err := fmt.Fprintf(w, "bench: targets %s\n", strings.Join(words, " ")); err != nil {
		return err
	}
	if n := Noise(tests...); n.Runs > 0 {
		_, err := fmt.Fprintf(w, "bench: noise disturbed-runs=%d/%d mean-other-cpu=%.2f busy=%v\n",
			n.Disturbed, n.Runs, n.Mean, n.Busy())
		return err
	}
	return nil
}
