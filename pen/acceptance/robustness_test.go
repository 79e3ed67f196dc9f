package acceptance

// Behaviour beyond testsuite.sh that issue 2 asks for: bad configuration
// lines, a full connection table, a backend dying mid-stream, signals,
// X-Forwarded-For on keep-alive connections, and UDP replies reaching the
// right client (Pen bug #52 fixed).

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// badLine is a configuration line that no Pen command accepts: an IPv4 ACL
// entry whose address does not parse. It needs no name resolution.
const badLine = "acl 1 permit 10.0.0.300"

// namesFileAndLine reports whether out names the file and line number n.
func namesFileAndLine(out, file string, n int) bool {
	if !strings.Contains(out, file) && !strings.Contains(out, filepath.Base(file)) {
		return false
	}
	return regexp.MustCompile(fmt.Sprintf(`(:%d\b|(?i)line %d\b)`, n, n)).MatchString(out)
}

// TestBadConfigLineAtStartup: pen refuses to start, exits non-zero, and the
// error names the file and the line.
func TestBadConfigLineAtStartup(t *testing.T) {
	begin(t, 30*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "bad.cfg")
	writeFile(t, cfg, "# a good comment\nblacklist 10\n"+badLine+"\nserver 0 address 127.0.0.1 port "+strconv.Itoa(b.port)+"\n")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{NoWait: true, Dir: dir}, "-F", cfg, lst(port))
	if !p.waitExit(10 * time.Second) {
		t.Fatalf("pen kept running with a bad line in %s (listening: %v)", cfg, listeningTCP(port))
	}
	if code := p.exitCode(); code == 0 {
		t.Errorf("pen exited with status 0 on a bad config line, want non-zero")
	}
	out := p.output()
	t.Logf("pen's output: %q", out)
	if !namesFileAndLine(out, cfg, 3) {
		t.Errorf("pen's error does not name the file %s and line 3: %q", cfg, out)
	}
}

// TestBadConfigLineAtHUP: a bad line at HUP leaves the running
// configuration untouched and pen keeps serving; a good file is applied
// at the next HUP.
func TestBadConfigLineAtHUP(t *testing.T) {
	begin(t, 60*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	b101 := startHTTPBackend(t, "101", "127.0.0.1")
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "pen.cfg")
	writeFile(t, cfg, "blacklist 17\nserver 0 address 127.0.0.1 port "+strconv.Itoa(b100.port)+"\n")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port, Dir: dir}, "-F", cfg, lst(port))
	addr := lst(port)
	expectGet(t, "before HUP", ip1, addr, "100")
	p.expectCtl("blacklist", "17\n")
	serversBefore := p.ctl("servers")

	writeFile(t, cfg, "blacklist 99\nserver 0 address 127.0.0.1 port "+strconv.Itoa(b101.port)+"\n"+badLine+"\n")
	logBefore := len(p.output())
	p.signal(syscall.SIGHUP)
	if !waitFor(6*time.Second, func() bool { return namesFileAndLine(p.output()[logBefore:], cfg, 3) }) {
		t.Errorf("after HUP with a bad line 3, pen's log does not name %s and line 3: %q", cfg, p.output()[logBefore:])
	}
	time.Sleep(300 * time.Millisecond)
	p.mustBeAlive()
	p.expectCtl("blacklist", "17\n")
	p.expectCtl("servers", serversBefore)
	expectGet(t, "after HUP with a bad line", ip1, addr, "100")

	writeFile(t, cfg, "blacklist 99\nserver 0 address 127.0.0.1 port "+strconv.Itoa(b101.port)+"\n")
	p.signal(syscall.SIGHUP)
	if !waitFor(6*time.Second, func() bool { return p.ctl("blacklist") == "99\n" }) {
		t.Fatalf("after HUP with a good file, blacklist = %q, want %q", p.ctl("blacklist"), "99\n")
	}
	expectGet(t, "after HUP with a good file", ip1, addr, "101")
}

