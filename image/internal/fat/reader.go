package fat

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Reader looks files up the way the gokrazy runtime does when it reads and
// patches cmdline.txt and loader/entries/gokrazy.conf on the boot partition.
// It exists so that the image builder and its tests can prove that the
// runtime will find those files; it is deliberately no more capable than
// the runtime:
//
//   - Only the BIOS parameter block fields at offsets 11 (bytes per sector),
//     13 (sectors per cluster), 14 (reserved sectors), 17 (root directory
//     entries) and 22 (sectors per FAT) are read. The number of FATs is
//     ignored: the root directory is taken to follow the first FAT.
//   - A directory, the root or a subdirectory, is scanned as "root
//     directory entries" consecutive 32-byte entries from its start.
//   - An entry's name is its 8.3 name, with a dot and all three extension
//     bytes appended when the extension does not start with a space. It
//     matches a path component when it equals, ignoring case, the short
//     name derived from the upper-cased component (with "~1" for names
//     that do not fit, and a trailing dot for names without extension), or
//     when it equals the component byte for byte. Long file name entries
//     are not read.
//   - A matching entry with attribute 0x10 exactly is descended into; any
//     other match ends the lookup, and a file's extent is its first
//     cluster plus its size, i.e. the data must be contiguous.
type Reader struct {
	r                 readerAt
	bytesPerSector    int64
	sectorsPerCluster int64
	reservedSectors   int64
	rootEntries       int64
	fatSectors        int64
}

type readerAt interface {
	ReadAt(p []byte, off int64) (int, error)
}

// NewReader reads the BIOS parameter block of the file system in r.
func NewReader(r readerAt) (*Reader, error) {
	var bpb [24]byte
	if _, err := r.ReadAt(bpb[:], 0); err != nil {
		return nil, fmt.Errorf("reading boot sector: %w", err)
	}
	le := binary.LittleEndian
	rd := &Reader{
		r:                 r,
		bytesPerSector:    int64(le.Uint16(bpb[11:])),
		sectorsPerCluster: int64(bpb[13]),
		reservedSectors:   int64(le.Uint16(bpb[14:])),
		rootEntries:       int64(le.Uint16(bpb[17:])),
		fatSectors:        int64(le.Uint16(bpb[22:])),
	}
	if rd.bytesPerSector == 0 {
		return nil, fmt.Errorf("boot sector: 0 bytes per sector")
	}
	return rd, nil
}

// runtimeShortName is the name the runtime compares an entry against for
// the path component c: its own 8.3 conversion of the upper-cased
// component.
func runtimeShortName(c string) string {
	basis := strings.ReplaceAll(strings.ToUpper(c), " ", "")
	basis = strings.TrimLeft(basis, ".")
	primary, ext := basis, ""
	fit := true
	if i := strings.LastIndexByte(basis, '.'); i >= 0 {
		primary, ext = basis[:i], basis[i+1:]
		if len(ext) > 3 {
			ext, fit = ext[:3], false
		}
	}
	if len(primary) > 8 {
		primary, fit = primary[:8], false
	}
	if !fit {
		if len(primary)+2 > 8 {
			primary = primary[:6]
		}
		primary += "~1"
	}
	// The runtime pads a missing extension to three spaces and then always
	// joins with a dot, so "vmlinuz" becomes "VMLINUZ.".
	return strings.TrimSpace(primary) + "." + strings.TrimSpace(ext)
}

// Extents returns the byte offset and size of the file at path (e.g.
// "/cmdline.txt"), as the runtime computes them.
func (r *Reader) Extents(path string) (offset, size int64, err error) {
	if !strings.HasPrefix(path, "/") {
		return 0, 0, fmt.Errorf("path %q is not absolute", path)
	}
	dirOffset := (r.reservedSectors + r.fatSectors) * r.bytesPerSector
	rootBytes := r.rootEntries * dirEntrySize
	dataOffset := dirOffset + (rootBytes+r.bytesPerSector-1)/r.bytesPerSector*r.bytesPerSector
	clusterBytes := r.sectorsPerCluster * r.bytesPerSector

	components := strings.Split(path[1:], "/")
	if len(components) > 8 {
		return 0, 0, fmt.Errorf("path %q is deeper than this reader goes", path)
	}
	for _, component := range components {
		want := runtimeShortName(component)
		var e [dirEntrySize]byte
		for i := int64(0); i < r.rootEntries; i++ {
			if _, err := r.r.ReadAt(e[:], dirOffset+i*dirEntrySize); err != nil {
				return 0, 0, fmt.Errorf("reading directory entry at %d: %w", dirOffset+i*dirEntrySize, err)
			}
			if e[0] == 0 {
				continue // the runtime skips, rather than stops at, free entries
			}
			name := string(e[0:8])
			if i := strings.IndexByte(name, ' '); i >= 0 {
				name = name[:i]
			}
			if e[8] != ' ' {
				name += "." + string(e[8:11])
			}
			if !strings.EqualFold(name, want) && name != component {
				continue
			}
			cluster := int64(binary.LittleEndian.Uint16(e[26:]))
			if cluster < 2 {
				return 0, 0, fmt.Errorf("%s: %q starts at cluster %d", path, component, cluster)
			}
			off := dataOffset + (cluster-2)*clusterBytes
			if e[11] == attrDirectory {
				dirOffset = off
				break
			}
			return off, int64(binary.LittleEndian.Uint32(e[28:])), nil
		}
	}
	return 0, 0, fmt.Errorf("%q not found", path)
}

// ReadFile returns the contents of the file at path, read as one contiguous
// run of bytes from its first cluster, as the runtime reads cmdline.txt.
func (r *Reader) ReadFile(path string) ([]byte, error) {
	off, size, err := r.Extents(path)
	if err != nil {
		return nil, err
	}
	if size > 1<<20 {
		return nil, fmt.Errorf("%s: %d bytes is more than this reader reads", path, size)
	}
	b := make([]byte, size)
	if _, err := r.r.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, nil
}
