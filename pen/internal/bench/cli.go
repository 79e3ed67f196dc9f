package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// usage lists penbench's commands.
const usage = `usage: penbench COMMAND [flags]

commands (each takes -h):
  ports      print free TCP+UDP port numbers on 127.0.0.1
  wait       wait until a TCP port accepts or a DNS server answers
  echo       run a TCP echo backend that holds its connections
  dnsserver  run a UDP DNS backend answering for ` + DNSZone + `
  bulkserver run a TCP backend that sends every client a fixed number of bytes
  http       measure HTTP contenders with wrk over alternating rounds
  dns        measure DNS contenders with dnsperf over alternating rounds
  bulk       measure download throughput of contenders over alternating rounds
  handshake  measure full TLS handshakes (one request each) over alternating rounds
  rss        measure a proxy's resident memory per idle connection
  fail       record that a contender could not be measured
  report     print the table and summary of a results file
`

// Main runs the penbench command line.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"ports": cmdPorts, "wait": cmdWait, "echo": cmdEcho, "dnsserver": cmdDNSServer, "bulkserver": cmdBulkServer, "bulk": cmdBulk,
		"handshake": cmdHandshake,
		"http":      cmdHTTP, "dns": cmdDNS, "rss": cmdRSS, "fail": cmdFail, "report": cmdReport,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("penbench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func contenders(l listFlag) ([]Contender, error) {
	var cs []Contender
	for _, s := range l {
		c, err := ParseContender(s)
		if err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	if len(cs) == 0 {
		return nil, errors.New("no -target given")
	}
	return cs, nil
}

func openRecorder(path string) (*Recorder, func() error, error) {
	if path == "" {
		return nil, nil, errors.New("-out is required")
	}
	f, err := AppendFile(path)
	if err != nil {
		return nil, nil, err
	}
	return NewRecorder(f), f.Close, nil
}

// FreePorts returns n distinct port numbers in [from, to) that are free for
// both TCP and UDP on 127.0.0.1 at the time of the call.
func FreePorts(n, from, to int) ([]int, error) {
	if from < 1 || to > 65536 || to-from < n {
		return nil, fmt.Errorf("port range %d-%d cannot hold %d ports", from, to, n)
	}
	var ports []int
	start := from + rand.IntN(to-from)
	for i := 0; i < to-from && len(ports) < n; i++ {
		p := from + (start-from+i)%(to-from)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("only %d free ports in %d-%d", len(ports), from, to)
	}
	return ports, nil
}

func cmdPorts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ports", stderr)
	n := fs.Int("n", 1, "how many ports")
	from := fs.Int("from", 20000, "lowest port")
	to := fs.Int("to", 32000, "one above the highest port (below Linux's ephemeral range)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ports, err := FreePorts(*n, *from, *to)
	if err != nil {
		return err
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	_, err = fmt.Fprintln(stdout, strings.Join(s, " "))
	return err
}

// Wait waits until addr accepts a TCP connection (or, with dnsCheck,
// answers a DNS query) and gives up early if process pid (when not 0)
// exits.
func Wait(ctx context.Context, addr string, pid int, timeout time.Duration, dnsCheck bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if pid != 0 && !Alive(pid) {
			return fmt.Errorf("process %d exited", pid)
		}
		if dnsCheck {
			last = DNSCheck(ctx, addr)
		} else {
			var c net.Conn
			c, last = (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
			if last == nil {
				c.Close()
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %v", addr, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func cmdWait(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("wait", stderr)
	addr := fs.String("addr", "", "host:port")
	pid := fs.Int("pid", 0, "give up when this process exits")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait")
	dnsCheck := fs.Bool("dns", false, "wait for a DNS answer over UDP instead of a TCP accept")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return Wait(ctx, *addr, *pid, *timeout, *dnsCheck)
}

func cmdEcho(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("echo", stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	s := &EchoServer{}
	go func() {
		<-ctx.Done()
		ln.Close()
		s.Close()
	}()
	return s.Serve(ln)
}

func cmdDNSServer(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("dnsserver", stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (UDP)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pc, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp", *listen)
	if err != nil {
		return err
	}
	s := NewDNSServer(pc)
	go func() {
		<-ctx.Done()
		s.Shutdown()
	}()
	return s.Serve()
}

// pidFlags parses name=pid pairs.
// runSetup turns the flags every load command shares into contenders,
// their processes and the results file.
func runSetup(targets, pids listFlag, out string) ([]Contender, map[string]int, *Recorder, func() error, error) {
	cs, err := contenders(targets)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	pidOf, err := pidFlags(pids)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	rec, closeOut, err := openRecorder(out)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return cs, pidOf, rec, closeOut, nil
}

func pidFlags(l listFlag) (map[string]int, error) {
	m := map[string]int{}
	for _, s := range l {
		name, v, ok := strings.Cut(s, "=")
		pid, err := strconv.Atoi(v)
		if !ok || err != nil || pid <= 0 {
			return nil, fmt.Errorf("-pid %q: want name=pid", s)
		}
		m[name] = pid
	}
	return m, nil
}

func cmdHTTP(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("http", stderr)
	var targets, pids listFlag
	fs.Var(&targets, "target", "name=URL of a contender (repeat)")
	fs.Var(&pids, "pid", "name=pid of a contender's proxy process, for its CPU share (repeat)")
	test := fs.String("test", "keepalive", "test name in the results")
	closeConn := fs.Bool("close", false, "send Connection: close (a new connection per request)")
	rounds := fs.Int("rounds", 3, "rounds over all contenders")
	dur := fs.Duration("duration", 5*time.Second, "wrk -d")
	threads := fs.Int("threads", 1, "wrk -t")
	conns := fs.Int("conns", 50, "wrk -c")
	gap := fs.Duration("gap", 500*time.Millisecond, "pause between runs")
	want := fs.String("want", "", "text every contender's response must contain")
	backendPID := fs.Int("backend-pid", 0, "the backend's process, for its CPU share")
	prefix := fs.String("wrk-prefix", "", "command to run wrk under, e.g. \"taskset -c 0\"")
	out := fs.String("out", "", "results file to append to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, pidOf, rec, closeOut, err := runSetup(targets, pids, *out)
	if err != nil {
		return err
	}
	defer closeOut()
	w := Wrk{Threads: *threads, Conns: *conns, Duration: *dur, Close: *closeConn, Prefix: strings.Fields(*prefix)}
	r := Rounds{
		Test: *test, Unit: "req/s", Rounds: *rounds, Gap: *gap, Rec: rec, Log: stderr,
		Check: func(ctx context.Context, c Contender) error {
			if pid, ok := pidOf[c.Name]; ok && !Alive(pid) {
				return fmt.Errorf("process %d is not running", pid)
			}
			return HTTPCheck(ctx, c.Addr, *want, *closeConn)
		},
		Measure: func(ctx context.Context, c Contender) (float64, string, error) {
			var res WrkResult
			shares, s, err := sampled(*backendPID, pidOf[c.Name], func() (time.Duration, error) {
				r, _, cpu, err := w.Run(ctx, c.Addr)
				res = r
				if err == nil {
					err = res.Check(0.01)
				}
				return cpu, err
			})
			if err != nil {
				return 0, "", err
			}
			kv := []string{"requests", strconv.FormatInt(res.Requests, 10),
				"errors", strconv.FormatInt(res.SocketErrors+res.Non2xx, 10)}
			return res.RequestsPerSec, Details(cpuDetails(kv, shares, s.Wall, res.Requests)...), nil
		},
	}
	return r.Run(ctx, cs)
}

// cpuDetails appends the CPU shares of one run (load generator, backend,
// proxy, interrupts, and the rest of the machine) to kv, and the proxy's CPU time per
// operation in microseconds as "proxy_us": a figure that other processes
// on the machine disturb much less than throughput.
func cpuDetails(kv []string, shares map[string]float64, wall time.Duration, ops int64) []string {
	for _, k := range []string{"load", "backend", "proxy", "irq", "other"} {
		if v, ok := shares[k]; ok {
			kv = append(kv, "cpu."+k, strconv.FormatFloat(v, 'f', 2, 64))
		}
	}
	if v, ok := shares["proxy"]; ok && ops > 0 {
		us := v * wall.Seconds() * 1e6 / float64(ops)
		kv = append(kv, "proxy_us", strconv.FormatFloat(us, 'f', 2, 64))
	}
	return kv
}

func cmdDNS(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("dns", stderr)
	var targets, pids listFlag
	fs.Var(&targets, "target", "name=host:port of a contender (repeat)")
	fs.Var(&pids, "pid", "name=pid of a contender's proxy process, for its CPU share (repeat)")
	test := fs.String("test", "dns", "test name in the results")
	rounds := fs.Int("rounds", 3, "rounds over all contenders")
	dur := fs.Duration("duration", 3*time.Second, "dnsperf -l")
	clients := fs.Int("clients", 1, "dnsperf -c")
	queries := fs.Int("queries", 100, "dnsperf -q, queries outstanding")
	gap := fs.Duration("gap", 500*time.Millisecond, "pause between runs")
	backendPID := fs.Int("backend-pid", 0, "the backend's process, for its CPU share")
	out := fs.String("out", "", "results file to append to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, pidOf, rec, closeOut, err := runSetup(targets, pids, *out)
	if err != nil {
		return err
	}
	defer closeOut()
	dir, err := os.MkdirTemp("", "penbench-dns-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d := DNSPerf{Clients: *clients, Queries: *queries, Duration: *dur, Dir: dir}
	r := Rounds{
		Test: *test, Unit: "q/s", Rounds: *rounds, Gap: *gap, Rec: rec, Log: stderr,
		Check: func(ctx context.Context, c Contender) error {
			if pid, ok := pidOf[c.Name]; ok && !Alive(pid) {
				return fmt.Errorf("process %d is not running", pid)
			}
			return DNSCheck(ctx, c.Addr)
		},
		Measure: func(ctx context.Context, c Contender) (float64, string, error) {
			var res DNSPerfResult
			shares, s, err := sampled(*backendPID, pidOf[c.Name], func() (time.Duration, error) {
				r, _, cpu, err := d.Run(ctx, c.Addr)
				res = r
				if err == nil {
					err = res.Check(0.01)
				}
				return cpu, err
			})
			if err != nil {
				return 0, "", err
			}
			kv := []string{"sent", strconv.FormatInt(res.Sent, 10), "lost", strconv.FormatInt(res.Lost, 10)}
			return res.QPS, Details(cpuDetails(kv, shares, s.Wall, res.Completed)...), nil
		},
	}
	return r.Run(ctx, cs)
}

func cmdRSS(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("rss", stderr)
	test := fs.String("test", "rss", "test name in the results")
	name := fs.String("name", "", "contender name, e.g. pen")
	pid := fs.Int("pid", 0, "the proxy's process")
	target := fs.String("target", "", "host:port of the proxy, which forwards to an echo backend")
	n := fs.Int("n", 10000, "connections to hold")
	sources := fs.Int("sources", 1, "spread connections over 127.0.0.1..127.0.0.N")
	parallel := fs.Int("parallel", 64, "dials in flight")
	settle := fs.Duration("settle", 2*time.Second, "wait before reading RSS")
	exchanges := fs.Int("exchanges", 1, "lines each connection sends and reads back before it is held")
	out := fs.String("out", "", "results file to append to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *pid <= 0 || *target == "" || *n <= 0 {
		return errors.New("-name, -pid, -target and a positive -n are required")
	}
	rec, closeOut, err := openRecorder(*out)
	if err != nil {
		return err
	}
	defer closeOut()
	r := RSSRun{
		Test: *test, Name: *name, PID: *pid, N: *n, Settle: *settle, Log: stderr,
		Holder: Holder{Target: *target, Sources: *sources, Parallel: *parallel, Exchanges: *exchanges},
	}
	return rec.Add(r.Run(ctx))
}

func cmdFail(_ context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("fail", stderr)
	test := fs.String("test", "", "test name")
	contender := fs.String("contender", "", "contender name")
	unit := fs.String("unit", "", "the test's unit")
	why := fs.String("why", "", "what went wrong, e.g. \"not working: exited at start\"")
	out := fs.String("out", "", "results file to append to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *test == "" || *contender == "" || *why == "" {
		return errors.New("-test, -contender and -why are required")
	}
	rec, closeOut, err := openRecorder(*out)
	if err != nil {
		return err
	}
	defer closeOut()
	return rec.Add(Failed(*test, *contender, 0, *unit, *why))
}

func cmdReport(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("report", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: penbench report RESULTS-FILE")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	recs, err := ReadRecords(f)
	if err != nil {
		return err
	}
	tests := Summarize(recs)
	if err := WriteTable(stdout, tests); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	return WriteSummary(stdout, tests)
}

// sampled runs run, the load generator, while sampling the CPU of the
// backend and of the proxy (pids 0 are left out). The load generator's
// own CPU, which run returns, goes in as "load"; it counts its start and
// end too, which is close enough over a run of seconds.
func sampled(backend, proxy int, run func() (time.Duration, error)) (map[string]float64, *CPUSampler, error) {
	procs := map[string]int{}
	if backend != 0 {
		procs["backend"] = backend
	}
	if proxy != 0 {
		procs["proxy"] = proxy
	}
	s := &CPUSampler{Procs: procs}
	s.Start()
	t0 := time.Now()
	loadCPU, err := run()
	wall := time.Since(t0)
	shares := s.Stop()
	if err != nil {
		return nil, nil, err
	}
	shares["load"] = float64(loadCPU) / float64(wall)
	return shares, s, nil
}

func cmdBulkServer(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("bulkserver", stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	size := fs.Int64("bytes", 1<<30, "bytes sent to every client")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	return BulkServer{Bytes: *size}.Serve(ln)
}

func cmdBulk(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("bulk", stderr)
	var targets, pids listFlag
	fs.Var(&targets, "target", "name=host:port of a contender (repeat)")
	fs.Var(&pids, "pid", "name=pid of a contender's proxy process, for its CPU share (repeat)")
	test := fs.String("test", "bulk", "test name in the results")
	rounds := fs.Int("rounds", 3, "rounds over all contenders")
	size := fs.Int64("bytes", 1<<30, "bytes the backend sends (bulkserver -bytes)")
	timeout := fs.Duration("timeout", 60*time.Second, "longest a download may take")
	gap := fs.Duration("gap", 500*time.Millisecond, "pause between runs")
	backendPID := fs.Int("backend-pid", 0, "the backend's process, for its CPU share")
	out := fs.String("out", "", "results file to append to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, pidOf, rec, closeOut, err := runSetup(targets, pids, *out)
	if err != nil {
		return err
	}
	defer closeOut()
	r := Rounds{
		Test: *test, Unit: "MB/s", Rounds: *rounds, Gap: *gap, Rec: rec, Log: stderr,
		Check: func(ctx context.Context, c Contender) error {
			if pid, ok := pidOf[c.Name]; ok && !Alive(pid) {
				return fmt.Errorf("process %d is not running", pid)
			}
			// A short read shows that the contender connects through.
			conn, err := (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "tcp", c.Addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			_, err = io.ReadFull(conn, make([]byte, 4096))
			return err
		},
		Measure: func(ctx context.Context, c Contender) (float64, string, error) {
			var n int64
			var d time.Duration
			shares, s, err := sampled(*backendPID, pidOf[c.Name], func() (time.Duration, error) {
				// The download runs in this process: its CPU is the load's.
				c0, _ := ReadCPU(os.Getpid())
				var err error
				n, d, err = Download(ctx, c.Addr, *size, *timeout)
				c1, _ := ReadCPU(os.Getpid())
				return c1 - c0, err
			})
			if err != nil {
				return 0, "", err
			}
			mb := float64(n) / 1e6
			kv := []string{"bytes", strconv.FormatInt(n, 10)}
			// proxy_us is then the proxy's CPU time per megabyte.
			return mb / d.Seconds(), Details(cpuDetails(kv, shares, s.Wall, int64(mb))...), nil
		},
	}
	return r.Run(ctx, cs)
}

func cmdHandshake(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("handshake", stderr)
	var targets, pids listFlag
	fs.Var(&targets, "target", "name=host:port of a TLS contender (repeat)")
	fs.Var(&pids, "pid", "name=pid of a contender's proxy process, for its CPU share (repeat)")
	test := fs.String("test", "tls-ecdsa", "test name in the results")
	rounds := fs.Int("rounds", 3, "rounds over all contenders")
	dur := fs.Duration("duration", 3*time.Second, "length of a run")
	conns := fs.Int("conns", 16, "connections in progress at a time")
	curves := fs.String("curves", "classic", "key exchanges offered: classic (X25519 and P-256, what HAProxy with OpenSSL 3.0 and wrk use) or go (Go's default, post-quantum hybrids first)")
	want := fs.String("want", "", "text every answer must contain")
	gap := fs.Duration("gap", 500*time.Millisecond, "pause between runs")
	backendPID := fs.Int("backend-pid", 0, "the backend's process, for its CPU share")
	out := fs.String("out", "", "results file to append to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cs, pidOf, rec, closeOut, err := runSetup(targets, pids, *out)
	if err != nil {
		return err
	}
	defer closeOut()
	h := Handshakes{Conns: *conns, Duration: *dur, Want: *want}
	switch *curves {
	case "classic":
		h.Curves = []tls.CurveID{tls.X25519, tls.CurveP256}
	case "go":
	default:
		return fmt.Errorf("-curves %q: want classic or go", *curves)
	}
	r := Rounds{
		Test: *test, Unit: "req/s", Rounds: *rounds, Gap: *gap, Rec: rec, Log: stderr,
		Check: func(ctx context.Context, c Contender) error {
			if pid, ok := pidOf[c.Name]; ok && !Alive(pid) {
				return fmt.Errorf("process %d is not running", pid)
			}
			return h.One(ctx, c.Addr)
		},
		Measure: func(ctx context.Context, c Contender) (float64, string, error) {
			var res HandshakeResult
			shares, s, err := sampled(*backendPID, pidOf[c.Name], func() (time.Duration, error) {
				// The handshakes run in this process: its CPU is the load's.
				c0, _ := ReadCPU(os.Getpid())
				var err error
				res, err = h.Run(ctx, c.Addr)
				c1, _ := ReadCPU(os.Getpid())
				return c1 - c0, err
			})
			if err != nil {
				return 0, "", err
			}
			kv := []string{"requests", strconv.FormatInt(res.Done, 10), "errors", strconv.FormatInt(res.Errors, 10)}
			return res.PerSec(), Details(cpuDetails(kv, shares, s.Wall, res.Done)...), nil
		},
	}
	return r.Run(ctx, cs)
}
