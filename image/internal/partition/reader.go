package partition

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// MBREntry is one of the four MBR partition entries.
type MBREntry struct {
	Active         bool
	Type           byte
	Start, Sectors uint32
}

// Entry is a used GPT partition entry.
type Entry struct {
	Type, GUID  string // canonical upper-case form
	First, Last uint64
	Name        string
}

// Table is a partition table read back from a disk image.
type Table struct {
	DiskSignature uint32
	MBR           [4]MBREntry
	DiskGUID      string
	FirstUsable   uint64
	LastUsable    uint64
	BackupLBA     uint64
	// Parts holds the used GPT entries; Parts[i] is partition i+1.
	Parts []Entry
}

// Read reads and checks the MBR, the primary GPT and the backup GPT of a
// disk of diskSectors sectors: signatures, sizes, checksums, and that the
// backup matches the primary.
func Read(r io.ReaderAt, diskSectors uint64) (*Table, error) {
	sector := func(lba uint64) ([]byte, error) {
		b := make([]byte, SectorSize)
		if _, err := r.ReadAt(b, int64(lba)*SectorSize); err != nil {
			return nil, fmt.Errorf("reading sector %d: %w", lba, err)
		}
		return b, nil
	}
	m, err := sector(0)
	if err != nil {
		return nil, err
	}
	if m[510] != 0x55 || m[511] != 0xAA {
		return nil, fmt.Errorf("MBR: no boot signature")
	}
	le := binary.LittleEndian
	t := &Table{DiskSignature: le.Uint32(m[440:])}
	for i := range t.MBR {
		p := m[446+16*i:]
		t.MBR[i] = MBREntry{Active: p[0] == 0x80, Type: p[4], Start: le.Uint32(p[8:]), Sectors: le.Uint32(p[12:])}
	}

	primary, entries, err := readGPT(r, 1, diskSectors)
	if err != nil {
		return nil, fmt.Errorf("primary GPT: %w", err)
	}
	t.DiskGUID = decodeGUID(primary[56:72])
	t.FirstUsable = le.Uint64(primary[40:])
	t.LastUsable = le.Uint64(primary[48:])
	t.BackupLBA = le.Uint64(primary[32:])
	backup, backupEntries, err := readGPT(r, t.BackupLBA, diskSectors)
	if err != nil {
		return nil, fmt.Errorf("backup GPT: %w", err)
	}
	if le.Uint64(backup[32:]) != 1 || !bytes.Equal(backup[40:72], primary[40:72]) || !bytes.Equal(backupEntries, entries) {
		return nil, fmt.Errorf("backup GPT differs from the primary")
	}
	size := int(le.Uint32(primary[84:]))
	for i := 0; i+size <= len(entries); i += size {
		e := entries[i : i+size]
		if bytes.Equal(e[0:16], make([]byte, 16)) {
			continue
		}
		var name []uint16
		for j := 56; j+1 < 128 && j+1 < len(e); j += 2 {
			u := le.Uint16(e[j:])
			if u == 0 {
				break
			}
			name = append(name, u)
		}
		t.Parts = append(t.Parts, Entry{
			Type:  decodeGUID(e[0:16]),
			GUID:  decodeGUID(e[16:32]),
			First: le.Uint64(e[32:]),
			Last:  le.Uint64(e[40:]),
			Name:  string(utf16.Decode(name)),
		})
	}
	for i, p := range t.Parts {
		if p.First < t.FirstUsable || p.Last > t.LastUsable || p.Last < p.First {
			return nil, fmt.Errorf("partition %d (%d-%d) lies outside the usable sectors %d-%d", i+1, p.First, p.Last, t.FirstUsable, t.LastUsable)
		}
		for j, q := range t.Parts[:i] {
			if p.First <= q.Last && q.First <= p.Last {
				return nil, fmt.Errorf("partitions %d and %d overlap", j+1, i+1)
			}
		}
	}
	return t, nil
}

// readGPT reads and checks the GPT header at lba and its entry array.
func readGPT(r io.ReaderAt, lba, diskSectors uint64) (header, entries []byte, _ error) {
	if lba == 0 || lba >= diskSectors {
		return nil, nil, fmt.Errorf("header LBA %d outside the disk", lba)
	}
	h := make([]byte, SectorSize)
	if _, err := r.ReadAt(h, int64(lba)*SectorSize); err != nil {
		return nil, nil, fmt.Errorf("reading header: %w", err)
	}
	le := binary.LittleEndian
	if string(h[0:8]) != "EFI PART" {
		return nil, nil, fmt.Errorf("no GPT signature at LBA %d", lba)
	}
	if le.Uint32(h[8:]) != 0x00010000 || le.Uint32(h[12:]) != gptHeaderBytes {
		return nil, nil, fmt.Errorf("unsupported header revision or size")
	}
	sum := le.Uint32(h[16:])
	check := append([]byte(nil), h[:gptHeaderBytes]...)
	le.PutUint32(check[16:], 0)
	if crc32.ChecksumIEEE(check) != sum {
		return nil, nil, fmt.Errorf("header checksum mismatch")
	}
	if le.Uint64(h[24:]) != lba {
		return nil, nil, fmt.Errorf("header at LBA %d says it is at %d", lba, le.Uint64(h[24:]))
	}
	count, size := le.Uint32(h[80:]), le.Uint32(h[84:])
	if size < 128 || size%8 != 0 || uint64(count)*uint64(size) > 1<<20 {
		return nil, nil, fmt.Errorf("implausible entry array: %d entries of %d bytes", count, size)
	}
	start := le.Uint64(h[72:])
	if start >= diskSectors {
		return nil, nil, fmt.Errorf("entry array at LBA %d outside the disk", start)
	}
	entries = make([]byte, int(count)*int(size))
	if _, err := r.ReadAt(entries, int64(start)*SectorSize); err != nil {
		return nil, nil, fmt.Errorf("reading entries: %w", err)
	}
	if crc32.ChecksumIEEE(entries) != le.Uint32(h[88:]) {
		return nil, nil, fmt.Errorf("entry array checksum mismatch")
	}
	return h, entries, nil
}

// RuntimeBootGUID returns the GUID the gokrazy runtime compares the
// kernel command line's PARTUUID against: that of the entry at byte 1024,
// i.e. the first GPT entry when entries start at LBA 2. The runtime reads
// nothing else of the GPT.
func RuntimeBootGUID(r io.ReaderAt) (string, error) {
	b := make([]byte, 3*SectorSize)
	if _, err := r.ReadAt(b, 0); err != nil {
		return "", fmt.Errorf("reading the first three sectors: %w", err)
	}
	return strings.ToLower(decodeGUID(b[1024+16 : 1024+32])), nil
}
