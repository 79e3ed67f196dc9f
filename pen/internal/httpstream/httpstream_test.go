package httpstream

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

const testClient = "192.0.2.7"

// result of running a stream through a Rewriter.
type outcome struct {
	out    string
	lines  []string
	reason Reason
	held   int // Buffered() before the final Flush
}

// rewrite runs the chunks through a fresh Rewriter and flushes it at the end.
func rewrite(proto string, chunks ...[]byte) outcome {
	var o outcome
	var r Rewriter
	r.Reset(testClient, proto)
	r.OnRequest = func(line []byte) { o.lines = append(o.lines, string(line)) }
	var dst []byte
	for _, c := range chunks {
		dst = r.Write(dst, c)
	}
	o.held = r.Buffered()
	o.reason = r.Passthrough()
	dst = r.Flush(dst)
	o.out = string(dst)
	return o
}

// Shorthands for the inserted fields.
const (
	xffLine   = "X-Forwarded-For: " + testClient + "\r\n"
	protoLine = "X-Forwarded-Proto: http\r\n"
	both      = xffLine + protoLine
)

var rewriteTests = []struct {
	name   string
	proto  string
	in     string
	want   string
	lines  []string
	reason Reason
}{
	{
		name:  "get",
		in:    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nHost: a\r\n" + both + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "no header fields",
		in:    "GET / HTTP/1.0\r\n\r\n",
		want:  "GET / HTTP/1.0\r\n" + both + "\r\n",
		lines: []string{"GET / HTTP/1.0"},
	},
	{
		name:  "https",
		proto: "https",
		in:    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nHost: a\r\n" + xffLine + "X-Forwarded-Proto: https\r\n\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "bare LF",
		in:    "GET / HTTP/1.1\nHost: a\n\n",
		want:  "GET / HTTP/1.1\nHost: a\nX-Forwarded-For: " + testClient + "\nX-Forwarded-Proto: http\n\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "mixed line ends use the blank line's",
		in:    "GET / HTTP/1.1\nHost: a\r\n\r\n",
		want:  "GET / HTTP/1.1\nHost: a\r\n" + both + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "existing XFF",
		in:    "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nHost: a\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, " + testClient + "\r\nHost: a\r\n" + protoLine + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "existing XFF list with trailing whitespace",
		in:    "GET / HTTP/1.1\r\nx-forwarded-FOR:10.0.0.1, 10.0.0.2 \t\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nx-forwarded-FOR:10.0.0.1, 10.0.0.2, " + testClient + " \t\r\n" + protoLine + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name: "several XFF fields: the last one gets the client",
		in:   "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nA: b\r\nX-Forwarded-For: 10.0.0.2\r\nC: d\r\n\r\n",
		want: "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nA: b\r\nX-Forwarded-For: 10.0.0.2, " + testClient +
			"\r\nC: d\r\n" + protoLine + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "empty XFF",
		in:    "GET / HTTP/1.1\r\nX-Forwarded-For:\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nX-Forwarded-For: " + testClient + "\r\n" + protoLine + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "blank XFF",
		in:    "GET / HTTP/1.1\r\nX-Forwarded-For:  \r\n\r\n",
		want:  "GET / HTTP/1.1\r\nX-Forwarded-For:   " + testClient + "\r\n" + protoLine + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "existing proto is kept",
		proto: "https",
		in:    "GET / HTTP/1.1\r\nx-forwarded-proto: http\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nx-forwarded-proto: http\r\n" + xffLine + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "XFF and proto present",
		in:    "GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 10.0.0.1, " + testClient + "\r\n\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "XFF-like names are not XFF",
		in:    "GET / HTTP/1.1\r\nX-Forwarded-Fo: a\r\nX-Forwarded-Forx: b\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nX-Forwarded-Fo: a\r\nX-Forwarded-Forx: b\r\n" + both + "\r\n",
		lines: []string{"GET / HTTP/1.1"},
	},
	{
		name:  "other methods",
		in:    "PUT /x HTTP/1.1\r\n\r\nDELETE /x HTTP/1.1\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\nM-SEARCH * HTTP/1.1\r\n\r\n",
		want:  "PUT /x HTTP/1.1\r\n" + both + "\r\nDELETE /x HTTP/1.1\r\n" + both + "\r\nOPTIONS * HTTP/1.1\r\n" + both + "\r\nM-SEARCH * HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"PUT /x HTTP/1.1", "DELETE /x HTTP/1.1", "OPTIONS * HTTP/1.1", "M-SEARCH * HTTP/1.1"},
	},
	{
		name:  "lenient request line whitespace",
		in:    "GET  \t/x   HTTP/1.1 \t\r\n\r\n",
		want:  "GET  \t/x   HTTP/1.1 \t\r\n" + both + "\r\n",
		lines: []string{"GET  ./x   HTTP/1.1 ."},
	},
	{
		name:  "absolute form and HTTP/1.9",
		in:    "GET http://example.com/a?b=c HTTP/1.9\r\n\r\n",
		want:  "GET http://example.com/a?b=c HTTP/1.9\r\n" + both + "\r\n",
		lines: []string{"GET http://example.com/a?b=c HTTP/1.9"},
	},
	{
		name:  "pipelined",
		in:    "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nHEAD /3 HTTP/1.1\r\n\r\n",
		want:  "GET /1 HTTP/1.1\r\nHost: a\r\n" + both + "\r\nGET /2 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4, " + testClient + "\r\n" + protoLine + "\r\nHEAD /3 HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"GET /1 HTTP/1.1", "GET /2 HTTP/1.1", "HEAD /3 HTTP/1.1"},
	},
	{
		name: "content-length body that looks like heads",
		in: "POST /p HTTP/1.1\r\nContent-Length: 57\r\n\r\n" +
			"GET /evil HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n\n\nabcdefg" +
			"GET /2 HTTP/1.1\r\n\r\n",
		want: "POST /p HTTP/1.1\r\nContent-Length: 57\r\n" + both + "\r\n" +
			"GET /evil HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n\n\nabcdefg" +
			"GET /2 HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"POST /p HTTP/1.1", "GET /2 HTTP/1.1"},
	},
	{
		name:  "content-length zero",
		in:    "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		want:  "POST / HTTP/1.1\r\nContent-Length: 0\r\n" + both + "\r\nGET / HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"POST / HTTP/1.1", "GET / HTTP/1.1"},
	},
	{
		name:  "content-length list of equal values",
		in:    "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
		want:  "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n" + both + "\r\nabcGET / HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"POST / HTTP/1.1", "GET / HTTP/1.1"},
	},
	{
		name:  "GET with a body",
		in:    "GET / HTTP/1.1\r\nContent-Length: 4\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		want:  "GET / HTTP/1.1\r\nContent-Length: 4\r\n" + both + "\r\n\r\n\r\nGET / HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"GET / HTTP/1.1", "GET / HTTP/1.1"},
	},
	{
		name: "chunked with extensions and trailers",
		in: "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5;name=val\r\nhello\r\n18 ; a=\"q;x\"\r\nGET / HTTP/1.1\r\nA: b\r\n\r\n\r\n0\r\nTrailer-A: x\r\nTrailer-B: y\r\n\r\n" +
			"GET /next HTTP/1.1\r\n\r\n",
		want: "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + both + "\r\n" +
			"5;name=val\r\nhello\r\n18 ; a=\"q;x\"\r\nGET / HTTP/1.1\r\nA: b\r\n\r\n\r\n0\r\nTrailer-A: x\r\nTrailer-B: y\r\n\r\n" +
			"GET /next HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"POST /c HTTP/1.1", "GET /next HTTP/1.1"},
	},
	{
		name: "chunked, as net/http reads it",
		in: "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n" +
			"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
		want: "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n" + both + "\r\n" +
			"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n" + both + "\r\n",
		lines: []string{"PUT /c HTTP/1.1", "GET / HTTP/1.1"},
	},
	{
		name:  "chunked without trailers, bare LF, upper-case hex, leading zeros",
		in:    "POST / HTTP/1.1\r\ntransfer-encoding: gzip, CHUNKED\r\n\r\n00A\nabcdefghij\n000\n\nGET / HTTP/1.1\r\n\r\n",
		want:  "POST / HTTP/1.1\r\ntransfer-encoding: gzip, CHUNKED\r\n" + both + "\r\n00A\nabcdefghij\n000\n\nGET / HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"POST / HTTP/1.1", "GET / HTTP/1.1"},
	},
	{
		name:  "empty lines before a request",
		in:    "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n\r\n\nGET / HTTP/1.1\r\n\r\n",
		want:  "POST / HTTP/1.1\r\nContent-Length: 1\r\n" + both + "\r\nx\r\n\r\n\nGET / HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"POST / HTTP/1.1", "GET / HTTP/1.1"},
	},
	{
		name:  "log line is cut at 100 bytes, non-printable bytes become dots",
		in:    "GET /" + strings.Repeat("a", 120) + "\xc3\xa9 HTTP/1.1\r\n\r\n",
		want:  "GET /" + strings.Repeat("a", 120) + "\xc3\xa9 HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"GET /" + strings.Repeat("a", 95)},
	},
	{
		name:  "log line with non-ASCII",
		in:    "GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
		want:  "GET /\xc3\xa9 HTTP/1.1\r\n" + both + "\r\n",
		lines: []string{"GET /.. HTTP/1.1"},
	},
	{
		name:   "control byte in the target",
		in:     "GET /\x7f HTTP/1.1\r\n\r\n",
		want:   "GET /\x7f HTTP/1.1\r\n\r\n",
		reason: NotHTTP,
	},

	// Pass-through.
	{
		name:   "TLS",
		in:     "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n",
		want:   "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n",
		reason: NotHTTP,
	},
	{
		name:   "HTTP/2 preface",
		in:     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
		want:   "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
		reason: NotHTTP,
	},
	{
		name:   "HTTP/0.9",
		in:     "GET /\r\n\r\n",
		want:   "GET /\r\n\r\n",
		reason: NotHTTP,
	},
	{
		name:   "lower-case version",
		in:     "GET / http/1.1\r\n\r\n",
		want:   "GET / http/1.1\r\n\r\n",
		reason: NotHTTP,
	},
	{
		name:   "a lone CR before the request line",
		in:     "\rGET / HTTP/1.1\r\n\r\n",
		want:   "\rGET / HTTP/1.1\r\n\r\n",
		reason: NotHTTP,
	},
	{
		name:   "not HTTP after a request",
		in:     "GET / HTTP/1.1\r\n\r\nSSH-2.0-x\r\nGET / HTTP/1.1\r\n\r\n",
		want:   "GET / HTTP/1.1\r\n" + both + "\r\nSSH-2.0-x\r\nGET / HTTP/1.1\r\n\r\n",
		lines:  []string{"GET / HTTP/1.1"},
		reason: NotHTTP,
	},
	{
		name:   "space before colon",
		in:     "GET / HTTP/1.1\r\nHost : a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		want:   "GET / HTTP/1.1\r\nHost : a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		reason: Malformed,
	},
	{
		name:   "obs-fold",
		in:     "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
		want:   "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
		reason: Malformed,
	},
	{
		name:   "whitespace after the request line",
		in:     "GET / HTTP/1.1\r\n X-Forwarded-For: a\r\n\r\n",
		want:   "GET / HTTP/1.1\r\n X-Forwarded-For: a\r\n\r\n",
		reason: Malformed,
	},
	{
		name:   "bare CR in a field",
		in:     "GET / HTTP/1.1\r\nA: b\rContent-Length: 5\r\n\r\n",
		want:   "GET / HTTP/1.1\r\nA: b\rContent-Length: 5\r\n\r\n",
		reason: Malformed,
	},
	{
		name:   "no colon",
		in:     "GET / HTTP/1.1\r\nHost\r\n\r\n",
		want:   "GET / HTTP/1.1\r\nHost\r\n\r\n",
		reason: Malformed,
	},
	{
		name: "bad chunk size",
		in:   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nGET / HTTP/1.1\r\n\r\n",
		want: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + both + "\r\n" +
			"5\r\nhello\r\nzz\r\nGET / HTTP/1.1\r\n\r\n",
		lines:  []string{"POST / HTTP/1.1"},
		reason: Malformed,
	},
	{
		name: "no line end after chunk data",
		in:   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
		want: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + both + "\r\n" +
			"1\r\nab\r\n0\r\n\r\n",
		lines:  []string{"POST / HTTP/1.1"},
		reason: Malformed,
	},
	{
		name: "chunk size too large",
		in:   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
		want: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + both + "\r\n" +
			"10000000000000000\r\n",
		lines:  []string{"POST / HTTP/1.1"},
		reason: Malformed,
	},
	{
		name:   "websocket upgrade",
		in:     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85abcdGET / HTTP/1.1\r\n\r\n",
		want:   "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + both + "\r\n\x81\x85abcdGET / HTTP/1.1\r\n\r\n",
		lines:  []string{"GET /ws HTTP/1.1"},
		reason: Upgrade,
	},
	{
		name:   "connect",
		in:     "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		want:   "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n" + both + "\r\nGET / HTTP/1.1\r\n\r\n",
		lines:  []string{"CONNECT example.com:443 HTTP/1.1"},
		reason: Connect,
	},
	{
		name:   "content-length and transfer-encoding",
		in:     "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		want:   "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n" + both + "\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		lines:  []string{"POST / HTTP/1.1"},
		reason: Framing,
	},
	{
		name:   "transfer-encoding not ending in chunked",
		in:     "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc",
		want:   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n" + both + "\r\nabc",
		lines:  []string{"POST / HTTP/1.1"},
		reason: Framing,
	},
	{
		name:   "the last transfer-encoding field decides",
		in:     "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\nabc",
		want:   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n" + both + "\r\nabc",
		lines:  []string{"POST / HTTP/1.1"},
		reason: Framing,
	},
	{
		name:   "transfer-encoding in HTTP/1.0",
		in:     "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		want:   "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n" + both + "\r\n0\r\n\r\n",
		lines:  []string{"POST / HTTP/1.0"},
		reason: Framing,
	},
	{
		name:   "bad content-length",
		in:     "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
		want:   "POST / HTTP/1.1\r\nContent-Length: +3\r\n" + both + "\r\nabc",
		lines:  []string{"POST / HTTP/1.1"},
		reason: Framing,
	},
	{
		name:   "conflicting content-lengths",
		in:     "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		want:   "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n" + both + "\r\nabcd",
		lines:  []string{"POST / HTTP/1.1"},
		reason: Framing,
	},
	{
		name:   "incomplete head is flushed unchanged",
		in:     "GET / HTTP/1.1\r\nHost: a\r\n",
		want:   "GET / HTTP/1.1\r\nHost: a\r\n",
		reason: None, // Flushed only after the Flush
	},
}

