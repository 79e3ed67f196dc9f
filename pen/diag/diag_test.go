package diag

import (
	"bytes"
	"testing"
	"time"
)

func TestLevels(t *testing.T) {
	var b bytes.Buffer
	l := New(&b)
	l.now = func() time.Time { return time.Date(2026, 11, 22, 1, 2, 3, 0, time.Local) }
	l.Printf("always %d", 1)
	l.Debugf(1, "hidden")
	l.SetLevel(2)
	l.Debugf(2, "shown\n")
	want := "2026-11-22 01:02:03: always 1\n2026-11-22 01:02:03: shown\n"
	if got := b.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
