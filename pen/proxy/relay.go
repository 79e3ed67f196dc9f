package proxy

import (
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/internal/httpstream"
)

// The byte relay: moving data between a connection's two sockets, through
// the scratch buffer (rewritten by httpstream for X-Forwarded-For, logged,
// dumped) or by splice(2), with half-close and queueing of what a side
// cannot take yet; and the built-in dummy server.

// work moves data both ways as far as the sockets allow, then closes the
// connection if it is done.
func (l *Loop) work(c *conn) {
	if c.sp != nil {
		return // the kernel carries it; an event from before the splice
	}
	if c.fl&fDummy != 0 {
		l.dummy(c)
		return
	}
	more := false
	if !l.pump(c, sideUp, &more) || !l.pump(c, sideDown, &more) {
		l.closeConn(c)
		return
	}
	if l.closingTime(c) {
		l.closeConn(c)
		return
	}
	if more && c.fl&fQueued == 0 {
		c.fl |= fQueued
		l.ready = append(l.ready, c.slot)
	}
	if (l.set.Splice || l.set.Relay) && c.kr == nil {
		if c.fl&(fSpliceUp|fSpliceDown) != 0 {
			l.maybeSpliceBulk(c)
		} else if !more {
			l.maybeRelay(c)
		}
	}
}

// runReady gives connections that used up their budget another turn.
func (l *Loop) runReady() {
	if len(l.ready) == 0 {
		return
	}
	r := l.ready
	l.ready = nil
	for _, slot := range r {
		c := l.conns[slot]
		if c == nil || c.state == stateUnused {
			continue
		}
		c.fl &^= fQueued
		if c.fl&fUDP != 0 {
			l.udpEvent(c, unix.EPOLLIN) // the server's datagrams left over
			continue
		}
		l.work(c)
	}
}

// closingTime is Pen's closing_time, except that data still waiting to be
// written keeps a connection open until it is delivered.
func (l *Loop) closingTime(c *conn) bool {
	if c.fl&fIdler != 0 {
		// An idler has no client: it ends when its server ends it.
		return c.state&stateClosedUp != 0
	}
	if c.q[sideUp] != nil || c.q[sideDown] != nil {
		return false
	}
	closed := c.state & (stateClosedUp | stateClosedDown)
	end := closed == stateClosedUp|stateClosedDown || closed&uint8(l.set.FastClose) != 0
	if end && c.kr != nil {
		// What the kernel took is delivered before the sockets close.
		return l.relayDrained(c, sideUp) && l.relayDrained(c, sideDown)
	}
	return end
}

// pump moves data in one direction: dir sideUp is client to server,
// sideDown server to client. It returns false on a socket error.
//
// Data is read into the loop's scratch buffer and written on at once: for
// the small messages of request/response traffic that costs two syscalls
// and no more. When a read fills the whole buffer the direction carries
// bulk data and switches to splice(2), which moves it through a pipe
// without copying; it switches back when a burst turns out small.
func (l *Loop) pump(c *conn, dir int, more *bool) bool {
	var src, dst int
	var rflag, wflag, shut, spl uint32
	var eof uint8
	if dir == sideUp {
		src, dst, rflag, wflag, shut, spl, eof = int(c.down), int(c.up), fReadDown, fWriteUp, fShutUp, fSpliceUp, stateClosedDown
	} else {
		src, dst, rflag, wflag, shut, spl, eof = int(c.up), int(c.down), fReadUp, fWriteDown, fShutDown, fSpliceDown, stateClosedUp
	}
	if dst < 0 && c.fl&fIdler == 0 {
		return true
	}
	moved := 0
	for n := 0; ; n++ {
		if q := c.q[dir]; q != nil {
			if c.fl&wflag == 0 {
				return true
			}
			done, errno := q.flush(dst)
			if errno == unix.EAGAIN {
				c.fl &^= wflag
				return true
			}
			if errno != 0 {
				return false
			}
			if !done {
				continue
			}
			q.release(l)
			c.q[dir] = nil
		}
		if c.state&eof != 0 {
			if c.kr != nil && c.fl&shut == 0 && !l.relayDrained(c, dir) {
				return true // the shutdown waits until the kernel has written the rest
			}
			if c.fl&shut == 0 {
				if dir == sideDown && c.tc != nil && l.tlsCloseNotify(c) {
					continue // the alert is queued: the shutdown follows it
				}
				c.fl |= shut
				// When the other side has ended too and has nothing left
				// to receive, the connection closes right after this, and
				// close sends dst its FIN: a shutdown first would only
				// cost a system call (one of about sixteen per
				// connection).
				closing := c.state&(stateClosedUp|stateClosedDown) == stateClosedUp|stateClosedDown &&
					c.q[1-dir] == nil && c.kr == nil
				if dst >= 0 && !closing {
					l.shutdownWrite(c, dst)
				}
			}
			return true
		}
		if c.fl&rflag == 0 || src < 0 {
			return true
		}
		if n >= budget {
			*more = true
			return true
		}
		var m int
		var ok bool
		if c.fl&spl != 0 {
			m, ok = l.copySplice(c, dir, src, dst, rflag, wflag, eof)
			if ok && m == 0 && c.fl&rflag == 0 && moved < bufSize/2 {
				c.fl &^= spl // a small burst: back to plain reads
			}
		} else {
			m, ok = l.copyBuffered(c, dir, src, dst, rflag, wflag, eof)
			if ok && m == bufSize && l.canSplice(c, dir) {
				c.fl |= spl
				if l.set.Splice && c.spTries == 0 {
					// Bulk data: work splices the connection's segments
					// now, while little waits in its sockets.
					*more = true
					return true
				}
			}
		}
		if !ok {
			return false
		}
		moved += m
	}
}