func TestRewrite(t *testing.T) {
	for _, tt := range rewriteTests {
		t.Run(tt.name, func(t *testing.T) {
			got := rewrite(tt.proto, []byte(tt.in))
			if got.out != tt.want {
				t.Errorf("output:\n got %q\nwant %q", got.out, tt.want)
			}
			if fmt.Sprint(got.lines) != fmt.Sprint(tt.lines) {
				t.Errorf("request lines: got %q, want %q", got.lines, tt.lines)
			}
			if got.reason != tt.reason {
				t.Errorf("Passthrough() = %v, want %v", got.reason, tt.reason)
			}
		})
	}
}

// TestSplitEverywhere feeds each table input in two pieces split at every
// position, in three pieces split at every pair of positions (for short
// inputs), and one byte at a time, and wants the output of one piece.
func TestSplitEverywhere(t *testing.T) {
	for _, tt := range rewriteTests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			want := rewrite(tt.proto, in)
			check := func(desc string, got outcome) {
				t.Helper()
				if got.out != want.out || fmt.Sprint(got.lines) != fmt.Sprint(want.lines) ||
					got.reason != want.reason || got.held != want.held {
					t.Fatalf("%s: got %q %q %v held %d, want %q %q %v held %d", desc,
						got.out, got.lines, got.reason, got.held, want.out, want.lines, want.reason, want.held)
				}
			}
			for i := 0; i <= len(in); i++ {
				check(fmt.Sprintf("split at %d", i), rewrite(tt.proto, in[:i], in[i:]))
			}
			if len(in) <= 200 {
				for i := 0; i <= len(in); i++ {
					for j := i; j <= len(in); j++ {
						check(fmt.Sprintf("split at %d and %d", i, j), rewrite(tt.proto, in[:i], in[i:j], in[j:]))
					}
				}
			}
			var bytewise [][]byte
			for i := range in {
				bytewise = append(bytewise, in[i:i+1])
			}
			check("byte by byte", rewrite(tt.proto, bytewise...))
		})
	}
}

