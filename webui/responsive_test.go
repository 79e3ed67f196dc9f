package webui

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// browserSession is headless Chromium logged in to a harness's admin UI.
type browserSession struct {
	t      *testing.T
	h      *harness
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowserSession(t *testing.T, h *harness) *browserSession {
	t.Helper()
	chromium := testenv.NeedProgram(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1280, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 120*time.Second)
	t.Cleanup(cancel)
	b := &browserSession{t: t, h: h, ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				msg = fmt.Sprintf("console.error: %v", e.Args)
			}
		case *cdplog.EventEntryAdded:
			// A page answered 400 (a refused form) is not an error of
			// the page.
			if e.Entry.Level == cdplog.EntryLevelError && !strings.Contains(e.Entry.Text, "status of 400") {
				msg = fmt.Sprintf("%s: %s (%s)", e.Entry.Source, e.Entry.Text, e.Entry.URL)
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	b.do("log in",
		chromedp.Navigate(h.ts.URL+"/login"),
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("password"), testPassword),
		chromedp.Submit(chromedp.ID("password")),
		chromedp.WaitVisible(chromedp.ID("servers")),
	)
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errors {
			t.Errorf("browser: %s", e)
		}
	})
	return b
}

func (b *browserSession) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](b *browserSession, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("%s: %v", js, err)
	}
	return v
}

