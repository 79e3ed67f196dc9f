package appliance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHealth(t *testing.T) {
	dir := t.TempDir()
	proc := filepath.Join(dir, "proc")
	setPID := func(pid int) {
		os.RemoveAll(proc)
		os.MkdirAll(filepath.Join(proc, "1"), 0o755)
		os.Symlink("/gokrazy/init", filepath.Join(proc, "1", "exe"))
		os.MkdirAll(filepath.Join(proc, "self"), 0o755)
		if pid != 0 {
			os.MkdirAll(filepath.Join(proc, fmt.Sprint(pid)), 0o755)
			os.Symlink("/user/pen", filepath.Join(proc, fmt.Sprint(pid), "exe"))
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	status := http.StatusOK
	admin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer admin.Close()
	cfg := filepath.Join(dir, "pen.cfg")
	_, adminPort, _ := net.SplitHostPort(admin.Listener.Addr().String())
	_, listenPort, _ := net.SplitHostPort(ln.Addr().String())
	write := func(s string) { os.WriteFile(cfg, []byte(s), 0o644) }
	write(fmt.Sprintf("# test\nlisten %s\nserver 0 address 10.0.0.1 port 80\nadmin_listen 0.0.0.0:%s\nadmin_tls /perm/pen/c.pem /perm/pen/k.pem\n", listenPort, adminPort))
	h := &Health{Config: cfg, Binary: "/user/pen", ProcDir: proc}
	ctx := context.Background()
	probe := func(want string) {
		t.Helper()
		err := h.Probe(ctx)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("Probe = %v, want %q", err, want)
		}
	}

	setPID(0)
	probe("not running")
	setPID(42)
	probe("watching it") // the first sighting does not count
	probe("")
	probe("")
	setPID(43)
	probe("restarted")
	probe("")
	status = http.StatusServiceUnavailable
	probe("HTTP 503")
	status = http.StatusForbidden // admin_acl refuses loopback
	probe("")
	status = http.StatusOK

	// Without TLS, the HTTPS server does not answer plain HTTP.
	write(fmt.Sprintf("listen %s\nadmin_listen %s\n", listenPort, adminPort))
	probe("/healthz")
	// Only a listener.
	write(fmt.Sprintf("listen 127.0.0.1:%s\n", listenPort))
	probe("")
	ln.Close()
	probe("listener")
	// UDP and DSR have no TCP socket to dial: /healthz decides.
	write(fmt.Sprintf("listen %s\nudp\nadmin_listen %s\nadmin_tls c k\n", listenPort, adminPort))
	probe("")
	write(fmt.Sprintf("listen %s\ndsr_if eth0\n", listenPort))
	probe("")
	write(fmt.Sprintf("listen %s\nudp\nno udp\n", listenPort))
	probe("listener")
	write("server 0 address 10.0.0.1 port 80\n")
	probe("nothing to check")
	os.Remove(cfg)
	probe("configuration")
}

func TestLocalAddr(t *testing.T) {
	for spec, want := range map[string]string{
		"80": "127.0.0.1:80", "0.0.0.0:8443": "127.0.0.1:8443", "[::]:80": "127.0.0.1:80",
		"10.1.2.3:80": "10.1.2.3:80", "[::1]:443": "[::1]:443", ":8080": "127.0.0.1:8080",
	} {
		if got := localAddr(spec, "127.0.0.1"); got != want {
			t.Errorf("localAddr(%q) = %q, want %q", spec, got, want)
		}
	}
}

// TestHealthFollowsServicePID: with services, the trial watches the pen of
// service main that the supervisor reports (PID), not the first pen found
// in /proc, so that another service's pen restarting in a loop neither
// hides main's restarts nor counts against it.
func TestHealthFollowsServicePID(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cfg := filepath.Join(dir, "pen.cfg")
	os.WriteFile(cfg, []byte("listen "+ln.Addr().String()+"\n"), 0o644)
	pid, pidErr := 100, error(nil)
	h := &Health{Config: cfg, Binary: "/user/pen", ProcDir: filepath.Join(dir, "no-proc"),
		PID: func() (int, error) { return pid, pidErr }}
	ctx := context.Background()
	if err := h.Probe(ctx); err == nil || !strings.Contains(err.Error(), "watching it") {
		t.Errorf("first probe: %v", err)
	}
	if err := h.Probe(ctx); err != nil {
		t.Errorf("second probe of the same pen: %v", err)
	}
	pid = 101
	if err := h.Probe(ctx); err == nil || !strings.Contains(err.Error(), "restarted") {
		t.Errorf("after main's pen restarted: %v", err)
	}
	pidErr = fmt.Errorf("service main: pen is not running")
	if err := h.Probe(ctx); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("while main fails: %v", err)
	}
}
