package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/image/internal/partition"
	meter "github.com/pen-lb/pen-appliance/image/internal/progress"
)

// FlashOptions control Flash.
type FlashOptions struct {
	// Progress receives the steps and the progress of writing and reading
	// back; nil discards.
	Progress io.Writer
	// ForceNonRemovable allows writing to a block device that is not
	// removable (an internal disk). A device that is mounted or holds the
	// running system's root is refused all the same.
	ForceNonRemovable bool
	// Sys and Mountinfo are where the kernel's sysfs and the mount table
	// are; "/sys" and "/proc/self/mountinfo" when empty (tests).
	Sys, Mountinfo string
}

// FlashResult describes a finished flash.
type FlashResult struct {
	Target   string
	Device   bool  // a block device, not a file
	Size     int64 // of the target
	Written  int64 // bytes written (zero blocks of a file are skipped)
	PermSize int64 // of the /perm partition
	Grown    bool  // /perm was made anew for the target's size
	Write    time.Duration
	Verify   time.Duration
}

// FlashTarget is what CheckFlashTarget found out about a target.
type FlashTarget struct {
	Path   string
	Device bool
	// Name is the block device's kernel name (sdb, mmcblk0, loop3).
	Name string
	// Why says why the device may be written: removable, USB, SD/MMC,
	// loop device, or forced.
	Why string
}

// CheckFlashTarget refuses a target that must not be overwritten: a block
// device that is mounted (it or one of its partitions), that holds the
// running system's root, or that is not removable (unless opts says
// ForceNonRemovable). A path that does not exist or is a regular file is
// an image file to write.
func CheckFlashTarget(path string, opts FlashOptions) (*FlashTarget, error) {
	if opts.Sys == "" {
		opts.Sys = "/sys"
	}
	if opts.Mountinfo == "" {
		opts.Mountinfo = "/proc/self/mountinfo"
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return &FlashTarget{Path: path}, nil
	} else if err != nil {
		return nil, err
	}
	switch {
	case fi.Mode().IsRegular():
		return &FlashTarget{Path: path}, nil
	case fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0:
		return nil, fmt.Errorf("%s is neither a block device nor a regular file", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, err
	}
	return checkDevice(path, unix.Major(st.Rdev), unix.Minor(st.Rdev), opts)
}

func checkDevice(path string, major, minor uint32, opts FlashOptions) (*FlashTarget, error) {
	devID := fmt.Sprintf("%d:%d", major, minor)
	sysDir := filepath.Join(opts.Sys, "dev", "block", devID)
	if _, err := os.Stat(filepath.Join(sysDir, "partition")); err == nil {
		return nil, fmt.Errorf("%s is a partition; give the whole device", path)
	}
	real, err := filepath.EvalSymlinks(sysDir)
	if err != nil {
		return nil, fmt.Errorf("%s: no block device %s in %s: %w", path, devID, opts.Sys, err)
	}
	t := &FlashTarget{Path: path, Device: true, Name: filepath.Base(real)}

	// The device and its partitions, by device number.
	devs := map[string]string{devID: t.Name}
	entries, _ := os.ReadDir(real)
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(real, e.Name(), "dev")); err == nil {
			devs[strings.TrimSpace(string(b))] = e.Name()
		}
	}
	mounts, err := readMountinfo(opts.Mountinfo)
	if err != nil {
		return nil, err
	}
	var mounted []string
	for _, m := range mounts {
		name, ok := devs[m.dev]
		if !ok {
			continue
		}
		if m.point == "/" {
			return nil, fmt.Errorf("%s (%s) holds the running system's root file system: refusing to overwrite it", path, name)
		}
		mounted = append(mounted, fmt.Sprintf("%s on %s", name, m.point))
	}
	if len(mounted) > 0 {
		return nil, fmt.Errorf("%s is mounted (%s): unmount it first", path, strings.Join(mounted, ", "))
	}
	if holders, _ := os.ReadDir(filepath.Join(real, "holders")); len(holders) > 0 {
		return nil, fmt.Errorf("%s is in use by %s (device mapper, RAID or LVM): refusing to overwrite it", path, holders[0].Name())
	}
	for _, e := range entries {
		if holders, _ := os.ReadDir(filepath.Join(real, e.Name(), "holders")); len(holders) > 0 {
			return nil, fmt.Errorf("%s's partition %s is in use by %s (device mapper, RAID or LVM): refusing to overwrite it", path, e.Name(), holders[0].Name())
		}
	}

	removable, _ := os.ReadFile(filepath.Join(real, "removable"))
	switch {
	case strings.TrimSpace(string(removable)) == "1":
		t.Why = "removable"
	case strings.Contains(real, "/usb"):
		t.Why = "on USB"
	case strings.HasPrefix(t.Name, "mmcblk"):
		t.Why = "an SD/MMC card"
	case strings.HasPrefix(t.Name, "loop"):
		t.Why = "a loop device"
	case opts.ForceNonRemovable:
		t.Why = "not removable, forced with -force-non-removable"
	default:
		return nil, fmt.Errorf("%s (%s) is not a removable device (an internal disk?); check that it is the one to overwrite, then add -force-non-removable", path, t.Name)
	}
	return t, nil
}

