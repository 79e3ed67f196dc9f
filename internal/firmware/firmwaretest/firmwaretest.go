// Package firmwaretest makes small disk images laid out like the
// appliance's (hybrid MBR, GPT, a FAT16 boot file system with cmdline.txt
// and a loader entry, a SquashFS header in root A) for the tests of
// package firmware and of the admin UI's firmware page.
package firmwaretest

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
)

// GUID is the first partition's GUID of the images (as for a hostname).
const GUID = "60c24cc1-f3f9-427a-8199-1a2b3c4d0001"

// AMD64Root is the GPT type of amd64 root partitions.
const AMD64Root = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"

// Cmdline is a kernel command line as the image builder writes it, root=
// naming partition 2 (PARTNROFF=1) or 3 (2) of the disk whose first
// partition has GUID guid.
func Cmdline(guid string, root int) string {
	return "console=tty1 console=ttyS0,115200 root=PARTUUID=" + guid + "/PARTNROFF=" + string(rune('0'+root-1)) +
		" ro init=/gokrazy/init panic=10 oops=panic" + strings.Repeat(" ", 64)
}

// BootFS is a FAT16 boot file system as the image builder writes it,
// small: one FAT, 2 KiB clusters, cmdline.txt and, if loader,
// loader/entries/gokrazy.conf.
func BootFS(cmdline string, loader bool) []byte {
	const (
		sector, perCluster, reserved, fatSectors, rootEntries = 512, 4, 4, 4, 16
		cluster                                               = sector * perCluster
	)
	rootDir := (reserved + fatSectors) * sector
	data := rootDir + rootEntries*32
	img := make([]byte, data+8*cluster)
	le := binary.LittleEndian
	copy(img[0:], []byte{0xeb, 0x3c, 0x90})
	le.PutUint16(img[11:], sector)
	img[13] = perCluster
	le.PutUint16(img[14:], reserved)
	img[16] = 1
	le.PutUint16(img[17:], rootEntries)
	le.PutUint16(img[22:], fatSectors)
	entry := func(dir, i int, name string, attr byte, cl int, size int) {
		e := img[dir+i*32:]
		copy(e[0:11], name)
		e[11] = attr
		le.PutUint16(e[26:], uint16(cl))
		le.PutUint32(e[28:], uint32(size))
	}
	at := func(cl int) int { return data + (cl-2)*cluster }
	entry(rootDir, 0, "PENBOOT    ", 0x08, 0, 0)
	entry(rootDir, 1, "CMDLINE TXT", 0x01, 2, len(cmdline))
	copy(img[at(2):], cmdline)
	if loader {
		l := "title pen appliance\nlinux /vmlinuz\noptions " + cmdline
		entry(rootDir, 2, "loader     ", 0x10, 3, 0)
		entry(at(3), 0, "entries    ", 0x10, 4, 0)
		entry(at(4), 0, "GOKRAZ~1CON", 0x01, 5, len(l))
		copy(img[at(5):], l)
	}
	return img
}

// Layout of the images, in bytes.
const (
	BootStart = 1 << 20
	BootSize  = 1 << 20
	RootStart = 2 << 20
	RootSize  = 2 << 20
	DiskSize  = 8 << 20
)

// Disk is an update image: partition 1 with boot, partition 2 with a
// SquashFS header claiming rootUsed bytes followed by random bytes, then
// root B and /perm filled with random bytes (which an update must not
// read). It returns the image and what root A's file system holds.
func Disk(guid, rootType string, boot []byte, rootUsed int, seed uint64) (disk, root []byte) {
	disk = make([]byte, DiskSize)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := RootStart; i < DiskSize; i++ {
		disk[i] = byte(r.Uint32())
	}
	copy(disk, PartitionTable(guid, rootType, BootStart, BootSize, RootStart, RootSize, DiskSize))
	copy(disk[BootStart:], boot)
	sq := disk[RootStart:]
	copy(sq, "hsqs")
	binary.LittleEndian.PutUint64(sq[40:], uint64(rootUsed))
	padded := (rootUsed + 4095) &^ 4095
	return disk, disk[RootStart : RootStart+padded]
}

// PartitionTable is the first 34 sectors of an image laid out like Disk's
// but with the given byte offsets and sizes: MBR boot code and signature,
// the GPT header's signature and four entries (boot, root A, root B at
// rootStart+rootSize, /perm up to 1 MiB before diskSize).
func PartitionTable(guid, rootType string, bootStart, bootSize, rootStart, rootSize, diskSize int64) []byte {
	head := make([]byte, 34*512)
	for i := 0; i < 432; i++ {
		head[i] = byte(i)
	}
	binary.LittleEndian.PutUint32(head[440:], 0x1a2b3c4d)
	head[510], head[511] = 0x55, 0xaa
	copy(head[512:], "EFI PART")
	parts := []struct {
		start, size int64
		typ, guid   string
	}{
		{bootStart, bootSize, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", guid},
		{rootStart, rootSize, rootType, guid[:len(guid)-2] + "02"},
		{rootStart + rootSize, rootSize, rootType, guid[:len(guid)-2] + "03"},
		{rootStart + 2*rootSize, diskSize - rootStart - 2*rootSize - 1<<20, "0fc63daf-8483-4772-8e79-3d69d8477de4", guid[:len(guid)-2] + "04"},
	}
	for i, p := range parts {
		e := head[1024+128*i:]
		putGUID(e[0:], p.typ)
		putGUID(e[16:], p.guid)
		binary.LittleEndian.PutUint64(e[32:], uint64(p.start/512))
		binary.LittleEndian.PutUint64(e[40:], uint64((p.start+p.size)/512-1))
	}
	return head
}

func putGUID(b []byte, s string) {
	h := strings.ReplaceAll(s, "-", "")
	var raw [16]byte
	for i := range raw {
		var v byte
		for _, c := range h[2*i : 2*i+2] {
			v = v*16 + byte(strings.IndexRune("0123456789abcdef", c))
		}
		raw[i] = v
	}
	le := binary.LittleEndian
	be := binary.BigEndian
	le.PutUint32(b[0:], be.Uint32(raw[0:]))
	le.PutUint16(b[4:], be.Uint16(raw[4:]))
	le.PutUint16(b[6:], be.Uint16(raw[6:]))
	copy(b[8:], raw[8:])
}
