// Package partition implements the appliance's disk layout: four
// partitions (boot FAT, root A, root B, /perm) in a GUID partition table
// with a hybrid MBR, laid out the way the gokrazy runtime expects.
//
// The hybrid MBR lets one image boot everywhere: the Raspberry Pi boot
// loader reads only the MBR and needs partition 1 as an active FAT
// partition (type 0x0C); UEFI firmware and Linux see the protective 0xEE
// entry and use the GPT. The runtime finds its root device by the GUID of
// the first GPT partition, which the kernel command line names together
// with an offset (root=PARTUUID=<guid of p1>/PARTNROFF=1 for root A), so
// the GUIDs derive from the hostname: an update built for the same
// hostname points at the same partitions.
package partition

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"unicode/utf16"
)

// SectorSize is the logical sector size the layout assumes.
const SectorSize = 512

const (
	mib = 1 << 20
	// firstLBA is where the boot partition starts: 4 MiB, as gokrazy
	// images have it.
	firstLBA       = 8192
	bootSectors    = 100 * mib / SectorSize
	rootSectors    = 500 * mib / SectorSize
	gptEntries     = 128
	gptEntrySize   = 128
	gptEntrySecs   = gptEntries * gptEntrySize / SectorSize // 32
	gptHeaderBytes = 92
	// MinPermSize is the smallest /perm partition the layout accepts.
	MinPermSize = 64 * mib
)

// MinDiskSize is the smallest disk the layout fits on.
const MinDiskSize = (firstLBA+bootSectors+2*rootSectors)*SectorSize + MinPermSize + (gptEntrySecs+1)*SectorSize

// Partition numbers, as the runtime counts them.
const (
	Boot  = 1
	RootA = 2
	RootB = 3
	Perm  = 4
)

// Extent is a run of sectors.
type Extent struct {
	Start, Sectors uint64
}

// Offset is the extent's start in bytes.
func (e Extent) Offset() int64 { return int64(e.Start) * SectorSize }

// Size is the extent's length in bytes.
func (e Extent) Size() int64 { return int64(e.Sectors) * SectorSize }

// Last is the extent's last sector.
func (e Extent) Last() uint64 { return e.Start + e.Sectors - 1 }

// Layout places the four partitions on a disk.
type Layout struct {
	DiskSectors uint64
	// Parts holds partitions 1 to 4 at indexes 0 to 3.
	Parts [4]Extent
}

// Part returns partition n (1 to 4).
func (l Layout) Part(n int) Extent { return l.Parts[n-1] }

// NewLayout lays out a disk of diskBytes bytes: boot 100 MiB at 4 MiB,
// root A and root B 500 MiB each, /perm the rest up to the backup GPT, its
// size a multiple of 4 KiB.
func NewLayout(diskBytes int64) (Layout, error) {
	if diskBytes%SectorSize != 0 {
		return Layout{}, fmt.Errorf("disk size %d is not a multiple of %d", diskBytes, SectorSize)
	}
	if diskBytes < MinDiskSize {
		return Layout{}, fmt.Errorf("disk size %d is less than the %d bytes (%d MiB) needed", diskBytes, int64(MinDiskSize), (MinDiskSize+mib-1)/mib)
	}
	sectors := uint64(diskBytes / SectorSize)
	l := Layout{DiskSectors: sectors}
	l.Parts[0] = Extent{firstLBA, bootSectors}
	l.Parts[1] = Extent{l.Parts[0].Start + bootSectors, rootSectors}
	l.Parts[2] = Extent{l.Parts[1].Start + rootSectors, rootSectors}
	permStart := l.Parts[2].Start + rootSectors
	lastUsable := sectors - 1 - gptEntrySecs - 1
	l.Parts[3] = Extent{permStart, (lastUsable + 1 - permStart) / 8 * 8}
	return l, nil
}

// Type GUIDs.
const (
	TypeESP        = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	TypeRootAMD64  = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
	TypeRootARM64  = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
	TypeLinuxData  = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	mbrTypeFAT32L  = 0x0C
	mbrTypeGPTProt = 0xEE
)

// RootType returns the partition type GUID for root file systems of goarch.
func RootType(goarch string) (string, error) {
	switch goarch {
	case "amd64":
		return TypeRootAMD64, nil
	case "arm64":
		return TypeRootARM64, nil
	}
	return "", fmt.Errorf("no root partition type for GOARCH %q", goarch)
}

// DiskSignature is the MBR disk signature for hostname: FNV-1a (32 bit) of
// the hostname, as gokrazy derives it.
func DiskSignature(hostname string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(hostname))
	return h.Sum32()
}

// GUID returns the GUID of partition n (1 to 4; 0 for the disk itself) of
// the disk built for hostname, in canonical lower-case form.
func GUID(hostname string, n int) string {
	return fmt.Sprintf("60c24cc1-f3f9-427a-8199-%08x00%02x", DiskSignature(hostname), n)
}

