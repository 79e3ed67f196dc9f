package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const wrkOK = `Running 5s test @ http://127.0.0.1:24149/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   379.19us  286.83us   6.20ms   96.05%
    Req/Sec    86.58k    15.69k  120.71k    70.00%
  258669 requests in 3.00s, 45.64MB read
Requests/sec:  86150.17
Transfer/sec:     15.20MB
`

const wrkErrors = `Running 5s test @ http://127.0.0.1:24150/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.39ms    1.24ms  10.41ms   65.97%
    Req/Sec    11.66k     1.13k   14.18k    80.00%
  34976 requests in 3.02s, 6.00MB read
  Socket errors: connect 0, read 350, write 1, timeout 50
  Non-2xx or 3xx responses: 12
Requests/sec:  11586.59
Transfer/sec:      1.99MB
`

func TestParseWrk(t *testing.T) {
	r, err := ParseWrk(wrkOK)
	if err != nil {
		t.Fatal(err)
	}
	if r.RequestsPerSec != 86150.17 || r.Requests != 258669 || r.SocketErrors != 0 || r.Non2xx != 0 {
		t.Errorf("ParseWrk(ok) = %+v", r)
	}
	if err := r.Check(0.01); err != nil {
		t.Errorf("Check(ok) = %v", err)
	}

	r, err = ParseWrk(wrkErrors)
	if err != nil {
		t.Fatal(err)
	}
	if r.RequestsPerSec != 11586.59 || r.Requests != 34976 || r.SocketErrors != 401 || r.Non2xx != 12 {
		t.Errorf("ParseWrk(errors) = %+v", r)
	}
	if err := r.Check(0.01); errAndNot(err, "read 350") {
		t.Errorf("Check(1%%) = %v, want the socket errors", err)
	}
	if err := r.Check(0.05); err != nil {
		t.Errorf("Check(5%%) = %v", err)
	}
	if err := (WrkResult{Requests: 100, Non2xx: 2}).Check(0.01); err == nil {
		t.Error("2% non-2xx passed a 1% check")
	}
	if err := (WrkResult{}).Check(0.01); err == nil {
		t.Error("no requests passed the check")
	}

	for _, bad := range []string{"", "unable to connect to 127.0.0.1:1 Connection refused\n",
		"Requests/sec:  5.0\n"} {
		if _, err := ParseWrk(bad); err == nil {
			t.Errorf("ParseWrk(%q) succeeded", bad)
		}
	}
}

// errAndNot reports whether err is missing or lacks want.
func errAndNot(err error, want string) bool {
	return err == nil || !strings.Contains(err.Error(), want)
}

func TestWrkArgs(t *testing.T) {
	w := Wrk{Threads: 1, Conns: 50, Duration: 5 * time.Second, Close: true}
	got := w.Args("http://127.0.0.1:1/")
	want := []string{"-t1", "-c50", "-d5s", "-H", "Connection: close", "http://127.0.0.1:1/"}
	if !slices.Equal(got, want) {
		t.Errorf("Args = %q, want %q", got, want)
	}
	if got := (Wrk{}).Args("u"); !slices.Equal(got, []string{"-t1", "-c1", "-d1s", "u"}) {
		t.Errorf("Args of zero Wrk = %q", got)
	}
}

// fakeTool writes an executable shell script standing in for wrk or
// dnsperf.
func fakeTool(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWrkRunFake(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "wrk.out")
	if err := os.WriteFile(out, []byte(wrkOK), 0o644); err != nil {
		t.Fatal(err)
	}
	args := filepath.Join(dir, "args")
	w := Wrk{Path: fakeTool(t, fmt.Sprintf("echo \"$@\" > %s\ncat %s\n", args, out)), Threads: 2, Conns: 10, Duration: time.Second}
	r, _, _, err := w.Run(context.Background(), "http://127.0.0.1:9/")
	if err != nil {
		t.Fatal(err)
	}
	if r.RequestsPerSec != 86150.17 {
		t.Errorf("RequestsPerSec = %v", r.RequestsPerSec)
	}
	if b, _ := os.ReadFile(args); strings.TrimSpace(string(b)) != "-t2 -c10 -d1s http://127.0.0.1:9/" {
		t.Errorf("wrk got arguments %q", b)
	}

	w.Path = fakeTool(t, "echo 'unable to connect to 127.0.0.1:9 Connection refused'\nexit 1\n")
	if _, _, _, err := w.Run(context.Background(), "http://127.0.0.1:9/"); errAndNot(err, "Connection refused") {
		t.Errorf("Run of a failing wrk = %v", err)
	}
	w.Prefix = []string{"/nonexistent/taskset"}
	if _, _, _, err := w.Run(context.Background(), "http://127.0.0.1:9/"); err == nil {
		t.Error("Run under a missing prefix command succeeded")
	}
}

func TestHTTPCheck(t *testing.T) {
	var sawClose bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawClose = r.Close
		if r.URL.Path == "/broken" {
			http.Error(w, "broken", http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, "hello from the pen benchmark backend")
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := HTTPCheck(ctx, srv.URL+"/", "benchmark backend", true); err != nil {
		t.Errorf("HTTPCheck = %v", err)
	}
	if !sawClose {
		t.Error("the request did not ask to close the connection")
	}
	if err := HTTPCheck(ctx, srv.URL+"/", "something else", false); errAndNot(err, "does not contain") {
		t.Errorf("HTTPCheck with the wrong body = %v", err)
	}
	if err := HTTPCheck(ctx, srv.URL+"/broken", "", false); errAndNot(err, "502") {
		t.Errorf("HTTPCheck of a 502 = %v", err)
	}
	url := srv.URL
	srv.Close()
	if err := HTTPCheck(ctx, url, "", false); err == nil {
		t.Error("HTTPCheck of a closed server succeeded")
	}
}
