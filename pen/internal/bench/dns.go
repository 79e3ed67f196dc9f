package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNSZone is the zone the benchmark queries; every name in it resolves to
// DNSAnswer.
const DNSZone = "bench.test."

// DNSAnswer is the A record every name in DNSZone has.
var DNSAnswer = netip.MustParseAddr("127.0.0.1")

// DNSServer answers A queries for any name in DNSZone with DNSAnswer and
// refuses everything else. It stands in for dnsmasq where that is missing.
type DNSServer struct {
	pc  net.PacketConn
	srv *dns.Server
}

// NewDNSServer returns a server that will answer on pc.
func NewDNSServer(pc net.PacketConn) *DNSServer {
	return &DNSServer{pc: pc, srv: &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(answer)}}
}

// Serve answers queries until Shutdown.
func (s *DNSServer) Serve() error {
	err := s.srv.ActivateAndServe()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server, whether or not Serve has started yet.
func (s *DNSServer) Shutdown() {
	s.srv.Shutdown() // fails when Serve has not started; closing pc covers that
	s.pc.Close()
}

func answer(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 || !dns.IsSubDomain(DNSZone, dns.CanonicalName(req.Question[0].Name)) {
		m.Rcode = dns.RcodeRefused
	} else if q := req.Question[0]; q.Qtype == dns.TypeA && q.Qclass == dns.ClassINET {
		m.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   DNSAnswer.AsSlice(),
		}}
	}
	w.WriteMsg(m)
}

// DNSCheck sends one A query for a name in DNSZone to addr over UDP and
// checks the answer.
func DNSCheck(ctx context.Context, addr string) error {
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	q := new(dns.Msg)
	q.SetQuestion("check."+DNSZone, dns.TypeA)
	var lastErr error
	for try := 0; try < 3 && ctx.Err() == nil; try++ {
		r, _, err := c.ExchangeContext(ctx, q, addr)
		if err != nil {
			lastErr = err
			continue
		}
		if r.Rcode != dns.RcodeSuccess {
			return fmt.Errorf("answer code %s", dns.RcodeToString[r.Rcode])
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				if got, _ := netip.AddrFromSlice(a.A); got.Unmap() == DNSAnswer {
					return nil
				}
			}
		}
		return fmt.Errorf("no A record %s in the answer", DNSAnswer)
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return lastErr
}

// DNSPerfResult is what one dnsperf run reports.
type DNSPerfResult struct {
	QPS       float64
	Sent      int64
	Completed int64
	Lost      int64
}

var (
	rePerfQPS  = regexp.MustCompile(`(?m)^\s*Queries per second:\s+([0-9.]+)`)
	rePerfSent = regexp.MustCompile(`(?m)^\s*Queries sent:\s+([0-9]+)`)
	rePerfDone = regexp.MustCompile(`(?m)^\s*Queries completed:\s+([0-9]+)`)
	rePerfLost = regexp.MustCompile(`(?m)^\s*Queries lost:\s+([0-9]+)`)
)

// ParseDNSPerf reads the statistics dnsperf prints at the end of a run.
func ParseDNSPerf(out string) (DNSPerfResult, error) {
	var r DNSPerfResult
	m := rePerfQPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no \"Queries per second\" line in the dnsperf output")
	}
	r.QPS, _ = strconv.ParseFloat(m[1], 64)
	for _, f := range []struct {
		re  *regexp.Regexp
		dst *int64
	}{{rePerfSent, &r.Sent}, {rePerfDone, &r.Completed}, {rePerfLost, &r.Lost}} {
		m := f.re.FindStringSubmatch(out)
		if m == nil {
			return r, fmt.Errorf("no %q line in the dnsperf output", strings.Fields(f.re.String())[0])
		}
		*f.dst, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, nil
}

// Check says whether the run is usable: queries were answered and at most
// maxLoss (a fraction) were lost.
func (r DNSPerfResult) Check(maxLoss float64) error {
	if r.Completed == 0 {
		return fmt.Errorf("no query answered (%d sent)", r.Sent)
	}
	if r.Sent > 0 && float64(r.Lost) > maxLoss*float64(r.Sent) {
		return fmt.Errorf("%d of %d queries lost", r.Lost, r.Sent)
	}
	return nil
}

// DNSPerf runs dnsperf.
type DNSPerf struct {
	Path     string        // dnsperf binary; "dnsperf" if empty
	Clients  int           // -c
	Queries  int           // -q, queries outstanding
	Duration time.Duration // -l
	Dir      string        // where to write the query file
}

// WriteQueryFile writes a dnsperf input file of names in DNSZone to dir.
func WriteQueryFile(dir string) (string, error) {
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "q%d.%s A\n", i, DNSZone)
	}
	p := filepath.Join(dir, "penbench-queries.txt")
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// Run sends queries to addr (host:port) for the configured duration and
// returns the parsed result, dnsperf's output and the CPU time dnsperf used.
func (d DNSPerf) Run(ctx context.Context, addr string) (DNSPerfResult, string, time.Duration, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return DNSPerfResult{}, "", 0, err
	}
	qf, err := WriteQueryFile(d.Dir)
	if err != nil {
		return DNSPerfResult{}, "", 0, err
	}
	path := d.Path
	if path == "" {
		path = "dnsperf"
	}
	secs := max(1, int(d.Duration.Round(time.Second)/time.Second))
	args := []string{"-s", host, "-p", port, "-d", qf, "-l", strconv.Itoa(secs),
		"-c", strconv.Itoa(max(1, d.Clients)), "-q", strconv.Itoa(max(1, d.Queries)), "-t", "1"}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+15)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	out, err := cmd.CombinedOutput()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return DNSPerfResult{}, string(out), cpu, fmt.Errorf("%s %s: %w: %s", path, strings.Join(args, " "), err, firstLine(string(out)))
	}
	r, err := ParseDNSPerf(string(out))
	return r, string(out), cpu, err
}
