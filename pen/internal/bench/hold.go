package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Holder opens many TCP connections to an echo service (directly or
// through a proxy), checks that each one carries data both ways, and keeps
// them open.
type Holder struct {
	Target string // host:port to dial

	// Sources spreads the connections over this many loopback source
	// addresses (127.0.0.1, 127.0.0.2, ...) so that no single address runs
	// short of ephemeral ports; 0 or 1 lets the kernel choose.
	Sources int

	Parallel int           // dials in flight at once; default 64
	Timeout  time.Duration // per connection, dial plus echo; default 5s
	// Exchanges is how many times each connection sends its line and
	// reads it back before it is held; default 1. pen splices a
	// connection after its second exchange (docs/SPLICE.md).
	Exchanges int
}

// Payload is what connection i sends; each connection sends a different
// line so that crossed wires in a proxy show up as a mismatch.
func Payload(i int) []byte { return fmt.Appendf(nil, "penbench connection %d\n", i) }

// Held is a set of open connections.
type Held struct {
	mu    sync.Mutex
	conns []net.Conn
}

// Len returns the number of open connections.
func (h *Held) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Close closes every connection.
func (h *Held) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
	h.conns = nil
}

func (h *Held) add(c net.Conn) {
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.mu.Unlock()
}

// maxSources is the number of source addresses in 127.0.0.1-127.0.0.254.
const maxSources = 254

// sourceAddr returns the local address for connection i.
func (hd Holder) sourceAddr(i int) net.Addr {
	if hd.Sources <= 1 {
		return nil
	}
	a := netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i%hd.Sources)})
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
}

// Open opens n connections; each sends Payload(i) and reads it back. It
// stops at the first failure, closes what it opened and returns the error.
func (hd Holder) Open(ctx context.Context, n int) (*Held, error) {
	parallel := hd.Parallel
	if parallel <= 0 {
		parallel = 64
	}
	timeout := hd.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if hd.Sources > maxSources {
		return nil, fmt.Errorf("%d source addresses: at most %d", hd.Sources, maxSources)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	held := &Held{}
	var (
		next     atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for w := 0; w < parallel; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := hd.openOne(ctx, i, timeout)
				if err != nil {
					fail(fmt.Errorf("connection %d of %d: %w", i+1, n, err))
					return
				}
				held.add(c)
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		opened := held.Len()
		held.Close()
		return nil, fmt.Errorf("%d of %d connections open: %w", opened, n, firstErr)
	}
	return held, nil
}

// errMismatch says the echo differed from what was sent.
var errMismatch = errors.New("echo differs from what was sent")

func (hd Holder) openOne(ctx context.Context, i int, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: hd.sourceAddr(i)}
	c, err := d.DialContext(ctx, "tcp", hd.Target)
	if err != nil {
		return nil, err
	}
	msg := Payload(i)
	got := make([]byte, len(msg))
	c.SetDeadline(time.Now().Add(timeout))
	for range max(hd.Exchanges, 1) {
		if _, err := c.Write(msg); err != nil {
			c.Close()
			return nil, fmt.Errorf("writing: %w", err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			c.Close()
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("reading the echo: connection closed by the other side")
			}
			return nil, fmt.Errorf("reading the echo: %w", err)
		}
		if !bytes.Equal(got, msg) {
			c.Close()
			return nil, fmt.Errorf("%w: sent %q, got %q", errMismatch, msg, got)
		}
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
