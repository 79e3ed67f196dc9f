package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

const fakePassword = "fake-password"

// fakeDevice is an httptest stand-in for the gokrazy runtime's update API.
type fakeDevice struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	features string // "" with noFeatures: 404
	noFeat   bool
	hostname string
	password string
	model    string
	kernel   string
	build    string            // BuildTimestamp now
	written  map[string][]byte // dest → bytes received
	log      []string          // "METHOD path" of every request
	switched bool
	// corrupt makes the digest of this destination wrong.
	corrupt string
	// missing destinations answer 404 (or the status page with doctype).
	missing map[string]string
	// onReboot is called (locked) when /reboot is posted.
	onReboot func(d *fakeDevice)

	down atomic.Bool // connections are dropped
}

func newFakeDevice(t *testing.T) *fakeDevice {
	d := &fakeDevice{
		t:        t,
		features: "partuuid,updatehash,gpt,",
		hostname: "pen",
		password: fakePassword,
		model:    "QEMU Standard PC (Q35 + ICH9, 2009)",
		kernel:   "Linux 7.1.2 (x86_64)",
		build:    "2026-01-01T00:00:00Z",
		written:  make(map[string][]byte),
		missing:  make(map[string]string),
	}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.srv.Close)
	return d
}

func (d *fakeDevice) serve(w http.ResponseWriter, r *http.Request) {
	if d.down.Load() {
		hj, ok := w.(http.Hijacker)
		if !ok {
			d.t.Error("cannot hijack")
			return
		}
		c, _, _ := hj.Hijack()
		c.Close()
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = append(d.log, r.Method+" "+r.URL.Path)
	if u, p, ok := r.BasicAuth(); !ok || u != "gokrazy" || p != d.password {
		w.Header().Set("WWW-Authenticate", `Basic realm="gokrazy"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/update/") {
		dest := strings.TrimPrefix(r.URL.Path, "/update/")
		if how, ok := d.missing[dest]; ok {
			if how == "doctype" {
				io.WriteString(w, "<!DOCTYPE html>\n<html>status page</html>")
				return
			}
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
	}
	switch r.URL.Path {
	case "/update/features":
		if d.noFeat {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		io.WriteString(w, d.features)
	case "/update/root", "/update/boot", "/update/mbr":
		if r.Method != http.MethodPut {
			http.Error(w, "expected a PUT request", http.StatusBadRequest)
			return
		}
		var h hash.Hash = sha256.New()
		if r.Header.Get("X-Gokrazy-Update-Hash") == "crc32" {
			h = crc32.NewIEEE()
		}
		b, err := io.ReadAll(io.TeeReader(r.Body, h))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		dest := strings.TrimPrefix(r.URL.Path, "/update/")
		d.written[dest] = b
		sum := h.Sum(nil)
		if d.corrupt == dest {
			sum[0] ^= 0xff
		}
		fmt.Fprintf(w, "%x", sum)
	case "/update/switch":
		if r.Method != http.MethodPost {
			http.Error(w, "expected a POST request", http.StatusBadRequest)
			return
		}
		d.switched = true
	case "/reboot":
		if r.Method != http.MethodPost {
			http.Error(w, "expected a POST request", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "All services killed in 1s\nRebooting...\n")
		if d.onReboot != nil {
			d.onReboot(d)
		}
	case "/":
		if !strings.Contains(r.Header.Get("Accept"), "application/json") {
			io.WriteString(w, "<!DOCTYPE html><html>status</html>")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{
			"Hostname": d.hostname, "Model": d.model, "Kernel": d.kernel,
			"BuildTimestamp": d.build, "SBOMHash": "",
		})
	default:
		if strings.HasPrefix(r.URL.Path, "/update/") {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		http.Error(w, "not found", http.StatusNotFound)
	}
}

func (d *fakeDevice) requests() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.log...)
}

// trackingTransport counts response bodies opened and closed.
type trackingTransport struct {
	opened, closed atomic.Int64
}

type trackedBody struct {
	io.ReadCloser
	tr   *trackingTransport
	once sync.Once
}

func (b *trackedBody) Close() error {
	b.once.Do(func() { b.tr.closed.Add(1) })
	return b.ReadCloser.Close()
}

func (tr *trackingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	tr.opened.Add(1)
	resp.Body = &trackedBody{ReadCloser: resp.Body, tr: tr}
	return resp, nil
}

// client returns an HTTP client whose response bodies the test checks are
// all closed when it ends.
func trackedClient(t *testing.T) *http.Client {
	tr := &trackingTransport{}
	t.Cleanup(func() {
		if o, c := tr.opened.Load(), tr.closed.Load(); o != c {
			t.Errorf("%d response bodies opened, %d closed", o, c)
		}
	})
	return &http.Client{Transport: tr}
}

func testImage() *Image {
	root := bytes.Repeat([]byte("root file system "), 100000)
	boot := bytes.Repeat([]byte("boot "), 50000)
	mbr := bytes.Repeat([]byte{0xeb}, 446)
	return &Image{
		Root: bytes.NewReader(root), RootSize: int64(len(root)),
		Boot: bytes.NewReader(boot), BootSize: int64(len(boot)),
		MBR:   bytes.NewReader(mbr),
		Board: "pc", GOARCH: "amd64", Hostname: "pen",
		BuildTimestamp: "2026-02-02T00:00:00Z",
		Version:        "v2",
	}
}
