package appliance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Health probes pen the way the trial boot judges it: pen runs (the same
// process as at the previous probe, so that a pen restarting in a loop
// never counts as healthy), accepts connections on its listen port, and
// its admin UI's /healthz answers 200 (when the configuration has
// admin_listen; an admin_acl that refuses the loopback address makes
// /healthz answer 403, which counts as answering). The listen port is not
// dialled when pen balances UDP (udp) or by direct server return (dsr_if):
// there is no TCP socket to connect to; /healthz says whether it serves.
type Health struct {
	Config  string // pen's configuration file
	Binary  string // /user/pen
	ProcDir string // /proc
	// Host is where pen's ports are reached, 127.0.0.1 unless a test says
	// otherwise.
	Host string
	// PID, if set, finds pen's process (the supervisor's pen of service
	// main) instead of a search of ProcDir for Binary.
	PID func() (int, error)

	lastPID int
}

// Probe checks pen once.
func (h *Health) Probe(ctx context.Context) error {
	var pid int
	var err error
	if h.PID != nil {
		pid, err = h.PID()
	} else {
		pid, err = findProcess(h.ProcDir, h.Binary)
	}
	if err != nil {
		h.lastPID = 0
		return err
	}
	if pid != h.lastPID {
		first := h.lastPID == 0
		h.lastPID = pid
		if first {
			return fmt.Errorf("pen runs as process %d; watching it", pid)
		}
		return fmt.Errorf("pen restarted (now process %d)", pid)
	}
	ports, err := penPorts(h.Config)
	if err != nil {
		return err
	}
	listen, admin, adminTLS := ports.listen, ports.admin, ports.adminTLS
	host := h.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if listen != "" && !ports.udp && !ports.dsr {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", localAddr(listen, host))
		if err != nil {
			return fmt.Errorf("pen's listener: %w", err)
		}
		c.Close()
	}
	if admin != "" {
		scheme := "http"
		if adminTLS {
			scheme = "https"
		}
		client := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // pen's own, often self-signed, certificate on loopback
			Proxy:           nil,
		}}
		defer client.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, "GET", scheme+"://"+localAddr(admin, host)+"/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("pen's /healthz: %w", err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusForbidden {
			return fmt.Errorf("pen's /healthz: HTTP %d %s", resp.StatusCode, bytes.TrimSpace(body))
		}
	}
	if listen == "" && admin == "" {
		return errors.New("pen's configuration has neither listen nor admin_listen: nothing to check")
	}
	return nil
}

// findProcess returns the process running binary.
func findProcess(procDir, binary string) (int, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join(procDir, e.Name(), "exe"))
		if err == nil && exe == binary {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("pen (%s) is not running", binary)
}

// penConfig is what the health check reads from pen's configuration.
type penConfig struct {
	listen, admin      string
	adminTLS, udp, dsr bool
}

// penPorts reads listen, admin_listen, whether admin_tls is set and
// whether pen balances UDP or by direct server return from pen's
// configuration file (penctl commands, one per line).
func penPorts(path string) (penConfig, error) {
	var c penConfig
	f, err := os.Open(path)
	if err != nil {
		return c, fmt.Errorf("pen's configuration: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		on := true
		if fields[0] == "no" && len(fields) >= 2 {
			on, fields = false, fields[1:]
		}
		switch fields[0] {
		case "listen":
			c.listen = ""
			if on && len(fields) == 2 {
				c.listen = fields[1]
			}
		case "admin_listen":
			c.admin = ""
			if on && len(fields) == 2 {
				c.admin = fields[1]
			}
		case "admin_tls":
			c.adminTLS = on && len(fields) >= 2
		case "udp":
			c.udp = on && (len(fields) == 1 || fields[1] == "on" || fields[1] == "yes" || fields[1] == "1")
		case "dsr_if":
			c.dsr = on && len(fields) >= 2
		}
	}
	return c, sc.Err()
}

// localAddr turns a listen spec (PORT, HOST:PORT, [V6]:PORT) into an
// address to dial: a wildcard or missing host becomes host.
func localAddr(spec, host string) string {
	h, port, err := net.SplitHostPort(spec)
	if err != nil {
		return net.JoinHostPort(host, spec)
	}
	switch h {
	case "", "0.0.0.0", "::", "*":
		h = host
	}
	return net.JoinHostPort(h, port)
}