func TestKeepAlive(t *testing.T) {
	var r Rewriter
	r.Reset("2001:db8::1", "http")
	var lines []string
	r.OnRequest = func(line []byte) { lines = append(lines, string(line)) }
	steps := []struct{ in, want string }{
		{"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: http\r\n\r\n"},
		{"POST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234", "POST /b HTTP/1.1\r\nContent-Length: 10\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: http\r\n\r\n01234"},
		{"56789", "56789"},
		{"GET /c HTTP/1.1\r\nX-Forwarded-For: a", ""},
		{"\r\n", ""},
		{"\r", ""},
		{"\n", "GET /c HTTP/1.1\r\nX-Forwarded-For: a, 2001:db8::1\r\nX-Forwarded-Proto: http\r\n\r\n"},
		{"PUT /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc", "PUT /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: http\r\n\r\n3\r\nabc"},
		{"\r\n0\r\n\r", "\r\n0\r\n\r"},
		{"\nGET /e HTTP/1.1\r\n\r\n", "\nGET /e HTTP/1.1\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: http\r\n\r\n"},
	}
	for i, s := range steps {
		got := string(r.Write(nil, []byte(s.in)))
		if got != s.want {
			t.Fatalf("step %d: Write(%q) = %q, want %q", i, s.in, got, s.want)
		}
		if r.Buffered() == 0 && r.buf != nil {
			t.Fatalf("step %d: holds an empty buffer", i)
		}
	}
	if want := "[GET /a HTTP/1.1 POST /b HTTP/1.1 GET /c HTTP/1.1 PUT /d HTTP/1.1 GET /e HTTP/1.1]"; fmt.Sprint(lines) != want {
		t.Errorf("request lines %q, want %s", lines, want)
	}
	if r.Passthrough() != None {
		t.Errorf("Passthrough() = %v", r.Passthrough())
	}
}

