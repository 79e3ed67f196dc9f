package webui

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pen-lb/pen-appliance/internal/services"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// TestServicesBrowser runs the appliance's services as the appliance does
// (a supervisor, a pen per service, the admin UI in service main's pen)
// and, in Chromium, creates an HTTPS service from its template with an
// uploaded certificate, adds two servers on its servers page, sees its
// traffic on the dashboard and the services page, and removes it.
func TestServicesBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test left out with -short")
	}
	chromium := testenv.NeedProgram(t, "chromium", "chromium")
	testenv.NeedProgram(t, "go", "golang-go")
	env := newServicesEnv(t)
	dir := filepath.Dir(env.layout.Dir)

	b0, _ := backend(t, 0)
	b1, hits1 := backend(t, 1)
	b2, hits2 := backend(t, 2)
	admin := filepath.Join(dir, "admin.sock")
	pwFile := filepath.Join(dir, "pw.txt")
	os.WriteFile(pwFile, []byte(testPassword+"\n"), 0o600)
	mainCfg := strings.Join([]string{
		"listen 127.0.0.1:" + strconv.Itoa(freeTCPPort(t)),
		"server 0 address 127.0.0.1 port " + b0,
		"admin_listen " + admin,
		"admin_tls " + filepath.Join(dir, "admin.crt") + " " + filepath.Join(dir, "admin.key"),
		"admin_password_file " + pwFile,
		"autowrite",
	}, "\n") + "\n"
	if err := env.layout.Create(services.MainName, []byte(mainCfg), nil, nil); err != nil {
		t.Fatal(err)
	}
	env.wait(t, services.MainName, services.Running)
	waitFor(t, "main's admin listener", func() bool {
		c, err := net.DialTimeout("unix", admin, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	// The certificate to upload.
	certFile, keyFile := filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
	if _, err := EnsureCert(certFile, keyFile, []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	port := freeTCPPort(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.IgnoreCertErrors,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1360, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	base := "https://" + unixRelay(t, admin)
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			states, _ := env.layout.ReadStates()
			t.Fatalf("%s: %v\nservices: %+v", what, err, states)
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
	// poll reloads path until the script cond is true.
	poll := func(what, path, cond string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			do("loading "+path, chromedp.Navigate(base+path), chromedp.WaitReady(chromedp.CSS("footer")))
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %q not true on %s (%v)", what, cond, path, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}

	do("log in",
		chromedp.Navigate(base+"/services"),
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.ID("services")),
	)
	do("add the HTTPS service from its template",
		chromedp.SendKeys(chromedp.ID("svc-name"), "secure"),
		chromedp.SetValue(chromedp.ID("svc-kind"), "https"),
		chromedp.SendKeys(chromedp.ID("svc-port"), strconv.Itoa(port)),
		chromedp.SetUploadFiles(chromedp.ID("svc-cert"), []string{certFile}),
		chromedp.SetUploadFiles(chromedp.ID("svc-key"), []string{keyFile}),
		chromedp.Click(chromedp.CSS("#add-service button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(".flash.ok")),
	)
	if got := text(".flash.ok"); !strings.Contains(got, "Service secure added") {
		t.Fatalf("after adding: %q", got)
	}
	poll("the new service running and answering", "/services",
		`!!document.querySelector('#service-secure[data-state="running"]') && document.querySelector('#service-secure .svc-listen').textContent.trim() != ""`)
	if got := text("#service-secure .svc-listen"); got != strconv.Itoa(port) {
		t.Errorf("listener shown %q, want %d", got, port)
	}

	// Its servers page: two servers, each a command through its control
	// socket.
	do("open the service's servers",
		chromedp.Click(chromedp.CSS(`#service-secure a[href="/services/open/secure"]`)),
		chromedp.WaitVisible(chromedp.ID("add-address")),
	)
	if got := text("header .service"); got != "secure:" {
		t.Errorf("the menu names service %q, want secure", got)
	}
	for i, b := range []string{b1, b2} {
		want := fmt.Sprintf("server %d address 127.0.0.1 port %s", i, b)
		do("add a server",
			chromedp.Navigate(base+"/servers"),
			chromedp.SendKeys(chromedp.ID("add-address"), "127.0.0.1"),
			chromedp.SendKeys(chromedp.ID("add-port"), b),
			chromedp.Click(chromedp.ID("add-submit")),
		)
		cond := fmt.Sprintf(`(document.querySelector(".flash.ok pre.cmds") || {textContent: ""}).textContent.includes(%q)`, want)
		deadline := time.Now().Add(10 * time.Second)
		for {
			// The page is being replaced: errors until the new one is in.
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
			if err == nil && ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the page does not show %q applied (%v)", want, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	saved, _ := os.ReadFile(env.layout.Config("secure"))
	if !strings.Contains(string(saved), "port "+b2) || !strings.Contains(string(saved), "ssl_cert "+filepath.Join(env.layout.ServiceDir("secure"), services.CertDir)) {
		t.Errorf("secure's pen.cfg:\n%s", saved)
	}

	// TLS clients through the new service.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var tlsErr error
	var errMu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", "127.0.0.1:"+strconv.Itoa(port), &tls.Config{InsecureSkipVerify: true})
			if err == nil {
				c.SetDeadline(time.Now().Add(3 * time.Second))
				fmt.Fprintf(c, "hello\n")
				_, err = bufio.NewReader(c).ReadString('\n')
				c.Close()
			}
			errMu.Lock()
			tlsErr = err
			errMu.Unlock()
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, "TLS clients through the service", func() bool { return hits1.Load()+hits2.Load() > 3 })

	// The traffic on its dashboard (the services summary) and on the
	// services page.
	poll("traffic on the dashboard", "/",
		`(() => { const r = document.querySelector('#summary-secure'); return !!r && parseInt(r.cells[4].textContent) > 2 && !r.cells[5].textContent.startsWith("0 B /"); })()`)
	poll("traffic on the services page", "/services",
		`parseInt(document.querySelector('#service-secure .svc-accepted').textContent) > 2`)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(screenshotDir(t), name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
	shot("services.png")
	// The service's own dashboard draws its live chart from its pen.
	do("the service's dashboard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("chart-conns")))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelectorAll("#chart-bytes polyline").length >= 1`,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Errorf("the service's live chart: %v", err)
	}
	shot("service-dashboard.png")
	errMu.Lock()
	if tlsErr != nil {
		t.Errorf("a TLS client: %v", tlsErr)
	}
	errMu.Unlock()

	// Remove it.
	do("remove the service",
		chromedp.Navigate(base+"/services"),
		chromedp.Click(chromedp.ID("remove-secure")),
		chromedp.WaitVisible(chromedp.CSS(".flash.ok")),
	)
	if got := text(".flash.ok"); !strings.Contains(got, "Service secure removed") {
		t.Errorf("after removing: %q", got)
	}
	poll("the service gone", "/services", `!document.querySelector('#service-secure')`)
	if _, err := os.Stat(env.layout.ServiceDir("secure")); err == nil {
		t.Error("the removed service's directory (with its key) is still there")
	}
	waitFor(t, "the removed service's listener closed", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	do("back to main's pages", chromedp.Navigate(base+"/servers"), chromedp.WaitVisible(chromedp.ID("add-address")))
	if got := text("header .service"); got != "main:" {
		t.Errorf("after the removal the menu names service %q, want main", got)
	}
}
