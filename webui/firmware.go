package webui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pen-lb/pen-appliance/internal/firmware"
	"github.com/pen-lb/pen-appliance/pen/version"
)

// Firmware is what the firmware page needs on an appliance (see package
// firmware). Plain pen has none, and the page says so.
type Firmware struct {
	// StatePath is the appliance's firmware state file.
	StatePath string
	// Running is the build running now.
	Running firmware.Build
	// API writes updates: the appliance's own gokrazy update API.
	API *firmware.API
	// Check refuses an update image not made for this appliance.
	Check func(*firmware.Image) error
	// Reboot restarts the appliance.
	Reboot func(ctx context.Context) error

	mu sync.Mutex // one upload at a time
}

// applianceFirmware is the Firmware of the appliance pen runs on, from the
// environment the appliance's init gives pen, or nil.
func applianceFirmware() *Firmware {
	path, running, ok := firmware.FromEnv(os.Getenv)
	if !ok {
		return nil
	}
	running.Version = version.Version
	fw := &Firmware{StatePath: path, Running: running}
	fw.Check = func(img *firmware.Image) error {
		cmdline, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			return err
		}
		root, err := firmware.ParseRoot(string(cmdline))
		if err != nil {
			return err
		}
		dev, err := firmware.FindBootPartition("/sys/block", "/dev", root.GUID)
		if err != nil {
			return fmt.Errorf("finding the boot partition: %w", err)
		}
		f, err := os.Open(dev)
		if err != nil {
			return err
		}
		defer f.Close()
		boot, err := firmware.ReadCmdline(f)
		if err != nil {
			return err
		}
		return img.Check(root, boot, firmware.HasLoaderEntry(f), runtime.GOARCH)
	}
	fw.Reboot = func(ctx context.Context) error {
		api, err := firmware.LocalAPI()
		if err != nil {
			return err
		}
		// Through the firmware and boot loader (no kexec), which read the
		// switched command line; gokrazy answers before it reboots.
		return api.Post(ctx, "/reboot?kexec=off&wait_per_signal=10s")
	}
	return fw
}

func (fw *Firmware) api() (*firmware.API, error) {
	if fw.API != nil {
		return fw.API, nil
	}
	return firmware.LocalAPI()
}

// firmwareData is the firmware page.
type firmwareData struct {
	Appliance bool
	Running   firmware.Build
	State     firmware.State
	StateErr  string
	GOARCH    string
}

func (s *Server) firmwareData() firmwareData {
	d := firmwareData{GOARCH: runtime.GOARCH}
	if s.fw == nil {
		return d
	}
	d.Appliance = true
	d.Running = s.fw.Running
	st, err := firmware.Load(s.fw.StatePath)
	if err != nil {
		d.StateErr = err.Error()
	}
	d.State = st
	return d
}

// rollback is the last update if it was rolled back, for the dashboard.
func (s *Server) rollback() *firmware.Update {
	if s.fw == nil {
		return nil
	}
	st, err := firmware.Load(s.fw.StatePath)
	if err != nil || st.LastUpdate == nil || st.LastUpdate.Result != firmware.ResultRolledBack {
		return nil
	}
	return st.LastUpdate
}

func (s *Server) firmwarePage(w http.ResponseWriter, r *http.Request, x *session) {
	s.show(w, r, x, http.StatusOK, "firmware", "Firmware", nil, s.firmwareData())
}

// maxImage bounds an uploaded image: the appliance reads no further than
// the end of root A's file system (at most 604 MiB into the image), and
// the page's script sends no more than that; a whole image sent without
// the script is read up to this limit and its rest discarded.
const maxImage = 64 << 30

// uploadTimeout bounds an image upload, writing included.
const uploadTimeout = 30 * time.Minute