// TestFullConnectionTable: with -x 2 a third client is refused with a
// logged reason, and pen serves again once a slot is free.
func TestFullConnectionTable(t *testing.T) {
	begin(t, 60*time.Second)
	echo := startEchoBackend(t)
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{TCP: port}, "-x", "2", lst(port), echo.spec())
	addr := lst(port)

	var held [2]net.Conn
	for i := range held {
		c, err := dialFrom(ip1, addr)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		defer c.Close()
		if got, err := echoOnce(c, fmt.Sprintf("hello %d\n", i)); err != nil {
			t.Fatalf("client %d: echo through pen: %q, %v", i, got, err)
		}
		held[i] = c
	}

	logBefore := len(p.output())
	third, err := dialFrom(ip1, addr)
	if err == nil {
		_ = third.SetDeadline(time.Now().Add(4 * time.Second))
		io.WriteString(third, "third\n")
		n, rerr := third.Read(make([]byte, 64))
		switch {
		case rerr == nil:
			t.Errorf("third client with 2 slots in use was served (%d bytes)", n)
		case isTimeout(rerr):
			t.Errorf("third client with 2 slots in use was left hanging; want its connection closed")
		default:
			t.Logf("third client refused: %v", rerr)
		}
		third.Close()
	} else {
		t.Logf("third client refused at connect: %v", err)
	}
	if !waitFor(3*time.Second, func() bool {
		return regexp.MustCompile(`(?i)full`).MatchString(p.output()[logBefore:])
	}) {
		t.Errorf("pen logged no reason for refusing the third client (want a message about the full connection table); log: %q", p.output()[logBefore:])
	}
	p.mustBeAlive()

	if got, err := echoOnce(held[1], "still there\n"); err != nil {
		t.Errorf("held client 1 after the refusal: %q, %v", got, err)
	}
	held[0].Close()
	var lastErr error
	if !waitFor(5*time.Second, func() bool {
		c, err := dialFrom(ip1, addr)
		if err != nil {
			lastErr = err
			return false
		}
		defer c.Close()
		_, lastErr = echoOnce(c, "again\n")
		return lastErr == nil
	}) {
		t.Errorf("no client served after a slot was freed: %v", lastErr)
	}
	p.mustBeAlive()
}

// halfCloseBackend reads until the client half-closes, then answers with
// what it read, upper-cased, and closes.
func startHalfCloseBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				in, err := io.ReadAll(c)
				if err != nil {
					return
				}
				c.Write([]byte(strings.ToUpper(string(in))))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestHalfClose: an EOF from either side is passed on as a half-close
// (PEN-REFERENCE §4.6): the client's FIN reaches the backend, which can
// still answer, and the backend's close reaches the client.
func TestHalfClose(t *testing.T) {
	begin(t, 60*time.Second)
	backend := startHalfCloseBackend(t)
	port := freePort(t, "tcp")
	startPen(t, penOpts{TCP: port}, lst(port), backend)
	for i := 0; i < 10; i++ {
		c, err := dialFrom(ip1, lst(port))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := fmt.Sprintf("half-close round %d\n", i)
		io.WriteString(c, msg)
		time.Sleep(100 * time.Millisecond) // let pen connect upstream first
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		switch {
		case isTimeout(err):
			t.Fatalf("round %d: got %q and then no EOF within 5s (the client's FIN or the backend's close was not passed on)", i, got)
		case err != nil:
			t.Fatalf("round %d: %v after %q", i, err, got)
		case string(got) != strings.ToUpper(msg):
			t.Fatalf("round %d: got %q, want %q", i, got, strings.ToUpper(msg))
		}
	}

	// The backend closes first: the client must see EOF without closing.
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port2 := freePort(t, "tcp")
	startPen(t, penOpts{TCP: port2}, lst(port2), b.spec())
	for i := 0; i < 10; i++ {
		start := time.Now()
		raw, err := fetch(ip1, lst(port2))
		if err != nil {
			t.Fatalf("round %d: GET with HTTP/1.0 (the backend closes after the reply): %v after %d bytes in %v; want the reply and EOF", i, err, len(raw), time.Since(start).Round(time.Millisecond))
		}
		if !strings.HasSuffix(string(raw), "\r\n\r\n100") {
			t.Fatalf("round %d: reply %q", i, raw)
		}
	}
}

