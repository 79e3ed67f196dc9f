package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// WrkResult is what one wrk run reports.
type WrkResult struct {
	RequestsPerSec float64
	Requests       int64
	Non2xx         int64 // "Non-2xx or 3xx responses"
	SocketErrors   int64 // connect + read + write + timeout
	ErrorText      string
}

var (
	reWrkRPS    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	reWrkTotal  = regexp.MustCompile(`(?m)^\s*([0-9]+) requests in `)
	reWrkNon2xx = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+([0-9]+)`)
	reWrkSocket = regexp.MustCompile(`(?m)^\s*Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
)

// ParseWrk reads the summary wrk prints at the end of a run.
func ParseWrk(out string) (WrkResult, error) {
	var r WrkResult
	m := reWrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no Requests/sec line in the wrk output")
	}
	r.RequestsPerSec, _ = strconv.ParseFloat(m[1], 64)
	if m := reWrkTotal.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	} else {
		return r, errors.New("no \"N requests in\" line in the wrk output")
	}
	if m := reWrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reWrkSocket.FindStringSubmatch(out); m != nil {
		r.ErrorText = strings.TrimSpace(m[0])
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.SocketErrors += n
		}
	}
	return r, nil
}

// Check says whether the run is usable: requests were served and at most
// maxErr (a fraction) of them failed.
func (r WrkResult) Check(maxErr float64) error {
	if r.Requests == 0 {
		return errors.New("no request completed")
	}
	if float64(r.Non2xx) > maxErr*float64(r.Requests) {
		return fmt.Errorf("%d of %d responses were not 2xx or 3xx", r.Non2xx, r.Requests)
	}
	if float64(r.SocketErrors) > maxErr*float64(r.Requests) {
		return fmt.Errorf("%s for %d requests", r.ErrorText, r.Requests)
	}
	return nil
}

// Wrk runs wrk with the same settings for every contender.
type Wrk struct {
	Path     string // wrk binary; "wrk" if empty
	Threads  int
	Conns    int
	Duration time.Duration
	Close    bool     // send "Connection: close": a new connection per request
	Prefix   []string // command to run wrk under, e.g. taskset -c 0
}

// Args returns wrk's arguments for url.
func (w Wrk) Args(url string) []string {
	secs := max(1, int(w.Duration.Round(time.Second)/time.Second))
	args := []string{"-t" + strconv.Itoa(max(1, w.Threads)), "-c" + strconv.Itoa(max(1, w.Conns)),
		"-d" + strconv.Itoa(secs) + "s"}
	if w.Close {
		args = append(args, "-H", "Connection: close")
	}
	return append(args, url)
}

// Run runs wrk against url and returns the parsed result, wrk's output and
// the CPU time wrk itself used.
func (w Wrk) Run(ctx context.Context, url string) (WrkResult, string, time.Duration, error) {
	path := w.Path
	if path == "" {
		path = "wrk"
	}
	argv := append(append(append([]string{}, w.Prefix...), path), w.Args(url)...)
	ctx, cancel := context.WithTimeout(ctx, w.Duration+20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return WrkResult{}, string(out), cpu, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, firstLine(string(out)))
	}
	r, err := ParseWrk(string(out))
	return r, string(out), cpu, err
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// HTTPCheck fetches url once and checks for a 200 answer whose body
// contains want. With closeConn the request asks for the connection to be
// closed, as the runs without keep-alive do.
func HTTPCheck(ctx context.Context, url, want string, closeConn bool) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Close = closeConn
	// The TLS contenders use a certificate made for the run.
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if !strings.Contains(string(body), want) {
		return fmt.Errorf("body %q does not contain %q", firstLine(string(body)), want)
	}
	return nil
}
