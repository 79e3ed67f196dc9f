// Package update is a client of the gokrazy runtime's update API, which the
// appliance serves on port 9080 (HTTP Basic auth, user "gokrazy"):
//
//	GET  /update/features   which protocol features the device supports
//	PUT  /update/root       the inactive root partition
//	PUT  /update/boot       the boot partition
//	PUT  /update/mbr        the first 446 bytes of the disk (boot code)
//	POST /update/switch     make the inactive root partition the active one
//	POST /reboot
//	GET  /                  status, with Accept: application/json
//
// Every upload is checked against the digest the device returns of what it
// wrote (CRC-32 when the device supports "updatehash", SHA-256 otherwise);
// a mismatch is an error, and the caller must not switch after an error.
// Update runs the whole sequence as gokrazy's own gok update does, then
// waits for the appliance to come back and tells whether it runs the new
// build or has rolled back to the old one.
package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HTTPDoer sends requests; *http.Client is one.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// Feature is a protocol feature a device announces in /update/features.
type Feature string

// The features gokrazy's runtime announces.
const (
	// FeaturePARTUUID: the kernel command line selects the root by
	// PARTUUID.
	FeaturePARTUUID Feature = "partuuid"
	// FeatureUpdateHash: the device honours X-Gokrazy-Update-Hash: crc32.
	FeatureUpdateHash Feature = "updatehash"
	// FeatureGPT: the device boots from a GPT disk (root=PARTUUID=GUID/
	// PARTNROFF=n).
	FeatureGPT Feature = "gpt"
)

// ErrNotImplemented is returned for a request the device has no handler
// for (HTTP 404, or the status page served instead).
var ErrNotImplemented = errors.New("update handler not implemented by the device")

// ErrHashMismatch is returned when the device's digest of an upload differs
// from the client's.
var ErrHashMismatch = errors.New("the device received different bytes than were sent")

// ErrUnauthorized is returned when the device refuses the password.
var ErrUnauthorized = errors.New("the appliance refuses the password")

// User is the user name of gokrazy's API.
const User = "gokrazy"

// Target is one device.
type Target struct {
	base     *url.URL // without user information
	password string
	doer     HTTPDoer
	features map[Feature]bool
}

// NewTarget returns a client of the device at baseURL (http://host:port),
// authenticating with password, and asks it for its features. A
// password in baseURL's user information is used when password is empty.
func NewTarget(ctx context.Context, baseURL, password string, doer HTTPDoer) (*Target, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("target %q: want http://HOST:PORT", baseURL)
	}
	if u.User != nil {
		if p, ok := u.User.Password(); ok && password == "" {
			password = p
		}
		u.User = nil
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if doer == nil {
		doer = http.DefaultClient
	}
	t := &Target{base: u, password: password, doer: doer}
	if err := t.readFeatures(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// String returns the device's base URL.
func (t *Target) String() string { return t.base.String() }

func (t *Target) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, t.base.String()+path, body)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(User, t.password)
	return req, nil
}

// do sends req and returns the status and up to limit bytes of the body,
// which it always closes.
func (t *Target) do(req *http.Request, limit int64) (int, []byte, error) {
	resp, err := t.doer.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return resp.StatusCode, body, fmt.Errorf("%s %s: reading the reply: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return resp.StatusCode, body, fmt.Errorf("%s %s: HTTP 401: wrong password for %s (user %s): %w", req.Method, req.URL.Path, t.base, User, ErrUnauthorized)
	}
	return resp.StatusCode, body, nil
}

func notImplemented(code int, body []byte) bool {
	return code == http.StatusNotFound || bytes.HasPrefix(bytes.TrimSpace(body), []byte("<!DOCTYPE html>"))
}

func (t *Target) readFeatures(ctx context.Context) error {
	req, err := t.request(ctx, http.MethodGet, "/update/features", nil)
	if err != nil {
		return err
	}
	code, body, err := t.do(req, 64<<10)
	if err != nil {
		return err
	}
	t.features = make(map[Feature]bool)
	switch {
	case code == http.StatusNotFound:
		return nil // an old device: no features
	case code != http.StatusOK:
		return fmt.Errorf("GET /update/features: HTTP %d: %s", code, bytes.TrimSpace(body))
	}
	for _, f := range strings.Split(strings.TrimSpace(string(body)), ",") {
		if f = strings.TrimSpace(f); f != "" {
			t.features[Feature(f)] = true
		}
	}
	return nil
}

