// Package httpstream follows HTTP/1.x requests in the byte stream a client
// sends to a proxy: it finds each request head, adds X-Forwarded-For and
// X-Forwarded-Proto, and reports each request line for the request log.
//
// The proxy passes every chunk it reads from the client through
// [Rewriter.Write] before forwarding it upstream. Pen rewrote only the
// first request of a chunk that started with GET, POST or HEAD and held a
// whole head, and logged one line per chunk. A Rewriter rewrites and reports
// every request on a keep-alive connection, whatever its method, however its
// head is split across reads, and however many pipelined requests share one
// read.
//
// For each request head the Rewriter:
//   - appends ", <client>" to the value of the last X-Forwarded-For field,
//     or inserts "X-Forwarded-For: <client>" when there is none;
//   - inserts "X-Forwarded-Proto: http" (or https) when there is none;
//   - leaves every other byte as it was. Inserted fields go just before the
//     blank line that ends the head, X-Forwarded-For first, with the line
//     ending (CRLF or bare LF) that the blank line uses.
//
// It then skips the body without looking inside it: a Content-Length body
// by its length, a chunked body by its chunk sizes up to and including the
// trailer section. A request with neither has no body.
//
// When the bytes stop making sense as HTTP/1.x, the Rewriter becomes a
// transparent pass-through for the rest of the connection and says why
// ([Rewriter.Passthrough]). It never changes bytes it does not understand:
//   - [NotHTTP]: a request does not start with an HTTP/1.x request line
//     (TLS, the HTTP/2 preface, anything binary);
//   - [Malformed]: a header line or a chunk-size line breaks the syntax;
//     what was held of the head is forwarded unchanged;
//   - [TooLarge]: a head is longer than [MaxHead]; what was held is
//     forwarded unchanged;
//   - [Upgrade], [Connect]: after the head (rewritten) of a request with an
//     Upgrade field or of a CONNECT request, the connection may carry
//     another protocol;
//   - [Framing]: after the head (rewritten) of a request whose body length
//     cannot be trusted: both Transfer-Encoding and Content-Length,
//     a Transfer-Encoding whose last coding is not chunked, a
//     Transfer-Encoding in an HTTP/1.0 request, or an invalid or
//     conflicting Content-Length. RFC 9112 (6.1, 6.3) requires the server
//     to answer such a request and close the connection, and requires an
//     intermediary that forwards it to drop Content-Length first, which
//     would change the client's bytes; so the Rewriter does not guess and
//     leaves the rest to the server.
//
// Once a Rewriter passes through, requests that follow on the connection
// reach the server with whatever X-Forwarded-For the client wrote. A
// server that trusts the last X-Forwarded-For entry should not see such
// requests: a proxy that needs the guarantee can close the connection
// once Passthrough reports Malformed, Framing or (after the first request)
// NotHTTP, and let the server's answer to the last request be the end.
// After Upgrade and Connect the same holds if the server refuses the
// upgrade or the tunnel and the client carries on with HTTP/1.x; telling
// that apart needs the server's response (101 or 2xx), which a Rewriter
// does not see.
//
// The parser is lenient where servers commonly are, so that requests a
// server would accept are rewritten: lines may end in bare LF, the parts
// of the request line may be separated by runs of spaces or tabs, empty
// lines before a request line are forwarded and skipped, and field values
// may hold any byte except a bare CR. It is strict where framing is at
// stake: field names are tokens followed at once by a colon, obs-fold
// (a line starting with whitespace) is malformed, Content-Length is digits
// only (a list of equal values is accepted), and chunk sizes are hex digits
// followed by optional extensions and a line end.
//
// A Rewriter holds bytes only while a head is incomplete, in a buffer taken
// from a shared pool and given back as soon as the head is complete; an
// idle Rewriter between requests holds no buffer. Rewriting a request
// allocates nothing in the steady state.
package httpstream

import (
	"bytes"
	"sync"
)

// MaxHead is the longest request head a Rewriter rewrites, counted from the
// first byte of the request line to the end of the blank line that ends the
// head. A longer head is forwarded unchanged, and the Rewriter passes the
// rest of the connection through ([TooLarge]).
const MaxHead = 64 << 10

// LogLineMax is the most bytes of a request line reported to
// [Rewriter.OnRequest], as in Pen's request log.
const LogLineMax = 100

// Reason says why a Rewriter passes bytes through instead of following
// requests. The zero value, None, means it still follows requests.
type Reason uint8

const (
	None      Reason = iota // still following requests
	NotHTTP                 // a request did not start with an HTTP/1.x request line
	Malformed               // a head or a chunked body broke the syntax
	TooLarge                // a head was longer than MaxHead
	Upgrade                 // a request had an Upgrade field
	Connect                 // a CONNECT request opened a tunnel
	Framing                 // a request's body length could not be trusted
	Flushed                 // Flush forwarded an incomplete head
)

