package webui

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/firmware"
	"github.com/pen-lb/pen-appliance/internal/firmware/firmwaretest"
)

// fakeGokrazy is the appliance's gokrazy update API, recording what it is
// sent.
type fakeGokrazy struct {
	mu      sync.Mutex
	written map[string][]byte
	calls   []string
}

func newFakeGokrazy(t *testing.T) (*fakeGokrazy, *firmware.API) {
	g := &fakeGokrazy{written: map[string][]byte{}}
	ts := httptest.NewServer(g)
	t.Cleanup(ts.Close)
	return g, &firmware.API{BaseURL: ts.URL, Password: "gokrazy-pw"}
}

func (g *fakeGokrazy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); !ok || u != "gokrazy" || p != "gokrazy-pw" {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, r.Method+" "+r.URL.Path)
	if r.Method == "PUT" {
		b, _ := io.ReadAll(r.Body)
		g.written[strings.TrimPrefix(r.URL.Path, "/update/")] = b
		fmt.Fprintf(w, "%08x", crc32.ChecksumIEEE(b))
	}
}

func (g *fakeGokrazy) callList() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(g.calls, ",")
}

var (
	fwV1 = firmware.Build{Root: 2, Version: "v1", BuildTime: "2026-12-01T10:00:00Z"}
	fwV2 = firmware.Build{Root: 3, Version: "v2", BuildTime: "2026-12-01T11:00:00Z"}
)

// applianceHarness is the admin UI of a pen that runs on an appliance
// (the environment says so), running v1 from root A, with the firmware
// state in a temporary file and a fake gokrazy API.
func applianceHarness(t *testing.T, st firmware.State) (*harness, *fakeGokrazy, *atomic.Int32) {
	t.Helper()
	statePath := filepath.Join(t.TempDir(), "appliance", "firmware.json")
	if err := firmware.Save(statePath, st); err != nil {
		t.Fatal(err)
	}
	for _, kv := range firmware.Env(statePath, fwV1) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	h := newHarness(t, harnessOpt{})
	if h.s.fw == nil || h.s.fw.StatePath != statePath {
		t.Fatalf("the admin UI does not see the appliance: %+v", h.s.fw)
	}
	g, api := newFakeGokrazy(t)
	h.s.fw.API = api
	h.s.fw.Running.Version = "v1"
	running, _ := firmware.ParseRoot(firmwaretest.Cmdline(firmwaretest.GUID, 2))
	h.s.fw.Check = func(img *firmware.Image) error {
		return img.Check(running, []byte(firmwaretest.Cmdline(firmwaretest.GUID, 2)), true, "amd64")
	}
	reboots := new(atomic.Int32)
	h.s.fw.Reboot = func(context.Context) error { reboots.Add(1); return nil }
	return h, g, reboots
}

// upload posts an image as the page's form does: the CSRF token, then the
// file.
func (h *harness) uploadImage(csrf string, image []byte) resp {
	h.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("csrf", csrf)
	fw, _ := mw.CreateFormFile("image", "pen-pc.img")
	fw.Write(image)
	mw.Close()
	req, _ := http.NewRequest("POST", h.ts.URL+"/firmware/upload", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	r, err := h.c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, string(b), r.Header}
}

func TestFirmwareNotAppliance(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.login()
	r := h.get("/firmware")
	contains(t, "/firmware", r.body, "does not run on the pen appliance", `href="/firmware" aria-current="page"`)
	if strings.Contains(r.body, "upload-form") || strings.Contains(r.body, "reboot-button") {
		t.Errorf("plain pen offers firmware actions")
	}
	if r := h.uploadImage(h.csrf(), []byte("x")); r.code != http.StatusNotFound {
		t.Errorf("upload on plain pen: HTTP %d", r.code)
	}
	if r := h.post("/firmware/reboot", nil); r.code != http.StatusNotFound {
		t.Errorf("reboot on plain pen: HTTP %d", r.code)
	}
	if m := h.get("/metrics"); strings.Contains(m.body, "pen_appliance_") {
		t.Errorf("plain pen exports appliance metrics")
	}
}