// Supports reports whether the device announced feature f.
func (t *Target) Supports(f Feature) bool { return t.features[f] }

// Features returns the features this client knows that the device
// announced, for messages.
func (t *Target) Features() []Feature {
	var fs []Feature
	for _, f := range []Feature{FeaturePARTUUID, FeatureUpdateHash, FeatureGPT} {
		if t.features[f] {
			fs = append(fs, f)
		}
	}
	return fs
}

// StreamTo uploads r to /update/<dest> ("root", "boot", "mbr") and checks
// the digest the device returns. It returns ErrNotImplemented when the
// device has no such handler and an error wrapping ErrHashMismatch when
// the digests differ.
func (t *Target) StreamTo(ctx context.Context, dest string, r io.Reader) error {
	var h hash.Hash = sha256.New()
	if t.Supports(FeatureUpdateHash) {
		h = crc32.NewIEEE()
	}
	req, err := t.request(ctx, http.MethodPut, "/update/"+dest, io.TeeReader(r, h))
	if err != nil {
		return err
	}
	if t.Supports(FeatureUpdateHash) {
		req.Header.Set("X-Gokrazy-Update-Hash", "crc32")
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	code, body, err := t.do(req, 64<<10)
	if err != nil {
		return err
	}
	if notImplemented(code, body) {
		return fmt.Errorf("PUT /update/%s: %w", dest, ErrNotImplemented)
	}
	if code != http.StatusOK {
		return fmt.Errorf("PUT /update/%s: HTTP %d: %s", dest, code, bytes.TrimSpace(body))
	}
	got := strings.TrimSpace(string(body))
	want := hex.EncodeToString(h.Sum(nil))
	if got != want {
		return fmt.Errorf("PUT /update/%s: the device's digest is %q, ours %s: %w", dest, got, want, ErrHashMismatch)
	}
	return nil
}

func (t *Target) post(ctx context.Context, path string) ([]byte, error) {
	req, err := t.request(ctx, http.MethodPost, path, nil)
	if err != nil {
		return nil, err
	}
	code, body, err := t.do(req, 64<<10)
	if err != nil {
		return body, err
	}
	if notImplemented(code, body) {
		return body, fmt.Errorf("POST %s: %w", path, ErrNotImplemented)
	}
	if code != http.StatusOK {
		return body, fmt.Errorf("POST %s: HTTP %d: %s", path, code, bytes.TrimSpace(body))
	}
	return body, nil
}

// Switch makes the device boot the root partition the last upload to
// /update/root wrote, from its next boot on.
func (t *Target) Switch(ctx context.Context) error {
	_, err := t.post(ctx, "/update/switch")
	return err
}

// Reboot asks the device to stop its services and reboot. With kexec
// false it reboots through the firmware and boot loader (as after a power
// cycle) rather than loading the new kernel directly. A connection the
// device drops while rebooting counts as success.
func (t *Target) Reboot(ctx context.Context, kexec bool) error {
	path := "/reboot?wait_per_signal=10s"
	if !kexec {
		path += "&kexec=off"
	}
	_, err := t.post(ctx, path)
	if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "connection reset")) {
		return nil
	}
	return err
}

// Status is what the device's status page reports, in part.
type Status struct {
	Hostname       string
	Model          string
	Kernel         string // e.g. "Linux 6.12.47-v8 (aarch64)"
	BuildTimestamp string
	SBOMHash       string
}

// GOARCH returns the architecture of the device's kernel, or "".
func (s *Status) GOARCH() string {
	switch {
	case strings.Contains(s.Kernel, "(x86_64)"):
		return "amd64"
	case strings.Contains(s.Kernel, "(aarch64)"):
		return "arm64"
	case strings.Contains(s.Kernel, "(armv"):
		return "arm"
	}
	return ""
}

// Status reads the device's status.
func (t *Target) Status(ctx context.Context) (*Status, error) {
	req, err := t.request(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	code, body, err := t.do(req, 4<<20)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /: HTTP %d: %s", code, bytes.TrimSpace(body))
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("GET /: %w", err)
	}
	return &st, nil
}

