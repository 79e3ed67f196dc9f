package httpstream

import (
	"bytes"
	"testing"
)

// A typical browser GET of about 200 bytes.
var benchGET = []byte("GET /static/css/site.css?v=42 HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0)\r\n" +
	"Accept: text/css,*/*;q=0.1\r\n" +
	"Accept-Encoding: gzip, deflate\r\n" +
	"Connection: keep-alive\r\n\r\n")

func benchRewriter() *Rewriter {
	r := new(Rewriter)
	r.Reset("198.51.100.23", "http")
	logged := 0
	r.OnRequest = func(line []byte) { logged += len(line) }
	return r
}

// BenchmarkRewriteGET rewrites a 200-byte GET that arrives in one read.
func BenchmarkRewriteGET(b *testing.B) {
	r := benchRewriter()
	dst := make([]byte, 0, 32<<10)
	b.SetBytes(int64(len(benchGET)))
	b.ReportAllocs()
	for b.Loop() {
		dst = r.Write(dst[:0], benchGET)
	}
	if r.Passthrough() != None {
		b.Fatal(r.Passthrough())
	}
}

// BenchmarkRewriteGETSplit rewrites the same GET arriving in two reads,
// so that its head is held in a pooled buffer in between.
func BenchmarkRewriteGETSplit(b *testing.B) {
	r := benchRewriter()
	dst := make([]byte, 0, 32<<10)
	half := len(benchGET) / 2
	b.SetBytes(int64(len(benchGET)))
	b.ReportAllocs()
	for b.Loop() {
		dst = r.Write(dst[:0], benchGET[:half])
		dst = r.Write(dst, benchGET[half:])
	}
	if r.Passthrough() != None {
		b.Fatal(r.Passthrough())
	}
}

// BenchmarkRewriteBody16K forwards a POST whose 16 KiB Content-Length body
// arrives with its head in one 32 KiB read.
func BenchmarkRewriteBody16K(b *testing.B) {
	in := append([]byte("POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Type: application/octet-stream\r\nContent-Length: 16384\r\n\r\n"),
		bytes.Repeat([]byte("x"), 16384)...)
	r := benchRewriter()
	dst := make([]byte, 0, 32<<10)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		dst = r.Write(dst[:0], in)
	}
	if r.Passthrough() != None {
		b.Fatal(r.Passthrough())
	}
}

// BenchmarkRewriteChunked16K forwards a POST with a 16 KiB body in 4 KiB
// chunks, read in 4 KiB pieces.
func BenchmarkRewriteChunked16K(b *testing.B) {
	in := []byte("POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
	for range 4 {
		in = append(in, "1000\r\n"...)
		in = append(in, bytes.Repeat([]byte("x"), 4096)...)
		in = append(in, "\r\n"...)
	}
	in = append(in, "0\r\n\r\n"...)
	r := benchRewriter()
	dst := make([]byte, 0, 32<<10)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		dst = dst[:0]
		for p := in; len(p) > 0; {
			n := min(len(p), 4096)
			dst = r.Write(dst, p[:n])
			p = p[n:]
		}
	}
	if r.Passthrough() != None {
		b.Fatal(r.Passthrough())
	}
}
