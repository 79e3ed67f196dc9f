package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/image/internal/partition"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// TestPermFileSystem: the /perm file system is one e2fsck accepts as it
// is, with a lost+found as mke2fs makes it (e2fsck reconnects lost files
// there and creates one itself otherwise), and pen's configuration.
func TestPermFileSystem(t *testing.T) {
	e2fsck := testenv.NeedProgram(t, "e2fsck", "e2fsprogs")
	debugfs := testenv.NeedProgram(t, "debugfs", "e2fsprogs")
	path := filepath.Join(t.TempDir(), "perm.ext4")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	config := []byte("listen 80\nserver 0 address 10.0.0.1 port 8000\n")
	if err := writePerm(f, partition.Extent{Start: 0, Sectors: size / partition.SectorSize}, config); err != nil {
		t.Fatalf("writePerm: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(e2fsck, "-f", "-n", path).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -f -n: %v\n%s", err, out)
	}
	// An e2fsck that may repair (as at boot) finds nothing to do: exit
	// status 0. Without lost+found it made one and exited 1.
	repaired := filepath.Join(t.TempDir(), "repaired.ext4")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(repaired, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(e2fsck, "-f", "-y", repaired).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -f -y changed the file system: %v\n%s", err, out)
	}
	out, err := exec.Command(debugfs, "-R", "stat /lost+found", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Type: directory") || !strings.Contains(string(out), "Mode:  0700") {
		t.Errorf("debugfs stat /lost+found: %v\n%s", err, out)
	}
	if got, err := exec.Command(debugfs, "-R", "cat /pen/pen.cfg", path).Output(); err != nil || string(got) != string(config) {
		t.Errorf("/pen/pen.cfg = %q (%v), want %q", got, err, config)
	}
}