// Image is what an update sends, with what identifies the build.
type Image struct {
	// Root, Boot and MBR are the contents of the root file system, the
	// boot file system and the disk's first 446 bytes.
	Root, Boot, MBR io.Reader
	// RootSize and BootSize are their lengths, for progress reports.
	RootSize, BootSize int64
	// Board, GOARCH and Hostname are what the image was built for.
	Board, GOARCH, Hostname string
	// BoardModels are the device model prefixes of the board, if any.
	BoardModels []string
	// BuildTimestamp is the build time the new build's status will report.
	BuildTimestamp string
	// Version is pen's version in the image: the version the device
	// runs once it reports BuildTimestamp.
	Version string
}

// Options control Update.
type Options struct {
	// Progress receives the steps and upload progress; nil discards.
	Progress io.Writer
	// Kexec reboots by kexec instead of through the firmware.
	Kexec bool
	// Timeout bounds the wait for the device to come back; 5 minutes
	// when zero.
	Timeout time.Duration
	// Watch is how long to keep watching the new build once it answers,
	// for a rollback by the appliance's trial boot; 0 does not watch.
	Watch time.Duration
	// Poll is the interval between status requests; 1 s when zero.
	Poll time.Duration
	// NewMeter returns a progress meter for an upload; nil reports
	// nothing per byte.
	NewMeter func(label string, total int64) Meter
}

// Meter receives the bytes of an upload as they are sent.
type Meter interface {
	io.Writer
	Done(note string, err error)
}

// Result is the outcome of an update.
type Result struct {
	// Before and After are the device's status before the update and
	// once it answered again.
	Before, After *Status
	// Version is pen's version the device runs after the update: the
	// image's when it came back with the new build, "" otherwise (the
	// device does not report pen's version).
	Version string
	// Uploaded is the time taken by the uploads, Rebooted the time from
	// the reboot request to the end of the wait (Options.Watch included).
	Uploaded, Rebooted time.Duration
}

// ErrRolledBack is returned when the device came back on the old build.
var ErrRolledBack = errors.New("the appliance came back on the old build (rolled back)")

// CheckImage refuses an image not built for the device: another
// architecture, another board, or another hostname (whose partition GUIDs
// would not match the device's disk).
func CheckImage(st *Status, img *Image) error {
	if st.Hostname != img.Hostname {
		return fmt.Errorf("the appliance is called %q, the image was built for %q: the partition GUIDs derive from the hostname, so build with -hostname %s", st.Hostname, img.Hostname, st.Hostname)
	}
	if a := st.GOARCH(); a != "" && img.GOARCH != "" && a != img.GOARCH {
		return fmt.Errorf("the appliance runs an %s kernel (%s), the image is for board %s (%s)", a, st.Kernel, img.Board, img.GOARCH)
	}
	if len(img.BoardModels) > 0 {
		ok := false
		for _, m := range img.BoardModels {
			ok = ok || strings.HasPrefix(st.Model, m)
		}
		if !ok {
			return fmt.Errorf("the appliance is a %q, not a board %s", st.Model, img.Board)
		}
	}
	return nil
}

