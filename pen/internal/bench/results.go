// Package bench implements the load and measurement tools behind
// `make bench`: HTTP runs with wrk, DNS runs with dnsperf, the memory cost
// of idle proxied connections, the small servers those runs need, and the
// report that turns the raw measurements into medians and ratios.
//
// scripts/bench.sh starts the servers and proxies; the penbench binary
// (pen/bench/cmd/penbench) measures them and appends one Record per
// measurement to a results file, which `penbench report` summarises.
package bench

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// Record is one measurement of one contender in one test, or the reason a
// contender could not be measured.
type Record struct {
	Test      string  // e.g. "keepalive", "close", "rss", "dns"
	Contender string  // e.g. "direct", "pen", "haproxy"
	Round     int     // 1-based round; 0 for a record about the contender as a whole
	Value     float64 // e.g. requests per second; NaN when Err is set
	Unit      string  // e.g. "req/s", "B/conn", "q/s"
	Err       string  // why there is no value, e.g. "not working: connection refused"
	Detail    string  // space-separated key=value extras, e.g. "cpu.wrk=0.93 errors=0"
}

// OK reports whether the record holds a measurement.
func (r Record) OK() bool { return r.Err == "" && !math.IsNaN(r.Value) }

// Failed returns a record saying the contender could not be measured.
func Failed(test, contender string, round int, unit, why string) Record {
	return Record{Test: test, Contender: contender, Round: round, Value: math.NaN(), Unit: unit, Err: why}
}

const recordFields = 7

// clean keeps a field on one line and in one column.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
}

// String formats the record as one tab-separated line without the newline.
func (r Record) String() string {
	v := "-"
	if !math.IsNaN(r.Value) {
		v = strconv.FormatFloat(r.Value, 'f', -1, 64)
	}
	return strings.Join([]string{
		clean(r.Test), clean(r.Contender), strconv.Itoa(r.Round), v,
		clean(r.Unit), clean(r.Err), clean(r.Detail),
	}, "\t")
}

// ParseRecord parses a line written by Record.String.
func ParseRecord(line string) (Record, error) {
	f := strings.Split(line, "\t")
	if len(f) != recordFields {
		return Record{}, fmt.Errorf("parsing record %q: %d fields, want %d", line, len(f), recordFields)
	}
	round, err := strconv.Atoi(f[2])
	if err != nil {
		return Record{}, fmt.Errorf("parsing record %q: round: %w", line, err)
	}
	v := math.NaN()
	if f[3] != "-" {
		if v, err = strconv.ParseFloat(f[3], 64); err != nil {
			return Record{}, fmt.Errorf("parsing record %q: value: %w", line, err)
		}
	}
	r := Record{Test: f[0], Contender: f[1], Round: round, Value: v, Unit: f[4], Err: f[5], Detail: f[6]}
	if r.Test == "" || r.Contender == "" {
		return Record{}, fmt.Errorf("parsing record %q: empty test or contender", line)
	}
	if r.Err == "" && math.IsNaN(r.Value) {
		return Record{}, fmt.Errorf("parsing record %q: neither a value nor an error", line)
	}
	return r, nil
}

// ReadRecords reads a results file: one record per line; blank lines and
// lines starting with # are skipped.
func ReadRecords(r io.Reader) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rec, err := ParseRecord(line)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, sc.Err()
}

// Recorder appends records to a results file, or to any writer.
type Recorder struct {
	w io.Writer
}

// NewRecorder returns a Recorder writing to w.
func NewRecorder(w io.Writer) *Recorder { return &Recorder{w: w} }

// Add writes one record.
func (rc *Recorder) Add(r Record) error {
	_, err := fmt.Fprintln(rc.w, r.String())
	return err
}

// AppendFile opens path for appending records, creating it if needed.
func AppendFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// Details formats key=value pairs in the given order for Record.Detail.
func Details(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[i])
		b.WriteByte('=')
		b.WriteString(strings.ReplaceAll(kv[i+1], " ", "_"))
	}
	return b.String()
}

// ParseDetails splits a Record.Detail into its key=value pairs; words
// without "=" are ignored.
func ParseDetails(s string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(s) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}
