package acceptance

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// A second pen on a port that a pen serves exits with status 1 and says
// why, for TCP and UDP; the first pen keeps serving. (Pen sets
// SO_REUSEPORT, and the second one silently took part of the clients.)
func TestProxySecondPenOnServedPortRefused(t *testing.T) {
	begin(t, 60*time.Second)
	echo := startEchoBackend(t)
	udpEcho := startUDPEchoBackend(t, "dns")
	for _, udp := range []bool{false, true} {
		var opts penOpts
		var args []string
		backend := echo.spec()
		network := "tcp"
		if udp {
			network, backend, args = "udp", udpEcho.spec(), []string{"-U"}
		}
		port := freePort(t, network)
		listen := fmt.Sprintf("127.0.0.1:%d", port)
		if udp {
			opts.UDP = port
		} else {
			opts.TCP = port
		}
		startPen(t, opts, append(args, listen, backend)...)
		second := startPen(t, penOpts{Name: "second pen", NoWait: true}, append(args, listen, backend)...)
		if !second.waitExit(10 * time.Second) {
			t.Fatalf("%s: a second pen on %s is still running", network, listen)
		}
		if code := second.exitCode(); code != 1 {
			t.Errorf("%s: second pen exit status %d, want 1", network, code)
		}
		want := "listen " + listen + ": address already in use (another process serves it)"
		if !strings.Contains(second.output(), want) {
			t.Errorf("%s: second pen said:\n%s\nwant %q", network, second.output(), want)
		}
		// The first pen still answers every client.
		for i := 0; i < 5; i++ {
			c, err := net.DialTimeout(network, listen, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			msg := fmt.Sprintf("hello %d", i)
			var got string
			if udp {
				c.SetDeadline(time.Now().Add(3 * time.Second))
				c.Write([]byte(msg))
				buf := make([]byte, 100)
				n, _ := c.Read(buf)
				got = strings.TrimPrefix(string(buf[:n]), "dns:")
			} else {
				got, err = echoOnce(c, msg)
			}
			c.Close()
			if got != msg {
				t.Errorf("%s: client %d of the first pen got %q, %v", network, i, got, err)
			}
		}
	}
}