func TestFirmwarePage(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	st := firmware.RolledBack(firmware.State{Good: fwV1, Previous: firmware.Build{Root: 3, Version: "v0", BuildTime: "2026-11-30T10:00:00Z"}, Trial: &firmware.Pending{Build: fwV2, Boots: 2, Started: now}},
		fwV2, now.Add(time.Minute), "not healthy within 1m0s: pen's listener: connection refused")
	h, g, reboots := applianceHarness(t, st)

	// Not logged in: nothing.
	if r := h.get("/firmware"); r.code != http.StatusSeeOther {
		t.Errorf("/firmware without login: HTTP %d", r.code)
	}
	if r := h.uploadImage("x", []byte("x")); r.code != http.StatusUnauthorized {
		t.Errorf("upload without login: HTTP %d", r.code)
	}
	h.login()
	r := h.get("/firmware")
	contains(t, "/firmware", r.body,
		`id="fw-version">v1<`, `id="fw-built">2026-12-01T10:00:00Z<`, `A (partition 2)`, `<span class="pill up">good</span>`,
		`v0 (built 2026-11-30T10:00:00Z)`, `id="fw-rollbacks">1<`, "The last update was rolled back", "connection refused",
		`id="upload-form"`, `id="reboot-button"`, `data-confirm=`)
	// The dashboard says so too.
	contains(t, "dashboard", h.get("/").body, `id="rollback-notice"`, "Firmware update rolled back", "v2 (built 2026-12-01T11:00:00Z)")
	// And /metrics.
	contains(t, "/metrics", h.get("/metrics").body, "pen_appliance_rollbacks_total 1", "pen_appliance_trial 0",
		`pen_appliance_firmware_info{build_time="2026-12-01T10:00:00Z",root="A",version="v1"} 1`)

	// An upload without or with a wrong CSRF token writes nothing.
	boot := firmwaretest.BootFS(firmwaretest.Cmdline(firmwaretest.GUID, 2), true)
	disk, root := firmwaretest.Disk(firmwaretest.GUID, firmwaretest.AMD64Root, boot, 500000, 7)
	if r := h.uploadImage("wrong", disk); r.code != http.StatusForbidden || g.callList() != "" {
		t.Errorf("wrong CSRF token: HTTP %d, calls %q", r.code, g.callList())
	}
	// An image for another host is refused before anything is written.
	other := "60c24cc1-f3f9-427a-8199-999999990001"
	otherDisk, _ := firmwaretest.Disk(other, firmwaretest.AMD64Root, firmwaretest.BootFS(firmwaretest.Cmdline(other, 2), true), 500000, 8)
	if r := h.uploadImage(h.csrf(), otherDisk); r.code != http.StatusBadRequest || !strings.Contains(r.body, "another hostname") || g.callList() != "" {
		t.Errorf("other host: HTTP %d %q, calls %q", r.code, r.body, g.callList())
	}
	// The update: written and switched.
	r = h.uploadImage(h.csrf(), disk)
	if r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/firmware" {
		t.Fatalf("upload: HTTP %d %s", r.code, r.body)
	}
	if want := "PUT /update/root,PUT /update/boot,PUT /update/mbr,POST /update/switch"; g.callList() != want {
		t.Errorf("calls %q, want %q", g.callList(), want)
	}
	if !bytes.Equal(g.written["root"], root) {
		t.Errorf("root: %d bytes written, want %d", len(g.written["root"]), len(root))
	}
	contains(t, "/firmware after the upload", h.get("/firmware").body, "Update written to root B", "Reboot to start it")

	// Reboot: POST with the CSRF token only.
	if r := h.do(h.c, "GET", "/firmware/reboot", nil); r.code == http.StatusOK || reboots.Load() != 0 {
		t.Errorf("GET /firmware/reboot: HTTP %d, %d reboots", r.code, reboots.Load())
	}
	if r := h.post("/firmware/reboot", map[string][]string{"csrf": {"wrong"}}); r.code != http.StatusForbidden || reboots.Load() != 0 {
		t.Errorf("reboot with a wrong token: HTTP %d, %d reboots", r.code, reboots.Load())
	}
	if r := h.post("/firmware/reboot", nil); r.code != http.StatusOK || !strings.Contains(r.body, "rebooting") {
		t.Errorf("reboot: HTTP %d", r.code)
	}
	waitReboots(t, reboots, 1)
}

func TestFirmwareUploadDuringTrial(t *testing.T) {
	st := firmware.State{Good: fwV2, Trial: &firmware.Pending{Build: fwV1, Boots: 1, Started: time.Now()}}
	h, g, _ := applianceHarness(t, st)
	h.login()
	contains(t, "/firmware on trial", h.get("/firmware").body, `<span class="pill warn">on trial</span> boot 1`)
	contains(t, "/metrics on trial", h.get("/metrics").body, "pen_appliance_trial 1")
	disk, _ := firmwaretest.Disk(firmwaretest.GUID, firmwaretest.AMD64Root, firmwaretest.BootFS(firmwaretest.Cmdline(firmwaretest.GUID, 2), true), 500000, 9)
	if r := h.uploadImage(h.csrf(), disk); r.code != http.StatusConflict || !strings.Contains(r.body, "on trial") || g.callList() != "" {
		t.Errorf("upload during a trial: HTTP %d %q, calls %q", r.code, r.body, g.callList())
	}
	if strings.Contains(h.get("/").body, "rollback-notice") {
		t.Errorf("the dashboard shows a rollback notice without a rollback")
	}
}

// waitReboots waits until the reboot, which the UI starts after its
// answer, was asked for n times.
func waitReboots(t *testing.T, reboots *atomic.Int32, n int32) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); reboots.Load() < n && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if got := reboots.Load(); got != n {
		t.Errorf("%d reboots, want %d", got, n)
	}
}