// firmwareUpload writes an update image (the output of penimage build)
// through gokrazy's update API, as an OTA client does, and switches the
// next boot to it; the next boot is a trial. The body is a multipart form
// whose first part is the CSRF token and whose second is the image, read
// as it arrives.
func (s *Server) firmwareUpload(w http.ResponseWriter, r *http.Request) {
	x := s.session(r)
	if x == nil {
		http.Error(w, "Not logged in (or the session expired): log in again.", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if s.fw == nil {
		http.Error(w, "pen does not run on an appliance: there is no firmware to update.", http.StatusNotFound)
		return
	}
	// An image takes longer than the admin listener's ReadTimeout and
	// WriteTimeout allow over a slow link; only a logged-in session gets
	// here.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(uploadTimeout))
	rc.SetWriteDeadline(time.Now().Add(uploadTimeout))
	r.Body = http.MaxBytesReader(w, r.Body, maxImage)
	mr, err := r.MultipartReader()
	if err != nil {
		http.Error(w, "bad upload: "+err.Error(), http.StatusBadRequest)
		return
	}
	p, err := mr.NextPart()
	if err != nil || p.FormName() != "csrf" {
		http.Error(w, "Missing or wrong CSRF token: reload the page and try again.", http.StatusForbidden)
		return
	}
	token, _ := io.ReadAll(io.LimitReader(p, 256))
	if !sameToken(string(token), x.csrf) {
		http.Error(w, "Missing or wrong CSRF token: reload the page and try again.", http.StatusForbidden)
		return
	}
	if p, err = mr.NextPart(); err != nil || p.FormName() != "image" {
		http.Error(w, "bad upload: no image", http.StatusBadRequest)
		return
	}
	if !s.fw.mu.TryLock() {
		http.Error(w, "Another update is being written.", http.StatusConflict)
		return
	}
	defer s.fw.mu.Unlock()
	st, err := firmware.Load(s.fw.StatePath)
	if err == nil && st.Trial != nil {
		http.Error(w, fmt.Sprintf("The running build is on trial (boot %d since %s): an update now would overwrite the last good build. Wait until the trial ends.", st.Trial.Boots, st.Trial.Started.Format(time.RFC3339)), http.StatusConflict)
		return
	}
	api, err := s.fw.api()
	if err != nil {
		http.Error(w, "gokrazy's update API: "+err.Error(), http.StatusInternalServerError)
		return
	}
	started := time.Now()
	s.log.Printf("admin UI: firmware update %q from %s", p.FileName(), clientAddr(r))
	check := func(img *firmware.Image) error {
		if s.fw.Check == nil {
			return nil
		}
		if err := s.fw.Check(img); err != nil {
			return fmt.Errorf("%w: %v", errRefused, err)
		}
		return nil
	}
	img, err := firmware.Install(r.Context(), api, p, check)
	if err != nil {
		s.log.Printf("admin UI: firmware update refused or failed: %v", err)
		status := http.StatusBadGateway
		if img == nil || errors.Is(err, errRefused) {
			status = http.StatusBadRequest
		}
		http.Error(w, "Not installed: "+err.Error()+"\nThe appliance keeps booting the running build.", status)
		return
	}
	io.Copy(io.Discard, p) // the rest of a whole image sent without the script
	msg := fmt.Sprintf("Update written to root %s (%s file system, %s boot partition) in %s and switched: the next boot runs it on trial. Reboot to start it.",
		firmware.RootName(firmware.OtherRoot(s.fw.Running.Root)), humanBytes(img.RootSize), humanBytes(len(img.Boot)), humanDuration(time.Since(started)))
	s.log.Printf("admin UI: %s", msg)
	s.sessions.addFlash(x, Flash{Note: msg})
	if r.Header.Get("X-Upload") == "script" {
		// The page's script loads /firmware itself, which shows the
		// message; a redirect would show (and use up) it in the
		// script's request.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, msg+"\n")
		return
	}
	http.Redirect(w, r, "/firmware", http.StatusSeeOther)
}

var errRefused = errors.New("refused, this image is not for this appliance")

func (s *Server) firmwareReboot(w http.ResponseWriter, r *http.Request, x *session) {
	if s.fw == nil {
		http.Error(w, "pen does not run on an appliance.", http.StatusNotFound)
		return
	}
	s.log.Printf("admin UI: reboot requested from %s", clientAddr(r))
	s.render(w, r, http.StatusOK, "rebooting", &view{Title: "Rebooting", Nav: "firmware"})
	// gokrazy stops pen before it reboots, so the page is sent first.
	go func() {
		time.Sleep(500 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := s.fw.Reboot(ctx); err != nil {
			s.log.Printf("admin UI: reboot: %v", err)
		}
	}()
}

// firmwareCollector exports the appliance's firmware state.
type firmwareCollector struct{ fw *Firmware }

var (
	rollbacksDesc = prometheus.NewDesc("pen_appliance_rollbacks_total",
		"Updates the appliance rolled back because the new build was not healthy in its trial boot.", nil, nil)
	trialDesc = prometheus.NewDesc("pen_appliance_trial",
		"1 while the running build is on trial, else 0.", nil, nil)
	firmwareInfoDesc = prometheus.NewDesc("pen_appliance_firmware_info",
		"The running build: pen's version, the build time and the root partition (A or B).", []string{"version", "build_time", "root"}, nil)
)

func (c firmwareCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rollbacksDesc
	ch <- trialDesc
	ch <- firmwareInfoDesc
}

func (c firmwareCollector) Collect(ch chan<- prometheus.Metric) {
	st, _ := firmware.Load(c.fw.StatePath)
	ch <- prometheus.MustNewConstMetric(rollbacksDesc, prometheus.CounterValue, float64(st.Rollbacks))
	trial := 0.0
	if st.Trial != nil {
		trial = 1
	}
	ch <- prometheus.MustNewConstMetric(trialDesc, prometheus.GaugeValue, trial)
	r := c.fw.Running
	ch <- prometheus.MustNewConstMetric(firmwareInfoDesc, prometheus.GaugeValue, 1, r.Version, r.BuildTime, firmware.RootName(r.Root))
}
