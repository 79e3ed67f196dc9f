package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPrivateSocket: only a unix socket in a directory that root owns and
// nobody else may enter is opened as root without -u.
func TestPrivateSocket(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private")
	shared := filepath.Join(dir, "shared")
	os.Mkdir(private, 0o700)
	os.Mkdir(shared, 0o755)
	os.Chmod(shared, 0o755)
	want := os.Getuid() == 0 // the directory must be root's
	if got := privateSocket(filepath.Join(private, "ctl")); got != want {
		t.Errorf("socket in a 0700 directory of uid %d: %v, want %v", os.Getuid(), got, want)
	}
	for _, spec := range []string{filepath.Join(shared, "ctl"), "10000", "127.0.0.1:10000", filepath.Join(dir, "missing", "ctl")} {
		if privateSocket(spec) {
			t.Errorf("%s counted as private", spec)
		}
	}
}