// Update pushes img to the device: root, boot, MBR boot code (skipped if
// the device has no handler for it), then switch and reboot, and waits
// until the device answers again. It never switches after a failed upload.
// It returns ErrRolledBack (with the Result) when the device came back on
// its old build.
func Update(ctx context.Context, t *Target, img *Image, opts Options) (*Result, error) {
	out := opts.Progress
	if out == nil {
		out = io.Discard
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.Poll == 0 {
		opts.Poll = time.Second
	}
	res := &Result{}
	before, err := t.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the appliance's status: %w", err)
	}
	res.Before = before
	if err := CheckImage(before, img); err != nil {
		return nil, err
	}
	if !t.Supports(FeaturePARTUUID) || !t.Supports(FeatureGPT) {
		return nil, fmt.Errorf("the appliance announces features %v; an image of ours needs partuuid and gpt (it boots root=PARTUUID=GUID/PARTNROFF=n)", t.Features())
	}
	if before.BuildTimestamp == img.BuildTimestamp {
		return nil, fmt.Errorf("the appliance already runs this build (%s)", img.BuildTimestamp)
	}
	fmt.Fprintf(out, "appliance %s at %s: %s, %s, build %s\n", before.Hostname, t, before.Model, before.Kernel, before.BuildTimestamp)

	started := time.Now()
	upload := func(dest string, r io.Reader, size int64) error {
		var m Meter
		if opts.NewMeter != nil {
			m = opts.NewMeter("uploading "+dest, size)
			r = io.TeeReader(r, m)
		}
		err := t.StreamTo(ctx, dest, r)
		if m != nil {
			m.Done("verified", err)
		}
		return err
	}
	if err := upload("root", img.Root, img.RootSize); err != nil {
		return nil, fmt.Errorf("%w (nothing was switched: the appliance still boots its old build)", err)
	}
	if err := upload("boot", img.Boot, img.BootSize); err != nil {
		return nil, fmt.Errorf("%w (nothing was switched, but the boot partition may be incomplete: update again before rebooting)", err)
	}
	if err := upload("mbr", img.MBR, 446); errors.Is(err, ErrNotImplemented) {
		fmt.Fprintln(out, "the appliance has no /update/mbr; its boot code stays as it is")
	} else if err != nil {
		return nil, fmt.Errorf("%w (nothing was switched)", err)
	}
	res.Uploaded = time.Since(started)
	if err := t.Switch(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintln(out, "switched to the new root partition; rebooting")
	rebooted := time.Now()
	if err := t.Reboot(ctx, opts.Kexec); err != nil {
		// The switch is done: the next boot, whatever causes it, runs
		// the new build. Wait for it all the same.
		fmt.Fprintf(out, "the reboot request failed (%v); waiting for the appliance anyway\n", err)
	}
	after, err := wait(ctx, t, before.BuildTimestamp, img.BuildTimestamp, opts, out)
	res.Rebooted = time.Since(rebooted)
	res.After = after
	if after != nil && after.BuildTimestamp == img.BuildTimestamp {
		res.Version = img.Version
	}
	if err != nil {
		return res, err
	}
	return res, nil
}

// wait polls the device's status until it answers with the new build
// (and, with opts.Watch, keeps answering with it for that long) or with
// the old build after having been down.
func wait(ctx context.Context, t *Target, oldTS, newTS string, opts Options, out io.Writer) (*Status, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	var (
		wentDown bool
		upSince  time.Time // the new build answered since
		last     *Status
		lastErr  error
	)
	tick := time.NewTicker(opts.Poll)
	defer tick.Stop()
	start := time.Now()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := t.Status(rctx)
		rcancel()
		switch {
		case errors.Is(err, ErrUnauthorized):
			// gokrazy prefers /perm/gokr-pw.txt to the image's password;
			// the admin UI writes it.
			return nil, fmt.Errorf("the appliance came back but refuses the password: it now takes the one in /perm/gokr-pw.txt (set in the admin UI), which the old build had not loaded yet; check its status with that password: %w", err)
		case err != nil:
			if !wentDown {
				fmt.Fprintf(out, "the appliance is down (%.0fs)\n", time.Since(start).Seconds())
			}
			if !upSince.IsZero() {
				fmt.Fprintf(out, "the new build stopped answering after %.0fs; watching for a rollback\n", time.Since(upSince).Seconds())
				upSince = time.Time{}
			}
			wentDown = true
			lastErr = err
		case st.BuildTimestamp == newTS:
			last = st
			if upSince.IsZero() {
				upSince = time.Now()
				fmt.Fprintf(out, "the appliance answers with the new build %s (%.0fs after the reboot)\n", newTS, time.Since(start).Seconds())
				if opts.Watch > 0 {
					fmt.Fprintf(out, "watching it for %v for a rollback\n", opts.Watch)
				}
			}
			if time.Since(upSince) >= opts.Watch {
				return st, nil
			}
		case st.BuildTimestamp == oldTS && wentDown:
			return st, ErrRolledBack
		case st.BuildTimestamp != oldTS:
			return st, fmt.Errorf("the appliance came back with build %s, neither the old %s nor the new %s", st.BuildTimestamp, oldTS, newTS)
		}
		select {
		case <-ctx.Done():
			if last != nil && ctx.Err() == context.DeadlineExceeded && !upSince.IsZero() {
				return last, nil
			}
			if lastErr == nil {
				lastErr = errors.New("it still answers with the old build and never went down")
			}
			return last, fmt.Errorf("the appliance did not come back with the new build within %v: %v", opts.Timeout, lastErr)
		case <-tick.C:
		}
	}
}