// streamResult is what a client received over one streaming connection.
type streamResult struct {
	backend string
	seed    uint64
	n       int64
	sum     [32]byte
	err     error
}

// streamClient connects through pen and reads a stream; progress counts
// payload bytes as they arrive.
func streamClient(addr string, progress *int64, mu *sync.Mutex, headerOnly bool) streamResult {
	var r streamResult
	c, err := dialFrom(ip1, addr)
	if err != nil {
		r.err = err
		return r
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	hdr, err := br.ReadString('\n')
	if err != nil {
		r.err = fmt.Errorf("reading the stream header: %v (got %q)", err, hdr)
		return r
	}
	if _, err := fmt.Sscanf(hdr, "%s %d\n", &r.backend, &r.seed); err != nil {
		r.err = fmt.Errorf("bad stream header %q", hdr)
		return r
	}
	if headerOnly {
		return r
	}
	// Read the announced payload; stop there rather than wait for EOF.
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for r.n < streamTotal {
		n, err := br.Read(buf[:min(int64(len(buf)), streamTotal-r.n)])
		h.Write(buf[:n])
		r.n += int64(n)
		mu.Lock()
		*progress = r.n
		mu.Unlock()
		if err == io.EOF {
			break
		}
		if err != nil {
			r.err = err
			break
		}
	}
	copy(r.sum[:], h.Sum(nil))
	return r
}

// TestBackendDiesMidStream: one of two backends dies while several
// streams run; its streams end, the others complete intact, and new
// connections go to the survivor because the dead one is blacklisted.
func TestBackendDiesMidStream(t *testing.T) {
	begin(t, 90*time.Second)
	a := startStreamBackend(t, "A")
	b := startStreamBackend(t, "B")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{TCP: port}, "-r", lst(port), a.spec(), b.spec())
	addr := lst(port)

	const streams = 6
	var mu sync.Mutex
	progress := make([]int64, streams)
	results := make([]streamResult, streams)
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = streamClient(addr, &progress[i], &mu, false)
		}()
		// one at a time, so that round-robin alternates predictably
		waitFor(3*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return progress[i] > 0 })
	}
	if !waitFor(10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range progress {
			if n < 256<<10 {
				return false
			}
		}
		return true
	}) {
		mu.Lock()
		t.Fatalf("streams did not get going: bytes so far %v", progress)
	}
	mu.Lock()
	for i, n := range progress {
		if n >= streamTotal {
			t.Fatalf("stream %d finished (%d bytes) before the backend was killed; the test needs slower streams", i, n)
		}
	}
	mu.Unlock()
	b.kill()
	killed := time.Now()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("streams still running 30s after the backend died")
	}
	var onA, onB int
	for i, r := range results {
		switch r.backend {
		case "A":
			onA++
			want := streamSum(r.seed)
			if r.err != nil || r.n != streamTotal || r.sum != want {
				t.Errorf("stream %d on the surviving backend: %d of %d bytes, checksum ok %v, error %v", i, r.n, streamTotal, r.sum == want, r.err)
			}
		case "B":
			onB++
			if r.n >= streamTotal {
				t.Errorf("stream %d on the dead backend received all %d bytes; it should have been cut", i, r.n)
			}
		default:
			t.Errorf("stream %d: %v", i, r.err)
		}
	}
	if onA == 0 || onB == 0 {
		t.Fatalf("streams per backend: A %d, B %d; want both used (-r)", onA, onB)
	}
	t.Logf("%d streams on A completed intact, %d on B were cut; all ended %v after the kill", onA, onB, time.Since(killed).Round(time.Millisecond))

	// New connections: the first attempt at B fails and blacklists it.
	for i := 0; i < 2; i++ {
		if r := streamClient(addr, new(int64), &mu, true); r.err != nil || r.backend != "A" {
			t.Errorf("new connection %d after B died: backend %q, error %v; want A", i, r.backend, r.err)
		}
	}
	// B comes back, but stays blacklisted for the -b time (30 s by default).
	b.revive()
	for i := 0; i < 4; i++ {
		if r := streamClient(addr, new(int64), &mu, true); r.err != nil || r.backend != "A" {
			t.Errorf("connection %d after B was blacklisted and came back: backend %q, error %v; want A (B still blacklisted)", i, r.backend, r.err)
		}
	}
	p.mustBeAlive()
}

