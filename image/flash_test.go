package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/image/internal/partition"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// fakeSys makes a sysfs with one disk (8:16, "sdb") with two partitions,
// and a mountinfo file listing mounts, for CheckFlashTarget.
func fakeSys(t *testing.T, removable, devicePath string, mounts ...string) FlashOptions {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	real := filepath.Join(sys, "devices", devicePath, "block", "sdb")
	for i, p := range []string{"sdb1", "sdb2"} {
		if err := os.MkdirAll(filepath.Join(real, p, "holders"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(real, p, "dev"), fmt.Appendf(nil, "8:%d\n", 17+i), 0o644)
		os.WriteFile(filepath.Join(real, p, "partition"), fmt.Appendf(nil, "%d\n", i+1), 0o644)
	}
	os.MkdirAll(filepath.Join(real, "holders"), 0o755)
	os.WriteFile(filepath.Join(real, "dev"), []byte("8:16\n"), 0o644)
	os.WriteFile(filepath.Join(real, "removable"), []byte(removable+"\n"), 0o644)
	os.MkdirAll(filepath.Join(sys, "dev", "block"), 0o755)
	if err := os.Symlink(real, filepath.Join(sys, "dev", "block", "8:16")); err != nil {
		t.Fatal(err)
	}
	os.Symlink(filepath.Join(real, "sdb1"), filepath.Join(sys, "dev", "block", "8:17"))
	mi := "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n" + strings.Join(mounts, "\n") + "\n"
	mountinfo := filepath.Join(dir, "mountinfo")
	os.WriteFile(mountinfo, []byte(mi), 0o644)
	return FlashOptions{Sys: sys, Mountinfo: mountinfo}
}

// TestFlashTargetChecks: a device that is mounted, holds the root file
// system, is a partition, is held by device mapper or is not removable is
// refused; removable, USB and SD/MMC devices are accepted, and a
// non-removable one with ForceNonRemovable.
func TestFlashTargetChecks(t *testing.T) {
	const pci = "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"
	const usb = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0"
	for _, c := range []struct {
		name      string
		opts      FlashOptions
		minor     uint32
		force     bool
		want, why string
	}{
		{"removable", fakeSys(t, "1", pci), 16, false, "", "removable"},
		{"usb", fakeSys(t, "0", usb), 16, false, "", "on USB"},
		{"internal", fakeSys(t, "0", pci), 16, false, "not a removable device", ""},
		{"internal forced", fakeSys(t, "0", pci), 16, true, "", "not removable, forced with -force-non-removable"},
		{"partition mounted", fakeSys(t, "1", usb, `30 22 8:17 / /media/a\040card rw - vfat /dev/sdb1 rw`), 16, false, "mounted (sdb1 on /media/a card)", ""},
		{"root", fakeSys(t, "1", usb, "30 22 8:18 / / rw - ext4 /dev/sdb2 rw"), 16, true, "holds the running system's root", ""},
		{"a partition", fakeSys(t, "1", usb), 17, false, "is a partition", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.ForceNonRemovable = c.force
			got, err := checkDevice("/dev/sdx", 8, c.minor, c.opts)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.want == "" && got.Why != c.why:
				t.Errorf("accepted as %q, want %q", got.Why, c.why)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("err = %v, want %q", err, c.want)
			}
		})
	}
	held := fakeSys(t, "1", usb)
	real, _ := filepath.EvalSymlinks(filepath.Join(held.Sys, "dev", "block", "8:16"))
	os.MkdirAll(filepath.Join(real, "sdb2", "holders", "dm-0"), 0o755)
	if _, err := checkDevice("/dev/sdx", 8, 16, held); err == nil || !strings.Contains(err.Error(), "in use by dm-0") {
		t.Errorf("a device whose partition device mapper holds: %v", err)
	}
}

// TestFlashRefusesRootDisk: the disk this test runs from is refused by its
// real sysfs and mount table (the check comes before anything is opened
// for writing).
func TestFlashRefusesRootDisk(t *testing.T) {
	mounts, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var dev string
	for _, m := range mounts {
		if m.point == "/" {
			dev = m.dev
		}
	}
	real, err := filepath.EvalSymlinks("/sys/dev/block/" + dev)
	if err != nil {
		t.Skipf("the root file system is on %s, not a block device (a container's overlay?)", dev)
	}
	name := filepath.Base(real)
	if _, err := os.Stat(filepath.Join(real, "partition")); err == nil {
		name = filepath.Base(filepath.Dir(real)) // the disk, not the partition
	}
	disk := "/dev/" + name
	if _, err := os.Stat(disk); err != nil {
		t.Skipf("no %s here", disk)
	}
	_, err = CheckFlashTarget(disk, FlashOptions{ForceNonRemovable: true})
	if err == nil || !strings.Contains(err.Error(), "holds the running system's root") {
		t.Errorf("CheckFlashTarget(%s) = %v; want a refusal", disk, err)
	}
}

