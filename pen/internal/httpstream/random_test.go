package httpstream

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestRandomStreams builds keep-alive streams of well-formed requests
// (random methods, fields, X-Forwarded-For lists, Content-Length and
// chunked bodies with extensions and trailers), feeds each in random
// pieces, and checks the result with net/http against the input.
func TestRandomStreams(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := range n {
		in, lines := randomStream(rnd)
		proto := []string{"http", "https"}[rnd.IntN(2)]
		whole := rewrite(proto, []byte(in))
		if whole.reason != None || whole.held != 0 || !slices.Equal(whole.lines, lines) {
			t.Fatalf("stream %d: %v, %d held, lines %q, want %q\n%q", i, whole.reason, whole.held, whole.lines, lines, in)
		}
		var pieces [][]byte
		for rest := []byte(in); len(rest) > 0; {
			k := min(len(rest), 1+rnd.IntN(1+rnd.IntN(300)))
			pieces = append(pieces, rest[:k])
			rest = rest[k:]
		}
		if split := rewrite(proto, pieces...); split.out != whole.out || !slices.Equal(split.lines, lines) {
			t.Fatalf("stream %d: split output differs\n%q\n%q", i, split.out, whole.out)
		}
		if _, err := readRequests([]byte(in)); err != nil {
			t.Fatalf("stream %d: generator made a stream net/http cannot read: %v\n%q", i, err, in)
		}
		if err := sameRequests([]byte(in), []byte(whole.out), proto); err != nil {
			t.Fatalf("stream %d: %v\n in %q\nout %q", i, err, in, whole.out)
		}
	}
}

func randomStream(rnd *rand.Rand) (string, []string) {
	pick := func(s ...string) string { return s[rnd.IntN(len(s))] }
	var b strings.Builder
	var lines []string
	for range 1 + rnd.IntN(4) {
		method := pick("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND")
		target := pick("/", "/a/b?c=d", "/"+strings.Repeat("x", rnd.IntN(200)), "http://example.com/p")
		line := fmt.Sprintf("%s %s HTTP/1.%d", method, target, rnd.IntN(2))
		lines = append(lines, line[:min(len(line), LogLineMax)])
		eol := pick("\r\n", "\r\n", "\n")
		b.WriteString(line + eol)
		body, chunked := "", false
		switch rnd.IntN(3) {
		case 1:
			body = strings.Repeat(pick("a", "\r\n\r\n", "GET / HTTP/1.1\r\n\r\n"), rnd.IntN(40))
		case 2:
			chunked = strings.HasSuffix(line, "1.1")
		}
		var fields []string
		fields = append(fields, "Host: "+pick("example.com", "h:8080"))
		for range rnd.IntN(4) {
			fields = append(fields, pick("X-Forwarded-For", "x-forwarded-for", "X-FORWARDED-FOR")+":"+
				pick("", " ", " 10.0.0.1", "10.0.0.1, 10.0.0.2", " 2001:db8::2 \t"))
		}
		for range rnd.IntN(5) {
			fields = append(fields, pick("Accept", "User-Agent", "Cookie", "X-Forwarded-Host", "X-Forwarded-Fo", "Connection")+": "+
				pick("*/*", "keep-alive", "a=b; c=d", strings.Repeat("v", rnd.IntN(100)), "\xc3\xa9"))
		}
		if rnd.IntN(3) == 0 {
			fields = append(fields, pick("X-Forwarded-Proto", "x-forwarded-proto")+": "+pick("http", "https"))
		}
		if chunked {
			fields = append(fields, pick("Transfer-Encoding: chunked", "transfer-encoding: CHUNKED"))
		} else if body != "" || rnd.IntN(4) == 0 {
			fields = append(fields, fmt.Sprintf("%s: %d", pick("Content-Length", "content-length"), len(body)))
		}
		rnd.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
		for _, f := range fields {
			b.WriteString(f + eol)
		}
		b.WriteString(eol)
		b.WriteString(body)
		if chunked {
			for range rnd.IntN(4) {
				data := strings.Repeat(pick("z", "\r\n", "0\r\n\r\n"), 1+rnd.IntN(30))
				fmt.Fprintf(&b, "%x%s\r\n%s\r\n", len(data), pick("", ";a=b", ";x"), data)
			}
			b.WriteString(pick("0", "000") + "\r\n")
			if rnd.IntN(2) == 0 {
				b.WriteString("X-Trailer: 1\r\n")
			}
			b.WriteString("\r\n")
		}
	}
	return b.String(), lines
}
