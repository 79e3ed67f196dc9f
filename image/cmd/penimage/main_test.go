package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/image"
)

// TestDescribePorts: the ports penimage reports come from the
// configuration the image carries (it used to print "ports 80 and 443"
// whatever the configuration said).
func TestDescribePorts(t *testing.T) {
	for _, c := range []struct{ name, cfg, want string }{
		{"the default configuration", string(image.DefaultConfig),
			"pen: TCP port 80; admin UI: https port 8443 (http port 8080 redirects there)"},
		{"UDP on an address, no admin UI", "udp\nlisten 10.0.0.1:53\nserver 0 address 10.0.0.2 port 53\n",
			"pen: UDP on 10.0.0.1:53"},
		{"later lines win", "listen 80\nadmin_listen 8080\n# listen 443\nno listen\nlisten 8000\nadmin_tls a.pem b.pem\nno admin_tls\n",
			"pen: TCP port 8000; admin UI: http port 8080"},
		{"no listener", "server 0 address 10.0.0.2 port 80\n",
			"pen: no listen address in the configuration (pen will not start)"},
	} {
		if got := describePorts([]byte(c.cfg)); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// TestHelpAndVersion runs the built penimage: --help prints the usage on
// standard output and exits 0, --version prints the version.
func TestHelpAndVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "penimage")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range []struct{ arg, want string }{
		{"--help", "usage: penimage build -board"},
		{"--version", "penimage "},
	} {
		cmd := exec.Command(bin, c.arg)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || !strings.HasPrefix(string(out), c.want) || stderr.Len() != 0 {
			t.Errorf("penimage %s: %v, stdout %q, stderr %q; want exit 0 and stdout starting %q", c.arg, err, out, stderr.String(), c.want)
		}
	}
	if err := exec.Command(bin, "--bogus").Run(); err == nil {
		t.Errorf("penimage --bogus exited 0")
	}
}

// TestCommandErrors runs the built penimage: update and flash without
// their required flags print their usage and exit 2; an unreachable
// appliance and a target that is no block device or file are refused
// with exit 1 and a message that says so, before anything is built.
func TestCommandErrors(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "penimage")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"update"}, 2, "usage: penimage update -target"},
		{[]string{"update", "-target", "http://127.0.0.1:9"}, 2, "usage: penimage update"},
		{[]string{"update", "-target", "http://127.0.0.1:9", "-board", "pc"}, 1, "penimage: contacting the appliance: "},
		{[]string{"update", "-target", "ftp://x", "-board", "pc"}, 1, "want http://HOST:PORT"},
		{[]string{"flash", "-o", "x.img"}, 2, "usage: penimage flash"},
		{[]string{"flash", "-board", "pc", "-image", "a.img", "-o", "x.img"}, 2, "usage: penimage flash"},
		{[]string{"flash", "-board", "pc", "-o", "/dev/null"}, 1, "/dev/null is neither a block device nor a regular file"},
	} {
		cmd := exec.Command(bin, c.args...)
		cmd.Env = append(cmd.Environ(), "PENIMAGE_PASSWORD=x")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("penimage %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, stderr.String(), c.code, c.want)
		}
	}
}
