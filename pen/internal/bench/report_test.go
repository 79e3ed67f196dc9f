package bench

import (
	"math"
	"strings"
	"testing"
)

func rec(test, contender string, round int, v float64, detail string) Record {
	unit := map[string]string{"keepalive": "req/s", "close": "req/s", "rss": "B/conn", "dns": "q/s"}[test]
	return Record{Test: test, Contender: contender, Round: round, Value: v, Unit: unit, Detail: detail}
}

func sampleRecords() []Record {
	return []Record{
		rec("keepalive", "haproxy", 1, 30000, "cpu.load=0.9 cpu.backend=0.5 cpu.proxy=0.6 cpu.other=0.1 proxy_us=20"),
		rec("keepalive", "direct", 1, 50000, "cpu.load=1.0 cpu.backend=0.9 cpu.other=0.05"),
		rec("keepalive", "pen", 1, 36000, "proxy_us=15"),
		rec("keepalive", "direct", 2, 40000, ""),
		rec("keepalive", "pen", 2, 34000, ""),
		rec("keepalive", "haproxy", 2, 31000, "cpu.load=0.7 cpu.backend=0.4 cpu.proxy=0.4 cpu.other=0.3"),
		rec("keepalive", "direct", 3, 45000, ""),
		rec("keepalive", "pen", 3, 35000, ""),
		rec("keepalive", "haproxy", 3, 29000, "cpu.load=0.8 cpu.backend=0.45 cpu.proxy=0.5 cpu.other=0.2"),
		Failed("close", "pen", 0, "req/s", "not working: pen: exited at start (status 1)"),
		rec("close", "direct", 1, 10000, ""),
		rec("close", "haproxy", 1, 8000, ""),
		rec("rss", "pen", 1, 3000, "conns=10000 before=10485760 held=41943040 after_close=-"),
		rec("rss", "haproxy", 1, 3500, ""),
		rec("dns", "direct", 1, 100000, ""),
		rec("dns", "pen", 1, 80000, ""),
		Failed("dns", "pen", 2, "q/s", "failed: 50 of 100 queries lost"),
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
	} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
	in := []float64{3, 1, 2}
	Median(in)
	if in[0] != 3 {
		t.Error("Median sorted its argument")
	}
}

func TestSummarize(t *testing.T) {
	tests := Summarize(sampleRecords())
	var names []string
	for _, ts := range tests {
		names = append(names, ts.Test)
	}
	if got := strings.Join(names, " "); got != "keepalive close rss dns" {
		t.Fatalf("tests = %s", got)
	}
	ka := tests[0]
	var order []string
	for _, s := range ka.Stats {
		order = append(order, s.Contender)
	}
	if got := strings.Join(order, " "); got != "direct pen haproxy" {
		t.Errorf("contenders = %s, want the fixed order direct pen haproxy", got)
	}
	if s, _ := ka.Stat("direct"); s.Median != 45000 || len(s.Values) != 3 {
		t.Errorf("direct = %+v", s)
	}
	if s, _ := ka.Stat("haproxy"); s.Details["cpu.proxy"] != 0.5 || s.Details["cpu.other"] != 0.2 {
		t.Errorf("haproxy details = %v", s.Details)
	}
	if r, ok := ka.Ratio("pen", "haproxy"); !ok || math.Abs(r-35000.0/30000) > 1e-9 {
		t.Errorf("pen/haproxy = %v, %v", r, ok)
	}
	if _, ok := tests[1].Ratio("pen", "direct"); ok {
		t.Error("a ratio for a contender that is not working")
	}
	if s, _ := tests[1].Stat("pen"); s.Working() || s.Status() != "not working: pen: exited at start (status 1)" {
		t.Errorf("close pen status = %q", s.Status())
	}
	if s, _ := tests[3].Stat("pen"); !s.Working() || !strings.HasPrefix(s.Status(), "1 of 2 rounds failed") {
		t.Errorf("dns pen status = %q", s.Status())
	}
}

