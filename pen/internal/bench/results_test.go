package bench

import (
	"math"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []Record{
		{Test: "keepalive", Contender: "pen", Round: 2, Value: 41234.5, Unit: "req/s", Detail: "cpu.load=0.93 errors=0"},
		Failed("rss", "pen", 0, "B/conn", "not working:\tpen: not yet\nwired"),
		{Test: "dns", Contender: "direct", Round: 1, Value: 0, Unit: "q/s"},
	} {
		line := r.String()
		if strings.Count(line, "\t") != recordFields-1 || strings.Contains(line, "\n") {
			t.Fatalf("String() = %q: want %d tab-separated fields on one line", line, recordFields)
		}
		got, err := ParseRecord(line)
		if err != nil {
			t.Fatalf("ParseRecord(%q): %v", line, err)
		}
		want := r
		want.Err = clean(r.Err)
		if got.OK() != want.OK() || got.Test != want.Test || got.Contender != want.Contender ||
			got.Round != want.Round || got.Unit != want.Unit || got.Err != want.Err || got.Detail != want.Detail ||
			(want.OK() && got.Value != want.Value) {
			t.Errorf("round trip of %+v gave %+v", want, got)
		}
	}
}

func TestParseRecordErrors(t *testing.T) {
	for _, line := range []string{
		"keepalive\tpen\t1\t5",                      // too few fields
		"keepalive\tpen\tone\t5\treq/s\t\t",         // bad round
		"keepalive\tpen\t1\tfast\treq/s\t\t",        // bad value
		"keepalive\tpen\t1\t-\treq/s\t\t",           // no value, no error
		"\tpen\t1\t5\treq/s\t\t",                    // no test
		"keepalive\tpen\t1\t5\treq/s\t\t\textra\tx", // too many fields
	} {
		if _, err := ParseRecord(line); err == nil {
			t.Errorf("ParseRecord(%q) succeeded, want an error", line)
		}
	}
}

func TestReadRecords(t *testing.T) {
	in := "# comment\n\n" +
		Record{Test: "close", Contender: "direct", Round: 1, Value: 12000, Unit: "req/s"}.String() + "\n" +
		Failed("close", "pen", 0, "req/s", "not working: refused").String() + "\n"
	recs, err := ReadRecords(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Value != 12000 || !math.IsNaN(recs[1].Value) || recs[1].Err != "not working: refused" {
		t.Errorf("ReadRecords = %+v", recs)
	}
	if _, err := ReadRecords(strings.NewReader("garbage\n")); err == nil {
		t.Error("ReadRecords accepted garbage")
	}
}

func TestRecorder(t *testing.T) {
	var b strings.Builder
	rc := NewRecorder(&b)
	if err := rc.Add(Record{Test: "dns", Contender: "pen", Round: 3, Value: 1.5, Unit: "q/s"}); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "dns\tpen\t3\t1.5\tq/s\t\t\n"; got != want {
		t.Errorf("Add wrote %q, want %q", got, want)
	}
}

func TestDetails(t *testing.T) {
	d := Details("conns", "9900", "note", "two words", "odd")
	if d != "conns=9900 note=two_words" {
		t.Errorf("Details = %q", d)
	}
	m := ParseDetails(d + " stray")
	if len(m) != 2 || m["conns"] != "9900" || m["note"] != "two_words" {
		t.Errorf("ParseDetails(%q) = %v", d, m)
	}
}
