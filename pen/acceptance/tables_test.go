package acceptance

// The sizes of the client and connection tables, as Pen sets them: the
// first size given before pen serves (-c and -x, or clients_max and
// conn_max in the -F file) is exact, smaller than the default too; after
// that the tables only grow.

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestTableSizes(t *testing.T) {
	begin(t, 90*time.Second)
	for _, how := range []string{"flags", "file"} {
		t.Run(how, func(t *testing.T) {
			b := startEchoBackend(t)
			port := freePort(t, "tcp")
			dir := sharedDir(t)
			args := []string{"-c", "2", "-x", "3"}
			if how == "file" {
				cfg := filepath.Join(dir, "pen.cfg")
				writeFile(t, cfg, "clients_max 2\nconn_max 3\n")
				args = []string{"-F", cfg}
			}
			p := startPen(t, penOpts{Control: true, TCP: port, Dir: dir}, append(args, lst(port), b.spec())...)
			p.expectCtl("clients_max", "2\n")
			p.expectCtl("conn_max", "3\n")

			// Three clients one after the other: the third takes the
			// slot of the first, the one used longest ago.
			for _, ip := range []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"} {
				c, err := dialFrom(ip, lst(port))
				if err != nil {
					t.Fatal(err)
				}
				if got, err := echoOnce(c, "ping"); got != "ping" {
					t.Fatalf("echo from %s: %q (%v)", ip, got, err)
				}
				c.Close()
			}
			want := "127.0.0.13 connects 1 sx 4 rx 4\n127.0.0.12 connects 1 sx 4 rx 4\n"
			var last string
			if !waitFor(3*time.Second, func() bool { last = p.ctl("recent"); return last == want }) {
				t.Errorf("recent with a client table of 2:\n got %q\nwant %q", last, want)
			}

			// Three connections fill the connection table; a fourth is
			// closed at once, and is served once one of them ends.
			var held []net.Conn
			for i := range 3 {
				c, err := net.Dial("tcp", lst(port))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if got, err := echoOnce(c, fmt.Sprint("held", i)); got != fmt.Sprint("held", i) {
					t.Fatalf("held connection %d: %q (%v)", i, got, err)
				}
				held = append(held, c)
			}
			c, err := net.Dial("tcp", lst(port))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := echoOnce(c, "more"); err == nil {
				t.Errorf("a fourth connection with conn_max 3 was served (%q)", got)
			}
			c.Close()
			held[0].Close()
			if !waitFor(3*time.Second, func() bool {
				c, err := net.Dial("tcp", lst(port))
				if err != nil {
					return false
				}
				defer c.Close()
				got, _ := echoOnce(c, "again")
				return got == "again"
			}) {
				t.Error("no connection served after one of the three ended")
			}

			// Once pen serves, the tables only grow.
			p.expectCtl("clients_max 1", "2\n")
			p.expectCtl("conn_max 2", "3\n")
			p.expectCtl("clients_max 4", "4\n")
			p.expectCtl("conn_max 10", "10\n")
		})
	}
}