var reasonNames = [...]string{
	None:      "none",
	NotHTTP:   "not_http",
	Malformed: "malformed",
	TooLarge:  "too_large",
	Upgrade:   "upgrade",
	Connect:   "connect",
	Framing:   "framing",
	Flushed:   "flushed",
}

// String returns a short lowercase name fit for a metrics label.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// state is where a Rewriter is in the stream.
type state uint8

const (
	stHead         state = iota // at the start of, or inside, a request head
	stBody                      // n bytes of a Content-Length body are left
	stChunkSize0                // at a chunk-size line; a hex digit must come
	stChunkSize                 // inside the chunk-size digits
	stChunkExt                  // after the chunk size, up to the line end
	stChunkSizeLF               // CR seen on a chunk-size line; LF must come
	stChunkData                 // n bytes of chunk data are left
	stChunkDataCR               // after chunk data; CRLF (or LF) must come
	stChunkDataLF               // CR seen after chunk data; LF must come
	stTrailerStart              // at the start of a trailer line or the final blank line
	stTrailer                   // inside a trailer line
	stTrailerLF                 // CR seen at the start of a line; LF ends the body
	stPass                      // forwarding everything unchanged
)

// A Rewriter follows the requests of one client connection. The zero value
// is ready after a call to Reset. A Rewriter may be reused (from a
// sync.Pool, say) by calling Reset for the next connection; call Reset or
// Flush before parking it, so that a held buffer goes back to the shared
// pool. A Rewriter is not safe for concurrent use.
type Rewriter struct {
	// OnRequest, if not nil, is called once for every request head that is
	// rewritten, from within Write, after the head has been appended to
	// dst. line is the request line as Pen's request log writes it: at most
	// LogLineMax bytes, stopping before CR or LF, with every byte outside
	// printable ASCII (0x20 to 0x7e) replaced by '.'. line lives in the
	// spare capacity of the dst passed to Write and is valid only during
	// the call; it costs no allocation when dst has LogLineMax spare bytes.
	// OnRequest must not call methods of the Rewriter. Reset leaves
	// OnRequest as it is.
	OnRequest func(line []byte)

	client string
	buf    *[]byte // the incomplete head; nil unless a head is incomplete
	n      int64   // bytes left of a Content-Length body or of chunk data
	h      head    // what is known of the head being read
	state  state
	reason Reason
	https  bool
}

// Reset prepares r for a new connection from clientIP, the text that goes
// into X-Forwarded-For. proto is "https" for a TLS client connection;
// anything else means "http". Reset gives back any held buffer and forgets
// the previous connection, except OnRequest.
func (r *Rewriter) Reset(clientIP, proto string) {
	r.release()
	r.client = clientIP
	r.https = proto == "https"
	r.n = 0
	r.h = head{}
	r.state = stHead
	r.reason = None
}

// Write appends to dst the bytes to forward upstream for p, the next bytes
// read from the client, and returns the extended dst. Bytes of an
// incomplete request head are held back (see Buffered) and appended by a
// later Write once the head is complete. p must not share memory with
// dst[:cap(dst)], since Write writes into dst's spare capacity.
func (r *Rewriter) Write(dst, p []byte) []byte {
	for len(p) > 0 {
		switch r.state {
		case stPass:
			return append(dst, p...)
		case stHead:
			dst, p = r.head(dst, p)
		case stBody:
			k := len(p)
			if int64(k) > r.n {
				k = int(r.n)
			}
			dst = append(dst, p[:k]...)
			p = p[k:]
			r.n -= int64(k)
			if r.n == 0 {
				r.state = stHead
			}
		default:
			dst, p = r.chunked(dst, p)
		}
	}
	return dst
}

// Flush appends to dst the bytes r holds back, unchanged, gives back its
// buffer and returns the extended dst. If it held any, r passes the rest of
// the connection through (Flushed), since the head it was reading can no
// longer be completed as it was. Call Flush when the client has stopped
// sending, so that the server sees everything the client sent.
func (r *Rewriter) Flush(dst []byte) []byte {
	if r.buf == nil {
		return dst
	}
	dst = append(dst, *r.buf...)
	r.release()
	r.pass(Flushed)
	return dst
}

// Buffered returns the number of bytes r holds back because the request
// head they belong to is incomplete.
func (r *Rewriter) Buffered() int {
	if r.buf == nil {
		return 0
	}
	return len(*r.buf)
}

// Passthrough returns why r forwards everything unchanged, or None while it
// still follows requests. Once it is not None it stays so until Reset, and
// Write only copies; a proxy may then stop calling Write and forward
// (or splice) the client's bytes directly.
func (r *Rewriter) Passthrough() Reason {
	return r.reason
}

