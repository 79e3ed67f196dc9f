package netnstest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// Nginx runs nginx in h with one HTTP server per listen address (as nginx
// writes them: "198.18.2.2:80", "[2001:db8:2::2]:80"). Every server
// answers any request with "ADDR $remote_addr\n", ADDR being its listen
// address, so the test learns which server it reached and which client
// address that server saw. Nginx returns once every server accepts
// connections from h, and is stopped by TERM when the test ends.
func (h *Host) Nginx(listen ...string) {
	t := h.n.t
	t.Helper()
	bin := testenv.NeedProgram(t, "nginx", "nginx")
	dir := t.TempDir()
	var conf strings.Builder
	fmt.Fprintf(&conf, `daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	keepalive_requests 1000;
`, dir)
	for _, l := range listen {
		fmt.Fprintf(&conf, "\tserver { listen %s; location / { default_type text/plain; return 200 \"%s $remote_addr\\n\"; } }\n", l, l)
	}
	conf.WriteString("}\n")
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(bin, "-c", cf, "-p", dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("nginx: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// TERM to the master, which stops its workers; never kill -9
		// the master alone.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("nginx in %s did not stop within 5 s of TERM", h.Name)
		}
	})
	for _, l := range listen {
		h.WaitTCP(l)
	}
}
