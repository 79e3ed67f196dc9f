package webui

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// backend answers each connection with "backend N\n" and then echoes what
// it reads.
func backend(t *testing.T, n int) (port string, hits *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	hits = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "backend %d\n", n)
				io.Copy(c, c)
			}()
		}
	}()
	_, port, _ = net.SplitHostPort(ln.Addr().String())
	return port, hits
}

// through sends payload through pen, which listens on the unix socket
// path, and returns the banner of the backend that answered.
func through(path string, payload []byte) (string, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return "", err
	}
	c.(*net.UnixConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	banner, rest, _ := bytes.Cut(got, []byte("\n"))
	if !bytes.Equal(rest, payload) {
		return string(banner), fmt.Errorf("echo: %d bytes back, sent %d", len(rest), len(payload))
	}
	return string(banner), nil
}

// buildBinary builds a command of this module into dir.
func buildBinary(t *testing.T, goTool, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command(goTool, "build", "-o", out, "github.com/pen-lb/pen-appliance/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// sharedDir is a temporary directory that pen may write to after it has
// dropped its privileges to nobody.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pen-webui-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshotDir(t *testing.T) string {
	if d := os.Getenv("PEN_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

// TestBrowser drives the admin UI of a real pen binary with headless
// Chromium: log in, add a server, add an ACL entry, blacklist a server;
// then it checks with penctl and in the file autowrite keeps that all
// three took effect, and saves a screenshot of the dashboard. Any
// JavaScript error, exception or browser error message (a resource that
// fails to load, a Content-Security-Policy violation) fails the test.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test left out with -short")
	}
	chromium := testenv.NeedProgram(t, "chromium", "chromium")
	goTool := testenv.NeedProgram(t, "go", "golang-go")
	dir := sharedDir(t)
	pen := buildBinary(t, goTool, dir, "pen/cmd/pen")
	penctl := buildBinary(t, goTool, dir, "pen/cmd/penctl")

	b0, hits0 := backend(t, 0)
	b1, hits1 := backend(t, 1)
	// pen listens on unix sockets in the test's directory, so that no
	// port has to be chosen before pen starts; the browser reaches the
	// admin UI through a TCP relay on a port the test bound (port 0).
	listen := filepath.Join(dir, "pen.sock")
	admin := filepath.Join(dir, "admin.sock")
	cfgFile := filepath.Join(dir, "pen.cfg")
	pwFile := filepath.Join(dir, "pw.txt")
	status := filepath.Join(dir, "status.html")
	ctl := filepath.Join(dir, "ctl.sock")
	os.WriteFile(pwFile, []byte(testPassword+"\n"), 0o644) // readable after -u nobody
	cfg := strings.Join([]string{
		"listen " + listen,
		"roundrobin",
		"server 0 address 127.0.0.1 port " + b0,
		"admin_listen " + admin,
		"admin_tls " + filepath.Join(dir, "admin.crt") + " " + filepath.Join(dir, "admin.key"),
		"admin_password_file " + pwFile,
		"web_stats " + status,
		"autowrite",
	}, "\n") + "\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", "-F", cfgFile, "-C", ctl}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // pen opens no control socket as root without -u
	}
	var penOut bytes.Buffer
	var penMu sync.Mutex
	cmd := exec.Command(pen, args...)
	cmd.Stdout = lockedWriter{&penMu, &penOut}
	cmd.Stderr = lockedWriter{&penMu, &penOut}
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	penLog := func() string {
		penMu.Lock()
		defer penMu.Unlock()
		return penOut.String()
	}
	waitFor(t, "pen's admin listener", func() bool {
		c, err := net.DialTimeout("unix", admin, time.Second)
		if err == nil {
			c.Close()
			return true
		}
		select {
		case err := <-exited:
			t.Fatalf("pen exited: %v\n%s", err, penLog())
		default:
		}
		return false
	})
	ctlCmd := func(command ...string) string {
		t.Helper()
		out, err := exec.Command(penctl, append([]string{ctl}, command...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("penctl %s: %v\n%s", command, err, out)
		}
		return string(out)
	}

	// Traffic while the browser works, for the live chart.
	stop := make(chan struct{})
	var traffic sync.WaitGroup
	payload := bytes.Repeat([]byte("pen admin ui "), 4000)
	for w := 0; w < 3; w++ {
		traffic.Add(1)
		go func() {
			defer traffic.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(150 * time.Millisecond):
				}
				through(listen, payload)
			}
		}()
	}
	defer func() {
		close(stop)
		traffic.Wait()
	}()

	// The browser.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.IgnoreCertErrors,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1360, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var jsMu sync.Mutex
	var jsErrors []string
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				msg = fmt.Sprintf("console.%s: %v", e.Type, e.Args)
			}
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				msg = fmt.Sprintf("%s: %s (%s)", e.Entry.Source, e.Entry.Text, e.Entry.URL)
			}
		}
		if msg != "" {
			jsMu.Lock()
			jsErrors = append(jsErrors, msg)
			jsMu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	base := "https://" + unixRelay(t, admin)
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v\npen:\n%s", what, err, penLog())
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	applied := func(want string) {
		t.Helper()
		do("waiting for the applied command", chromedp.WaitVisible(chromedp.CSS(".flash.ok pre.cmds")))
		if got := text(".flash.ok pre.cmds"); !strings.Contains(got, want) {
			t.Fatalf("page shows applied %q, want %q", got, want)
		}
	}

	do("log in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.ID("servers")),
	)
	do("add a server",
		chromedp.Navigate(base+"/servers"),
		chromedp.SendKeys(chromedp.ID("add-address"), "127.0.0.1"),
		chromedp.SendKeys(chromedp.ID("add-port"), b1),
		chromedp.Click(chromedp.ID("add-submit")),
	)
	applied("server 1 address 127.0.0.1 port " + b1)
	do("add an ACL entry",
		chromedp.Navigate(base+"/acls"),
		chromedp.SendKeys(chromedp.CSS("#acl3 input[name=address]"), "10.0.0.0/8"),
		chromedp.Click(chromedp.ID("acl-add-3")),
	)
	applied("acl 3 permit 10.0.0.0 255.0.0.0")
	do("blacklist server 0",
		chromedp.Navigate(base+"/servers"),
		chromedp.SetValue(chromedp.CSS("#server-0 input[name=seconds]"), "300"),
		chromedp.Click(chromedp.CSS("#server-0 button[value=blacklist]")),
	)
	applied("server 0 blacklist 300")
	do("dashboard",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("chart-conns")),
	)
	// Wait until the chart has both servers' lines with a few seconds of
	// history and the table was refreshed by the script.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`document.querySelectorAll("#chart-bytes polyline").length >= 2 && `+
			`document.getElementById("updated").textContent.startsWith("Live") && `+
			`document.getElementById("live-status").textContent.includes("samples")`,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("live chart: %v", err)
	}
	time.Sleep(3 * time.Second) // a little history
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(screenshotDir(t), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshot: %s", shot)
	dash := text("#servers")
	if !regexp.MustCompile(`blacklisted 4m[0-5]\ds`).MatchString(dash) {
		t.Errorf("dashboard does not show server 0 blacklisted:\n%s", dash)
	}

	// penctl: the new server is there, and server 0 is blacklisted (Pen's
	// status column holds a time) so clients go to server 1.
	servers := ctlCmd("servers")
	if !strings.Contains(servers, "1 addr 127.0.0.1 port "+b1+" ") {
		t.Errorf("penctl servers:\n%s", servers)
	}
	page := ctlCmd("status")
	m := regexp.MustCompile(`<tr>\n<td>0</td>\n<td>127\.0\.0\.1</td>\n<td>(\d+)</td>`).FindStringSubmatch(page)
	if m == nil || m[1] == "0" {
		t.Errorf("penctl status does not show server 0 blacklisted:\n%s", page)
	}
	before0 := hits0.Load()
	for i := 0; i < 4; i++ {
		if banner, err := through(listen, []byte("after")); err != nil || banner != "backend 1" {
			t.Errorf("client %d: answered by %q, %v; want backend 1", i, banner, err)
		}
	}
	if hits0.Load() != before0 || hits1.Load() == 0 {
		t.Errorf("backend 0 got %d new connections while blacklisted", hits0.Load()-before0)
	}
	// penctl write gives the same configuration autowrite keeps.
	check := filepath.Join(dir, "check.cfg")
	ctlCmd("write", check)
	for _, file := range []string{cfgFile, check} {
		var data []byte
		waitFor(t, file, func() bool {
			data, _ = os.ReadFile(file)
			return bytes.Contains(data, []byte("acl 3 permit 10.0.0.0 255.0.0.0\n"))
		})
		for _, want := range []string{
			"server 0 acl 0 address 127.0.0.1 port " + b0 + " max 0 hard 0\n",
			"server 1 acl 0 address 127.0.0.1 port " + b1 + " max 0 hard 0\n",
			"admin_listen " + admin + "\n",
			"autowrite\n",
		} {
			if !bytes.Contains(data, []byte(want)) {
				t.Errorf("%s lacks %q", file, want)
			}
		}
	}
	// /metrics needs no password; it counts the two changes (blacklisting
	// is not a change of the configuration).
	pool := x509.NewCertPool()
	crt, err := os.ReadFile(filepath.Join(dir, "admin.crt"))
	if err != nil || !pool.AppendCertsFromPEM(crt) {
		t.Fatalf("generated certificate: %v", err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	r, err := hc.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	for _, want := range []string{
		`pen_config_changes_total{source="webui"} 2`,
		`pen_server_up{address="127.0.0.1:` + b0 + `",server="0"} 0`,
		`pen_server_up{address="127.0.0.1:` + b1 + `",server="1"} 1`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	jsMu.Lock()
	defer jsMu.Unlock()
	for _, e := range jsErrors {
		t.Errorf("browser: %s", e)
	}
}

// unixRelay accepts TCP connections on a loopback port it binds (port 0)
// and relays each to the unix socket path; it returns the TCP address.
func unixRelay(t *testing.T, path string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn // closed at the end, kept-alive ones included
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u, err := net.DialTimeout("unix", path, 5*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(u, c)
					u.(*net.UnixConn).CloseWrite()
					close(done)
				}()
				io.Copy(c, u)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