func TestBuffered(t *testing.T) {
	var r Rewriter
	r.Reset(testClient, "http")
	if out := r.Write(nil, []byte("GET / HTTP/1.1\r\nHo")); len(out) != 0 {
		t.Fatalf("incomplete head forwarded: %q", out)
	}
	if got := r.Buffered(); got != 18 {
		t.Fatalf("Buffered() = %d, want 18", got)
	}
	r.Write(nil, []byte("st: a\r\n"))
	if got := r.Buffered(); got != 25 {
		t.Fatalf("Buffered() = %d, want 25", got)
	}
	out := r.Write(nil, []byte("\r\nGET"))
	if want := "GET / HTTP/1.1\r\nHost: a\r\n" + both + "\r\n"; string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
	if got := r.Buffered(); got != 3 {
		t.Fatalf("Buffered() = %d, want 3", got)
	}
	r.Write(nil, []byte(" / HTTP/1.1\r\n\r\n"))
	if r.Buffered() != 0 || r.buf != nil {
		t.Fatalf("a buffer is held between requests")
	}
	// Reset gives a held buffer back.
	r.Write(nil, []byte("GET"))
	r.Reset(testClient, "http")
	if r.Buffered() != 0 || r.buf != nil || r.Passthrough() != None {
		t.Fatalf("Reset kept state")
	}
}