// pass switches r to forwarding everything unchanged.
func (r *Rewriter) pass(why Reason) {
	r.state = stPass
	r.reason = why
	r.h = head{}
}

// head handles p at or inside a request head: it returns what it appended
// to dst and the part of p after the head, if the head completed.
func (r *Rewriter) head(dst, p []byte) ([]byte, []byte) {
	if r.buf == nil {
		// The head starts at p[0]; most heads are complete in one read.
		h := p
		if len(h) > MaxHead {
			h = h[:MaxHead]
		}
		res, end := r.parse(h, 0)
		switch res {
		case more:
			if len(h) == MaxHead {
				r.pass(TooLarge)
				return append(dst, p...), nil
			}
			r.hold(p)
			return dst, nil
		case blank:
			r.h = head{}
			return append(dst, p[:end]...), p[end:]
		case complete:
			return r.done(dst, p[:end]), p[end:]
		}
		r.pass(res.reason())
		return append(dst, p...), nil
	}

	// Continue a held head: take in as much of p as MaxHead allows.
	old := len(*r.buf)
	j := min(len(p), MaxHead-old)
	r.hold(p[:j])
	h := *r.buf
	res, end := r.parse(h, old)
	switch res {
	case more:
		if len(h) < MaxHead {
			return dst, nil // all of p is held
		}
		res = tooLarge
	case blank:
		// The line end that completed the blank line came from p, so
		// h[end:] is p[end-old:j] and the rest of p follows it.
		dst = append(dst, h[:end]...)
		r.release()
		r.h = head{}
		return dst, p[end-old:]
	case complete:
		dst = r.done(dst, h[:end])
		r.release()
		return dst, p[end-old:]
	}
	dst = append(dst, h...)
	dst = append(dst, p[j:]...)
	r.release()
	r.pass(res.reason())
	return dst, nil
}

// done appends the rewritten head h, reports its request line and sets up
// what follows the head.
func (r *Rewriter) done(dst, h []byte) []byte {
	dst = r.emit(dst, h)
	if r.OnRequest != nil {
		n := len(dst)
		dst = appendLogLine(dst, h)
		r.OnRequest(dst[n:])
		dst = dst[:n]
	}
	f, cl := r.h.flags, r.h.cl
	r.h = head{}
	switch {
	case f&fConnect != 0:
		r.pass(Connect)
	case f&fUpgrade != 0:
		r.pass(Upgrade)
	case f&fTE != 0:
		if f&(fCL|fBadCL|fHTTP10) != 0 || f&fChunked == 0 {
			r.pass(Framing)
		} else {
			r.state = stChunkSize0
		}
	case f&fBadCL != 0:
		r.pass(Framing)
	case cl > 0:
		r.state = stBody
		r.n = cl
	}
	return dst
}

// emit appends the complete head h to dst with the forwarding fields added.
func (r *Rewriter) emit(dst, h []byte) []byte {
	eol := "\n"
	if h[len(h)-2] == '\r' {
		eol = "\r\n"
	}
	blankAt := len(h) - len(eol)
	if r.h.flags&fXFF != 0 {
		at := int(r.h.xff)
		dst = append(dst, h[:at]...)
		if r.h.flags&fXFFEmpty != 0 {
			dst = append(dst, ' ')
		} else {
			dst = append(dst, ", "...)
		}
		dst = append(dst, r.client...)
		dst = append(dst, h[at:blankAt]...)
	} else {
		dst = append(dst, h[:blankAt]...)
		dst = append(dst, "X-Forwarded-For: "...)
		dst = append(dst, r.client...)
		dst = append(dst, eol...)
	}
	if r.h.flags&fProto == 0 {
		if r.https {
			dst = append(dst, "X-Forwarded-Proto: https"...)
		} else {
			dst = append(dst, "X-Forwarded-Proto: http"...)
		}
		dst = append(dst, eol...)
	}
	return append(dst, h[blankAt:]...)
}

// appendLogLine appends the request line that starts h, in the form the
// request log uses (see OnRequest).
func appendLogLine(dst, h []byte) []byte {
	n := len(dst)
	dst = append(dst, h[:min(len(h), LogLineMax)]...)
	for i := n; i < len(dst); i++ {
		switch c := dst[i]; {
		case c == '\r' || c == '\n':
			return dst[:i]
		case c < 0x20 || c > 0x7e:
			dst[i] = '.'
		}
	}
	return dst
}

