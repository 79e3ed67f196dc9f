package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// lineServer answers every line it reads with name, ":" and the line.
func lineServer(t *testing.T, name string) int {
	t.Helper()
	return port(tcpServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, name+":"+line); err != nil {
				return
			}
		}
	}))
}

// reconfigure applies command lines to a harness as the engine does: the
// interpreter's new configuration goes to the balancer, and the settings
// to the loop (without a new listener).
func (h *harness) reconfigure(lines ...string) {
	h.t.Helper()
	for _, l := range lines {
		if _, err := h.in.Exec(l, config.FromControl); err != nil {
			h.t.Errorf("%q: %v", l, err)
		}
	}
	h.tb.Configure(h.in.Config())
	s := h.settings
	if err := h.loop.Configure(s, nil, 0); err != nil {
		h.t.Errorf("configure loop: %v", err)
	}
}

// TestReconfigureUnderTraffic changes servers, weights, modes, ACLs,
// blacklists and the loop's settings, reads the tables and reopens the
// request log while TCP, TLS and UDP clients talk through real loops, and
// closes TLS connections while they move data.
// Every request must be answered: every server a client can reach keeps
// running. Run under -race, it also proves that the data path and the
// configuration share no state without a rule for it.
func TestReconfigureUnderTraffic(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "requests.log")
	reqlog, err := OpenRequestLog(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer reqlog.Close()

	tcpPorts := []int{lineServer(t, "A"), lineServer(t, "B"), lineServer(t, "C")}
	udpPorts := []int{udpPort(udpServer(t, "A")), udpPort(udpServer(t, "B")), udpPort(udpServer(t, "C"))}
	servers := func(ports []int) []string {
		var out []string
		for i, p := range ports[:2] {
			out = append(out, fmt.Sprintf("server %d address 127.0.0.1 port %d", i, p))
		}
		return out
	}
	cfg := testTLSConfig(t)
	plain := start(t, "127.0.0.1:0", func(s *Settings) { s.Log = reqlog }, servers(tcpPorts)...)
	secure := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = cfg; s.Log = reqlog }, servers(tcpPorts)...)
	// With udp_kernel (as root), the kernel carries the UDP flows
	// between the changes.
	udp := start(t, "127.0.0.1:0", func(s *Settings) { s.UDPKernel = true }, append([]string{"udp"}, servers(udpPorts)...)...)
	victims := start(t, "127.0.0.1:0", func(s *Settings) { s.TLS = cfg }, servers(tcpPorts)...)

	deadline := time.Now().Add(60 * time.Second)
	var wg sync.WaitGroup
	var answered atomic.Int64
	const clients, conns, rounds = 3, 6, 40

	talk := func(name string, dial func() (net.Conn, error)) {
		defer wg.Done()
		for k := 0; k < conns; k++ {
			c, err := dial()
			if err != nil {
				t.Errorf("%s: connection %d: %v", name, k, err)
				return
			}
			c.SetDeadline(deadline)
			r := bufio.NewReader(c)
			for j := 0; j < rounds; j++ {
				req := fmt.Sprintf("%s conn %d request %d\n", name, k, j)
				if _, err := io.WriteString(c, req); err != nil {
					t.Errorf("%s: write: %v", name, err)
					c.Close()
					return
				}
				got, err := r.ReadString('\n')
				if err != nil || !strings.HasSuffix(got, ":"+req) {
					t.Errorf("%s: %q answered %q, %v", name, req, got, err)
					c.Close()
					return
				}
				answered.Add(1)
			}
			c.Close()
		}
	}
	for i := 0; i < clients; i++ {
		wg.Add(3)
		go talk(fmt.Sprintf("tcp%d", i), func() (net.Conn, error) { return net.Dial("tcp", plain.addr) })
		go talk(fmt.Sprintf("tls%d", i), func() (net.Conn, error) {
			return tls.DialWithDialer(&net.Dialer{Deadline: deadline}, "tcp", secure.addr, &tls.Config{InsecureSkipVerify: true})
		})
		go func(i int) {
			defer wg.Done()
			for k := 0; k < conns; k++ {
				c, err := net.Dial("udp", udp.addr)
				if err != nil {
					t.Error(err)
					return
				}
				for j := 0; j < rounds; j++ {
					msg := fmt.Sprintf("udp%d flow %d query %d", i, k, j)
					// A datagram may be lost on a busy machine; ask again.
					got := ""
					for try := 0; try < 5 && !strings.HasSuffix(got, ":"+msg); try++ {
						got = udpAsk(t, c.(*net.UDPConn), msg)
					}
					if !strings.HasSuffix(got, ":"+msg) {
						t.Errorf("udp%d: %q answered %q", i, msg, got)
						c.Close()
						return
					}
					answered.Add(1)
				}
				c.Close()
			}
		}(i)
	}

	// TLS connections that move data while the close command ends them.
	stop := make(chan struct{})
	var victimsDone sync.WaitGroup
	victimsDone.Add(1)
	go func() {
		defer victimsDone.Done()
		chunk := make([]byte, 16<<10)
		for n := 0; n < 200; n++ {
			select {
			case <-stop:
				return
			default:
			}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", victims.addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				continue // closed during the handshake
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			go io.Copy(io.Discard, c)
			for i := 0; i < 64; i++ {
				if _, err := c.Write(chunk); err != nil {
					break
				}
			}
			c.Close()
		}
	}()

	clientsDone := make(chan struct{})
	go func() { wg.Wait(); close(clientsDone) }()
	changes, closed := 0, 0
	cPort := map[*harness]int{plain: tcpPorts[2], secure: tcpPorts[2], udp: udpPorts[2]}
	for running := true; running && changes < 400; changes++ {
		select {
		case <-clientsDone:
			running = false
		case <-time.After(2 * time.Millisecond):
		}
		for _, h := range []*harness{plain, secure, udp} {
			switch changes % 8 {
			case 0:
				h.reconfigure(fmt.Sprintf("server 2 address 127.0.0.1 port %d weight 3", cPort[h]))
			case 1:
				h.reconfigure("weight", fmt.Sprintf("server 1 weight %d", changes%5+1))
			case 2:
				h.reconfigure("acl 1 permit 127.0.0.1", "server 0 acl 1", "no weight", "roundrobin")
			case 3:
				h.tb.Blacklist(2, time.Minute)
				h.reconfigure("no roundrobin", "hash")
			case 4:
				h.reconfigure("no server 2", "no hash")
			case 5:
				h.reconfigure("no acl 1", "server 0 acl 0", "prio", fmt.Sprintf("server 1 prio %d", changes%3))
			case 6:
				h.tb.Blacklist(1, 0)
				h.settings.IdleTimeout = time.Duration(changes%2) * time.Hour
				h.reconfigure("no prio")
			case 7:
				h.loop.Conns()
				h.loop.SocketConn(changes)
				h.loop.Idlers()
				h.tb.ServerStates()
				h.tb.ClientStates()
				if err := reqlog.Reopen(); err != nil { // SIGHUP
					t.Error(err)
				}
			}
		}
		// close N on every TLS connection, and the connection table.
		for _, st := range victims.loop.Conns().Conns {
			victims.loop.Conn(st.Slot)
			victims.loop.CloseConn(st.Slot)
			closed++
		}
		victims.reconfigure(fmt.Sprintf("server 1 weight %d", changes%4+1))
	}
	<-clientsDone
	close(stop)
	victimsDone.Wait()
	if want := int64(3 * clients * conns * rounds); answered.Load() != want {
		t.Errorf("%d requests answered, want %d", answered.Load(), want)
	}
	reqlog.Flush()
	logged, _ := os.ReadFile(logPath)
	for _, l := range strings.Split(strings.TrimSpace(string(logged)), "\n") {
		// client time server request: every server is a real one.
		if f := strings.Fields(l); len(f) < 4 || f[0] != "127.0.0.1" || f[2] != "127.0.0.1" {
			t.Errorf("request log line %q", l)
			break
		}
	}
	if changes < 8 || closed == 0 {
		t.Errorf("only %d configuration changes and %d closed TLS connections during the traffic", changes, closed)
	}
	t.Logf("%d requests answered during %d configuration changes; %d TLS connections closed while busy", answered.Load(), changes, closed)
}

func udpPort(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }
