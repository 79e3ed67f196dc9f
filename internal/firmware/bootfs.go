package firmware

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Files on the boot partition that carry the kernel command line.
const (
	CmdlineFile = "/cmdline.txt"
	LoaderEntry = "/loader/entries/gokrazy.conf"
)

// bootFS finds files on a FAT16 boot file system the way the gokrazy
// runtime does (and as the image builder lays them out): contiguous files,
// one FAT, looked up by their 8.3 names.
type bootFS struct {
	r                          io.ReaderAt
	sector, cluster            int64
	rootDir, rootEntries, data int64
}

func newBootFS(r io.ReaderAt) (*bootFS, error) {
	var bpb [24]byte
	if _, err := r.ReadAt(bpb[:], 0); err != nil {
		return nil, fmt.Errorf("reading the boot sector: %w", err)
	}
	le := binary.LittleEndian
	f := &bootFS{r: r, sector: int64(le.Uint16(bpb[11:])), cluster: int64(bpb[13])}
	reserved, fatSectors := int64(le.Uint16(bpb[14:])), int64(le.Uint16(bpb[22:]))
	f.rootEntries = int64(le.Uint16(bpb[17:]))
	if f.sector != 512 || f.cluster == 0 || fatSectors == 0 || f.rootEntries == 0 || bpb[16] != 1 {
		return nil, errors.New("not a FAT16 file system with one FAT as the image builder writes it")
	}
	f.cluster *= f.sector
	f.rootDir = (reserved + fatSectors) * f.sector
	f.data = f.rootDir + (f.rootEntries*32+f.sector-1)/f.sector*f.sector
	return f, nil
}

// shortName is the 8.3 name of a path component as it is stored: names
// without extension in their own case, others upper case.
func shortName(c string) (string, bool) {
	base, ext, _ := strings.Cut(c, ".")
	if len(base) > 8 || len(ext) > 3 {
		if len(base) > 6 {
			base = base[:6]
		}
		base += "~1"
		if len(ext) > 3 {
			ext = ext[:3]
		}
	}
	if ext == "" {
		return base, false
	}
	return strings.ToUpper(base + "." + ext), true
}

// extent returns the offset and size of the file at path.
func (f *bootFS) extent(path string) (off, size int64, err error) {
	dir := f.rootDir
	comps := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, c := range comps {
		want, fold := shortName(c)
		found := false
		var e [32]byte
		for k := int64(0); k < f.rootEntries; k++ {
			if _, err := f.r.ReadAt(e[:], dir+k*32); err != nil {
				return 0, 0, fmt.Errorf("reading a directory entry: %w", err)
			}
			if e[0] == 0 || e[0] == 0xe5 || e[11] == 0x0f || e[11]&0x08 != 0 {
				continue
			}
			name := strings.TrimRight(string(e[0:8]), " ")
			if ext := strings.TrimRight(string(e[8:11]), " "); ext != "" {
				name += "." + ext
			}
			if name != want && !(fold && strings.EqualFold(name, want)) {
				continue
			}
			cl := int64(binary.LittleEndian.Uint16(e[26:]))
			if cl < 2 {
				return 0, 0, fmt.Errorf("%s: %s starts at cluster %d", path, c, cl)
			}
			at := f.data + (cl-2)*f.cluster
			if e[11]&0x10 != 0 {
				if i == len(comps)-1 {
					return 0, 0, fmt.Errorf("%s is a directory", path)
				}
				dir = at
				found = true
				break
			}
			if i != len(comps)-1 {
				return 0, 0, fmt.Errorf("%s: %s is not a directory", path, c)
			}
			return at, int64(binary.LittleEndian.Uint32(e[28:])), nil
		}
		if !found {
			return 0, 0, fmt.Errorf("%s not found on the boot partition", path)
		}
	}
	return 0, 0, fmt.Errorf("%s not found on the boot partition", path)
}

func (f *bootFS) readFile(path string) ([]byte, error) {
	off, size, err := f.extent(path)
	if err != nil {
		return nil, err
	}
	if size > 4096 {
		return nil, fmt.Errorf("%s: %d bytes, more than a command line", path, size)
	}
	b := make([]byte, size)
	if _, err := f.r.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, nil
}

// ReadCmdline returns cmdline.txt of the boot file system in r.
func ReadCmdline(r io.ReaderAt) ([]byte, error) {
	f, err := newBootFS(r)
	if err != nil {
		return nil, err
	}
	return f.readFile(CmdlineFile)
}

// HasLoaderEntry reports whether the boot file system in r has
// loader/entries/gokrazy.conf (the board boots by UEFI).
func HasLoaderEntry(r io.ReaderAt) bool {
	f, err := newBootFS(r)
	if err != nil {
		return false
	}
	_, _, err = f.extent(LoaderEntry)
	return err == nil
}

// device is a boot partition open for reading and writing.
type device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// SwitchRoot re-points root= to partition n in cmdline.txt and, where it
// exists, loader/entries/gokrazy.conf of the boot file system on dev,
// rewriting both in place (same length, as gokrazy's /update/switch does),
// syncing after each, and reading both back. The loader entry is written
// first: a power cut between the two leaves UEFI boards (which read the
// entry) on the new root and the others (which read cmdline.txt) on the old
// one, and the next boot's trial logic sorts it out either way.
func SwitchRoot(dev device, n int) error {
	f, err := newBootFS(dev)
	if err != nil {
		return err
	}
	for _, path := range []string{LoaderEntry, CmdlineFile} {
		off, _, err := f.extent(path)
		if err != nil {
			if path == LoaderEntry {
				continue // boards that boot without systemd-boot
			}
			return err
		}
		old, err := f.readFile(path)
		if err != nil {
			return err
		}
		b, err := SetRoot(old, n)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if bytes.Equal(b, old) {
			continue
		}
		if _, err := dev.WriteAt(b, off); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if err := dev.Sync(); err != nil {
			return fmt.Errorf("syncing %s: %w", path, err)
		}
		back := make([]byte, len(b))
		if _, err := dev.ReadAt(back, off); err != nil || !bytes.Equal(back, b) {
			return fmt.Errorf("%s does not read back as written (%v)", path, err)
		}
	}
	return nil
}

// FindBootPartition returns the device of partition 1 (boot) of the disk
// whose first GPT partition has the GUID given (Root.GUID), looking at
// the block devices in sysBlock (/sys/block) and their nodes in dev
// (/dev).
func FindBootPartition(sysBlock, dev, guid string) (string, error) {
	disks, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", err
	}
	for _, d := range disks {
		g, err := firstGPTGUID(filepath.Join(dev, d.Name()))
		if err != nil || !strings.EqualFold(g, guid) {
			continue
		}
		parts, err := os.ReadDir(filepath.Join(sysBlock, d.Name()))
		if err != nil {
			return "", err
		}
		for _, p := range parts {
			n, err := os.ReadFile(filepath.Join(sysBlock, d.Name(), p.Name(), "partition"))
			if err == nil && strings.TrimSpace(string(n)) == "1" {
				return filepath.Join(dev, p.Name()), nil
			}
		}
		return "", fmt.Errorf("disk %s has no partition 1", d.Name())
	}
	return "", fmt.Errorf("no disk whose first partition is %s", guid)
}

func firstGPTGUID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b [3 * 512]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return "", err
	}
	if string(b[512:520]) != "EFI PART" {
		return "", errors.New("no GPT")
	}
	return guidString(b[1024+16 : 1024+32]), nil
}

// guidString formats a GUID stored in the EFI mixed-endian encoding.
func guidString(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}
