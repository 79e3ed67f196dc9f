package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// BulkServer is a TCP backend that sends Bytes bytes to every client and
// then closes the connection: the far end of a download.
type BulkServer struct {
	Bytes int64
}

// Serve accepts connections on ln until it is closed.
func (s BulkServer) Serve(ln net.Listener) error {
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for left := s.Bytes; left > 0; {
				n := min(left, int64(len(chunk)))
				if _, err := c.Write(chunk[:n]); err != nil {
					return
				}
				left -= n
			}
		}()
	}
}

// Download connects to addr, reads until the server closes, and reports
// the bytes read and how long it took. It fails when fewer than want bytes
// arrive (a proxy that cut the transfer short).
func Download(ctx context.Context, addr string, want int64, timeout time.Duration) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, time.Since(t0), err
		}
	}
	d := time.Since(t0)
	if n < want {
		return n, d, fmt.Errorf("%d bytes of %d arrived", n, want)
	}
	return n, d, nil
}
