package progress

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// TestPlainLines: when the output is no terminal, a transfer gives one
// line when it starts and one when it ends, with bytes, time and rate,
// and the error when it failed; no carriage returns or escapes.
func TestPlainLines(t *testing.T) {
	var out bytes.Buffer
	m := New(&out, "uploading root", 3<<20)
	m.Start()
	for i := 0; i < 3; i++ {
		m.Write(make([]byte, 1<<20))
	}
	m.Done("verified", nil)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "uploading root: 3.0 MiB ..." ||
		!regexp.MustCompile(`^uploading root: 3\.0 MiB in \d+\.\ds \([\d.]+ [KMG]?i?B/s\), verified$`).MatchString(lines[1]) {
		t.Errorf("output %q", out.String())
	}
	if strings.ContainsAny(out.String(), "\r\033") {
		t.Errorf("terminal control characters in %q", out.String())
	}
	out.Reset()
	m = New(&out, "writing", 0)
	m.Write([]byte("abc"))
	m.Done("", errors.New("disk full"))
	if want := "writing ...\nwriting: failed after 3 B: disk full\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

// TestTerminalLine: on a terminal the line is redrawn in place with the
// share done, the rate and the time left.
func TestTerminalLine(t *testing.T) {
	var out bytes.Buffer
	m := New(&out, "writing", 4<<20)
	m.tty, m.every = true, 0
	m.Start()
	m.Write(make([]byte, 1<<20))
	if !regexp.MustCompile(`\r\033\[Kwriting: 1\.0 MiB of 4\.0 MiB \(25%\), [\d.]+ [KMG]?i?B/s, \d+s left$`).MatchString(out.String()) {
		t.Errorf("output %q", out.String())
	}
	if IsTerminal(&out) {
		t.Errorf("a buffer is a terminal")
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 33 << 20: "33.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
