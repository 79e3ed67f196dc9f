package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRSSRunSelf measures this test process holding connections to its
// own echo server: not a proxy, but every step of a real run.
func TestRSSRunSelf(t *testing.T) {
	if _, err := ReadVmRSS(os.Getpid()); err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	_, addr := startEcho(t)
	var log strings.Builder
	r := RSSRun{Test: "rss", Name: "self", PID: os.Getpid(), N: 100, Settle: 10 * time.Millisecond,
		Holder: Holder{Target: addr, Sources: 2}, Log: &log}
	rec := r.Run(context.Background())
	if !rec.OK() {
		t.Fatalf("Run = %+v", rec)
	}
	d := ParseDetails(rec.Detail)
	if rec.Unit != "B/conn" || d["conns"] != "100" || d["before"] == "" || d["held"] == "" || d["after_close"] == "" {
		t.Errorf("record %+v", rec)
	}
	if !strings.Contains(log.String(), "100 connections open and echoed") {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestRSSRunNotWorking(t *testing.T) {
	ctx := context.Background()
	r := RSSRun{Test: "rss", Name: "pen", PID: 1 << 30, N: 10, Holder: Holder{Target: "127.0.0.1:1"}}
	if rec := r.Run(ctx); rec.OK() || !strings.Contains(rec.Err, "not working: process") {
		t.Errorf("Run with a missing process = %+v", rec)
	}
	r.PID = os.Getpid()
	if rec := r.Run(ctx); rec.OK() || !strings.HasPrefix(rec.Err, "not working: ") || rec.Contender != "pen" {
		t.Errorf("Run against a closed port = %+v", rec)
	}
}
