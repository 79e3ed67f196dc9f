package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseContender(t *testing.T) {
	c, err := ParseContender("pen=http://127.0.0.1:1/a=b")
	if err != nil || c.Name != "pen" || c.Addr != "http://127.0.0.1:1/a=b" {
		t.Errorf("ParseContender = %+v, %v", c, err)
	}
	for _, bad := range []string{"pen", "=x", "pen=", "a b=x"} {
		if _, err := ParseContender(bad); err == nil {
			t.Errorf("ParseContender(%q) succeeded", bad)
		}
	}
}

func TestRounds(t *testing.T) {
	var order []string
	var b strings.Builder
	var log strings.Builder
	calls := map[string]int{}
	r := Rounds{
		Test: "keepalive", Unit: "req/s", Rounds: 3, Rec: NewRecorder(&b), Log: &log,
		Check: func(_ context.Context, c Contender) error {
			switch {
			case c.Name == "down":
				return errors.New("connection refused")
			case c.Name == "flaky" && calls["flaky"] >= 2:
				return errors.New("process 7 is not running")
			}
			return nil
		},
		Measure: func(_ context.Context, c Contender) (float64, string, error) {
			order = append(order, c.Name)
			calls[c.Name]++
			if c.Name == "flaky" && calls["flaky"] == 2 {
				return 0, "", errors.New("wrk: no request completed")
			}
			return float64(100 * calls[c.Name]), "cpu.load=0.5", nil
		},
	}
	cs := []Contender{{"direct", "d"}, {"down", "x"}, {"flaky", "f"}, {"haproxy", "h"}}
	if err := r.Run(context.Background(), cs); err != nil {
		t.Fatal(err)
	}
	// The order rotates each round; "down" never runs and "flaky" stops
	// after its failed second run.
	want := "direct flaky haproxy | flaky haproxy direct | haproxy direct"
	got := fmt.Sprint(order[:3], " | ", order[3:6], " | ", order[6:])
	got = strings.NewReplacer("[", "", "]", "").Replace(got)
	if got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
	recs, err := ReadRecords(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	tests := Summarize(recs)
	if len(tests) != 1 {
		t.Fatalf("%d tests", len(tests))
	}
	for _, c := range []struct {
		name   string
		values int
		status string
	}{
		{"direct", 3, "ok"},
		{"down", 0, "not working: connection refused"},
		{"flaky", 1, "2 of 3 rounds failed: failed: wrk: no request completed"},
		{"haproxy", 3, "ok"},
	} {
		s, ok := tests[0].Stat(c.name)
		if !ok || len(s.Values) != c.values || s.Status() != c.status {
			t.Errorf("%s: %d values, status %q; want %d, %q", c.name, len(s.Values), s.Status(), c.values, c.status)
		}
	}
	if !strings.Contains(log.String(), "flaky: stopped working: process 7 is not running") {
		t.Errorf("log lacks the flaky contender's end:\n%s", log.String())
	}
}

func TestRoundsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var b strings.Builder
	n := 0
	r := Rounds{Test: "t", Unit: "u", Rounds: 5, Rec: NewRecorder(&b),
		Check: func(context.Context, Contender) error { return nil },
		Measure: func(context.Context, Contender) (float64, string, error) {
			n++
			cancel()
			return 1, "", nil
		},
	}
	if err := r.Run(ctx, []Contender{{"a", "a"}, {"b", "b"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	if n != 1 {
		t.Errorf("%d measurements after cancelling, want 1", n)
	}
}