// TestSignalTERM: TERM closes connections, exits with status 0 and removes
// the pidfile.
func TestSignalTERM(t *testing.T) {
	begin(t, 30*time.Second)
	echo := startEchoBackend(t)
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{Control: true, TCP: port}, lst(port), echo.spec())
	if !waitFor(5*time.Second, func() bool { return fileExists(p.Pidfile) }) {
		t.Fatalf("pidfile %s was not written", p.Pidfile)
	}
	if got, want := readFileString(p.Pidfile), strconv.Itoa(p.pid()); got != want {
		t.Errorf("pidfile content = %q, want %q (the pid, no newline)", got, want)
	}
	c, err := dialFrom(ip1, lst(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := echoOnce(c, "ping\n"); err != nil {
		t.Fatalf("echo through pen: %q, %v", got, err)
	}
	p.signal(syscall.SIGTERM)
	if !p.waitExit(5 * time.Second) {
		t.Fatalf("pen still running 5s after TERM")
	}
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit status after TERM = %d, want 0", code)
	}
	if fileExists(p.Pidfile) {
		t.Errorf("pidfile %s still exists after TERM", p.Pidfile)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(make([]byte, 16)); err == nil || isTimeout(err) {
		t.Errorf("client connection still open after pen exited (read %d, %v)", n, err)
	}
	if listeningTCP(port) {
		t.Errorf("port %d still listening after TERM", port)
	}
}

// TestSignalUSR1WebStats: USR1 with -w writes Pen's HTML status page.
func TestSignalUSR1WebStats(t *testing.T) {
	begin(t, 30*time.Second)
	b100 := startHTTPBackend(t, "100", "127.0.0.1")
	b101 := startHTTPBackend(t, "101", "127.0.0.1")
	dir := sharedDir(t)
	web := filepath.Join(dir, "status.html")
	port := freePort(t, "tcp")
	p := startPen(t, penOpts{TCP: port, Dir: dir}, "-w", web, lst(port), b100.spec(), b101.spec())
	expectGet(t, "one request before the stats", ip1, lst(port), "101")
	if fileExists(web) {
		t.Logf("%s exists before USR1", web)
	}
	for round := 1; round <= 2; round++ {
		os.Remove(web)
		p.signal(syscall.SIGUSR1)
		var page string
		if !waitFor(5*time.Second, func() bool {
			page = readFileString(web)
			return strings.HasSuffix(page, "</html>\n")
		}) {
			t.Fatalf("round %d: no complete status page in %s 5s after USR1 (content %q)", round, web, page)
		}
		const head = "<html>\n<head>\n<title>Pen status page</title>\n</head>\n<body bgcolor=\"#ffffff\"><h1>Pen status page</h1>\n"
		if !strings.HasPrefix(page, head) {
			t.Errorf("status page does not start with Pen's header:\n got %q\nwant prefix %q", page[:min(len(page), len(head)+40)], head)
			continue
		}
		timeLine := strings.SplitN(page[len(head):], "\n", 2)[0]
		if !regexp.MustCompile(`^Time \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}, 2 servers, -?\d+ current<p>$`).MatchString(timeLine) {
			t.Errorf("status line = %q, want \"Time YYYY-MM-DD HH:MM:SS, 2 servers, N current<p>\"", timeLine)
		}
		for _, want := range []string{
			"<table bgcolor=\"#c0c0c0\">\n<tr>\n<td bgcolor=\"#80f080\">server</td>\n",
			"<h2>Active clients</h2>Max number of clients: 2048<p>",
			"<h2>Active connections</h2>Number of connections: 500 max, ",
			"<td>127.0.0.1</td>\n",
			fmt.Sprintf("<td>%d</td>\n", b101.port),
		} {
			if !strings.Contains(page, want) {
				t.Errorf("status page lacks %q", want)
			}
		}
		if !strings.HasSuffix(page, "</table>\n</body>\n</html>\n") {
			t.Errorf("status page does not end with Pen's footer: %q", page[max(0, len(page)-60):])
		}
	}
	p.mustBeAlive()
}

// TestXForwardedForKeepAlive: with -H every request on a keep-alive
// connection carries X-Forwarded-For and X-Forwarded-Proto, whatever its
// method, an existing X-Forwarded-For is appended to, and bodies pass
// through untouched.
func TestXForwardedForKeepAlive(t *testing.T) {
	begin(t, 60*time.Second)
	b := startHTTPBackend(t, "100", "127.0.0.1")
	port := freePort(t, "tcp")
	startPen(t, penOpts{TCP: port}, "-H", lst(port), b.spec())
	addr := lst(port)

	postBody := "name=value&x=1\nX-Forwarded-For: 6.6.6.6\n\n"
	putBody := "put body"
	type step struct {
		method, uri, wantXFF, body string
		parts                      []string // the request as written, chunk by chunk
	}
	steps := []step{
		{method: "GET", uri: "/one", wantXFF: "127.0.0.1",
			parts: []string{"GET /one HTTP/1.1\r\nHost: acceptance\r\n\r\n"}},
		{method: "POST", uri: "/two", wantXFF: "127.0.0.1", body: postBody,
			parts: []string{"POST /two HTTP/1.1\r\nHost: acceptance\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(postBody)) + "\r\n\r\n" + postBody}},
		{method: "GET", uri: "/three", wantXFF: "10.9.8.7, 127.0.0.1",
			parts: []string{"GET /three HTTP/1.1\r\nHost: acceptance\r\nX-Forwarded-For: 10.9.8.7\r\n\r\n"}},
		{method: "PUT", uri: "/four", wantXFF: "127.0.0.1", body: putBody,
			parts: []string{"PUT /four HTTP/1.1\r\nHost: acceptance\r\nContent-Length: " + strconv.Itoa(len(putBody)) + "\r\n\r\n" + putBody}},
		{method: "GET", uri: "/five", wantXFF: "127.0.0.1",
			parts: []string{"GET /five HTTP/1.1\r\nHo", "st: acceptance\r\n\r\n"}},
	}
	c, err := dialFrom(ip1, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for i, s := range steps {
		for j, part := range s.parts {
			if j > 0 {
				time.Sleep(150 * time.Millisecond)
			}
			if _, err := io.WriteString(c, part); err != nil {
				t.Fatalf("request %d (%s %s): %v", i, s.method, s.uri, err)
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d (%s %s) on the keep-alive connection: %v", i, s.method, s.uri, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "100" {
			t.Fatalf("response %d body %q, want %q", i, body, "100")
		}
	}
	seen := b.requests()
	if len(seen) != len(steps) {
		t.Fatalf("backend saw %d requests, want %d", len(seen), len(steps))
	}
	for i, s := range steps {
		r := seen[i]
		if r.Method != s.method || r.URI != s.uri {
			t.Errorf("request %d: backend saw %s %s, want %s %s", i, r.Method, r.URI, s.method, s.uri)
		}
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != s.wantXFF {
			t.Errorf("request %d (%s %s): X-Forwarded-For %q, want [%q]", i, s.method, s.uri, xff, s.wantXFF)
		}
		if proto := r.Header.Values("X-Forwarded-Proto"); len(proto) != 1 || proto[0] != "http" {
			t.Errorf("request %d (%s %s): X-Forwarded-Proto %q, want [\"http\"]", i, s.method, s.uri, proto)
		}
		if r.Body != s.body {
			t.Errorf("request %d (%s %s): body %q, want %q", i, s.method, s.uri, r.Body, s.body)
		}
		if r.RemoteAddr != seen[0].RemoteAddr {
			t.Errorf("request %d came over upstream connection %s, request 0 over %s; want one keep-alive connection", i, r.RemoteAddr, seen[0].RemoteAddr)
		}
	}

	// A client from the second address is named as such.
	c2, err := dialFrom(ip2, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c2, "GET /six HTTP/1.1\r\nHost: acceptance\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c2), nil); err != nil {
		t.Fatalf("request from %s: %v", ip2, err)
	}
	seen = b.requests()
	if last := seen[len(seen)-1]; last.Header.Get("X-Forwarded-For") != ip2 {
		t.Errorf("request from %s: X-Forwarded-For %q, want %q", ip2, last.Header.Values("X-Forwarded-For"), ip2)
	}
}

// TestUDPRepliesReachTheirClient: many UDP clients on both client
// addresses talk through pen at once, some over one long-lived socket each,
// some from a fresh socket (so a new port and a new flow) for every query,
// as a DNS resolver does. Every reply must come back to the socket that
// asked (Pen bug #52), and a long-lived flow sticks to one backend.
func TestUDPRepliesReachTheirClient(t *testing.T) {
	begin(t, 60*time.Second)
	a := startUDPEchoBackend(t, "A")
	b := startUDPEchoBackend(t, "B")
	port := freePort(t, "udp")
	startPen(t, penOpts{UDP: port}, "-U", "-r", lst(port), a.spec(), b.spec())
	pen := &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: port}

	const clients, rounds = 32, 30
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	backends := map[string]int{}
	start := make(chan struct{})
	for k := 0; k < clients; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := ip1
			if k%2 == 1 {
				from = ip2
			}
			fresh := k%4 >= 2 // a new socket for every query
			report := func(format string, args ...any) {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("client %d (%s): ", k, from)+fmt.Sprintf(format, args...))
				mu.Unlock()
			}
			var c *net.UDPConn
			dial := func() bool {
				var err error
				c, err = net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, pen)
				if err != nil {
					report("%v", err)
					return false
				}
				return true
			}
			if !dial() {
				return
			}
			defer func() { c.Close() }()
			<-start
			buf := make([]byte, 2048)
			var flowBackend string
			for j := 0; j < rounds; j++ {
				if fresh && j > 0 {
					c.Close()
					if !dial() {
						return
					}
				}
				msg := fmt.Sprintf("client %d round %d from %s", k, j, c.LocalAddr())
				if _, err := c.Write([]byte(msg)); err != nil {
					report("send: %v", err)
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, err := c.Read(buf)
				if err != nil {
					report("round %d: no reply: %v", j, err)
					return
				}
				name, payload, _ := strings.Cut(string(buf[:n]), ":")
				if payload != msg {
					report("round %d: got a reply meant for someone else: %q", j, buf[:n])
					return
				}
				mu.Lock()
				backends[name]++
				mu.Unlock()
				if fresh {
					continue
				}
				if flowBackend == "" {
					flowBackend = name
				} else if name != flowBackend {
					report("round %d: flow moved from backend %s to %s", j, flowBackend, name)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("replies per backend: %v", backends)
	if len(problems) == 0 && (backends["A"] == 0 || backends["B"] == 0) {
		t.Errorf("replies per backend %v: with -r both backends should be used", backends)
	}
}