func TestWriteSummary(t *testing.T) {
	var b strings.Builder
	if err := WriteSummary(&b, Summarize(sampleRecords())); err != nil {
		t.Fatal(err)
	}
	want := `bench: keepalive pen/direct=0.78 haproxy/direct=0.67 pen/haproxy=1.17
bench: close pen=not-working haproxy/direct=0.80
bench: rss pen=3000 haproxy=3500 pen/haproxy=0.86 unit=B/conn
bench: dns pen/direct=0.80
bench: keepalive-quiet haproxy/direct=0.60 runs=direct:1,haproxy:1
bench: keepalive-cpu pen=15.0 haproxy=20.0 pen/haproxy=0.75 unit=us/op
bench: targets keepalive=met-noisy close=unknown keepalive-relay=missed-noisy rss=met rss-spliced=unknown bulk=unknown dns=missed dns6=unknown tls-keepalive=unknown tls-ecdsa=unknown
bench: noise disturbed-runs=2/4 mean-other-cpu=0.16 busy=true
`
	if got := b.String(); got != want {
		t.Errorf("WriteSummary:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteSummaryMissed(t *testing.T) {
	recs := []Record{
		rec("keepalive", "direct", 1, 100, ""),
		rec("keepalive", "pen", 1, 50, ""),
		rec("keepalive", "haproxy", 1, 50, ""),
		rec("rss", "pen", 1, 5000, ""),
		Failed("dns", "direct", 0, "q/s", "not working: refused"),
		rec("dns", "pen", 1, 10, ""),
	}
	var b strings.Builder
	if err := WriteSummary(&b, Summarize(recs)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"bench: keepalive pen/direct=0.50 haproxy/direct=0.50 pen/haproxy=1.00\n",
		"bench: dns pen/direct=- direct=not-working\n",
		"bench: targets keepalive=missed close=unknown keepalive-relay=missed rss=missed rss-spliced=unknown bulk=unknown dns=unknown dns6=unknown tls-keepalive=unknown tls-ecdsa=unknown\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

func TestQuietWords(t *testing.T) {
	recs := []Record{
		rec("close", "direct", 1, 1000, "cpu.other=0.9"),
		rec("close", "pen", 1, 100, "cpu.other=0.1"),
		rec("close", "haproxy", 1, 50, "cpu.other=0.0"),
		rec("close", "direct", 2, 500, "cpu.other=0.1"),
		rec("close", "pen", 2, 400, "cpu.other=0.7"),
		rec("close", "haproxy", 2, 100, "cpu.other=0.1"),
	}
	got := strings.Join(quietWords(Summarize(recs)[0]), " ")
	want := "pen/direct=0.20 haproxy/direct=0.15 pen/haproxy=1.33 runs=direct:1,pen:1,haproxy:2"
	if got != want {
		t.Errorf("quietWords = %q, want %q", got, want)
	}
	if w := quietWords(Summarize(recs[:1])[0]); w != nil {
		t.Errorf("quietWords without quiet runs = %q", w)
	}
}

func TestNoiseBusy(t *testing.T) {
	recs := []Record{
		rec("keepalive", "direct", 1, 100, "cpu.other=1.2"),
		rec("keepalive", "direct", 2, 100, "cpu.other=0.9"),
		rec("dns", "direct", 1, 100, "cpu.other=0.0"),
		rec("dns", "direct", 2, 100, "cpu.other=0.1"),
	}
	tests := Summarize(recs)
	n := Noise(tests...)
	if n.Runs != 4 || n.Disturbed != 2 || math.Abs(n.Mean-0.55) > 1e-9 || !n.Busy() {
		t.Errorf("Noise = %+v (busy %v); want 2 of 4 disturbed, mean 0.55, busy", n, n.Busy())
	}
	if n := Noise(tests[1]); n.Disturbed != 0 || n.Busy() {
		t.Errorf("Noise(dns) = %+v", n)
	}
	var b strings.Builder
	if err := WriteTable(&b, tests); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"BUSY", "2 of 2 runs disturbed by other work\n",
		"noise: 2 of 4 runs disturbed by other work (more than 15% of a core); on average it used 55% of a core"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if n := Noise(Summarize(sampleRecords()[9:])...); n.Runs != 0 {
		t.Errorf("Noise without cpu.other details = %+v", n)
	}
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	if err := WriteTable(&b, Summarize(sampleRecords())); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"cpu% load/backend/proxy/irq/other",
		"proxy CPU per operation, lower is cheaper: pen=15.0 haproxy=20.0 pen/haproxy=0.75\n",
		"45000", "50000 40000 45000",
		"80/45/50/-/20", // haproxy's median CPU shares
		"not working: pen: exited at start (status 1)",
		"1 of 2 rounds failed: failed: 50 of 100 queries lost",
		"keepalive HTTP, keep-alive (wrk): pen/direct=0.78",
		"target keepalive pen/haproxy >= 1.10  met (1.17), but too many runs were disturbed to be sure",
		"target close     pen/haproxy >= 1.10  not measured",
		"target rss       pen <= 4096 B/conn   met (3000.00)",
		"noise: 2 of 4 runs disturbed by other work (more than 15% of a core); on average it used 16% of a core: BUSY",
		"quiet runs only (rest of the machine <= 15% of a core): haproxy/direct=0.60 runs=direct:1,haproxy:1\n",
		"pen: 10.0 MiB before, 40.0 MiB holding 10000 (4194 B/conn counting the baseline)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Columns line up: every row of the table has the status column at
	// the same offset.
	lines := strings.Split(out, "\n")
	col := strings.Index(lines[0], "status")
	for _, l := range lines[1:4] {
		if len(l) < col || l[col-2:col] != "  " {
			t.Errorf("row %q does not line up with the header", l)
		}
	}
}
