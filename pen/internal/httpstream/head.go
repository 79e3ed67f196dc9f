package httpstream

import "bytes"

// head is what a Rewriter knows about the request head it is reading.
// Offsets count from the first byte of the request line.
type head struct {
	scan  int32  // start of the first line not yet parsed; 0 while on the request line
	xff   int32  // where the client goes in the last X-Forwarded-For field
	cl    int64  // the Content-Length, if fCL is set
	flags uint16 // f* bits
	rl    uint8  // request-line state (rl*), fed as its bytes arrive
}

// Bits of head.flags.
const (
	fXFF      = 1 << iota // an X-Forwarded-For field was seen
	fXFFEmpty             // the last one has an empty value
	fProto                // an X-Forwarded-Proto field was seen
	fCL                   // a valid Content-Length was seen
	fBadCL                // a Content-Length was invalid or conflicting
	fTE                   // a Transfer-Encoding field was seen
	fChunked              // the last transfer coding is chunked
	fUpgrade              // an Upgrade field was seen
	fConnect              // the method is CONNECT
	fHTTP10               // the version is HTTP/1.0
)

// result is what parse found.
type result uint8

const (
	more      result = iota // the head is incomplete
	blank                   // an empty line came before any request line
	complete                // the head is complete
	notHTTP                 // the first line is not an HTTP/1.x request line
	malformed               // a header line is malformed
	tooLarge                // the head is longer than MaxHead
)

// reason maps a failed result to the Reason for passing through.
func (res result) reason() Reason {
	switch res {
	case notHTTP:
		return NotHTTP
	case tooLarge:
		return TooLarge
	}
	return Malformed
}

// parse reads the lines of h, the bytes of the head read so far, from the
// first line not yet parsed. Bytes before from have been seen before and
// hold no line end past r.h.scan. For blank and complete it also returns
// the offset just past the line that ended the head or blank line.
func (r *Rewriter) parse(h []byte, from int) (result, int) {
	for {
		i := bytes.IndexByte(h[from:], '\n')
		if r.h.scan == 0 {
			// The request line is checked as it arrives, so that a
			// client speaking another protocol is passed through at once
			// instead of waiting for a line end that never comes.
			seg := h[from:]
			if i >= 0 {
				seg = seg[:i]
			}
			if !r.h.feed(seg) {
				return notHTTP, 0
			}
		}
		if i < 0 {
			return more, 0
		}
		lf := from + i
		if r.h.scan == 0 {
			switch r.h.rl {
			case rlStart, rlLeadCR:
				return blank, lf + 1
			case rlVersionDone, rlTrail, rlCR:
				r.h.requestLine(h[:lf])
			default:
				return notHTTP, 0
			}
		} else {
			ok, end := r.h.field(h, int(r.h.scan), lf)
			if !ok {
				return malformed, 0
			}
			if end {
				return complete, lf + 1
			}
		}
		r.h.scan = int32(lf + 1)
		from = lf + 1
	}
}

// States of the request-line recognizer. The line is
// method SP+ target SP+ "HTTP/1." DIGIT [SP*] [CR], where SP is a space or a
// tab; an empty line (or a lone CR) is a blank line before the request.
const (
	rlStart       = iota          // nothing yet
	rlLeadCR                      // a CR at the start: only a blank line may follow
	rlMethod                      // inside the method
	rlSP1                         // whitespace after the method
	rlTarget                      // inside the request target
	rlSP2                         // whitespace after the target
	rlVersion                     // rlVersion+k: k bytes of "HTTP/1." matched, 1 <= k <= 7
	rlMinor       = rlVersion + 7 // all of "HTTP/1." matched: a digit must come
	rlVersionDone = rlVersion + 8
	rlTrail       = rlVersionDone + 1 // whitespace after the version
	rlCR          = rlTrail + 1       // CR after the version: only LF may follow
	rlBad         = rlCR + 1
)

const versionPrefix = "HTTP/1."

