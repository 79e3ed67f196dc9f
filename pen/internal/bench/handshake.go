package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Handshakes is a load generator for TLS handshakes: Conns workers each
// open a connection, complete a full handshake (no session is kept, so
// nothing is resumed), send one HTTP request with Connection: close, read
// the answer to its end and start again, for Duration. wrk cannot do
// this: it resumes the previous session on every new connection.
type Handshakes struct {
	Conns    int
	Duration time.Duration
	Want     string // text every answer must contain
	// Curves are the key exchanges the client offers; nil is Go's
	// default, which puts post-quantum hybrids first.
	Curves []tls.CurveID
}

// HandshakeResult is what one run achieved.
type HandshakeResult struct {
	Done, Errors int64
	Wall         time.Duration
}

// PerSec is the rate of completed requests.
func (r HandshakeResult) PerSec() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Done) / r.Wall.Seconds()
}

// One makes one request over a new TLS connection.
func (h Handshakes) One(ctx context.Context, addr string) error {
	d := &net.Dialer{Timeout: 5 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "pen.bench.test", CurvePreferences: h.Curves})
	if err := c.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: pen.bench.test\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(c, 1<<16))
	if err != nil && len(body) == 0 {
		return err
	}
	if !bytes.HasPrefix(body, []byte("HTTP/1.1 200")) || !bytes.Contains(body, []byte(h.Want)) {
		return fmt.Errorf("answer %q", firstLine(string(body)))
	}
	return nil
}

// Run runs the load for h.Duration.
func (h Handshakes) Run(ctx context.Context, addr string) (HandshakeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, h.Duration)
	defer cancel()
	// The context's own timer may fire late on a busy machine, while a
	// dial already fails for the deadline: past the end, a failure is
	// the run's end, not an error.
	end, _ := ctx.Deadline()
	over := func() bool { return ctx.Err() != nil || !time.Now().Before(end) }
	var done, errs atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for range max(1, h.Conns) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !over() {
				if err := h.One(ctx, addr); err != nil {
					if over() {
						return
					}
					errs.Add(1)
					first.CompareAndSwap(nil, err.Error())
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	r := HandshakeResult{Done: done.Load(), Errors: errs.Load(), Wall: time.Since(t0)}
	if r.Errors > 0 && float64(r.Errors) > 0.01*float64(r.Done+r.Errors) {
		return r, fmt.Errorf("%d of %d requests failed, the first: %v", r.Errors, r.Done+r.Errors, first.Load())
	}
	if r.Done == 0 {
		return r, fmt.Errorf("no request completed")
	}
	return r, nil
}
