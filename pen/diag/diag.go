// Package diag writes pen's diagnostics the way Pen does: in the foreground
// as "YYYY-MM-DD HH:MM:SS: message" lines on standard error, in the
// background to syslog (facility user, ident "pen"). Messages carry a
// level: level 0 is always written, higher levels only when the debug level
// (-d, or the debug command) is at least that high.
package diag

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Logger writes diagnostics. The zero value is not usable; use New or
// Discard. A Logger is safe for concurrent use.
type Logger struct {
	level atomic.Int32
	mu    sync.Mutex
	w     io.Writer      // timestamped lines, or nil
	sys   *syslog.Writer // or syslog
	now   func() time.Time
}

// New returns a Logger that writes timestamped lines to w.
func New(w io.Writer) *Logger {
	return &Logger{w: w, now: time.Now}
}

// Discard returns a Logger that writes nothing, for tests.
func Discard() *Logger { return New(io.Discard) }

// Syslog returns a Logger that writes to the local syslog daemon, or, when
// there is none (as on the appliance), to standard error.
func Syslog() *Logger {
	s, err := syslog.New(syslog.LOG_USER|syslog.LOG_DEBUG, "pen")
	if err != nil {
		return New(os.Stderr)
	}
	return &Logger{sys: s, now: time.Now}
}

// SetLevel sets the debug level.
func (l *Logger) SetLevel(n int) { l.level.Store(int32(n)) }

// Level returns the debug level.
func (l *Logger) Level() int { return int(l.level.Load()) }

// Enabled reports whether messages of level n are written.
func (l *Logger) Enabled(n int) bool { return n <= int(l.level.Load()) }

// Printf writes a message whatever the debug level (Pen's debug()).
func (l *Logger) Printf(format string, args ...any) {
	l.write(fmt.Sprintf(format, args...))
}

// Debugf writes a message when the debug level is at least n (Pen's DEBUG).
func (l *Logger) Debugf(n int, format string, args ...any) {
	if !l.Enabled(n) {
		return
	}
	l.write(fmt.Sprintf(format, args...))
}

// Writer returns the writer behind timestamped output (nil for syslog).
func (l *Logger) Writer() io.Writer { return l.w }

func (l *Logger) write(msg string) {
	msg = strings.TrimRight(msg, "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sys != nil {
		l.sys.Debug(msg)
		return
	}
	if l.w == nil {
		return
	}
	fmt.Fprintf(l.w, "%s: %s\n", l.now().Format("2006-01-02 15:04:05"), msg)
}