// feed advances the request-line recognizer over b, which holds no LF, and
// reports whether b can still be part of a request line (or blank line).
func (h *head) feed(b []byte) bool {
	s := h.rl
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case s == rlStart:
			if c == '\r' {
				s = rlLeadCR
			} else if isTchar[c] {
				s = rlMethod
			} else {
				s = rlBad
			}
		case s == rlMethod:
			for isTchar[c] && i+1 < len(b) {
				i++
				c = b[i]
			}
			if c == ' ' || c == '\t' {
				s = rlSP1
			} else if !isTchar[c] {
				s = rlBad
			}
		case s == rlSP1 || s == rlTarget:
			if c == ' ' || c == '\t' {
				if s == rlTarget {
					s = rlSP2
				}
				break
			}
			for isTargetChar(c) && i+1 < len(b) {
				i++
				c = b[i]
			}
			switch {
			case isTargetChar(c):
				s = rlTarget
			case c == ' ' || c == '\t':
				s = rlSP2
			default:
				s = rlBad
			}
		case s == rlSP2:
			if c == 'H' {
				s = rlVersion + 1
			} else if c != ' ' && c != '\t' {
				s = rlBad
			}
		case s > rlVersion && s < rlMinor:
			if c == versionPrefix[s-rlVersion] {
				s++
			} else {
				s = rlBad
			}
		case s == rlMinor:
			if c >= '0' && c <= '9' {
				s = rlVersionDone
			} else {
				s = rlBad
			}
		case s == rlVersionDone || s == rlTrail:
			switch c {
			case ' ', '\t':
				s = rlTrail
			case '\r':
				s = rlCR
			default:
				s = rlBad
			}
		default: // rlLeadCR, rlCR: only LF may follow
			s = rlBad
		}
		if s == rlBad {
			h.rl = s
			return false
		}
	}
	h.rl = s
	return true
}

// isTargetChar reports whether c may appear in a request target: anything
// visible, and bytes above ASCII, which some clients send unencoded.
func isTargetChar(c byte) bool {
	return c > ' ' && c != 0x7f
}

// requestLine notes what the framing needs from a request line that the
// recognizer accepted; line excludes the LF.
func (h *head) requestLine(line []byte) {
	if len(line) > 8 && string(line[:7]) == "CONNECT" && (line[7] == ' ' || line[7] == '\t') {
		h.flags |= fConnect
	}
	end := len(line)
	for end > 0 && (line[end-1] == '\r' || line[end-1] == ' ' || line[end-1] == '\t') {
		end--
	}
	if end >= 8 && string(line[end-8:end]) == "HTTP/1.0" {
		h.flags |= fHTTP10
	}
}

// field parses the header line b[start:lf] and reports whether it is well
// formed and whether it is the blank line that ends the head.
func (h *head) field(b []byte, start, lf int) (ok, end bool) {
	line := b[start:lf]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) == 0 {
		return true, true
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return false, false // a bare CR
	}
	c := 0
	for c < len(line) && isTchar[line[c]] {
		c++
	}
	if c == 0 || c == len(line) || line[c] != ':' {
		return false, false // obs-fold, space before the colon, no colon
	}
	vs, ve := c+1, len(line)
	for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
		vs++
	}
	for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
		ve--
	}
	name, value := line[:c], line[vs:ve]
	switch len(name) {
	case 7:
		if equalFold(name, "upgrade") {
			h.flags |= fUpgrade
		}
	case 14:
		if equalFold(name, "content-length") {
			n, ok := parseContentLength(value)
			switch {
			case !ok, h.flags&fCL != 0 && n != h.cl:
				h.flags |= fBadCL
			default:
				h.flags |= fCL
				h.cl = n
			}
		}
	case 15:
		if equalFold(name, "x-forwarded-for") {
			h.flags |= fXFF
			h.xff = int32(start + ve)
			if vs == ve {
				h.flags |= fXFFEmpty
			} else {
				h.flags &^= fXFFEmpty
			}
		}
	case 17:
		if equalFold(name, "x-forwarded-proto") {
			h.flags |= fProto
		} else if equalFold(name, "transfer-encoding") {
			h.flags |= fTE
			if lastCodingChunked(value) {
				h.flags |= fChunked
			} else {
				h.flags &^= fChunked
			}
		}
	}
	return true, false
}

// parseContentLength parses a Content-Length value: digits, or a
// comma-separated list of equal digit strings' values.
func parseContentLength(v []byte) (int64, bool) {
	n := int64(-1)
	for len(v) > 0 {
		elem := v
		if i := bytes.IndexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		elem = trimOWS(elem)
		if len(elem) == 0 {
			return 0, false
		}
		var m int64
		for _, c := range elem {
			if c < '0' || c > '9' || m >= 1<<58 {
				return 0, false
			}
			m = m*10 + int64(c-'0')
		}
		if n >= 0 && m != n {
			return 0, false
		}
		n = m
	}
	return n, n >= 0
}

// lastCodingChunked reports whether the last transfer coding listed in a
// Transfer-Encoding value is chunked.
func lastCodingChunked(v []byte) bool {
	v = trimOWS(v)
	for len(v) > 0 && v[len(v)-1] == ',' {
		v = trimOWS(v[:len(v)-1])
	}
	if i := bytes.LastIndexByte(v, ','); i >= 0 {
		v = trimOWS(v[i+1:])
	}
	return equalFold(v, "chunked")
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold reports whether b equals lower, a lowercase ASCII string,
// ignoring ASCII case.
func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// isTchar reports the token characters of RFC 9110 (5.6.2), which make up
// methods and field names.
var isTchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()
