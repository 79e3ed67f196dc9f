package httpstream

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// FuzzRewrite checks, for any client stream:
//   - no panic, and never more than MaxHead bytes held;
//   - the output is the input with only the forwarding text inserted, one
//     X-Forwarded-For insertion per reported request;
//   - feeding the input whole, byte by byte, or cut where the fuzzer says
//     gives the same output, request lines and Reason;
//   - when net/http can read the input as a sequence of complete requests
//     and the Rewriter followed all of them, net/http reads the same
//     requests from the output, with the client added to X-Forwarded-For.
func FuzzRewrite(f *testing.F) {
	for _, tt := range rewriteTests {
		f.Add([]byte(tt.in), []byte{7, 1, 30}, tt.proto == "https")
	}
	f.Fuzz(func(t *testing.T, in, cuts []byte, https bool) {
		proto := "http"
		if https {
			proto = "https"
		}
		whole := rewrite(proto, in)

		var pieces, bytewise [][]byte
		rest := in
		for i := 0; len(rest) > 0; i++ {
			n := 1
			if len(cuts) > 0 {
				n = int(cuts[i%len(cuts)]) + 1
			}
			n = min(n, len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		for i := range in {
			bytewise = append(bytewise, in[i:i+1])
		}
		for _, split := range []outcome{rewrite(proto, pieces...), rewrite(proto, bytewise...)} {
			if split.out != whole.out || !slices.Equal(split.lines, whole.lines) || split.reason != whole.reason || split.held != whole.held {
				t.Fatalf("split input differs:\nwhole %q %q %v %d\nsplit %q %q %v %d",
					whole.out, whole.lines, whole.reason, whole.held, split.out, split.lines, split.reason, split.held)
			}
		}
		if whole.held > MaxHead {
			t.Fatalf("holds %d bytes", whole.held)
		}

		nxff, err := unrewrite(in, []byte(whole.out), proto)
		if err != nil {
			t.Fatalf("%v\n in %q\nout %q", err, in, whole.out)
		}
		if nxff != len(whole.lines) {
			t.Fatalf("%d X-Forwarded-For insertions for %d requests", nxff, len(whole.lines))
		}

		if whole.reason == None && whole.held == 0 {
			if err := sameRequests(in, []byte(whole.out), proto); err != nil {
				t.Fatalf("%v\n in %q\nout %q", err, in, whole.out)
			}
		}
	})
}

// TestNetHTTPReadsOutput checks the table's outputs with net/http.
func TestNetHTTPReadsOutput(t *testing.T) {
	for _, tt := range rewriteTests {
		if tt.reason != None || strings.HasPrefix(tt.name, "incomplete") {
			continue
		}
		proto := tt.proto
		if proto == "" {
			proto = "http"
		}
		if _, err := readRequests([]byte(tt.in)); err != nil {
			t.Logf("%s: net/http does not read the input (%v)", tt.name, err)
			continue
		}
		if err := sameRequests([]byte(tt.in), []byte(tt.want), proto); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// unrewrite walks out against in, skipping the text a Rewriter may insert,
// and returns how many X-Forwarded-For insertions it skipped. Every
// insertion starts with a byte that differs from the input byte at that
// point (a Rewriter inserts only before CR, LF, space or tab), so a greedy
// walk is exact.
func unrewrite(in, out []byte, proto string) (nxff int, err error) {
	inserts := []string{
		", " + testClient,
		" " + testClient,
		"X-Forwarded-For: " + testClient + "\r\n",
		"X-Forwarded-For: " + testClient + "\n",
		"X-Forwarded-Proto: " + proto + "\r\n",
		"X-Forwarded-Proto: " + proto + "\n",
	}
	i, j := 0, 0
	for i < len(out) {
		if j < len(in) && out[i] == in[j] {
			i++
			j++
			continue
		}
		k := slices.IndexFunc(inserts, func(s string) bool { return bytes.HasPrefix(out[i:], []byte(s)) })
		if k < 0 {
			return 0, fmt.Errorf("output differs from input at output offset %d, input offset %d", i, j)
		}
		if k < 4 {
			nxff++
		}
		i += len(inserts[k])
	}
	if j != len(in) {
		return 0, fmt.Errorf("output lost input from offset %d on", j)
	}
	return nxff, nil
}

// request is what net/http reads of one request.
type request struct {
	method, uri, proto, host string
	header                   http.Header
	body                     []byte
}

// readRequests reads all of b as complete requests.
func readRequests(b []byte) ([]request, error) {
	br := bufio.NewReader(bytes.NewReader(b))
	var reqs []request
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return reqs, nil
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, request{req.Method, req.RequestURI, req.Proto, req.Host, req.Header, body})
	}
}

// sameRequests checks that net/http reads the same requests from in and
// out, except that out adds the client to X-Forwarded-For and has an
// X-Forwarded-Proto. It succeeds when net/http cannot read in.
func sameRequests(in, out []byte, proto string) error {
	want, err := readRequests(in)
	if err != nil {
		return nil
	}
	got, err := readRequests(out)
	if err != nil {
		return fmt.Errorf("net/http reads the input but not the output: %v", err)
	}
	if len(got) != len(want) {
		return fmt.Errorf("net/http reads %d requests from the output, %d from the input", len(got), len(want))
	}
	for i, g := range got {
		w := want[i]
		if g.method != w.method || g.uri != w.uri || g.proto != w.proto || g.host != w.host || !bytes.Equal(g.body, w.body) {
			return fmt.Errorf("request %d: got %q %q %q %q body %q, want %q %q %q %q body %q",
				i, g.method, g.uri, g.proto, g.host, g.body, w.method, w.uri, w.proto, w.host, w.body)
		}
		xff := w.header.Values("X-Forwarded-For")
		switch n := len(xff); {
		case n == 0:
			xff = []string{testClient}
		case xff[n-1] == "":
			xff = append(xff[:n-1:n-1], testClient)
		default:
			xff = append(xff[:n-1:n-1], xff[n-1]+", "+testClient)
		}
		if g := g.header.Values("X-Forwarded-For"); !slices.Equal(g, xff) {
			return fmt.Errorf("request %d: X-Forwarded-For %q, want %q", i, g, xff)
		}
		xfp := w.header.Values("X-Forwarded-Proto")
		if len(xfp) == 0 {
			xfp = []string{proto}
		}
		if g := g.header.Values("X-Forwarded-Proto"); !slices.Equal(g, xfp) {
			return fmt.Errorf("request %d: X-Forwarded-Proto %q, want %q", i, g, xfp)
		}
		for _, h := range []http.Header{g.header, w.header} {
			h.Del("X-Forwarded-For")
			h.Del("X-Forwarded-Proto")
		}
		if fmt.Sprint(g.header) != fmt.Sprint(w.header) {
			return fmt.Errorf("request %d: header %v, want %v", i, g.header, w.header)
		}
	}
	return nil
}
