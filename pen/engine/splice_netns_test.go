package engine

import (
	"bufio"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// By default (kernel_relay splice), and with kernel_relay, a keep-alive
// connection from a client on one side of pen to a server on the other
// is spliced after its first requests: the rest of its requests and
// answers pass through the kernel, not through pen's sockets, and the
// server still sees pen's address. With no kernel_relay every byte goes
// through pen.
func TestKernelRelaySplicesAcrossHosts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []string
		spliced bool
		seen    string // the client address the servers see
	}{
		{"default", nil, true, "198.18.2.1"},
		{"kernel_relay", []string{"-O", "kernel_relay"}, true, "198.18.2.1"},
		{"no-kernel_relay", []string{"-O", "no kernel_relay"}, false, "198.18.2.1"},
		// pen's connection to the server has the client's address, which
		// no interface of pen holds: not spliced.
		{"transparent", []string{"-O", "transparent"}, false, "198.18.1.2"},
	} {
		t.Run(tc.name, func(t *testing.T) { spliceAcrossHosts(t, tc.opts, tc.spliced, tc.seen) })
	}
}

func spliceAcrossHosts(t *testing.T, opts []string, spliced bool, seen string) {
	g := newGateway(t)
	p := startPen(t, g.pen, nil, append(opts, "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")...)
	g.client.WaitTCP("198.18.1.1:80")
	c, err := g.client.Dial("tcp", "198.18.1.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	const requests = 300
	req := "GET / HTTP/1.1\r\nHost: pen\r\n\r\n"
	server := ""
	for i := range requests {
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("request %d: %v; pen's output:\n%s", i, err, p.out)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		f := strings.Fields(string(body))
		if err != nil || len(f) != 2 || f[1] != seen {
			t.Fatalf("request %d answered %q, %v; want a server's address and %s", i, body, err, seen)
		}
		if server == "" {
			server = f[0]
		} else if f[0] != server {
			t.Fatalf("request %d went to %s, the connection's server is %s", i, f[0], server)
		}
		if i == 10 {
			time.Sleep(100 * time.Millisecond) // pen splices at a pause
		}
	}
	// pen's socket toward the client received the first requests only.
	out := g.pen.Run("ss", "-tinH", "state", "established", "( sport = :80 )")
	m := regexp.MustCompile(`bytes_received:(\d+)`).FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		t.Fatalf("pen's connections from the client:\n%s", out)
	}
	got, _ := strconv.Atoi(m[0][1])
	if spliced && got >= 20*len(req) {
		t.Errorf("pen's socket received %d of the %d bytes of requests: not spliced", got, requests*len(req))
	}
	if !spliced && got != requests*len(req) {
		t.Errorf("pen's socket received %d of the %d bytes of requests: it should have read them all", got, requests*len(req))
	}
	t.Logf("pen's socket received %d of %d bytes", got, requests*len(req))
}