type mount struct{ dev, point string }

func readMountinfo(path string) ([]mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		f := strings.Fields(sc.Text())
		if len(f) >= 5 {
			ms = append(ms, mount{dev: f[2], point: unescapeMount(f[4])})
		}
	}
	return ms, sc.Err()
}

// unescapeMount undoes the octal escapes of mountinfo (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

const flashChunk = 4 << 20

// Flash writes the image file img to target, a block device or a file,
// after CheckFlashTarget: it copies the image, flushes it to the device,
// drops it from the page cache and reads it back, comparing SHA-256
// digests. When the target is larger than the image (a card, or an
// existing file of the card's size), it then writes the partition table
// for the target's size and makes /perm anew to fill it, with the image's
// pen/pen.cfg, and checks the result as Build checks an image.
func Flash(ctx context.Context, img, target string, opts FlashOptions) (*FlashResult, error) {
	out := opts.Progress
	if out == nil {
		out = io.Discard
	}
	t, err := CheckFlashTarget(target, opts)
	if err != nil {
		return nil, err
	}
	src, err := os.Open(img)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return nil, err
	}
	imgSize := fi.Size()
	parts, err := ReadParts(src, imgSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", img, err)
	}

	var dst *os.File
	if t.Device {
		// O_EXCL: the kernel refuses a block device that is mounted.
		dst, err = os.OpenFile(target, os.O_RDWR|os.O_EXCL, 0)
	} else {
		dst, err = os.OpenFile(target, os.O_RDWR|os.O_CREATE, 0o644)
	}
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	size, err := dst.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	if !t.Device && size < imgSize {
		size = imgSize
	}
	if size < imgSize {
		return nil, fmt.Errorf("%s holds %s, the image %s: build the image with a smaller -size", target, meter.Bytes(size), meter.Bytes(imgSize))
	}
	res := &FlashResult{Target: target, Device: t.Device, Size: size}
	what := "file"
	if t.Device {
		what = fmt.Sprintf("device %s (%s)", t.Name, t.Why)
	}
	fmt.Fprintf(out, "flashing %s (board %s, hostname %s, pen %s) to %s, %s\n",
		img, parts.Info.Board, parts.Info.Hostname, parts.Info.Version, what, meter.Bytes(size))

	// 1. Copy. A file is truncated first so that zero blocks can be
	// skipped (they stay holes); a device gets every byte.
	if !t.Device {
		if err := dst.Truncate(0); err != nil {
			return nil, err
		}
		if err := dst.Truncate(size); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	m := meter.New(out, "writing", imgSize)
	m.Start()
	sum, written, err := copyImage(ctx, dst, src, imgSize, !t.Device, m)
	if err == nil {
		err = dst.Sync()
	}
	m.Done("synced", err)
	if err != nil {
		return nil, err
	}
	res.Written = written
	res.Write = time.Since(start)

	// 2. Read back what was written, from the device rather than the
	// page cache.
	start = time.Now()
	dropCache(dst, t.Device)
	m = meter.New(out, "reading back", imgSize)
	m.Start()
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(h, m), io.NewSectionReader(dst, 0, imgSize))
	if err == nil && !bytes.Equal(h.Sum(nil), sum) {
		err = fmt.Errorf("the data read back from %s differs from the image", target)
	}
	m.Done("identical to the image", err)
	if err != nil {
		return nil, err
	}
	res.Verify = time.Since(start)

	// 3. /perm to the end of the target.
	layout, err := partition.NewLayout(size)
	if err != nil {
		return nil, err
	}
	perm := layout.Part(partition.Perm)
	res.PermSize = perm.Size()
	if size > imgSize {
		if err := growPerm(dst, src, imgSize, size, parts, out); err != nil {
			return nil, fmt.Errorf("growing /perm: %w", err)
		}
		res.Grown = true
	}
	if err := VerifyWith(dst, size, parts.Board, parts.Info.Hostname, parts.Info.KernelArgs); err != nil {
		return nil, fmt.Errorf("checking %s: %w", target, err)
	}
	return res, dst.Close()
}

// copyImage copies size bytes from src to dst and returns their SHA-256.
// With sparse, all-zero chunks are not written.
func copyImage(ctx context.Context, dst io.WriterAt, src io.ReaderAt, size int64, sparse bool, m io.Writer) ([]byte, int64, error) {
	h := sha256.New()
	buf := make([]byte, flashChunk)
	var written int64
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return nil, written, err
		}
		n := int(min(int64(len(buf)), size-off))
		if _, err := src.ReadAt(buf[:n], off); err != nil {
			return nil, written, err
		}
		h.Write(buf[:n])
		if !sparse || !allZero(buf[:n]) {
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return nil, written, err
			}
			written += int64(n)
		}
		m.Write(buf[:n])
		off += int64(n)
	}
	return h.Sum(nil), written, nil
}

var zeroChunk = make([]byte, flashChunk)

func allZero(b []byte) bool {
	return bytes.Equal(b, zeroChunk[:len(b)])
}

// dropCache makes the next reads of f come from the disk: the block
// device's buffers are flushed (BLKFLSBUF), a file's pages dropped.
func dropCache(f *os.File, device bool) {
	if device {
		unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	}
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// growPerm rewrites the partition table of dst for its size and makes a
// new /perm file system filling the last partition, holding the image's
// pen/pen.cfg.
func growPerm(dst, src *os.File, imgSize, size int64, parts *Parts, out io.Writer) error {
	started := time.Now()
	old, err := partition.NewLayout(imgSize)
	if err != nil {
		return err
	}
	oldPerm := old.Part(partition.Perm)
	fsys, err := ext4.Read(file.New(src, true), oldPerm.Size(), oldPerm.Offset(), partition.SectorSize)
	if err != nil {
		return fmt.Errorf("reading the image's /perm: %w", err)
	}
	cf, err := fsys.OpenFile("/pen/pen.cfg", os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("reading the image's /perm/pen/pen.cfg: %w", err)
	}
	config, err := io.ReadAll(cf)
	cf.Close()
	if err != nil {
		return fmt.Errorf("reading the image's /perm/pen/pen.cfg: %w", err)
	}
	layout, err := partition.NewLayout(size)
	if err != nil {
		return err
	}
	b := parts.Board
	if err := partition.Write(dst, layout, partition.Options{Hostname: parts.Info.Hostname, GOARCH: b.GOARCH}); err != nil {
		return err
	}
	// partition.Write leaves the MBR's boot code area as it finds it on
	// a new file; put the image's back in any case.
	if _, err := dst.WriteAt(parts.MBR, 0); err != nil {
		return err
	}
	perm := layout.Part(partition.Perm)
	if err := writePerm(dst, perm, config); err != nil {
		return err
	}
	if err := dst.Sync(); err != nil {
		return err
	}
	fmt.Fprintf(out, "/perm: ext4 of %s filling the %s target, with the image's pen/pen.cfg (%.1fs)\n",
		meter.Bytes(perm.Size()), meter.Bytes(size), time.Since(started).Seconds())
	return nil
}
