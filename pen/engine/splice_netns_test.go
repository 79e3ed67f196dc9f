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

// With kernel_relay, a keep-alive connection from a client on one side
// of pen to a server on the other is spliced after its first requests:
// the rest of its requests and answers pass through the kernel, not
// through pen's sockets, and the server still sees pen's address.
func TestKernelRelaySplicesAcrossHosts(t *testing.T) {
	g := newGateway(t)
	p := startPen(t, g.pen, nil, "-O", "kernel_relay", "198.18.1.1:80", "198.18.2.2:80", "198.18.2.3:80")
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
		if err != nil || len(f) != 2 || f[1] != "198.18.2.1" {
			t.Fatalf("request %d answered %q, %v; want a server's address and pen's", i, body, err)
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
	if got >= 20*len(req) {
		t.Errorf("pen's socket received %d of the %d bytes of requests: not spliced", got, requests*len(req))
	}
	t.Logf("pen's socket received %d of %d bytes", got, requests*len(req))
}
