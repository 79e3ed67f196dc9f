// Package fat implements the FAT16B boot file system of the appliance image:
// a writer whose output the gokrazy runtime's minimal FAT reader can find
// and patch files in, and a reader that follows that reader's rules.
//
// The runtime reads the boot partition itself to rewrite cmdline.txt and
// loader/entries/gokrazy.conf in place when it switches root partitions.
// Its reader ignores the number of FATs, knows only the FAT12/16 layout with
// a fixed root directory, looks names up by their 8.3 short names and
// assumes that file data is contiguous. The writer therefore produces:
//
//   - 512-byte sectors, 4 sectors (2 KiB) per cluster, 4 reserved sectors
//     (one cluster), exactly one FAT, and a FAT and root directory sized in
//     whole clusters, so that the data area is cluster-aligned;
//   - every file in one contiguous run of clusters, in the order given, with
//     directories after all file data;
//   - short names the runtime finds: names without an extension keep their
//     case (it compares those byte for byte), others are upper case, and a
//     name that does not fit 8.3 gets the numbered name "~1" first;
//   - long file name entries for every name that is not its own short name.
//
// The file system spans the whole partition, so that Linux, UEFI firmware,
// the Raspberry Pi boot loader and fsck.fat see an ordinary FAT16 volume.
package fat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf16"
)

// Geometry of every file system the writer produces.
const (
	SectorSize        = 512
	SectorsPerCluster = 4
	ClusterSize       = SectorSize * SectorsPerCluster

	reservedSectors = SectorsPerCluster // the boot sector, padded to a cluster
	dirEntrySize    = 32
	minRootEntries  = 512
	// FAT16 needs at least 4085 and at most 65524 clusters.
	minClusters = 4085
	maxClusters = 65524
)

const (
	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrArchive   = 0x20
	attrLongName  = 0x0F
)

// File is one file to store: its slash-separated path inside the file
// system (e.g. "loader/entries/gokrazy.conf"), its size and how to read it.
type File struct {
	Path string
	Size int64
	Open func() (io.ReadCloser, error)
}