func (b *browserSession) screenshot(dir, name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// overflowJS lists what sticks out of the viewport sideways: the page's
// own width, and buttons of the server table outside the window.
const overflowJS = `(() => {
  const out = [];
  const w = window.innerWidth;
  if (document.documentElement.scrollWidth > w) {
    out.push("page is " + document.documentElement.scrollWidth + " px wide in " + w);
    const wide = [...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > w + 0.5 && ![...e.children].some(c => c.getBoundingClientRect().right > w + 0.5));
    wide.slice(0, 5).forEach(e => out.push("  " + e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + String(e.className).replace(/ /g, ".") : "") + " ends at " + Math.round(e.getBoundingClientRect().right)));
  }
  document.querySelectorAll("#server-table tbody tr[id] button, #server-table tbody tr[id] input[name=seconds]").forEach(e => {
    const r = e.getBoundingClientRect();
    if (r.width > 0 && (r.left < 0 || r.right > w)) out.push(e.closest("tr").id + " " + e.textContent.trim() + e.name + " at " + Math.round(r.left) + ".." + Math.round(r.right));
  });
  if (w > 760) document.querySelectorAll("#server-table tbody tr[id]").forEach(tr => {
    const st = tr.querySelector("td.state").getBoundingClientRect(), act = tr.querySelector("td.actions").getBoundingClientRect();
    if (st.right > act.left + 0.5) out.push(tr.id + ": the actions column covers the state column (" + Math.round(st.right) + " > " + Math.round(act.left) + ")");
  });
  document.querySelectorAll("header nav a").forEach(e => {
    const r = e.getBoundingClientRect();
    if (r.left < 0 || r.right > w) out.push("menu item " + e.textContent + " at " + Math.round(r.left) + ".." + Math.round(r.right));
  });
  return out;
})()`

// contrastJS computes WCAG contrast ratios of the given colour pairs.
const contrastJS = `
function lum(c) {
  const m = c.match(/[\d.]+/g).map(Number);
  const ch = m.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}
function ratio(a, b) { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); }
`

// TestResponsive drives every page with Chromium at a phone's width (390
// px) and a desktop's (1280 px): no page scrolls sideways, the server
// table's actions stay in view (a blacklisted server with its long state
// included), the menu stays in the window; and it saves a screenshot of
// each page at both widths. Then, at 390 px: a refused settings form
// says "Not applied" at the top with a link to the refused field and shows
// the running value again; blacklisting the last available server asks
// for a confirmation that names the consequence, and applies only after
// it; an upload shows the difference and applies only when confirmed.
// Accessibility: the skip link comes first, ACL fields have labels, chart
// labels and input borders have enough contrast.
func TestResponsive(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test left out with -short")
	}
	h := newHarness(t, harnessOpt{})
	b0, _ := backend(t, 0)
	h.exec("server 0 address 127.0.0.1 port " + b0)
	h.exec("server 1 blacklist 3000") // the long state label
	h.exec("check 0 tcp 1")
	h.exec("name server 0 web-1 rack A")
	h.exec("name acl 2 office network")
	h.exec("acl 2 permit 192.168.100.0 255.255.255.0")
	h.exec("acl 2 deny 2001:db8:1234:5678::/64")
	var lastErr error
	waitFor(t, "a client through pen", func() bool {
		_, lastErr = through(h.listen, []byte("hello"))
		return lastErr == nil
	})
	for i := 2; i < 5; i++ { // servers nobody connects to
		h.exec(fmt.Sprintf("server %d address 10.0.0.%d port 8080 max 100 hard 200 weight 5 prio 2", i, i))
	}
	h.exec("server 3 drain 1")
	h.exec("name server 3 being replaced")
	h.s.sampler.Start()
	t.Cleanup(h.s.sampler.Stop)
	b := newBrowserSession(t, h)
	dir := screenshotDir(t)

	pages := []struct{ path, ready string }{
		{"/", "#chart-conns"}, {"/servers", "#server-table"}, {"/acls", "#acl0"},
		{"/settings", "#settings"}, {"/config", "#config-text"}, {"/firmware", "#not-appliance"},
	}
	for _, width := range []int64{390, 1280} {
		b.do("viewport", chromedp.EmulateViewport(width, 900))
		for _, p := range pages {
			b.do(p.path, chromedp.Navigate(h.ts.URL+p.path), chromedp.WaitVisible(chromedp.CSS(p.ready)))
			time.Sleep(300 * time.Millisecond) // the dashboard's first refresh
			if bad := eval[[]string](b, overflowJS); len(bad) > 0 {
				t.Errorf("%s at %d px: %s", p.path, width, strings.Join(bad, "; "))
			}
			name := strings.Trim(strings.ReplaceAll(p.path, "/", ""), " ")
			if name == "" {
				name = "dashboard"
			}
			b.screenshot(dir, fmt.Sprintf("%s-%d.png", name, width))
		}
	}
	t.Logf("screenshots in %s", dir)

	// Server state: honest about a server nobody used.
	b.do("servers", chromedp.EmulateViewport(1280, 900), chromedp.Navigate(h.ts.URL+"/servers"), chromedp.WaitVisible(chromedp.ID("server-table")))
	if s := eval[string](b, `document.querySelector("#server-2 td.state").textContent`); !strings.Contains(s, "no failures yet") {
		t.Errorf("an unused server's state: %q", s)
	}
	if s := eval[string](b, `document.querySelector("#server-0 td.state").textContent`); !strings.Contains(s, "up") || !strings.Contains(s, "for ") || !strings.Contains(s, "check passed") {
		t.Errorf("server 0's state: %q", s)
	}
	if s := eval[string](b, `document.querySelector("#server-3 td.state").textContent`); !strings.Contains(s, "drained (empty)") {
		t.Errorf("server 3's state: %q", s)
	}

	// Accessibility.
	if got := eval[string](b, `(() => { document.activeElement.blur(); const a = document.querySelector("a, button, input, select"); return a.className + " " + a.getAttribute("href"); })()`); got != "skip #main" {
		t.Errorf("first focusable element: %q, want the skip link", got)
	}
	b.do("acls", chromedp.Navigate(h.ts.URL+"/acls"), chromedp.WaitVisible(chromedp.ID("acl0")))
	if n := eval[int](b, `[...document.querySelectorAll(".acl input[name=address], .acl input[name=mask], .acl select[name=permit]")].filter(e => !e.id || !document.querySelector("label[for='" + e.id + "']")).length`); n != 0 {
		t.Errorf("%d ACL fields without a label", n)
	}
	if r := eval[float64](b, contrastJS+`ratio(getComputedStyle(document.querySelector(".acl input[name=address]")).borderTopColor, "rgb(255,255,255)")`); r < 3 {
		t.Errorf("input border contrast %.2f, want >= 3", r)
	}
	b.do("focus", chromedp.Focus(chromedp.CSS("#acl0 input[name=address]")))
	if r := eval[float64](b, contrastJS+`ratio(getComputedStyle(document.activeElement).outlineColor, "rgb(255,255,255)")`); r < 3 {
		t.Errorf("focus ring contrast %.2f, want >= 3", r)
	}
	b.do("dashboard", chromedp.Navigate(h.ts.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#chart-conns text")))
	if r := eval[float64](b, contrastJS+`ratio(getComputedStyle(document.querySelector("#chart-conns text")).fill, getComputedStyle(document.querySelector("#chart-conns")).backgroundColor)`); r < 4.5 {
		t.Errorf("chart label contrast %.2f, want >= 4.5", r)
	}
	if s := eval[string](b, `document.querySelector("[data-cell=refused]").parentElement.textContent`); !strings.Contains(s, "ACL") || !strings.Contains(s, "full") || !strings.Contains(s, "no server") {
		t.Errorf("refusals not broken down by reason: %q", s)
	}

	// A refused form on a phone.
	b.do("phone", chromedp.EmulateViewport(390, 844))
	b.do("refused settings",
		chromedp.Navigate(h.ts.URL+"/settings"), chromedp.WaitVisible(chromedp.ID("timeout")),
		chromedp.SetValue(chromedp.ID("timeout"), "0"),
		chromedp.SetValue(chromedp.ID("blacklist"), "45"),
		chromedp.Click(chromedp.CSS("#settings button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("not-applied")),
	)
	if s := eval[string](b, `document.getElementById("not-applied").textContent`); !strings.Contains(s, "Not applied: 1 error") || !strings.Contains(s, "connect timeout: At least 1") {
		t.Errorf("banner: %q", s)
	}
	if top := eval[float64](b, `document.getElementById("not-applied").getBoundingClientRect().bottom`); top > 844 {
		t.Errorf("the banner is out of view (bottom at %.0f px)", top)
	}
	if v := eval[string](b, `document.getElementById("timeout").value + " " + document.getElementById("blacklist").value`); v != "3 30" {
		t.Errorf("refused form shows %q, want the running values 3 30", v)
	}
	if ok := eval[bool](b, `!!document.querySelector(document.querySelector("#not-applied a").getAttribute("href") + ".err")`); !ok {
		t.Error("the banner's link does not lead to the field's message")
	}
	if n := eval[int](b, `document.querySelectorAll(".field:has(.err)").length`); n != 1 {
		t.Errorf("%d fields marked, want 1", n)
	}
	b.screenshot(dir, "settings-refused-390.png")

	// Blacklisting the last available server asks first. Servers 2..4
	// are taken out by penctl's way (the control socket's origin).
	for i := 2; i < 5; i++ {
		h.exec(fmt.Sprintf("server %d blacklist 600", i))
	}
	b.do("blacklist the last server",
		chromedp.Navigate(h.ts.URL+"/servers"), chromedp.WaitVisible(chromedp.ID("server-table")),
		chromedp.Click(chromedp.CSS("#server-0 button[value=blacklist]")),
		chromedp.WaitVisible(chromedp.ID("confirm")),
	)
	if s := eval[string](b, `document.getElementById("confirm").textContent`); !strings.Contains(s, "No server would be left") {
		t.Errorf("confirmation: %q", s)
	}
	if st := h.eng.Servers(); st[0].Until.After(time.Now()) {
		t.Fatal("blacklisted before the confirmation")
	}
	b.screenshot(dir, "servers-confirm-390.png")
	b.do("confirm", chromedp.Click(chromedp.ID("confirm-apply")), chromedp.WaitVisible(chromedp.CSS(".flash.ok pre.cmds")))
	if st := h.eng.Servers(); !st[0].Until.After(time.Now()) {
		t.Error("not blacklisted after the confirmation")
	}

	// An upload shows what would change and waits.
	file := filepath.Join(t.TempDir(), "new.cfg")
	os.WriteFile(file, []byte("blacklist 17\nserver 5 address 10.0.0.9 port 81\n"), 0o644)
	before := h.cfgText()
	b.do("upload",
		chromedp.Navigate(h.ts.URL+"/config"), chromedp.WaitVisible(chromedp.ID("file")),
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{file}),
		chromedp.Submit(chromedp.ID("file")),
		chromedp.WaitVisible(chromedp.ID("diff")),
	)
	if s := eval[string](b, `document.getElementById("diff").textContent`); !strings.Contains(s, "- blacklist 30") || !strings.Contains(s, "+ blacklist 17") ||
		!strings.Contains(s, "+ server 5 acl 0 address 10.0.0.9 port 81") {
		t.Errorf("diff: %q", s)
	}
	if h.cfgText() != before {
		t.Fatal("the upload was applied before the confirmation")
	}
	if bad := eval[[]string](b, overflowJS); len(bad) > 0 {
		t.Errorf("upload preview at 390 px: %s", strings.Join(bad, "; "))
	}
	b.screenshot(dir, "config-preview-390.png")
	b.do("apply", chromedp.Click(chromedp.ID("confirm-apply")), chromedp.WaitVisible(chromedp.CSS(".flash.ok pre.diff")))
	if c := h.in.Config(); c.Blacklist != 17 || len(c.Servers) != 6 {
		t.Errorf("after the confirmation: blacklist %d, %d servers", c.Blacklist, len(c.Servers))
	}
	if s := eval[string](b, `document.querySelector(".flash.ok").textContent`); !strings.Contains(s, "+ blacklist 17") || strings.Contains(s, "Applied commands") {
		t.Errorf("message after the upload: %q", s)
	}
}