func TestFlush(t *testing.T) {
	var r Rewriter
	r.Reset(testClient, "http")
	if out := r.Flush(nil); out != nil || r.Passthrough() != None {
		t.Fatalf("Flush with nothing held: %q, %v", out, r.Passthrough())
	}
	r.Write(nil, []byte("GET / HTTP/1.1\r\n"))
	if out := string(r.Flush(nil)); out != "GET / HTTP/1.1\r\n" {
		t.Fatalf("Flush = %q", out)
	}
	if r.Passthrough() != Flushed || r.Buffered() != 0 {
		t.Fatalf("after Flush: %v, %d held", r.Passthrough(), r.Buffered())
	}
	if out := string(r.Write(nil, []byte("\r\n"))); out != "\r\n" {
		t.Fatalf("Write after Flush = %q", out)
	}
}

func TestZeroValue(t *testing.T) {
	var r Rewriter // without Reset: an empty client, plain http
	got := string(r.Write(nil, []byte("GET / HTTP/1.1\r\n\r\n")))
	if want := "GET / HTTP/1.1\r\nX-Forwarded-For: \r\nX-Forwarded-Proto: http\r\n\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestMaxHead(t *testing.T) {
	mk := func(size int) string {
		const start, end = "GET / HTTP/1.1\r\nA: ", "\r\n\r\n"
		return start + strings.Repeat("a", size-len(start)-len(end)) + end
	}
	fits := mk(MaxHead)
	got := rewrite("", []byte(fits))
	if got.reason != None || !strings.Contains(got.out, xffLine) {
		t.Errorf("head of MaxHead bytes: %v, rewritten %v", got.reason, strings.Contains(got.out, xffLine))
	}
	long := mk(MaxHead+1) + "GET / HTTP/1.1\r\n\r\n"
	for _, split := range []int{0, 1, 100, MaxHead - 1, MaxHead, MaxHead + 1, len(long) - 1} {
		got := rewrite("", []byte(long[:split]), []byte(long[split:]))
		if got.out != long || got.reason != TooLarge {
			t.Errorf("split at %d: head of MaxHead+1 bytes: %v, unchanged %v", split, got.reason, got.out == long)
		}
	}
	// A held head that grows through every buffer size class.
	var r Rewriter
	r.Reset(testClient, "http")
	var out []byte
	for i := 0; i < len(fits); i += 700 {
		out = r.Write(out, []byte(fits[i:min(i+700, len(fits))]))
	}
	if !strings.Contains(string(out), xffLine) || r.Buffered() != 0 {
		t.Errorf("head grown in pieces not rewritten")
	}
}