// canSplice reports whether a direction may move data by splice: not
// when its bytes must be seen (rewritten, logged or dumped) and not for
// unix sockets, idlers and TLS clients (whose bytes pass through Go's TLS
// code anyway).
func (l *Loop) canSplice(c *conn, dir int) bool {
	if c.fl&(fUnixUp|fIdler|fTLS) != 0 {
		return false
	}
	return dir == sideDown || c.fl&fBuffered == 0
}

// hupOf maps a readable flag to the flag saying that side shut down.
func hupOf(rflag uint32) uint32 {
	if rflag == fReadDown {
		return fHupDown
	}
	return fHupUp
}

func (l *Loop) shutdownWrite(c *conn, fd int) {
	if err := sysShutdown(fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
		l.log.Debugf(2, "shutdown(%d, SHUT_WR): %v", fd, err)
		c.state |= stateClosedUp | stateClosedDown
	}
}

// copyBuffered reads one chunk through user space (needed to rewrite or
// log it) and writes it on; what the destination cannot take is queued.
func (l *Loop) copyBuffered(c *conn, dir, src, dst int, rflag, wflag uint32, eof uint8) (int, bool) {
	var n int
	var errno syscall.Errno
	tlsClient := dir == sideUp && c.tc != nil
	if tlsClient {
		n, errno = l.tlsRead(c)
	} else {
		n, errno = sysRead(src, l.buf)
	}
	switch {
	case errno == unix.EAGAIN:
		c.fl &^= rflag
		return 0, true
	case errno != 0:
		return 0, false
	case n == 0:
		c.state |= eof
		c.fl &^= rflag
		if dir == sideUp && c.rw != nil && c.rw.Buffered() > 0 {
			// The client stopped in the middle of a head: the server
			// gets what it sent, unchanged.
			held := c.rw.Flush(l.scratch(0))
			l.countSent(c, len(held))
			return 0, l.send(c, dir, dst, held, wflag)
		}
		return 0, true
	}
	if n < len(l.buf) && c.fl&hupOf(rflag) == 0 && !tlsClient {
		c.fl &^= rflag // drained: edge-triggered epoll reports new data
	}
	data := l.buf[:n]
	if l.set.Dump {
		l.dump(data)
	}
	if dir == sideUp {
		if c.turns < relayAfter {
			c.turns++
		}
		if c.rw != nil {
			l.logConn = c
			data = c.rw.Write(l.scratch(n), data)
			l.logConn = nil
			if !c.logged && c.rw.Passthrough() == httpstream.NotHTTP {
				l.logChunk(c, l.buf[:n])
			}
		} else if l.set.Log != nil {
			l.logChunk(c, data)
		}
		l.countSent(c, len(data))
	} else {
		c.sess.Received(len(data))
	}
	if c.fl&fIdler != 0 && dir == sideDown {
		return n, true // an idler's data is thrown away
	}
	// The source has shut down and this read drained it, so the next
	// read is its EOF and a shutdown of dst follows at once: let the FIN
	// go out in the same segment as this data.
	more := n < len(l.buf) && c.fl&hupOf(rflag) != 0 && c.fl&(fUnixUp|fIdler) == 0
	if !l.sendFlags(c, dir, dst, data, wflag, more) {
		return n, false
	}
	if more && l.drainedToFIN(c, rflag, tlsClient) {
		// That next read would return 0 and nothing else: take the EOF
		// now and save the system call (one of about sixteen per
		// connection).
		c.state |= eof
		c.fl &^= rflag
	}
	return n, true
}

