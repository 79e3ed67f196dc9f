package bench

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMainUsage(t *testing.T) {
	var out, errOut strings.Builder
	if err := Main(context.Background(), nil, &out, &errOut); err == nil || !strings.Contains(errOut.String(), "usage") {
		t.Errorf("Main() = %v, stderr %q", err, errOut.String())
	}
	if err := Main(context.Background(), []string{"frobnicate"}, &out, &errOut); errAndNot(err, "unknown command") {
		t.Errorf("Main(frobnicate) = %v", err)
	}
}

func TestMainFailAndReport(t *testing.T) {
	ctx := context.Background()
	res := filepath.Join(t.TempDir(), "results.tsv")
	var out, errOut strings.Builder
	if err := os.WriteFile(res, []byte(rec("keepalive", "direct", 1, 1000, "").String()+"\n"+
		rec("keepalive", "haproxy", 1, 500, "").String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Main(ctx, []string{"fail", "-out", res, "-test", "keepalive", "-contender", "pen", "-unit", "req/s",
		"-why", "not working: pen: exited at start (status 1)"}, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	if err := Main(ctx, []string{"fail", "-out", res, "-test", "keepalive"}, &out, &errOut); err == nil {
		t.Error("fail without -contender and -why succeeded")
	}
	if err := Main(ctx, []string{"report", res}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"not working: pen: exited at start (status 1)",
		"bench: keepalive pen=not-working haproxy/direct=0.50\n",
		"bench: targets keepalive=unknown",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if err := Main(ctx, []string{"report"}, &out, &errOut); err == nil {
		t.Error("report without a file succeeded")
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(5, 20000, 32000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < 20000 || p >= 32000 || seen[p] {
			t.Errorf("ports %v: %d out of range or repeated", ports, p)
		}
		seen[p] = true
	}
	if _, err := FreePorts(5, 20000, 20003); err == nil {
		t.Error("5 ports from a range of 3 succeeded")
	}
	var out, errOut strings.Builder
	if err := Main(context.Background(), []string{"ports", "-n", "3"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(out.String()); len(f) != 3 {
		t.Errorf("ports -n 3 printed %q", out.String())
	}
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := Wait(ctx, addr, os.Getpid(), time.Second, false); err != nil {
		t.Errorf("Wait for a listener = %v", err)
	}
	ln.Close()
	if err := Wait(ctx, addr, 0, 200*time.Millisecond, false); errAndNot(err, "not ready") {
		t.Errorf("Wait for a closed port = %v", err)
	}
	if err := Wait(ctx, addr, 1<<30, 5*time.Second, false); errAndNot(err, "exited") {
		t.Errorf("Wait with a missing process = %v", err)
	}
	dnsAddr := startDNS(t)
	var out, errOut strings.Builder
	if err := Main(ctx, []string{"wait", "-dns", "-addr", dnsAddr, "-timeout", "2s"}, &out, &errOut); err != nil {
		t.Errorf("wait -dns = %v", err)
	}
}

func TestPidFlags(t *testing.T) {
	m, err := pidFlags(listFlag{"pen=12", "haproxy=" + strconv.Itoa(34)})
	if err != nil || m["pen"] != 12 || m["haproxy"] != 34 {
		t.Errorf("pidFlags = %v, %v", m, err)
	}
	for _, bad := range []string{"pen", "pen=x", "pen=-1"} {
		if _, err := pidFlags(listFlag{bad}); err == nil {
			t.Errorf("pidFlags(%q) succeeded", bad)
		}
	}
}

// TestMainHTTPNotWorking runs the http command against a closed port: the
// contender is recorded as not working, without wrk being run.
func TestMainHTTPNotWorking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res := filepath.Join(t.TempDir(), "results.tsv")
	var out, errOut strings.Builder
	err = Main(context.Background(), []string{"http", "-out", res, "-rounds", "1",
		"-target", "pen=http://" + addr + "/"}, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(res)
	if !strings.HasPrefix(string(b), "keepalive\tpen\t0\t-\treq/s\tnot working: ") {
		t.Errorf("results:\n%s", b)
	}
}
