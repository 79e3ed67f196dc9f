package webui

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// TestAnswersDuringChange holds the interpreter inside a change (as a
// large upload does for seconds) and asks /healthz, /metrics and the
// login page meanwhile: they answer at once, from the configuration
// before the change.
func TestAnswersDuringChange(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	h.exec("admin_acl 1") // the admin_acl check runs for every request
	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h.in.AddOnChange(func(*config.Config, config.Origin) {
		// Runs with the interpreter's lock held.
		once.Do(func() {
			close(inside)
			<-release
		})
	})
	done := make(chan error, 1)
	go func() {
		_, err := h.in.Exec("blacklist 17", config.FromControl)
		done <- err
	}()
	<-inside
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	c := &http.Client{Timeout: 3 * time.Second}
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/metrics": `pen_server_up{address="127.0.0.1:9",server="0"} 1`,
		"/login":   `name="password"`,
	} {
		start := time.Now()
		r, err := c.Get(h.ts.URL + path)
		if err != nil {
			t.Errorf("GET %s while a change is applied: %v", path, err)
			continue
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s while a change is applied: HTTP %d, want 200 with %q", path, r.StatusCode, want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("GET %s took %v", path, d)
		}
	}
	close(release)
	released = true
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := h.s.snap.Config().Blacklist; got != 17 {
		t.Errorf("snapshot after the change: blacklist %d", got)
	}
}

// TestLargeConfigUploadsBack: a configuration larger than the old 1 MiB
// upload limit, as write saves it, uploads back; one larger than
// config.MaxConfigSize is refused.
func TestLargeConfigUploadsBack(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	var b strings.Builder
	for n := 1; n <= 3; n++ {
		for i := 0; i < 10000; i++ {
			fmt.Fprintf(&b, "acl %d permit 10.%d.%d.%d\n", n, n, i>>8, i&255)
		}
	}
	if _, err := h.in.ExecLines("big", []byte(b.String()), config.FromControl); err != nil {
		t.Fatal(err)
	}
	h.exec("write")
	data, err := os.ReadFile(filepath.Join(h.dir, "pen.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if len(data) <= 1<<20 {
		t.Fatalf("the written configuration has %d bytes, want more than 1 MiB", len(data))
	}
	h.login()
	before := h.cfgText()
	if r := h.upload("pen.cfg", string(data)); r.code != http.StatusSeeOther {
		t.Fatalf("upload of %d bytes that write saved: HTTP %d\n%.500s", len(data), r.code, r.body)
	}
	if h.cfgText() != before {
		t.Error("uploading the written configuration changed it")
	}
	big := strings.Repeat("# padding\n", config.MaxConfigSize/10+1)
	if r := h.upload("huge.cfg", big); r.code != http.StatusBadRequest || !strings.Contains(r.body, "larger than") {
		t.Errorf("upload of %d bytes: HTTP %d", len(big), r.code)
	}
}

// TestUploadNeedsLoginFirst: without a session the body of an upload is
// not read: the answer comes while the client has sent only part of it.
func TestUploadNeedsLoginFirst(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(h.ts.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "POST /config/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"+
		"Content-Length: %d\r\n\r\n--x\r\n", 20<<20)
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("upload without login: %v (the server waited for the body)", err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized {
		t.Errorf("upload without login: HTTP %d", r.StatusCode)
	}
}
