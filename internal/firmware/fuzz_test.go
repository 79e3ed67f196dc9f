package firmware

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pen-lb/pen-appliance/internal/firmware/firmwaretest"
)

// compactDisk is an update image as small as ReadImage allows, for fuzz
// seeds (the test images of firmwaretest.Disk are 8 MiB): the partition
// table, the boot file system right after it, and root A with a SquashFS
// header claiming used bytes. The image ends there: the entries of root
// B and a 1 MiB /perm point past its end, and ReadImage reads neither.
func compactDisk(boot []byte, used int) []byte {
	bootStart := int64(34 * sectorSize)
	bootSize := int64(len(boot)+sectorSize-1) / sectorSize * sectorSize
	rootStart := bootStart + bootSize
	rootSize := int64((used+4095)&^4095) + 8*sectorSize
	disk := firmwaretest.PartitionTable(firmwaretest.GUID, firmwaretest.AMD64Root, bootStart, bootSize, rootStart, rootSize, rootStart+2*rootSize+2<<20)
	disk = append(disk, make([]byte, bootSize+rootSize)...)
	copy(disk[bootStart:], boot)
	sq := disk[rootStart:]
	copy(sq, "hsqs")
	binary.LittleEndian.PutUint64(sq[40:], uint64(used))
	return disk
}

// readAll runs ReadImage on r with a root callback that reads all it is
// given, and returns the image, the bytes root got, and the error.
func readAll(r io.Reader) (*Image, int64, error) {
	var got int64
	img, err := ReadImage(r, nil, func(_ *Image, rr io.Reader) error {
		n, err := io.Copy(io.Discard, rr)
		got = n
		return err
	})
	return img, got, err
}

// FuzzReadImage feeds ReadImage, which reads a firmware image uploaded
// through the admin UI, arbitrary bytes: it must never panic, never read
// past what it reports, and what it accepts must be consistent (a root
// file system of whole 4 KiB blocks handed over completely, a command line
// no longer than a boot file system's limit). Read a byte at a time it
// must come to the same verdict as read at once.
func FuzzReadImage(f *testing.F) {
	cmd := firmwaretest.Cmdline(firmwaretest.GUID, 2)
	f.Add(compactDisk(firmwaretest.BootFS(cmd, true), 4096))
	f.Add(compactDisk(firmwaretest.BootFS(cmd, false), 5000))
	f.Add(compactDisk(firmwaretest.BootFS("", false), 4096))
	f.Add(compactDisk(firmwaretest.BootFS(cmd, false), 0)) // refused: an empty root
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		img, got, err := readAll(bytes.NewReader(data))
		if err == nil {
			if img.Read > int64(len(data)) {
				t.Fatalf("read %d bytes of %d", img.Read, len(data))
			}
			if img.RootSize < 4096 || img.RootSize%4096 != 0 || got != img.RootSize {
				t.Fatalf("root file system of %d bytes, handed over %d", img.RootSize, got)
			}
			if len(img.MBR) != 446 || len(img.Cmdline) > 4096 || len(img.Boot) > maxBoot {
				t.Fatalf("MBR %d, command line %d, boot %d bytes", len(img.MBR), len(img.Cmdline), len(img.Boot))
			}
		}
		img2, got2, err2 := readAll(iotest.OneByteReader(bytes.NewReader(data)))
		if (err == nil) != (err2 == nil) {
			t.Fatalf("read at once: %v; a byte at a time: %v", err, err2)
		}
		if err == nil && (got != got2 || img.Read != img2.Read || !bytes.Equal(img.Boot, img2.Boot) ||
			!bytes.Equal(img.Cmdline, img2.Cmdline) || img.Loader != img2.Loader || img.DiskGUID != img2.DiskGUID) {
			t.Fatalf("read at once and a byte at a time differ: %+v / %+v", img, img2)
		}
	})
}

// TestCompactDiskSeed: the fuzz seeds are images ReadImage accepts, so
// that fuzzing starts from the inside of the parser.
func TestCompactDiskSeed(t *testing.T) {
	for _, loader := range []bool{true, false} {
		disk := compactDisk(firmwaretest.BootFS(firmwaretest.Cmdline(firmwaretest.GUID, 2), loader), 5000)
		img, got, err := readAll(bytes.NewReader(disk))
		if err != nil {
			t.Fatal(err)
		}
		if img.Loader != loader || got != 8192 || !strings.Contains(string(img.Cmdline), "PARTNROFF=1") {
			t.Errorf("loader %v: %+v, root %d bytes", loader, img, got)
		}
	}
	whole := compactDisk(firmwaretest.BootFS("", false), 4096)
	if _, _, err := readAll(bytes.NewReader(whole[:len(whole)-4096-1])); err == nil {
		t.Errorf("an image cut short in root A was accepted")
	}
}

// FuzzSetRoot: a command line from an uploaded image or the boot
// partition is either refused or rewritten to the same length with root=
// naming the partition asked for, in the form it had.
func FuzzSetRoot(f *testing.F) {
	f.Add(firmwaretest.Cmdline(firmwaretest.GUID, 2), 3)
	f.Add(cmdline("PARTUUID=2ea5a2c6-02"), 3)
	f.Add(cmdline("/dev/mmcblk0p3"), 2)
	f.Add("root=PARTUUID=x/PARTNROFF=1 root=/dev/sda2", 3)
	f.Fuzz(func(t *testing.T, line string, n int) {
		before, perr := ParseRoot(line)
		out, err := SetRoot([]byte(line), n)
		if err != nil {
			return
		}
		if perr != nil {
			t.Fatalf("SetRoot rewrote %q, which ParseRoot refuses: %v", line, perr)
		}
		if len(out) != len(line) {
			t.Fatalf("%q became %q: length changed", line, out)
		}
		after, err := ParseRoot(string(out))
		if err != nil || after.Partition != n || after.form != before.form || after.GUID != before.GUID {
			t.Fatalf("%q became %q: root %+v, %v (was %+v, want partition %d)", line, out, after, err, before, n)
		}
	})
}
