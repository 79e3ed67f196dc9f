package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
	"github.com/pen-lb/pen-appliance/pen/internal/balance"
)

// The descriptor tests run pen in a child process (this test binary, run
// again) that lowers its own open files limit; the limit of the test
// process itself is never touched.
const (
	childEnv   = "PEN_PROXY_TEST_FDS_CHILD" // the server's address
	childLimit = 96                         // the child's open files limit
	// childSplice, set to 1, has the child splice its connections.
	childSplice = "PEN_PROXY_TEST_FDS_SPLICE"
)

// pipeChildEnv makes the test binary print the capacity of a pipe from a
// loop's pool and exit (TestPipeSize runs it as an unprivileged user).
const pipeChildEnv = "PEN_PROXY_TEST_PIPE_CHILD"

func TestMain(m *testing.M) {
	if backend := os.Getenv(childEnv); backend != "" {
		os.Exit(fdChild(backend))
	}
	if os.Getenv(pipeChildEnv) != "" {
		fmt.Println(pooledPipeSize())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pooledPipeSize is the capacity of a pipe from a new loop's pool, or an
// error text.
func pooledPipeSize() string {
	l, err := New(balance.New(), diag.Discard())
	if err != nil {
		return err.Error()
	}
	defer l.Stop()
	p, err := l.getPipe()
	if err != nil {
		return err.Error()
	}
	defer p.close()
	n, err := unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return err.Error()
	}
	return strconv.Itoa(n)
}

// fdChild runs a loop under a small open files limit in front of backend
// and obeys commands on standard input: "hog" takes every descriptor
// left, "free" gives them back. It prints "listen ADDR clients N" first
// and answers every command with one line.
func fdChild(backend string) int {
	rl := unix.Rlimit{Cur: childLimit, Max: childLimit}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		fmt.Println("setrlimit:", err)
		return 1
	}
	log := diag.New(os.Stderr)
	in := config.New(config.Default(), config.Process{}, log)
	if _, err := in.Exec("server 0 address "+strings.Replace(backend, ":", " port ", 1), config.FromFlag); err != nil {
		fmt.Println(err)
		return 1
	}
	tb := balance.New()
	tb.Configure(in.Config())
	loop, err := New(tb, log)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	spec := config.Listen{Addr: netip.MustParseAddrPort("127.0.0.1:0")}
	s := Settings{ConnMax: 256, PendingMax: 64, MultiAccept: 64, Timeout: 3 * time.Second, UDPTimeout: time.Minute,
		Splice: os.Getenv(childSplice) == "1"}
	if err := loop.Configure(s, &spec, 128); err != nil {
		fmt.Println(err)
		return 1
	}
	go loop.Run()
	defer loop.Stop()
	var maxClients int
	loop.do(func() { maxClients = loop.fds.maxClients })
	fmt.Printf("listen %s clients %d\n", loop.ListenAddr(), maxClients)
	var hogged []int
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch cmd := sc.Text(); cmd {
		case "hog", "hog all but one":
			for {
				fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					break
				}
				hogged = append(hogged, fd)
			}
			if cmd == "hog all but one" {
				unix.Close(hogged[len(hogged)-1])
				hogged = hogged[:len(hogged)-1]
			}
			fmt.Printf("hogged %d\n", len(hogged))
		case "failures":
			fmt.Println(tb.ServerStates()[0].Failures)
		case "active":
			fmt.Println(loop.Stats().Active)
		case "spliced":
			fmt.Println(loop.Stats().Spliced)
		case "settling":
			var n int
			loop.do(func() { n = len(loop.settling) })
			fmt.Println(n)
		case "free":
			for _, fd := range hogged {
				unix.Close(fd)
			}
			hogged = nil
			fmt.Println("freed")
		}
	}
	return 0
}

// cpuTime is the CPU time a process has used so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fdChildProc is a running child (fdChild): its standard input, a
// function that reads its next line of output, its process id and its
// log.
type fdChildProc struct {
	stdin io.Writer
	line  func() string
	pid   int
	log   *lockedBuf
}

// startFDChild starts the child in front of an echo server, splicing
// its connections when splice is set.
func startFDChild(t *testing.T, splice bool) fdChildProc {
	t.Helper()
	backend := tcpServer(t, "tcp", "127.0.0.1:0", echo).Addr().String()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+backend)
	if splice {
		cmd.Env = append(cmd.Env, childSplice+"=1")
	}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr := new(lockedBuf)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("pen's log:\n%s", stderr.String())
		}
	})
	out := bufio.NewReader(stdout)
	line := func() string {
		t.Helper()
		got := make(chan string, 1)
		go func() { s, _ := out.ReadString('\n'); got <- strings.TrimSpace(s) }()
		select {
		case s := <-got:
			return s
		case <-time.After(20 * time.Second):
			t.Fatal("the child does not answer")
			return ""
		}
	}
	return fdChildProc{stdin, line, cmd.Process.Pid, stderr}
}