// TestFlashFile writes the pc image to a file of a card's size: the image
// is read back identical, the partition table then covers the file, and
// /perm fills it with the image's configuration (over old data where the
// image ends); to a new file, the image is copied as it is (read back by
// Flash), sparse.
func TestFlashFile(t *testing.T) {
	img := buildTestImage(t, "pc")
	dir := t.TempDir()

	card := filepath.Join(dir, "card.img")
	const cardSize = testSize + 700<<20
	if err := os.WriteFile(card, []byte("old contents"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(card, cardSize); err != nil {
		t.Fatal(err)
	}
	// Old data where the grown /perm will be, as on a used card.
	f, err := os.OpenFile(card, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte{0xa5, 0x5a, 0xff, 0x01}, 1<<20)
	for off := int64(testSize); off < cardSize-int64(len(junk)); off += 100 << 20 {
		if _, err := f.WriteAt(junk, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	var out bytes.Buffer
	res, err := Flash(context.Background(), img.path, card, FlashOptions{Progress: &out})
	if err != nil {
		t.Fatalf("Flash: %v\n%s", err, out.String())
	}
	t.Logf("flashed a file of %d MiB: %s", cardSize>>20, out.String())
	layout, _ := partition.NewLayout(cardSize)
	if !res.Grown || res.Size != cardSize || res.PermSize != layout.Part(partition.Perm).Size() {
		t.Errorf("result %+v", res)
	}
	for _, want := range []string{"writing: ", "reading back: ", "identical to the image", "/perm: ext4 of"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	// sfdisk sees the partitions of the larger disk; e2fsck and debugfs
	// the new /perm.
	sf := string(run(t, "sfdisk", "--verify", card))
	if !strings.Contains(sf, "No errors detected") {
		t.Errorf("sfdisk --verify:\n%s", sf)
	}
	perm := extract(t, card, layout.Part(partition.Perm), "perm.ext4")
	run(t, "e2fsck", "-f", "-n", perm)
	if got := run(t, "debugfs", "-R", "cat /pen/pen.cfg", perm); !bytes.Equal(got, testConfig) {
		t.Errorf("/perm/pen/pen.cfg = %q, want %q", got, testConfig)
	}
	// Boot and root as in the image.
	a, _ := os.Open(img.path)
	defer a.Close()
	b, _ := os.Open(card)
	defer b.Close()
	for _, n := range []int{partition.Boot, partition.RootA} {
		e := layout.Part(n)
		if !sameBytes(t, io.NewSectionReader(a, e.Offset(), e.Size()), io.NewSectionReader(b, e.Offset(), e.Size())) {
			t.Errorf("partition %d differs from the image's", n)
		}
	}

	// A new file: the image, byte for byte.
	copyPath := filepath.Join(dir, "copy.img")
	res, err = Flash(context.Background(), img.path, copyPath, FlashOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Grown || res.Size != img.res.Size || res.Written >= img.res.Size {
		t.Errorf("result %+v; want the image's size, zero blocks skipped", res)
	}
	// A character device is no target.
	if _, err := Flash(context.Background(), copyPath, "/dev/null", FlashOptions{}); err == nil || !strings.Contains(err.Error(), "neither a block device nor a regular file") {
		t.Errorf("Flash to /dev/null: %v", err)
	}
}

func sameBytes(t *testing.T, a, b io.Reader) bool {
	t.Helper()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if ea != nil || eb != nil {
			return (ea == nil) == (eb == nil)
		}
	}
}

// TestFlashLoopDevice writes the pc image to a loop device of a card's
// size (as root): written, read back from the device and compared, /perm
// grown; with one of its partitions mounted, the device is refused.
func TestFlashLoopDevice(t *testing.T) {
	if os.Getuid() != 0 {
		testenv.Skip(t, "loop devices need root")
	}
	losetup := testenv.NeedProgram(t, "losetup", "mount")
	img := buildTestImage(t, "pc")
	backing := filepath.Join(t.TempDir(), "card")
	const cardSize = testSize + 200<<20
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, cardSize); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", "--partscan", backing).CombinedOutput()
	if err != nil {
		testenv.Skip(t, fmt.Sprintf("losetup: %v %s", err, out))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "--detach", dev).Run() })

	var progress bytes.Buffer
	res, err := Flash(context.Background(), img.path, dev, FlashOptions{Progress: &progress})
	if err != nil {
		t.Fatalf("Flash to %s: %v\n%s", dev, err, progress.String())
	}
	t.Logf("%s: %s", dev, progress.String())
	if !res.Device || !res.Grown || res.Size != cardSize {
		t.Errorf("result %+v", res)
	}
	b, _ := os.Open(backing)
	defer b.Close()
	a, _ := os.Open(img.path)
	defer a.Close()
	layout, _ := partition.NewLayout(cardSize)
	boot := layout.Part(partition.Boot)
	if !sameBytes(t, io.NewSectionReader(a, boot.Offset(), boot.Size()), io.NewSectionReader(b, boot.Offset(), boot.Size())) {
		t.Errorf("the boot partition in the backing file differs from the image's")
	}

	// Mounted: refused, by name.
	if out, err := exec.Command("partx", "--update", dev).CombinedOutput(); err != nil {
		t.Logf("partx --update: %v %s", err, out)
	}
	part := dev + "p4"
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro", part, mnt).CombinedOutput(); err != nil {
		testenv.Skip(t, fmt.Sprintf("mount %s: %v %s", part, err, out))
	}
	defer exec.Command("umount", mnt).Run()
	_, err = Flash(context.Background(), img.path, dev, FlashOptions{})
	if err == nil || !strings.Contains(err.Error(), "is mounted") || !strings.Contains(err.Error(), mnt) {
		t.Errorf("Flash to %s with %s mounted: %v", dev, part, err)
	}
}