// RootCmdline returns the root= value that selects root partition part
// (RootA or RootB), relative to the GUID of partition 1.
func RootCmdline(hostname string, part int) string {
	return fmt.Sprintf("PARTUUID=%s/PARTNROFF=%d", GUID(hostname, Boot), part-1)
}

// encodeGUID converts a canonical GUID string to its on-disk form: the
// first three fields little-endian, the rest as written.
func encodeGUID(s string) ([16]byte, error) {
	var g [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("malformed GUID %q", s)
	}
	hex := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	var raw [16]byte
	for i := range raw {
		var v byte
		for _, c := range hex[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c - 'a' + 10)
			case c >= 'A' && c <= 'F':
				v |= byte(c - 'A' + 10)
			default:
				return g, fmt.Errorf("malformed GUID %q", s)
			}
		}
		raw[i] = v
	}
	g = raw
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	return g, nil
}

// decodeGUID is the inverse of encodeGUID, giving upper-case hex.
func decodeGUID(g []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(g[0:]), le.Uint16(g[4:]), le.Uint16(g[6:]), g[8:10], g[10:16])
}

// Options describe the disk's identity.
type Options struct {
	Hostname string
	GOARCH   string
}

// Write writes the MBR, the primary GPT and the backup GPT for layout to
// w, which must be the whole disk.
func Write(w io.WriterAt, l Layout, opts Options) error {
	rootType, err := RootType(opts.GOARCH)
	if err != nil {
		return err
	}
	parts := []struct {
		typ, name string
	}{
		{TypeESP, "boot"},
		{rootType, "root A"},
		{rootType, "root B"},
		{TypeLinuxData, "perm"},
	}
	entries := make([]byte, gptEntries*gptEntrySize)
	for i, p := range parts {
		e := entries[i*gptEntrySize : (i+1)*gptEntrySize]
		typ, err := encodeGUID(p.typ)
		if err != nil {
			return err
		}
		id, err := encodeGUID(GUID(opts.Hostname, i+1))
		if err != nil {
			return err
		}
		copy(e[0:16], typ[:])
		copy(e[16:32], id[:])
		binary.LittleEndian.PutUint64(e[32:], l.Parts[i].Start)
		binary.LittleEndian.PutUint64(e[40:], l.Parts[i].Last())
		for j, u := range utf16.Encode([]rune(p.name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	diskGUID, err := encodeGUID(GUID(opts.Hostname, 0))
	if err != nil {
		return err
	}
	last := l.DiskSectors - 1
	header := func(current, backup, entriesLBA uint64) []byte {
		h := make([]byte, SectorSize)
		le := binary.LittleEndian
		copy(h[0:8], "EFI PART")
		le.PutUint32(h[8:], 0x00010000)
		le.PutUint32(h[12:], gptHeaderBytes)
		le.PutUint64(h[24:], current)
		le.PutUint64(h[32:], backup)
		le.PutUint64(h[40:], 2+gptEntrySecs)
		le.PutUint64(h[48:], last-gptEntrySecs-1)
		copy(h[56:72], diskGUID[:])
		le.PutUint64(h[72:], entriesLBA)
		le.PutUint32(h[80:], gptEntries)
		le.PutUint32(h[84:], gptEntrySize)
		le.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:gptHeaderBytes]))
		return h
	}
	writes := []struct {
		what string
		lba  uint64
		b    []byte
	}{
		{"MBR", 0, mbr(l, opts.Hostname)},
		{"GPT header", 1, header(1, last, 2)},
		{"GPT entries", 2, entries},
		{"backup GPT entries", last - gptEntrySecs, entries},
		{"backup GPT header", last, header(last, 1, last-gptEntrySecs)},
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.b, int64(wr.lba)*SectorSize); err != nil {
			return fmt.Errorf("writing %s: %w", wr.what, err)
		}
	}
	return nil
}

// mbr returns sector 0: a stub that halts if a BIOS runs it, the disk
// signature, and the hybrid partition table.
func mbr(l Layout, hostname string) []byte {
	b := make([]byte, SectorSize)
	copy(b, []byte{0xFA, 0xF4, 0xEB, 0xFD}) // cli; hlt; jmp $-1
	le := binary.LittleEndian
	le.PutUint32(b[440:], DiskSignature(hostname))
	entry := func(i int, active bool, typ byte, e Extent) {
		p := b[446+16*i : 446+16*(i+1)]
		if active {
			p[0] = 0x80
		}
		copy(p[1:4], []byte{0xFE, 0xFF, 0xFF}) // CHS unused: use LBA
		p[4] = typ
		copy(p[5:8], []byte{0xFE, 0xFF, 0xFF})
		le.PutUint32(p[8:], uint32(e.Start))
		le.PutUint32(p[12:], uint32(e.Sectors))
	}
	entry(0, true, mbrTypeFAT32L, l.Parts[0])
	entry(1, false, mbrTypeGPTProt, Extent{1, firstLBA - 1})
	b[510], b[511] = 0x55, 0xAA
	return b
}
