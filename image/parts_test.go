package image

import (
	"os"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/boards"
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

// TestBuildInfo: penbuild.txt reads back as written, kernel arguments
// included, and lacking fields are an error.
func TestBuildInfo(t *testing.T) {
	bi := BuildInfo{Board: "pc", Hostname: "lb1", Version: "v1.2.3-4-gabc", Timestamp: "2026-01-02T03:04:05Z", KernelArgs: []string{"pen.trial_timeout=90s", "quiet"}}
	got, err := parseBuildInfo(bi.marshal())
	if err != nil || got.Board != bi.Board || got.Hostname != bi.Hostname || got.Version != bi.Version || got.Timestamp != bi.Timestamp ||
		strings.Join(got.KernelArgs, " ") != "pen.trial_timeout=90s quiet" {
		t.Errorf("parseBuildInfo(%q) = %+v, %v", bi.marshal(), got, err)
	}
	if _, err := parseBuildInfo([]byte("board pc\nversion v1\n")); err == nil {
		t.Errorf("parseBuildInfo accepted a file without hostname and timestamp")
	}
}

// TestKernelArgs: extra kernel arguments follow the board's, before the
// padding; white space, root= and a line too long for one sector are
// refused.
func TestKernelArgs(t *testing.T) {
	b, err := boards.Lookup("pc")
	if err != nil {
		t.Fatal(err)
	}
	got := CmdlineWith(b, "pen", []string{"pen.trial_timeout=90s"})
	if want := strings.TrimRight(Cmdline(b, "pen"), " ") + " pen.trial_timeout=90s" + strings.Repeat(" ", 64); got != want {
		t.Errorf("CmdlineWith = %q, want %q", got, want)
	}
	if err := checkKernelArgs(b, "pen", []string{"pen.trial_timeout=90s", "quiet"}); err != nil {
		t.Error(err)
	}
	for _, bad := range [][]string{{""}, {"a b"}, {"root=/dev/sda2"}, {"x\n"}, {strings.Repeat("x", 300)}} {
		if err := checkKernelArgs(b, "pen", bad); err == nil {
			t.Errorf("checkKernelArgs(%q) accepted", bad)
		}
	}
}
