package update

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

var fastOptions = Options{Poll: 20 * time.Millisecond, Timeout: 10 * time.Second}

// rebootInto makes the fake device go down shortly after /reboot and come
// back with build and version.
func rebootInto(build string) func(d *fakeDevice) {
	return func(d *fakeDevice) {
		go func() {
			time.Sleep(30 * time.Millisecond)
			d.down.Store(true)
			time.Sleep(100 * time.Millisecond)
			d.mu.Lock()
			d.build = build
			d.mu.Unlock()
			d.down.Store(false)
		}()
	}
}

func newTarget(t *testing.T, d *fakeDevice) *Target {
	t.Helper()
	tg, err := NewTarget(context.Background(), d.srv.URL, fakePassword, trackedClient(t))
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// TestUpdate: the sequence of gok update (root, boot, mbr, switch,
// reboot), each upload verified by CRC-32, then the status polled until
// the new build answers; the versions before and after are reported.
func TestUpdate(t *testing.T) {
	d := newFakeDevice(t)
	img := testImage()
	d.onReboot = rebootInto(img.BuildTimestamp)
	tg := newTarget(t, d)
	if !tg.Supports(FeatureUpdateHash) || !tg.Supports(FeatureGPT) || !tg.Supports(FeaturePARTUUID) {
		t.Fatalf("features %v", tg.Features())
	}
	root, boot, mbr := readAll(img.Root), readAll(img.Boot), readAll(img.MBR)
	img.Root, img.Boot, img.MBR = bytes.NewReader(root), bytes.NewReader(boot), bytes.NewReader(mbr)
	var out bytes.Buffer
	opts := fastOptions
	opts.Progress = &out
	res, err := Update(context.Background(), tg, img, opts)
	if err != nil {
		t.Fatalf("Update: %v\n%s", err, out.String())
	}
	if res.Version != "v2" || res.Before.BuildTimestamp != "2026-01-01T00:00:00Z" || res.After.BuildTimestamp != img.BuildTimestamp {
		t.Errorf("result %+v, after %+v", res, res.After)
	}
	for dest, want := range map[string][]byte{"root": root, "boot": boot, "mbr": mbr} {
		if !bytes.Equal(d.written[dest], want) {
			t.Errorf("the device received %d bytes for %s, want %d", len(d.written[dest]), dest, len(want))
		}
	}
	var updates []string
	for _, r := range d.requests() {
		if strings.HasPrefix(r, "PUT ") || strings.HasPrefix(r, "POST ") {
			updates = append(updates, r)
		}
	}
	want := []string{"PUT /update/root", "PUT /update/boot", "PUT /update/mbr", "POST /update/switch", "POST /reboot"}
	if strings.Join(updates, ",") != strings.Join(want, ",") {
		t.Errorf("requests %q, want %q", updates, want)
	}
	if !strings.Contains(out.String(), "answers with the new build") {
		t.Errorf("progress:\n%s", out.String())
	}
}

func readAll(r io.Reader) []byte {
	b, _ := io.ReadAll(r)
	return b
}

// TestHashMismatchNeverSwitches: a digest that differs from the client's,
// for any of the uploads, stops the update before /update/switch.
func TestHashMismatchNeverSwitches(t *testing.T) {
	for _, dest := range []string{"root", "boot", "mbr"} {
		t.Run(dest, func(t *testing.T) {
			d := newFakeDevice(t)
			d.corrupt = dest
			tg := newTarget(t, d)
			_, err := Update(context.Background(), tg, testImage(), fastOptions)
			if !errors.Is(err, ErrHashMismatch) {
				t.Fatalf("Update: %v, want ErrHashMismatch", err)
			}
			if d.switched {
				t.Errorf("the device was switched after a mismatched upload")
			}
			for _, r := range d.requests() {
				if strings.HasPrefix(r, "POST") {
					t.Errorf("request %q after a mismatch", r)
				}
			}
		})
	}
}

// TestSHA256WithoutUpdateHash: a device that does not announce
// "updatehash" gets no X-Gokrazy-Update-Hash header and is checked by
// SHA-256, as gokrazy's runtime then replies.
func TestSHA256WithoutUpdateHash(t *testing.T) {
	d := newFakeDevice(t)
	d.features = "partuuid,gpt,"
	tg := newTarget(t, d)
	if tg.Supports(FeatureUpdateHash) {
		t.Fatal("updatehash announced")
	}
	if err := tg.StreamTo(context.Background(), "root", strings.NewReader("abc")); err != nil {
		t.Fatalf("StreamTo with SHA-256: %v", err)
	}
	d.corrupt = "root"
	if err := tg.StreamTo(context.Background(), "root", strings.NewReader("abc")); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("StreamTo with a wrong SHA-256: %v", err)
	}
}

// TestNotImplemented: a device without /update/mbr is updated anyway (as
// gok does); one whose boot handler is missing (404 or the status page
// served instead) is not switched.
func TestNotImplemented(t *testing.T) {
	t.Run("mbr", func(t *testing.T) {
		d := newFakeDevice(t)
		img := testImage()
		d.missing["mbr"] = "404"
		d.onReboot = rebootInto(img.BuildTimestamp)
		var out bytes.Buffer
		opts := fastOptions
		opts.Progress = &out
		if _, err := Update(context.Background(), newTarget(t, d), img, opts); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if !d.switched || !strings.Contains(out.String(), "no /update/mbr") {
			t.Errorf("switched %v, progress:\n%s", d.switched, out.String())
		}
	})
	for _, how := range []string{"404", "doctype"} {
		t.Run("boot-"+how, func(t *testing.T) {
			d := newFakeDevice(t)
			d.missing["boot"] = how
			_, err := Update(context.Background(), newTarget(t, d), testImage(), fastOptions)
			if !errors.Is(err, ErrNotImplemented) || d.switched {
				t.Errorf("Update: %v, switched %v; want ErrNotImplemented, not switched", err, d.switched)
			}
		})
	}
}

