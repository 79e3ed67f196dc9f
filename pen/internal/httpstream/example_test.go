package httpstream_test

import (
	"fmt"

	"github.com/pen-lb/pen-appliance/pen/internal/httpstream"
)

// A proxy runs each read from the client through the Rewriter and forwards
// what Write returns.
func Example() {
	var rw httpstream.Rewriter
	rw.Reset("198.51.100.23", "http")
	rw.OnRequest = func(line []byte) { fmt.Printf("log: %s\n", line) }

	var out []byte
	for _, read := range []string{
		"GET /a HTTP/1.1\r\nHost: example.com\r\n",
		"\r\nPOST /b HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\nContent-Length: 2\r\n\r\nhi",
	} {
		out = rw.Write(out[:0], []byte(read))
		fmt.Printf("forward %q\n", out)
	}
	// Output:
	// forward ""
	// log: GET /a HTTP/1.1
	// log: POST /b HTTP/1.1
	// forward "GET /a HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 198.51.100.23\r\nX-Forwarded-Proto: http\r\n\r\nPOST /b HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9, 198.51.100.23\r\nContent-Length: 2\r\nX-Forwarded-Proto: http\r\n\r\nhi"
}
