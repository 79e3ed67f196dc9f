package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// startDNS runs a DNSServer on a loopback UDP port for the test.
func startDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewDNSServer(pc)
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Shutdown()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return pc.LocalAddr().String()
}

func TestDNSServerAndCheck(t *testing.T) {
	addr := startDNS(t)
	ctx := context.Background()
	if err := DNSCheck(ctx, addr); err != nil {
		t.Fatalf("DNSCheck = %v", err)
	}
	c := &dns.Client{Timeout: 2 * time.Second}
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		n     int
	}{
		{"a.b." + DNSZone, dns.TypeA, dns.RcodeSuccess, 1},
		{"A.Bench.Test.", dns.TypeA, dns.RcodeSuccess, 1},
		{"x." + DNSZone, dns.TypeAAAA, dns.RcodeSuccess, 0},
		{"example.org.", dns.TypeA, dns.RcodeRefused, 0},
	} {
		q := new(dns.Msg)
		q.SetQuestion(tc.name, tc.qtype)
		r, _, err := c.Exchange(q, addr)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.Rcode != tc.rcode || len(r.Answer) != tc.n {
			t.Errorf("%s %s: rcode %s, %d answers; want %s, %d", tc.name, dns.TypeToString[tc.qtype],
				dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tc.rcode], tc.n)
		}
	}
}

func TestDNSServerShutdownFirst(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewDNSServer(pc)
	s.Shutdown()
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve after Shutdown did not return")
	}
}

func TestDNSCheckFailures(t *testing.T) {
	// A server for another zone refuses the check query.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	defer srv.Shutdown()
	ctx := context.Background()
	if err := DNSCheck(ctx, pc.LocalAddr().String()); errAndNot(err, "NXDOMAIN") {
		t.Errorf("DNSCheck of an NXDOMAIN server = %v", err)
	}

	// Nobody answers on a bound but unread socket.
	mute, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := DNSCheck(ctx, mute.LocalAddr().String()); err == nil {
		t.Error("DNSCheck of a mute socket succeeded")
	}
}

const dnsperfOK = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 28053 -d q.txt -l 3 -c 1 -q 100 -t 1
[Status] Sending queries (to 127.0.0.1:28053)
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         292082
  Queries completed:    292000 (99.97%)
  Queries lost:         82 (0.03%)

  Response codes:       NOERROR 292000 (100.00%)
  Average packet size:  request 30, response 46
  Run time (s):         3.002712
  Queries per second:   97272.732117

  Average Latency (s):  0.000880 (min 0.000024, max 0.004911)
`

func TestParseDNSPerf(t *testing.T) {
	r, err := ParseDNSPerf(dnsperfOK)
	if err != nil {
		t.Fatal(err)
	}
	if r.QPS != 97272.732117 || r.Sent != 292082 || r.Completed != 292000 || r.Lost != 82 {
		t.Errorf("ParseDNSPerf = %+v", r)
	}
	if err := r.Check(0.01); err != nil {
		t.Errorf("Check = %v", err)
	}
	if err := (DNSPerfResult{Sent: 100, Completed: 50, Lost: 50}).Check(0.01); errAndNot(err, "50 of 100") {
		t.Errorf("Check of 50%% loss = %v", err)
	}
	if err := (DNSPerfResult{Sent: 100}).Check(0.01); err == nil {
		t.Error("Check with nothing answered succeeded")
	}
	if _, err := ParseDNSPerf(strings.Replace(dnsperfOK, "Queries lost", "Queries gone", 1)); err == nil {
		t.Error("ParseDNSPerf without a lost line succeeded")
	}
	if _, err := ParseDNSPerf("dnsperf: no servers\n"); err == nil {
		t.Error("ParseDNSPerf of an error message succeeded")
	}
}

func TestWriteQueryFile(t *testing.T) {
	p, err := WriteQueryFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 10 || !strings.HasSuffix(lines[0], "."+DNSZone+" A") {
		t.Errorf("query file starts %q and has %d lines", lines[0], len(lines))
	}
}

func TestDNSPerfRunFake(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "perf.out")
	if err := os.WriteFile(out, []byte(dnsperfOK), 0o644); err != nil {
		t.Fatal(err)
	}
	args := filepath.Join(dir, "args")
	d := DNSPerf{Path: fakeTool(t, fmt.Sprintf("echo \"$@\" > %s\ncat %s\n", args, out)),
		Clients: 2, Queries: 50, Duration: 2 * time.Second, Dir: dir}
	r, _, _, err := d.Run(context.Background(), "127.0.0.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	if r.QPS != 97272.732117 {
		t.Errorf("QPS = %v", r.QPS)
	}
	b, _ := os.ReadFile(args)
	want := fmt.Sprintf("-s 127.0.0.1 -p 5353 -d %s -l 2 -c 2 -q 50 -t 1", filepath.Join(dir, "penbench-queries.txt"))
	if strings.TrimSpace(string(b)) != want {
		t.Errorf("dnsperf got arguments %q, want %q", b, want)
	}
	if _, _, _, err := d.Run(context.Background(), "no port"); err == nil {
		t.Error("Run with a bad address succeeded")
	}
}