// TestDescriptorsRunOut: pen accepts only as many clients as its open
// files limit leaves room for, each of them served, and refuses the rest
// at once; when the process runs out of descriptors all the same, pen
// does not spin on accept (it used to take a whole core) and serves again
// once descriptors are free; a client that gets no server socket for want
// of descriptors does not get the server blacklisted.
func TestDescriptorsRunOut(t *testing.T) {
	ch := startFDChild(t, false)
	stdin, line, pid, stderr := ch.stdin, ch.line, ch.pid, ch.log
	var addr string
	var maxClients int
	if _, err := fmt.Sscanf(line(), "listen %s clients %d", &addr, &maxClients); err != nil {
		t.Fatalf("child: %v", err)
	}
	if want := (childLimit - fdReserve) / 2; maxClients != want {
		t.Fatalf("room for %d clients under a limit of %d, want %d", maxClients, childLimit, want)
	}

	// Every client admitted is served; the next one is refused at once.
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := 0; i <= maxClients; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "x")
		_, err = io.ReadFull(c, make([]byte, 1))
		if i < maxClients && err != nil {
			t.Fatalf("client %d of %d not served: %v", i+1, maxClients, err)
		}
		if i == maxClients && err == nil {
			t.Fatalf("client %d served beyond the room the limit leaves", i+1)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	clients = nil

	// Until pen has closed the connections of the clients that left, it
	// holds their descriptors; the steps below count descriptors.
	idle := func() {
		t.Helper()
		for i := 0; ; i++ {
			io.WriteString(stdin, "active\n")
			if s := line(); s == "0" {
				return
			} else if i == 100 {
				t.Fatalf("%s connections still open", s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The process runs out of descriptors while clients wait.
	idle()
	io.WriteString(stdin, "hog\n")
	if s := line(); !strings.HasPrefix(s, "hogged ") {
		t.Fatalf("child: %q", s)
	}
	for i := 0; i < 20; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	before := cpuTime(t, pid)
	time.Sleep(2 * time.Second)
	used := cpuTime(t, pid) - before
	if used > 300*time.Millisecond {
		t.Errorf("pen used %v of CPU in 2s while out of descriptors", used)
	}
	t.Logf("out of descriptors with %d clients waiting: %v of CPU in 2s", len(clients), used)
	if n := strings.Count(stderr.String(), "out of descriptors"); n < 1 || n > 2 {
		t.Errorf("%d log lines about the shortage in 2s, want 1 or 2", n)
	}
	// The first waiting client was told at once: refused, not left waiting.
	clients[0].SetReadDeadline(time.Now().Add(time.Second))
	if _, err := clients[0].Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Errorf("the first waiting client: %v, want it closed", err)
	}

	// Descriptors free up: pen serves again (once it has dealt with the
	// clients that gave up waiting).
	for _, c := range clients {
		c.Close()
	}
	clients = nil
	io.WriteString(stdin, "free\n")
	if s := line(); s != "freed" {
		t.Fatalf("child: %q", s)
	}
	served := false
	for try := 0; try < 20 && !served; try++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "again")
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		c.Close()
		served = err == nil && string(buf) == "again"
		if !served {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !served {
		t.Errorf("not served after descriptors freed")
	}
	if !strings.Contains(stderr.String(), "accepting clients again") {
		t.Errorf("the end of the shortage is not in the log")
	}

	// One descriptor left: the client is accepted, its server socket
	// cannot be had. The client is refused; the server is not to blame.
	idle()
	io.WriteString(stdin, "hog all but one\n")
	if s := line(); !strings.HasPrefix(s, "hogged ") {
		t.Fatalf("child: %q", s)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "x")
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("a client without a server socket read %d bytes", n)
	}
	c.Close()
	io.WriteString(stdin, "failures\n")
	if s := line(); s != "0" {
		t.Errorf("the server was blamed %s times for pen's want of descriptors", s)
	}
	io.WriteString(stdin, "free\n")
	if s := line(); s != "freed" {
		t.Fatalf("child: %q", s)
	}
}

// Spliced connections the peers closed keep pen's two descriptors while
// they settle (3 s). When a client then finds the process out of
// descriptors, those go first, and the client is served, not refused.
func TestSettlingGivesWayToClients(t *testing.T) {
	needSplicing(t)
	ch := startFDChild(t, true)
	var addr string
	var maxClients int
	if _, err := fmt.Sscanf(ch.line(), "listen %s clients %d", &addr, &maxClients); err != nil {
		t.Fatalf("child: %v", err)
	}
	ask := func(cmd string) string {
		t.Helper()
		io.WriteString(ch.stdin, cmd+"\n")
		return ch.line()
	}
	const n = 8
	var clients []net.Conn
	for i := range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		lines(t, c, bufio.NewReader(c), fmt.Sprintf("client %d", i), 3)
		clients = append(clients, c)
	}
	// Each is spliced at a quiet moment; one that is not (on a busy
	// machine a splice can find data on its way, and the clients are
	// quiet after their three lines) stays in pen, which changes nothing
	// below but the count.
	spliced := 0
	for i := 0; i < 60 && spliced < n; i++ {
		time.Sleep(50 * time.Millisecond)
		spliced, _ = strconv.Atoi(ask("spliced"))
	}
	if spliced == 0 {
		t.Fatal("no client was spliced")
	}
	t.Logf("%d of %d clients spliced", spliced, n)
	closed := time.Now()
	for _, c := range clients {
		c.Close()
	}
	for i := 0; ask("active") != "0" || ask("settling") != strconv.Itoa(spliced); i++ {
		if i == 100 {
			t.Fatal("the spliced connections did not end")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := ask("hog"); !strings.HasPrefix(got, "hogged ") {
		t.Fatalf("hog: %q", got)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	lines(t, c, bufio.NewReader(c), "after", 2)
	if took := time.Since(closed); took >= 3*time.Second {
		t.Fatalf("served %v after the close: the pairs may have settled on their own; the test proves nothing", took)
	}
	if got := ask("settling"); got != "0" {
		t.Errorf("%s pairs still settling after the shortage", got)
	}
	if !strings.Contains(ch.log.String(), fmt.Sprintf("%d spliced connections released before they settled", spliced)) {
		t.Errorf("no log line about the released connections:\n%s", ch.log.String())
	}
	ask("free")
}
