package proxy

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/httpstream"
)

// dummyReply is the answer of Pen's built-in test server.
const dummyReply = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nContent-Type: text/html\r\n\r\nUlric was here."

// dummy serves a connection in dummy mode: every chunk read from the
// client is answered with dummyReply, and the connection closes once the
// answer has gone out (Pen's add_dummy_reply).
func (l *Loop) dummy(c *conn) {
	fd := int(c.down)
	if q := c.q[sideDown]; q != nil {
		if c.fl&fWriteDown == 0 {
			return
		}
		done, errno := q.flush(fd)
		if errno == unix.EAGAIN {
			c.fl &^= fWriteDown
			return
		}
		if errno != 0 || done {
			l.closeConn(c)
		}
		return
	}
	if c.fl&fReadDown == 0 {
		return
	}
	n, errno := sysRead(fd, l.buf)
	if errno == unix.EAGAIN {
		c.fl &^= fReadDown
		return
	}
	if errno != 0 || n == 0 {
		l.closeConn(c)
		return
	}
	if l.set.Dump {
		l.dump(l.buf[:n])
	}
	if !l.send(c, sideDown, fd, []byte(dummyReply), fWriteDown) {
		l.closeConn(c)
		return
	}
	if c.q[sideDown] == nil {
		l.closeConn(c)
	}
}

// dump writes a buffer to the debug log as Pen does at debug level 3:
// "N: " and the bytes in hex, or as text with -a.
func (l *Loop) dump(p []byte) {
	var b strings.Builder
	fmt.Fprintf(&b, "%d: ", len(p))
	for _, c := range p {
		if l.set.ASCII {
			if c >= 0x20 && c < 0x7f || c == '\n' || c == '\r' || c == '\t' {
				b.WriteByte(c)
			} else {
				b.WriteByte('.')
			}
		} else {
			fmt.Fprintf(&b, "%02x ", c)
		}
	}
	l.log.Printf("%s", b.String())
}

// out is the scratch buffer for rewritten client data.
func (l *Loop) scratch(n int) []byte {
	if cap(l.outBuf) < n+4096 {
		l.outBuf = make([]byte, 0, n+4096)
	}
	return l.outBuf[:0]
}

// logging state: the connection whose data is being rewritten, so that
// OnRequest knows whose request line it reports.
func (l *Loop) newRewriter() *httpstream.Rewriter {
	if n := len(l.rwFree); n > 0 {
		rw := l.rwFree[n-1]
		l.rwFree = l.rwFree[:n-1]
		return rw
	}
	rw := &httpstream.Rewriter{}
	rw.OnRequest = func(line []byte) { l.requestLine(line) }
	return rw
}

func (l *Loop) freeRewriter(rw *httpstream.Rewriter) {
	rw.Reset("", "")
	if len(l.rwFree) < 1024 {
		l.rwFree = append(l.rwFree, rw)
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