// drainedToFIN reports whether a read that came back short has emptied a
// TCP socket whose peer's FIN had arrived, so that the next read can only
// be the EOF. A TCP read stops short in one other case: at the mark of
// urgent data, which epoll reports as EPOLLPRI (fUrgent). A FIN that came
// with an error (a reset) is not trusted (fFin* cleared), and the kernel
// relay's sockets are left to their own reads.
func (l *Loop) drainedToFIN(c *conn, rflag uint32, tlsClient bool) bool {
	fin := fFinUp
	if rflag == fReadDown {
		fin = fFinDown
		if c.rw != nil {
			return false // a head held back is sent with the EOF
		}
	}
	return c.fl&fin != 0 && c.fl&fUrgent == 0 && !tlsClient && c.kr == nil
}

// send writes data to dst, queueing what it does not take.
func (l *Loop) send(c *conn, dir, dst int, data []byte, wflag uint32) bool {
	return l.sendFlags(c, dir, dst, data, wflag, false)
}

func (l *Loop) sendFlags(c *conn, dir, dst int, data []byte, wflag uint32, more bool) bool {
	if dir == sideDown && c.tc != nil {
		return l.tlsWrite(c, data)
	}
	w := 0
	if c.fl&wflag != 0 {
		var m int
		var errno syscall.Errno
		if more {
			m, errno = sysSendMore(dst, data)
		} else {
			m, errno = sysWrite(dst, data)
		}
		switch {
		case errno == unix.EAGAIN:
			c.fl &^= wflag
		case errno != 0:
			return false
		default:
			w = m
		}
	}
	if w < len(data) {
		c.fl &^= wflag
		c.q[dir] = newQueuedBytes(data[w:])
	}
	return true
}

// copySplice moves one chunk through a pipe without copying it. A splice
// into a pipe may stop short while the socket still holds data (the pipe
// has room for a limited number of segments), so in this mode the source
// counts as drained only when it says EAGAIN.
func (l *Loop) copySplice(c *conn, dir, src, dst int, rflag, wflag uint32, eof uint8) (int, bool) {
	p, err := l.getPipe()
	if err != nil {
		// Out of descriptors, most likely: copy through user space.
		l.logFull("pipe: %v; copying without splice", err)
		if dir == sideUp {
			c.fl &^= fSpliceUp
		} else {
			c.fl &^= fSpliceDown
		}
		return l.copyBuffered(c, dir, src, dst, rflag, wflag, eof)
	}
	size := pipeSize
	if l.held >= heldPipes {
		size = heldSplice
	}
	n, errno := sysSplice(src, p.w, size)
	switch {
	case errno == unix.EAGAIN:
		c.fl &^= rflag
		l.putPipe(p)
		return 0, true
	case errno != 0:
		l.putPipe(p)
		return 0, false
	case n == 0:
		c.state |= eof
		c.fl &^= rflag
		l.putPipe(p)
		return 0, true
	}
	if dir == sideUp {
		c.sess.Sent(n)
	} else {
		c.sess.Received(n)
	}
	w := 0
	if c.fl&wflag != 0 {
		m, errno := sysSplice(p.r, dst, n)
		switch {
		case errno == unix.EAGAIN:
			c.fl &^= wflag
		case errno != 0:
			p.close() // it still holds data
			return n, false
		default:
			w = m
		}
	}
	if w == n {
		l.putPipe(p)
		return n, true
	}
	// A short splice does not mean that dst is full: splice(2) also stops
	// between its sends when a signal is pending (the Go runtime preempts
	// with SIGURG), and then no EPOLLOUT edge would ever follow. Only
	// EAGAIN clears wflag; otherwise pump flushes the rest at once.
	c.q[dir] = newQueuedPipe(p, n-w)
	l.held++
	return n, true
}

// newRewriter takes an X-Forwarded-For rewriter from the pool. Its
// OnRequest reports request lines to the request log for l.logConn, the
// connection whose data it is rewriting at the time.
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

// scratch returns the empty scratch buffer for rewritten client data,
// with room for n bytes and a few headers.
func (l *Loop) scratch(n int) []byte {
	if cap(l.outBuf) < n+4096 {
		l.outBuf = make([]byte, 0, n+4096)
	}
	return l.outBuf[:0]
}

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

// countSent counts n bytes read from the client for its server, or, while
// no server is connected yet, keeps them for countEarly.
func (l *Loop) countSent(c *conn, n int) {
	if c.up < 0 {
		c.early += int32(n)
		return
	}
	c.sess.Sent(n)
}
