// Package progress reports the progress of long transfers: on a terminal a
// line redrawn in place with bytes done, rate and time left; elsewhere
// (logs, pipes, CI) one plain line when a transfer starts and one when it
// ends.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Meter counts the bytes of one transfer. It is an io.Writer, for use
// with io.TeeReader or io.MultiWriter; Write never fails.
type Meter struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	label   string
	total   int64
	n       int64
	start   time.Time
	drawn   time.Time
	every   time.Duration
	started bool
}

// New returns a meter for a transfer of total bytes (0 if unknown),
// reporting to w (nil discards the reports).
func New(w io.Writer, label string, total int64) *Meter {
	if w == nil {
		w = io.Discard
	}
	return &Meter{w: w, tty: IsTerminal(w), label: label, total: total, every: 200 * time.Millisecond}
}

func (m *Meter) begin() {
	if m.started {
		return
	}
	m.started = true
	m.start = time.Now()
	if !m.tty {
		if m.total > 0 {
			fmt.Fprintf(m.w, "%s: %s ...\n", m.label, Bytes(m.total))
		} else {
			fmt.Fprintf(m.w, "%s ...\n", m.label)
		}
	}
}

// Start prints the first report now rather than at the first byte.
func (m *Meter) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.begin()
	if m.tty {
		m.draw()
	}
}

// Write counts len(p) bytes.
func (m *Meter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.begin()
	m.n += int64(len(p))
	if m.tty && time.Since(m.drawn) >= m.every {
		m.draw()
	}
	return len(p), nil
}

// N returns the bytes counted so far.
func (m *Meter) N() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

func (m *Meter) draw() {
	m.drawn = time.Now()
	el := time.Since(m.start)
	rate := float64(m.n) / el.Seconds()
	line := fmt.Sprintf("%s: %s", m.label, Bytes(m.n))
	if m.total > 0 {
		line += fmt.Sprintf(" of %s (%d%%)", Bytes(m.total), m.n*100/m.total)
	}
	if el > 0 && m.n > 0 {
		line += fmt.Sprintf(", %s/s", Bytes(int64(rate)))
		if m.total > m.n && rate > 0 {
			left := time.Duration(float64(m.total-m.n) / rate * float64(time.Second))
			line += fmt.Sprintf(", %s left", left.Round(time.Second))
		}
	}
	fmt.Fprintf(m.w, "\r\033[K%s", line)
}

// Done ends the report with a line saying how much was transferred, how
// fast, and note (e.g. "verified"), or the error when err is not nil.
func (m *Meter) Done(note string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.begin()
	el := time.Since(m.start)
	if m.tty {
		fmt.Fprint(m.w, "\r\033[K")
	}
	if err != nil {
		fmt.Fprintf(m.w, "%s: failed after %s: %v\n", m.label, Bytes(m.n), err)
		return
	}
	line := fmt.Sprintf("%s: %s in %.1fs", m.label, Bytes(m.n), el.Seconds())
	if s := el.Seconds(); s > 0 {
		line += fmt.Sprintf(" (%s/s)", Bytes(int64(float64(m.n)/s)))
	}
	if note != "" {
		line += ", " + note
	}
	fmt.Fprintln(m.w, line)
}

// Bytes formats n bytes for people: 512 B, 3.4 KiB, 26.7 MiB, 1.9 GiB.
func Bytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
