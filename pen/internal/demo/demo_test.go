package demo

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestBackend(t *testing.T) {
	b, err := StartBackend("backend 1", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	req, _ := http.NewRequest("GET", "http://"+b.Addr()+"/", nil)
	req.Header.Set("X-Forwarded-For", "192.0.2.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Hello from backend 1 (request 1)") || !strings.Contains(string(body), "X-Forwarded-For: 192.0.2.1") {
		t.Errorf("body:\n%s", body)
	}
}
