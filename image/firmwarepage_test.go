package image

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/internal/firmware"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// TestFirmwarePagePC updates a pc VM from the admin UI's firmware page in
// Chromium: v1 boots, the browser logs in to the admin UI, uploads v2 (a
// later build) on the firmware page and presses the reboot button; the VM
// comes back on v2, which passes its trial and becomes the good build, and
// the page then shows v2 running and v1 as the previous build.
func TestFirmwarePagePC(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	qemu := testenv.NeedProgram(t, "qemu-system-x86_64", "qemu-system-x86")
	chromium := testenv.NeedProgram(t, "chromium", "chromium")
	testenv.NeedProgram(t, "socat", "socat")
	const code, vars = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	testenv.NeedFile(t, code, "ovmf")
	testenv.NeedFile(t, vars, "ovmf")

	// Both builds run the admin UI, with the appliance's password.
	config := append(append([]byte{}, testConfig...), []byte("admin_listen 8443\n"+
		"admin_tls /perm/pen/admin-cert.pem /perm/pen/admin-key.pem\n"+
		"admin_password_file /perm/gokr-pw.txt /etc/gokr-pw.txt\n")...)
	dir := t.TempDir()
	v1time := time.Now().Truncate(time.Second)
	v2time := v1time.Add(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := func(name string, at time.Time) string {
		out := filepath.Join(dir, name)
		b, err := boards.Lookup("pc")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Build(ctx, Options{Board: b, Output: out, Hostname: testHostname, Password: testPassword,
			Config: config, Size: testSize, ModuleDir: moduleRoot(t), Time: at}); err != nil {
			t.Fatalf("building %s: %v", name, err)
		}
		return out
	}
	disk := build("disk.img", v1time)
	v2 := build("v2.img", v2time)

	varsCopy := filepath.Join(dir, "OVMF_VARS.fd")
	if out, err := exec.Command("cp", vars, varsCopy).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	vm := startVM(t, qemu, []string{
		"-machine", "q35",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + varsCopy,
	}, disk)
	vm.waitFor(t, 4*time.Minute, "v1 serving", func() error { return vm.serving(v1time) })
	base := fmt.Sprintf("https://127.0.0.1:%d", vm.admin)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.IgnoreCertErrors,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1360, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	bctx, cancelT := context.WithTimeout(bctx, 8*time.Minute)
	defer cancelT()
	// Start the browser on this context: the shorter ones of the steps
	// below would close it when they end.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	do := func(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		if err := chromedp.Do(c, steps...); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, vm.diagnose())
		}
	}
	// text reads an element's text. Chromium may renumber the page's nodes
	// between chromedp's query and its read (the page polls and updates
	// itself), which fails the read with "No node with given id found":
	// that is asked again, a few times.
	text := func(sel string) string {
		t.Helper()
		var err error
		for range 5 {
			var s string
			if s, err = chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel))); err == nil {
				return s
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("text of %s: %v", sel, err)
		return ""
	}
	login := func() {
		do("log in", 30*time.Second,
			chromedp.Navigate(base+"/login?next="+url.QueryEscape("/firmware")),
			chromedp.WaitVisible(chromedp.ID("password")),
			chromedp.SendKeys(chromedp.ID("password"), testPassword),
			chromedp.Submit(chromedp.ID("password")),
			chromedp.WaitVisible(chromedp.ID("firmware-running")),
		)
	}
	login()
	if got := text("#fw-built"); got != v1time.UTC().Format(time.RFC3339) {
		t.Fatalf("the firmware page shows build %q, want v1's", got)
	}
	started := time.Now()
	// The file input, like any node, may be renumbered between chromedp's
	// query and its use ("Could not find node with given id"): choosing
	// the file is asked again, a few times. A click that fails so has not
	// happened (the node's box is read before the mouse moves).
	again := func(what string, action chromedp.Action[chromedp.Void]) {
		t.Helper()
		var err error
		for range 5 {
			c, cancel := context.WithTimeout(bctx, 30*time.Second)
			err = chromedp.Do(c, action)
			cancel()
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), "node") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, vm.diagnose())
		}
	}
	again("choose the image", chromedp.SetUploadFiles(chromedp.ID("image"), []string{v2}))
	again("click upload", chromedp.Click(chromedp.ID("upload-button")))
	do("upload", 4*time.Minute, chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
	if got := text(".flash.ok"); !strings.Contains(got, "Update written to root B") {
		t.Fatalf("after the upload the page says %q", got)
	}
	t.Logf("uploaded and written in %.1fs", time.Since(started).Seconds())
	// The button is pressed through the page (element.click), not by a
	// mouse event at its position: the page updates itself while it polls,
	// and a click at a spot the layout had just moved away from was seen to
	// post nothing (no "reboot requested" on the console). When no request
	// reached the appliance, the page is loaded again and the button
	// pressed again, up to three times.
	for try := 1; ; try++ {
		c, cancel := context.WithTimeout(bctx, 30*time.Second)
		err := chromedp.Do(c,
			chromedp.WaitVisible(chromedp.ID("reboot-button")),
			chromedp.Evaluate[chromedp.Void](`window.confirm = function () { return true; }; document.getElementById("reboot-button").click();`),
			chromedp.WaitVisible(chromedp.ID("rebooting")),
		)
		cancel()
		if err == nil || vm.consoleHas("reboot requested") {
			break // the appliance reboots
		}
		if try == 3 {
			t.Fatalf("reboot: %v\n%s", err, vm.diagnose())
		}
		t.Logf("reboot, try %d: %v, and no request reached the appliance: loading the page again", try, err)
		do("load the firmware page", 30*time.Second,
			chromedp.Navigate(base+"/firmware"),
			chromedp.WaitVisible(chromedp.ID("firmware-running")),
		)
	}
	rebooted := time.Now()
	vm.waitFor(t, 4*time.Minute, "v2 serving", func() error { return vm.serving(v2time) })
	t.Logf("v2 serving %.1fs after the reboot button", time.Since(rebooted).Seconds())
	vm.waitFor(t, 2*time.Minute, "v2's trial to pass", func() error {
		if !vm.consoleHas("is healthy after") {
			return fmt.Errorf("no verdict on the console")
		}
		return nil
	})
	login()
	if got := text("#fw-built"); got != v2time.UTC().Format(time.RFC3339) {
		t.Errorf("after the update the page shows build %q, want v2's", got)
	}
	if got := text("#fw-root"); !strings.HasPrefix(got, "B") {
		t.Errorf("root %q, want B", got)
	}
	if got := text("#fw-status"); got != "good" {
		t.Errorf("status %q, want good", got)
	}
	if got := text("#fw-previous"); !strings.Contains(got, v1time.UTC().Format(time.RFC3339)) {
		t.Errorf("previous %q, want v1", got)
	}
	if got := text("#fw-result"); !strings.HasPrefix(got, firmware.ResultGood) {
		t.Errorf("last update %q", got)
	}
	// /metrics, as Prometheus scrapes it.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"pen_appliance_rollbacks_total 0",
		"pen_appliance_trial 0",
		fmt.Sprintf(`pen_appliance_firmware_info{build_time=%q,root="B",`, v2time.UTC().Format(time.RFC3339)),
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
