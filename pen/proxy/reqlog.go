package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/internal/httpstream"
)

// RequestLog is Pen's request log (-l): to a file, one line per request,
// "client_ip unix_time server_ip request_line"; or over UDP to host:port,
// one datagram "+ client_ip server_ip request_line\n" per request, as
// penlogd expects. It is safe for concurrent use.
type RequestLog struct {
	mu     sync.Mutex
	target string
	f      *os.File
	w      *bufio.Writer
	udp    net.Conn
	dirty  bool
}

// OpenRequestLog opens target: a file (appended to) or host:port.
func OpenRequestLog(target string) (*RequestLog, error) {
	l := &RequestLog{target: target}
	if i := strings.LastIndexByte(target, ':'); i > 0 && !strings.HasPrefix(target, "/") {
		c, err := net.Dial("udp", target)
		if err != nil {
			return nil, fmt.Errorf("log: %w", err)
		}
		l.udp = c
		return l, nil
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		//lint:ignore ST1005 Pen's message, kept verbatim
		return nil, fmt.Errorf("Can't open logfile %s: %w", target, err)
	}
	l.f, l.w = f, bufio.NewWriterSize(f, 16<<10)
	return l, nil
}

// Target is the file or host:port the log goes to.
func (l *RequestLog) Target() string { return l.target }

// Request logs one request.
func (l *RequestLog) Request(client netip.Addr, t time.Time, server string, line []byte) {
	cl := config.ClientName(client)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.udp != nil {
		msg := "+ " + cl + " " + server + " " + string(line)
		if len(msg) > 1023 {
			msg = msg[:1023]
		}
		l.udp.Write([]byte(msg + "\n"))
		return
	}
	if l.w == nil {
		return
	}
	fmt.Fprintf(l.w, "%s %d %s %s\n", cl, t.Unix(), server, line)
	l.dirty = true
}

// Flush writes buffered lines to the file.
func (l *RequestLog) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dirty && l.w != nil {
		l.w.Flush()
		l.dirty = false
	}
}

// Reopen reopens the file (SIGHUP, for log rotation).
func (l *RequestLog) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	l.w.Flush()
	l.f.Close()
	f, err := os.OpenFile(l.target, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		l.f, l.w = nil, nil
		//lint:ignore ST1005 Pen's message, kept verbatim
		return fmt.Errorf("Can't open logfile %s: %w", l.target, err)
	}
	l.f, l.w = f, bufio.NewWriterSize(f, 16<<10)
	return nil
}

// Close flushes and closes the log.
func (l *RequestLog) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != nil {
		l.w.Flush()
		l.f.Close()
		l.f, l.w = nil, nil
	}
	if l.udp != nil {
		l.udp.Close()
		l.udp = nil
	}
}

func (l *Loop) requestLine(line []byte) {
	c := l.logConn
	if c == nil || l.set.Log == nil {
		return
	}
	c.logged = true
	l.set.Log.Request(c.peer.Addr(), time.Unix(l.now, 0), l.serverAddr(c), line)
}

func (l *Loop) serverAddr(c *conn) string {
	if c.sess == nil {
		return "0.0.0.0"
	}
	return c.sess.ServerHost()
}

// logChunk logs the first line of data for a connection that is not
// HTTP, once per connection (Pen logs every chunk of every connection).
func (l *Loop) logChunk(c *conn, data []byte) {
	if c.logged || l.set.Log == nil {
		return
	}
	c.logged = true
	l.set.Log.Request(c.peer.Addr(), time.Unix(l.now, 0), l.serverAddr(c), firstLine(data))
}

func firstLine(p []byte) []byte {
	out := make([]byte, 0, httpstream.LogLineMax)
	for _, c := range p {
		if c == '\r' || c == '\n' || len(out) == httpstream.LogLineMax {
			break
		}
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		out = append(out, c)
	}
	return out
}
