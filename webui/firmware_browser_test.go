package webui

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pen-lb/pen-appliance/internal/firmware"
	"github.com/pen-lb/pen-appliance/internal/firmware/firmwaretest"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// TestBrowserFirmware drives the firmware page in Chromium, on an admin UI
// that believes it runs on an appliance whose last update was rolled
// back: the dashboard shows the rollback, the page the running build; an
// update image is chosen and uploaded by the page's script (with its
// progress bar) to a stand-in for gokrazy's update API, which receives
// exactly root A's file system, the boot partition and the MBR's boot
// code and the switch; the reboot button asks for confirmation and posts.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func TestBrowserFirmware(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test left out with -short")
	}
	chromium := testenv.NeedProgram(t, "chromium", "chromium")
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	st := firmware.RolledBack(firmware.State{Good: fwV1, Trial: &firmware.Pending{Build: fwV2, Boots: 1, Started: now}},
		fwV2, now.Add(time.Minute), "not healthy within 1m0s: pen is not running")
	h, g, reboots := applianceHarness(t, st)

	// An image of 8 MiB whose root A holds 1.5 MiB: the script sends the
	// first 3.5 MiB only.
	boot := firmwaretest.BootFS(firmwaretest.Cmdline(firmwaretest.GUID, 2), true)
	disk, root := firmwaretest.Disk(firmwaretest.GUID, firmwaretest.AMD64Root, boot, 1536<<10, 11)
	imgPath := filepath.Join(t.TempDir(), "pen-pc.img")
	if err := os.WriteFile(imgPath, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	var checked []*firmware.Image
	h.s.fw.Check = func(img *firmware.Image) error {
		checked = append(checked, img)
		return nil
	}
	// Count the bytes the browser sends.
	var uploaded atomic.Int64
	h.ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/firmware/upload" {
			r.Body = countingBody{r.Body, &uploaded}
		}
		h.s.ServeHTTP(w, r)
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1360, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
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
	base := h.ts.URL
	do("log in",
		chromedp.Navigate(base+"/login?next="+url.QueryEscape("/")),
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.ID("rollback-notice")),
	)
	if got := text("#rollback-notice"); !strings.Contains(got, "rolled back") || !strings.Contains(got, "pen is not running") {
		t.Errorf("dashboard notice %q", got)
	}
	do("firmware page",
		chromedp.Click(chromedp.CSS(`nav a[href="/firmware"]`)),
		chromedp.WaitVisible(chromedp.ID("firmware-running")),
	)
	if v, b := text("#fw-version"), text("#fw-built"); v != "v1" || b != fwV1.BuildTime {
		t.Errorf("page shows version %q built %q", v, b)
	}
	// The page navigates when the upload is done; what the progress bar
	// showed is kept in sessionStorage.
	do("upload",
		chromedp.SetUploadFiles(chromedp.ID("image"), []string{imgPath}),
		chromedp.Evaluate[chromedp.Void](`new MutationObserver(function () {
			var p = document.getElementById("upload-progress");
			if (!p.hidden) { sessionStorage.setItem("progress", document.getElementById("upload-text").textContent); }
		}).observe(document.getElementById("upload-progress"), {attributes: true, subtree: true, childList: true, characterData: true})`),
		chromedp.Click(chromedp.ID("upload-button")),
		chromedp.WaitVisible(chromedp.CSS(".flash.ok")),
	)
	if p, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("progress") || ""`)); p == "" {
		t.Errorf("the progress bar was never shown")
	} else {
		t.Logf("progress: %s", p)
	}
	if got := text(".flash.ok"); !strings.Contains(got, "Update written to root B") {
		t.Errorf("after the upload the page says %q", got)
	}
	if want := "PUT /update/root,PUT /update/boot,PUT /update/mbr,POST /update/switch"; g.callList() != want {
		t.Errorf("gokrazy was sent %q, want %q", g.callList(), want)
	}
	if string(g.written["root"]) != string(root) || string(g.written["mbr"]) != string(disk[:446]) {
		t.Errorf("root %d bytes (want %d), mbr %d bytes", len(g.written["root"]), len(root), len(g.written["mbr"]))
	}
	want := int64(firmwaretest.RootStart + len(root))
	if len(checked) != 1 || checked[0].Read != want {
		t.Errorf("the image was read up to %v, want %d", checked, want)
	}
	// The script sent that much of the 8 MiB and the multipart framing.
	if n := uploaded.Load(); n < want || n > want+1024 {
		t.Errorf("the browser sent %d bytes, want the %d the appliance reads", n, want)
	}

	// Reboot: the confirmation declined, nothing; accepted, a reboot.
	do("reboot declined",
		chromedp.Evaluate[chromedp.Void](`window.confirm = function () { return false; }`),
		chromedp.Click(chromedp.ID("reboot-button")),
		chromedp.Sleep(time.Second),
	)
	if reboots.Load() != 0 {
		t.Errorf("rebooted without confirmation")
	}
	do("reboot",
		chromedp.Evaluate[chromedp.Void](`window.confirm = function () { return true; }`),
		chromedp.Click(chromedp.ID("reboot-button")),
		chromedp.WaitVisible(chromedp.ID("rebooting")),
	)
	waitReboots(t, reboots, 1)
}
