package image

import (
	"os"
	"testing"
)

// TestReadParts: the pieces an update sends from a built image are the
// boot file system up to its last used cluster, the whole root file system
// and the MBR's boot code, and the build information names the board,
// hostname and build time the image was built with.
func TestReadParts(t *testing.T) {
	img := buildTestImage(t, "pc")
	f, err := os.Open(img.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := ReadParts(f, img.res.Size)
	if err != nil {
		t.Fatal(err)
	}
	if p.Info.Board != "pc" || p.Info.Hostname != testHostname || p.Info.Timestamp != buildTimestamp(img.time) || p.Info.Version == "" {
		t.Errorf("build info %+v", p.Info)
	}
	if p.Boot.Size() != img.res.BootUsed {
		t.Errorf("boot part: %d bytes, the build used %d", p.Boot.Size(), img.res.BootUsed)
	}
	if p.Root.Size() < img.res.RootSize || p.Root.Size() > img.res.RootSize+4095 {
		t.Errorf("root part: %d bytes, the root file system has %d", p.Root.Size(), img.res.RootSize)
	}
	if len(p.MBR) != 446 {
		t.Errorf("MBR part: %d bytes", len(p.MBR))
	}
	// A file that is no image of ours is refused.
	junk := t.TempDir() + "/junk.img"
	if err := os.WriteFile(junk, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	jf, _ := os.Open(junk)
	defer jf.Close()
	if _, err := ReadParts(jf, 4<<20); err == nil {
		t.Errorf("ReadParts accepted a file of zeros")
	}
}