// hold appends b to the held head, moving it to a larger pooled buffer when
// needed.
func (r *Rewriter) hold(b []byte) {
	if r.buf == nil {
		r.buf = getBuf(len(b))
	} else if need := len(*r.buf) + len(b); need > cap(*r.buf) {
		nb := getBuf(need)
		*nb = append(*nb, *r.buf...)
		putBuf(r.buf)
		r.buf = nb
	}
	*r.buf = append(*r.buf, b...)
}

// release gives the held buffer back to its pool.
func (r *Rewriter) release() {
	if r.buf != nil {
		putBuf(r.buf)
		r.buf = nil
	}
}

// Held heads live in buffers of a few size classes, each with its own pool,
// so that a short split head does not pin a MaxHead buffer.
var (
	bufSizes = [...]int{1 << 10, 4 << 10, 16 << 10, MaxHead}
	bufPools [len(bufSizes)]sync.Pool
)

// getBuf returns an empty buffer with room for n bytes (n <= MaxHead).
func getBuf(n int) *[]byte {
	for i, size := range bufSizes {
		if n > size {
			continue
		}
		if b, ok := bufPools[i].Get().(*[]byte); ok {
			return b
		}
		b := make([]byte, 0, size)
		return &b
	}
	panic("BUG: httpstream: buffer larger than MaxHead")
}

// putBuf gives b back to the pool of its size class.
func putBuf(b *[]byte) {
	for i, size := range bufSizes {
		if cap(*b) == size {
			*b = (*b)[:0]
			bufPools[i].Put(b)
			return
		}
	}
}

// chunked follows a chunked body through p. It returns what it appended to
// dst and the part of p after the body, if the body ended.
func (r *Rewriter) chunked(dst, p []byte) ([]byte, []byte) {
	i := 0
	for i < len(p) {
		c := p[i]
		switch r.state {
		case stChunkSize0:
			d := unhex[c]
			if d > 15 {
				return r.badChunk(dst, p)
			}
			r.n = int64(d)
			r.state = stChunkSize
		case stChunkSize:
			if d := unhex[c]; d <= 15 {
				if r.n >= 1<<58 {
					return r.badChunk(dst, p)
				}
				r.n = r.n<<4 | int64(d)
				break
			}
			switch c {
			case ' ', '\t', ';':
				r.state = stChunkExt
			case '\r':
				r.state = stChunkSizeLF
			case '\n':
				r.sizeLineEnd()
			default:
				return r.badChunk(dst, p)
			}
		case stChunkExt:
			// Extensions are not interpreted; skip to the line end.
			k := i
			for k < len(p) && p[k] != '\r' && p[k] != '\n' {
				k++
			}
			i = k
			if k == len(p) {
				continue
			}
			if p[k] == '\r' {
				r.state = stChunkSizeLF
			} else {
				r.sizeLineEnd()
			}
		case stChunkSizeLF:
			if c != '\n' {
				return r.badChunk(dst, p)
			}
			r.sizeLineEnd()
		case stChunkData:
			k := int64(len(p) - i)
			if k > r.n {
				k = r.n
			}
			i += int(k)
			r.n -= k
			if r.n == 0 {
				r.state = stChunkDataCR
			}
			continue
		case stChunkDataCR:
			switch c {
			case '\r':
				r.state = stChunkDataLF
			case '\n':
				r.state = stChunkSize0
			default:
				return r.badChunk(dst, p)
			}
		case stChunkDataLF:
			if c != '\n' {
				return r.badChunk(dst, p)
			}
			r.state = stChunkSize0
		case stTrailerStart:
			switch c {
			case '\r':
				r.state = stTrailerLF
			case '\n':
				r.state = stHead
				return append(dst, p[:i+1]...), p[i+1:]
			default:
				r.state = stTrailer
			}
		case stTrailer:
			k := bytes.IndexByte(p[i:], '\n')
			if k < 0 {
				i = len(p)
				continue
			}
			i += k
			r.state = stTrailerStart
		case stTrailerLF:
			if c != '\n' {
				return r.badChunk(dst, p)
			}
			r.state = stHead
			return append(dst, p[:i+1]...), p[i+1:]
		}
		i++
	}
	return append(dst, p...), nil
}

// sizeLineEnd moves on after a chunk-size line: to the chunk data, or to
// the trailer section after the last chunk.
func (r *Rewriter) sizeLineEnd() {
	if r.n == 0 {
		r.state = stTrailerStart
	} else {
		r.state = stChunkData
	}
}

// badChunk forwards p unchanged and passes the rest through.
func (r *Rewriter) badChunk(dst, p []byte) ([]byte, []byte) {
	r.pass(Malformed)
	return append(dst, p...), nil
}

// unhex maps a hex digit to its value and every other byte to 0xff.
var unhex = func() (t [256]uint8) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = uint8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = uint8(c - 'a' + 10)
		t[c-'a'+'A'] = uint8(c - 'a' + 10)
	}
	return t
}()
