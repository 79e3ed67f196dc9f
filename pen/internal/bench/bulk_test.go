package bench

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestBulkDownload(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 64<<20 + 123
	go BulkServer{Bytes: size}.Serve(ln)
	n, d, err := Download(context.Background(), ln.Addr().String(), size, 10*time.Second)
	if err != nil || n != size || d <= 0 {
		t.Fatalf("download: %d bytes in %v, %v; want %d", n, d, err, size)
	}
	// A transfer cut short is a failure, not a figure.
	if _, _, err := Download(context.Background(), ln.Addr().String(), size+1, 10*time.Second); err == nil || !strings.Contains(err.Error(), "arrived") {
		t.Errorf("short download: %v", err)
	}
}

func TestRatioPairs(t *testing.T) {
	recs := []Record{
		{Test: "keepalive", Contender: "direct", Round: 1, Value: 100, Unit: "req/s"},
		{Test: "keepalive", Contender: "pen", Round: 1, Value: 90, Unit: "req/s"},
		{Test: "keepalive", Contender: "haproxy", Round: 1, Value: 60, Unit: "req/s"},
		{Test: "keepalive", Contender: "pen-1loop", Round: 1, Value: 45, Unit: "req/s"},
		{Test: "keepalive", Contender: "haproxy-1thread", Round: 1, Value: 50, Unit: "req/s"},
	}
	got := strings.Join(ratioWords(Summarize(recs)[0]), " ")
	want := "pen/direct=0.90 haproxy/direct=0.60 pen-1loop/direct=0.45 haproxy-1thread/direct=0.50 pen/haproxy=1.50 pen-1loop/haproxy-1thread=0.90 pen/pen-1loop=2.00"
	if got != want {
		t.Errorf("ratios\n%s\nwant\n%s", got, want)
	}
}