// Bytes returns a File holding b.
func Bytes(path string, b []byte) File {
	return File{
		Path: path,
		Size: int64(len(b)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
	}
}

// HostFile returns a File with the contents of the host file hostPath.
func HostFile(path, hostPath string) (File, error) {
	fi, err := os.Stat(hostPath)
	if err != nil {
		return File{}, err
	}
	if !fi.Mode().IsRegular() {
		return File{}, fmt.Errorf("%s is not a regular file", hostPath)
	}
	return File{
		Path: path,
		Size: fi.Size(),
		Open: func() (io.ReadCloser, error) { return os.Open(hostPath) },
	}, nil
}

// Options describe the file system as a whole.
type Options struct {
	// Sectors is the size of the file system in 512-byte sectors, normally
	// the whole partition.
	Sectors uint32
	// HiddenSectors is the LBA at which the partition starts.
	HiddenSectors uint32
	// Label is the volume label, up to 11 characters (e.g. "PENBOOT").
	Label string
	// VolumeID is the volume serial number.
	VolumeID uint32
	// Time stamps every directory entry.
	Time time.Time
}

// Extent locates a file's data, in bytes from the start of the file system.
type Extent struct {
	Offset int64
	Size   int64
}

// Layout describes a written file system.
type Layout struct {
	// Files maps each file's path to where its data lies.
	Files map[string]Extent
	// DataEnd is the offset just past the last used cluster: everything
	// after it is free space.
	DataEnd int64
	// Clusters is the number of data clusters, UsedClusters how many of
	// them hold files and directories.
	Clusters, UsedClusters int
}

type node struct {
	name     string
	parent   *node
	file     *File // nil for a directory
	children []*node
	byKey    map[string]*node

	short        shortName
	lfn          bool
	firstCluster int // 0 for the root directory and empty files
	clusters     int
}

func (n *node) isDir() bool { return n.file == nil }

// Write writes a FAT16B file system holding files to w, starting at byte
// offset off. Files are laid out in the order given. It writes the boot
// sector, the FAT, all directories and all file data (each file's last
// cluster padded with zeros); the free space is left untouched.
func Write(w io.WriterAt, off int64, opts Options, files []File) (*Layout, error) {
	if err := validLabel(opts.Label); err != nil {
		return nil, err
	}
	root := &node{byKey: make(map[string]*node)}
	var fileNodes []*node
	for i := range files {
		n, err := root.add(&files[i])
		if err != nil {
			return nil, err
		}
		fileNodes = append(fileNodes, n)
	}
	var dirs []*node // every directory but the root, parents first
	var walk func(d *node) error
	walk = func(d *node) error {
		names := make([]string, len(d.children))
		for i, c := range d.children {
			names[i] = c.name
		}
		shorts, lfn, err := assignShortNames(names)
		if err != nil {
			return err
		}
		for i, c := range d.children {
			c.short, c.lfn = shorts[i], lfn[i]
		}
		for _, c := range d.children {
			if c.isDir() {
				dirs = append(dirs, c)
				if err := walk(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return nil, err
	}

	// Allocate clusters: file data in order, then the directories.
	next := 2
	for _, n := range fileNodes {
		n.clusters = int((n.file.Size + ClusterSize - 1) / ClusterSize)
		if n.clusters > 0 {
			n.firstCluster = next
			next += n.clusters
		}
	}
	for _, d := range dirs {
		d.clusters = (d.entryCount()*dirEntrySize + ClusterSize - 1) / ClusterSize
		d.firstCluster = next
		next += d.clusters
	}
	used := next - 2

	rootEntries := root.entryCount()
	if rootEntries < minRootEntries {
		rootEntries = minRootEntries
	}
	const entriesPerCluster = ClusterSize / dirEntrySize
	rootEntries = (rootEntries + entriesPerCluster - 1) / entriesPerCluster * entriesPerCluster
	if rootEntries > 0xFFFF {
		return nil, fmt.Errorf("root directory needs %d entries, more than FAT16 allows", rootEntries)
	}
	g, err := computeGeometry(opts.Sectors, rootEntries)
	if err != nil {
		return nil, err
	}
	if used > g.clusters {
		return nil, fmt.Errorf("files need %d clusters (%d bytes), but the file system has only %d", used, int64(used)*ClusterSize, g.clusters)
	}
	if next > 0xFFF0 {
		return nil, fmt.Errorf("cluster numbers exceed FAT16")
	}

	// Boot sector and the rest of the reserved area.
	reserved := make([]byte, reservedSectors*SectorSize)
	bootSector(reserved[:SectorSize], opts, g)
	if _, err := w.WriteAt(reserved, off); err != nil {
		return nil, fmt.Errorf("writing boot sector: %w", err)
	}

	// FAT: media descriptor, clean-shutdown marker, then one chain per file
	// and directory.
	fat := make([]byte, g.fatSectors*SectorSize)
	binary.LittleEndian.PutUint16(fat[0:], 0xFFF8)
	binary.LittleEndian.PutUint16(fat[2:], 0xFFFF)
	chain := func(first, count int) {
		for c := first; c < first+count; c++ {
			v := uint16(c + 1)
			if c == first+count-1 {
				v = 0xFFFF
			}
			binary.LittleEndian.PutUint16(fat[2*c:], v)
		}
	}
	for _, n := range fileNodes {
		chain(n.firstCluster, n.clusters)
	}
	for _, d := range dirs {
		chain(d.firstCluster, d.clusters)
	}
	if _, err := w.WriteAt(fat, off+int64(reservedSectors)*SectorSize); err != nil {
		return nil, fmt.Errorf("writing FAT: %w", err)
	}

	// Root directory.
	stamp := fatTimestamp(opts.Time)
	rootBuf := make([]byte, rootEntries*dirEntrySize)
	root.encodeEntries(rootBuf, opts.Label, stamp)
	if _, err := w.WriteAt(rootBuf, off+g.rootOffset()); err != nil {
		return nil, fmt.Errorf("writing root directory: %w", err)
	}

	// File data, then the subdirectories.
	layout := &Layout{Files: make(map[string]Extent), Clusters: g.clusters, UsedClusters: used}
	buf := make([]byte, 1<<20)
	for _, n := range fileNodes {
		start := g.clusterOffset(n.firstCluster)
		layout.Files[n.file.Path] = Extent{Offset: start, Size: n.file.Size}
		if n.clusters == 0 {
			continue
		}
		if err := copyFile(io.NewOffsetWriter(w, off+start), n.file, int64(n.clusters)*ClusterSize, buf); err != nil {
			return nil, err
		}
	}
	for _, d := range dirs {
		b := make([]byte, d.clusters*ClusterSize)
		d.encodeEntries(b, "", stamp)
		if _, err := w.WriteAt(b, off+g.clusterOffset(d.firstCluster)); err != nil {
			return nil, fmt.Errorf("writing directory %s: %w", d.path(), err)
		}
	}
	layout.DataEnd = g.clusterOffset(next)
	return layout, nil
}

// copyFile copies f to w and pads it with zeros to padTo bytes.
func copyFile(w io.Writer, f *File, padTo int64, buf []byte) error {
	r, err := f.Open()
	if err != nil {
		return fmt.Errorf("opening %s: %w", f.Path, err)
	}
	defer r.Close()
	n, err := io.CopyBuffer(w, io.LimitReader(r, f.Size+1), buf)
	if err != nil {
		return fmt.Errorf("copying %s: %w", f.Path, err)
	}
	if n != f.Size {
		return fmt.Errorf("copying %s: got %d bytes, want %d (did it change?)", f.Path, n, f.Size)
	}
	if pad := padTo - n; pad > 0 {
		if _, err := w.Write(make([]byte, pad)); err != nil {
			return fmt.Errorf("padding %s: %w", f.Path, err)
		}
	}
	return nil
}

// add inserts f into the tree below n, creating directories on the way.
func (n *node) add(f *File) (*node, error) {
	if f.Size < 0 || f.Size > 0xFFFFFFFF {
		return nil, fmt.Errorf("%s: size %d out of range", f.Path, f.Size)
	}
	if f.Open == nil {
		return nil, fmt.Errorf("%s: no contents", f.Path)
	}
	parts := strings.Split(strings.TrimPrefix(f.Path, "/"), "/")
	cur := n
	for i, p := range parts {
		if err := validLongName(p); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
		last := i == len(parts)-1
		key := strings.ToUpper(p) // FAT names are case-insensitive
		if c, ok := cur.byKey[key]; ok {
			if last || !c.isDir() {
				return nil, fmt.Errorf("%s: %s already exists", f.Path, c.path())
			}
			cur = c
			continue
		}
		c := &node{name: p, parent: cur}
		if last {
			c.file = f
		} else {
			c.byKey = make(map[string]*node)
		}
		cur.children = append(cur.children, c)
		cur.byKey[key] = c
		cur = c
	}
	return cur, nil
}

func (n *node) path() string {
	if n.parent == nil {
		return "/"
	}
	if n.parent.parent == nil {
		return n.name
	}
	return n.parent.path() + "/" + n.name
}

// entryCount is the number of 32-byte entries directory n holds.
func (n *node) entryCount() int {
	count := 2 // "." and ".."
	if n.parent == nil {
		count = 1 // the volume label
	}
	for _, c := range n.children {
		count++
		if c.lfn {
			count += lfnEntryCount(c.name)
		}
	}
	return count
}

type timestamp struct{ date, time uint16 }

func fatTimestamp(t time.Time) timestamp {
	t = t.UTC()
	if t.Year() < 1980 {
		return timestamp{date: 1<<5 | 1}
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	return timestamp{
		date: uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day()),
		time: uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2),
	}
}

// encodeEntries fills b with directory n's entries; label is written first
// when not empty (root directory only).
func (n *node) encodeEntries(b []byte, label string, ts timestamp) {
	pos := 0
	put := func(name shortName, attr byte, cluster int, size uint32) {
		e := b[pos : pos+dirEntrySize]
		copy(e[0:11], name[:])
		e[11] = attr
		binary.LittleEndian.PutUint16(e[14:], ts.time)
		binary.LittleEndian.PutUint16(e[16:], ts.date)
		binary.LittleEndian.PutUint16(e[18:], ts.date)
		binary.LittleEndian.PutUint16(e[22:], ts.time)
		binary.LittleEndian.PutUint16(e[24:], ts.date)
		binary.LittleEndian.PutUint16(e[26:], uint16(cluster))
		binary.LittleEndian.PutUint32(e[28:], size)
		pos += dirEntrySize
	}
	blank := func(s string) shortName {
		var sn shortName
		for i := range sn {
			sn[i] = ' '
		}
		copy(sn[:], s)
		return sn
	}
	if n.parent == nil {
		if label != "" {
			put(blank(label), attrVolumeID, 0, 0)
		}
	} else {
		put(blank("."), attrDirectory, n.firstCluster, 0)
		put(blank(".."), attrDirectory, n.parent.firstCluster, 0)
	}
	for _, c := range n.children {
		if c.lfn {
			pos += encodeLFN(b[pos:], c.name, c.short.checksum())
		}
		if c.isDir() {
			put(c.short, attrDirectory, c.firstCluster, 0)
		} else {
			put(c.short, attrArchive, c.firstCluster, uint32(c.file.Size))
		}
	}
}

// encodeLFN writes the long file name entries for name, last part first,
// and returns how many bytes it wrote.
func encodeLFN(b []byte, name string, sum byte) int {
	units := utf16.Encode([]rune(name))
	count := (len(units) + 12) / 13
	padded := make([]uint16, count*13)
	for i := range padded {
		switch {
		case i < len(units):
			padded[i] = units[i]
		case i == len(units):
			padded[i] = 0
		default:
			padded[i] = 0xFFFF
		}
	}
	pos := 0
	for seq := count; seq >= 1; seq-- {
		e := b[pos : pos+dirEntrySize]
		e[0] = byte(seq)
		if seq == count {
			e[0] |= 0x40
		}
		e[11] = attrLongName
		e[13] = sum
		chars := padded[(seq-1)*13 : seq*13]
		for i, off := range [13]int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30} {
			binary.LittleEndian.PutUint16(e[off:], chars[i])
		}
		pos += dirEntrySize
	}
	return pos
}

type geometry struct {
	sectors     uint32
	fatSectors  int
	rootEntries int
	clusters    int
}

func (g geometry) rootOffset() int64 {
	return int64(reservedSectors+g.fatSectors) * SectorSize
}

func (g geometry) dataOffset() int64 {
	return g.rootOffset() + int64(g.rootEntries*dirEntrySize)
}

func (g geometry) clusterOffset(cluster int) int64 {
	if cluster < 2 {
		return 0
	}
	return g.dataOffset() + int64(cluster-2)*ClusterSize
}

var errSize = errors.New("file system size out of range for FAT16 with 2 KiB clusters")

func computeGeometry(sectors uint32, rootEntries int) (geometry, error) {
	g := geometry{sectors: sectors, rootEntries: rootEntries, fatSectors: SectorsPerCluster}
	rootSectors := rootEntries * dirEntrySize / SectorSize
	for {
		avail := int(sectors) - reservedSectors - g.fatSectors - rootSectors
		if avail < 0 {
			return g, fmt.Errorf("%w: %d sectors", errSize, sectors)
		}
		g.clusters = avail / SectorsPerCluster
		need := ((g.clusters+2)*2 + SectorSize - 1) / SectorSize
		need = (need + SectorsPerCluster - 1) / SectorsPerCluster * SectorsPerCluster
		if need <= g.fatSectors {
			break
		}
		g.fatSectors = need
	}
	if g.clusters < minClusters || g.clusters > maxClusters {
		return g, fmt.Errorf("%w: %d sectors give %d clusters", errSize, sectors, g.clusters)
	}
	return g, nil
}

// bootSector fills b (512 bytes) with the boot sector and BIOS parameter
// block.
func bootSector(b []byte, opts Options, g geometry) {
	copy(b[0:], []byte{0xEB, 0x3C, 0x90})
	copy(b[3:11], "MSWIN4.1")
	le := binary.LittleEndian
	le.PutUint16(b[11:], SectorSize)
	b[13] = SectorsPerCluster
	le.PutUint16(b[14:], reservedSectors)
	b[16] = 1 // one FAT: the runtime's reader ignores this field
	le.PutUint16(b[17:], uint16(g.rootEntries))
	if g.sectors < 0x10000 {
		le.PutUint16(b[19:], uint16(g.sectors))
	} else {
		le.PutUint32(b[32:], g.sectors)
	}
	b[21] = 0xF8 // fixed disk
	le.PutUint16(b[22:], uint16(g.fatSectors))
	le.PutUint16(b[24:], 63)  // sectors per track, for BIOS geometry only
	le.PutUint16(b[26:], 255) // heads, likewise
	le.PutUint32(b[28:], opts.HiddenSectors)
	b[36] = 0x80 // drive number
	b[38] = 0x29 // extended boot signature: the next three fields are valid
	le.PutUint32(b[39:], opts.VolumeID)
	label := opts.Label
	if label == "" {
		label = "NO NAME"
	}
	copy(b[43:54], fmt.Sprintf("%-11s", label))

	copy(b[54:62], "FAT16   ")
	// Boot code: this volume is not bootable by BIOS; print nothing, halt.
	copy(b[62:], []byte{0xF4, 0xEB, 0xFD}) // hlt; jmp $-1
	b[510], b[511] = 0x55, 0xAA
}

// validLabel checks that label fits a short name entry unchanged.
func validLabel(label string) error {
	if len(label) > 11 {
		return fmt.Errorf("volume label %q is longer than 11 characters", label)
	}
	for i := 0; i < len(label); i++ {
		if label[i] == ' ' {
			continue
		}
		if c, ok := sfnByte(label[i]); !ok || c != label[i] {
			return fmt.Errorf("volume label %q: use upper-case letters, digits and _ only", label)
		}
	}
	return nil
}