// TestFeatures: an old device without /update/features has no features;
// an image of ours (GPT) is refused for it before anything is uploaded.
func TestFeatures(t *testing.T) {
	d := newFakeDevice(t)
	d.noFeat = true
	tg := newTarget(t, d)
	if len(tg.Features()) != 0 {
		t.Errorf("features %v", tg.Features())
	}
	_, err := Update(context.Background(), tg, testImage(), fastOptions)
	if err == nil || !strings.Contains(err.Error(), "needs partuuid and gpt") {
		t.Errorf("Update: %v", err)
	}
	if len(d.written) != 0 {
		t.Errorf("uploaded %d parts", len(d.written))
	}
}

// TestRefusals: another hostname, architecture or board, the build the
// device already runs, and a wrong password are refused before any upload,
// with messages that say what to do.
func TestRefusals(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(d *fakeDevice, img *Image)
		want  string
	}{
		{"hostname", func(d *fakeDevice, img *Image) { d.hostname = "lb1" }, "build with -hostname lb1"},
		{"architecture", func(d *fakeDevice, img *Image) { d.kernel = "Linux 6.12.47-v8 (aarch64)" }, "runs an arm64 kernel"},
		{"board", func(d *fakeDevice, img *Image) {
			d.kernel = "Linux 6.12.47-v8 (aarch64)"
			d.model = "QEMU KVM Virtual Machine"
			img.Board, img.GOARCH, img.BoardModels = "rpi", "arm64", []string{"Raspberry Pi"}
		}, "not a board rpi"},
		{"same build", func(d *fakeDevice, img *Image) { d.build = img.BuildTimestamp }, "already runs this build"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newFakeDevice(t)
			img := testImage()
			c.setup(d, img)
			_, err := Update(context.Background(), newTarget(t, d), img, fastOptions)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Update: %v; want an error saying %q", err, c.want)
			}
			if len(d.written) != 0 || d.switched {
				t.Errorf("uploaded %d parts, switched %v", len(d.written), d.switched)
			}
		})
	}
	d := newFakeDevice(t)
	_, err := NewTarget(context.Background(), d.srv.URL, "wrong", trackedClient(t))
	if err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Errorf("NewTarget with a wrong password: %v", err)
	}
	// The password may come with the URL, as in gok's base URL.
	u := strings.Replace(d.srv.URL, "http://", "http://gokrazy:"+fakePassword+"@", 1)
	if _, err := NewTarget(context.Background(), u, "", trackedClient(t)); err != nil {
		t.Errorf("NewTarget with the password in the URL: %v", err)
	}
}

// TestRollback: the device comes back on the old build, either at once
// or after the new build answered for a while (the appliance's trial boot
// failed): Update says so with ErrRolledBack.
func TestRollback(t *testing.T) {
	t.Run("at once", func(t *testing.T) {
		d := newFakeDevice(t)
		d.onReboot = rebootInto(d.build)
		res, err := Update(context.Background(), newTarget(t, d), testImage(), fastOptions)
		if !errors.Is(err, ErrRolledBack) || res == nil || res.Version != "" || res.After.BuildTimestamp != res.Before.BuildTimestamp {
			t.Fatalf("Update: %v, %+v; want ErrRolledBack and the old build", err, res)
		}
	})
	t.Run("during the trial", func(t *testing.T) {
		d := newFakeDevice(t)
		img := testImage()
		old := d.build
		d.onReboot = func(d *fakeDevice) {
			rebootInto(img.BuildTimestamp)(d)
			go func() {
				time.Sleep(400 * time.Millisecond)
				d.down.Store(true)
				time.Sleep(100 * time.Millisecond)
				d.mu.Lock()
				d.build = old
				d.mu.Unlock()
				d.down.Store(false)
			}()
		}
		opts := fastOptions
		opts.Watch = 2 * time.Second
		var out bytes.Buffer
		opts.Progress = &out
		_, err := Update(context.Background(), newTarget(t, d), img, opts)
		if !errors.Is(err, ErrRolledBack) {
			t.Fatalf("Update: %v; want ErrRolledBack\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "stopped answering") {
			t.Errorf("progress:\n%s", out.String())
		}
	})
	t.Run("another password", func(t *testing.T) {
		d := newFakeDevice(t)
		img := testImage()
		d.onReboot = func(d *fakeDevice) {
			rebootInto(img.BuildTimestamp)(d)
			go func() {
				time.Sleep(50 * time.Millisecond)
				d.mu.Lock()
				d.password = "set-in-the-admin-ui"
				d.mu.Unlock()
			}()
		}
		_, err := Update(context.Background(), newTarget(t, d), img, fastOptions)
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "/perm/gokr-pw.txt") {
			t.Fatalf("Update: %v; want ErrUnauthorized naming /perm/gokr-pw.txt", err)
		}
	})
	t.Run("never comes back", func(t *testing.T) {
		d := newFakeDevice(t)
		d.onReboot = func(d *fakeDevice) { d.down.Store(true) }
		opts := fastOptions
		opts.Timeout = 300 * time.Millisecond
		_, err := Update(context.Background(), newTarget(t, d), testImage(), opts)
		if err == nil || !strings.Contains(err.Error(), "did not come back") {
			t.Fatalf("Update: %v", err)
		}
	})
}