func TestPassthroughIsFinal(t *testing.T) {
	var r Rewriter
	r.Reset(testClient, "http")
	r.Write(nil, []byte("\x16\x03\x01"))
	if r.Passthrough() != NotHTTP {
		t.Fatalf("Passthrough() = %v", r.Passthrough())
	}
	in := "GET / HTTP/1.1\r\n\r\n"
	if got := string(r.Write(nil, []byte(in))); got != in {
		t.Errorf("after pass-through: %q", got)
	}
	r.Reset(testClient, "http")
	if got := string(r.Write(nil, []byte(in))); got == in {
		t.Errorf("Reset did not end pass-through")
	}
}

func TestReasonString(t *testing.T) {
	for r := None; r <= Flushed; r++ {
		if s := r.String(); s == "" || s == "unknown" {
			t.Errorf("Reason(%d).String() = %q", r, s)
		}
	}
	if s := Reason(200).String(); s != "unknown" {
		t.Errorf("Reason(200).String() = %q", s)
	}
}

// TestSmall guards the memory a Rewriter costs an idle connection.
func TestSmall(t *testing.T) {
	if size := unsafe.Sizeof(Rewriter{}); size > 80 {
		t.Errorf("Rewriter is %d bytes", size)
	}
}

func TestNoAllocs(t *testing.T) {
	get := []byte("GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n")
	post := append([]byte("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"), bytes.Repeat([]byte("x"), 1000)...)
	var r Rewriter
	r.Reset(testClient, "http")
	n := 0
	r.OnRequest = func(line []byte) { n += len(line) }
	dst := make([]byte, 0, 4096)
	for _, in := range [][]byte{get, post} {
		if a := testing.AllocsPerRun(100, func() { dst = r.Write(dst[:0], in) }); a != 0 {
			t.Errorf("%.1f allocations per request", a)
		}
	}
	if r.Passthrough() != None || n == 0 {
		t.Fatalf("requests not followed")
	}
}
