// Package demo runs pen on 127.0.0.1:8080 in front of two small demo web
// servers it starts itself, for trying pen out (make run).
package demo

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/pen-lb/pen-appliance/pen/daemon"
)

// Backend is a demo web server that says who it is and what it was sent.
type Backend struct {
	Name string
	ln   net.Listener
	hits atomic.Int64
}

// StartBackend serves on addr ("127.0.0.1:0" for any port).
func StartBackend(name, addr string) (*Backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo backend %s: %w", name, err)
	}
	b := &Backend{Name: name, ln: ln}
	go http.Serve(ln, b)
	return b, nil
}

// Addr is the backend's address.
func (b *Backend) Addr() string { return b.ln.Addr().String() }

// Close stops the backend.
func (b *Backend) Close() error { return b.ln.Close() }

func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := b.hits.Add(1)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Hello from %s (request %d).\n\n", b.Name, n)
	fmt.Fprintf(w, "You reached me through pen from %s.\n", r.RemoteAddr)
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto"} {
		if v := r.Header.Get(h); v != "" {
			fmt.Fprintf(w, "%s: %s\n", h, v)
		}
	}
	fmt.Fprintf(w, "\nReload: pen keeps you on the same backend (client tracking).\n")
	fmt.Fprintf(w, "Try: curl --interface 127.0.0.2 http://127.0.0.1:8080/   (another client address)\n")
}

// Run starts the backends and pen and serves until pen stops. extra are
// further pen arguments (placed before the listen address).
func Run(listen string, backendAddrs []string, extra []string, out io.Writer) int {
	var servers []string
	for i, a := range backendAddrs {
		b, err := StartBackend(fmt.Sprintf("backend %d", i+1), a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer b.Close()
		servers = append(servers, b.Addr())
	}
	args := append([]string{"-f", "-H"}, extra...)
	args = append(args, listen)
	args = append(args, servers...)
	d := daemon.New()
	d.AfterStart(func(*daemon.Daemon) error {
		fmt.Fprintf(out, "pen is serving on http://%s/ in front of %s\n", listen, strings.Join(servers, " and "))
		fmt.Fprintf(out, "  open it in a browser, or: curl http://%s/\n", listen)
		fmt.Fprintf(out, "  the same as: pen %s\n", strings.Join(args, " "))
		fmt.Fprintf(out, "  stop with Ctrl-C\n")
		return nil
	})
	return d.Main(args)
}
