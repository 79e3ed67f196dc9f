package image

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/image/internal/fat"
	"github.com/pen-lb/pen-appliance/image/internal/partition"
)

// BuildInfoFile is the file on the boot partition that says what an image
// was built as: board, hostname, pen's version and the build timestamp the
// gokrazy runtime reports. Updates and the flasher read it.
const BuildInfoFile = "penbuild.txt"

// BuildInfo identifies a build.
type BuildInfo struct {
	Board    string
	Hostname string
	Version  string
	// Timestamp is the build time as the runtime's status reports it
	// (RFC 3339, UTC, whole seconds).
	Timestamp string
	// KernelArgs are the extra kernel arguments it was built with.
	KernelArgs []string
}

func (bi BuildInfo) marshal() []byte {
	b := fmt.Appendf(nil, "board %s\nhostname %s\nversion %s\ntimestamp %s\n", bi.Board, bi.Hostname, bi.Version, bi.Timestamp)
	if len(bi.KernelArgs) > 0 {
		b = fmt.Appendf(b, "kernel_args %s\n", strings.Join(bi.KernelArgs, " "))
	}
	return b
}

func parseBuildInfo(b []byte) (BuildInfo, error) {
	var bi BuildInfo
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "board":
			bi.Board = v
		case "hostname":
			bi.Hostname = v
		case "version":
			bi.Version = v
		case "timestamp":
			bi.Timestamp = v
		case "kernel_args":
			bi.KernelArgs = strings.Fields(v)
		}
	}
	if bi.Board == "" || bi.Hostname == "" || bi.Timestamp == "" {
		return bi, fmt.Errorf("%s lacks board, hostname or timestamp", BuildInfoFile)
	}
	return bi, nil
}

// buildTimestamp formats t as the init reports it.
func buildTimestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Parts are the pieces of a disk image an update sends.
type Parts struct {
	Info  BuildInfo
	Board boards.Board
	// MBR is the first 446 bytes of the disk: boot code and disk
	// signature, never the partition table.
	MBR []byte
	// Boot is the boot file system up to its last used cluster, Root the
	// root file system (root A) up to its end.
	Boot, Root *io.SectionReader
}

// ReadParts locates the pieces of the disk image r of size bytes and reads
// its build information. Images written before BuildInfoFile existed are
// refused: rebuild them.
func ReadParts(r io.ReaderAt, size int64) (*Parts, error) {
	layout, err := partition.NewLayout(size)
	if err != nil {
		return nil, err
	}
	if _, err := partition.Read(r, layout.DiskSectors); err != nil {
		return nil, fmt.Errorf("not a disk image of ours: %w", err)
	}
	bootPart := layout.Part(partition.Boot)
	bootFS := io.NewSectionReader(r, bootPart.Offset(), bootPart.Size())
	fr, err := fat.NewReader(bootFS)
	if err != nil {
		return nil, fmt.Errorf("boot file system: %w", err)
	}
	raw, err := fr.ReadFile("/" + BuildInfoFile)
	if err != nil {
		return nil, fmt.Errorf("the image has no %s (built by an older penimage?): %w", BuildInfoFile, err)
	}
	info, err := parseBuildInfo(raw)
	if err != nil {
		return nil, err
	}
	b, err := boards.Lookup(info.Board)
	if err != nil {
		return nil, err
	}
	if err := VerifyWith(r, size, b, info.Hostname, info.KernelArgs); err != nil {
		return nil, fmt.Errorf("the image does not check out: %w", err)
	}
	bootUsed, err := fatDataEnd(bootFS)
	if err != nil {
		return nil, err
	}
	rootPart := layout.Part(partition.RootA)
	sb := make([]byte, 96)
	if _, err := r.ReadAt(sb, rootPart.Offset()); err != nil {
		return nil, err
	}
	rootUsed := int64(binary.LittleEndian.Uint64(sb[40:]))
	rootUsed = (rootUsed + 4095) &^ 4095 // padded to 4 KiB, as written
	if rootUsed > rootPart.Size() {
		return nil, errors.New("the root file system is larger than its partition")
	}
	mbr := make([]byte, 446)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, err
	}
	return &Parts{
		Info:  info,
		Board: b,
		MBR:   mbr,
		Boot:  io.NewSectionReader(r, bootPart.Offset(), bootUsed),
		Root:  io.NewSectionReader(r, rootPart.Offset(), rootUsed),
	}, nil
}

// fatDataEnd returns the offset just past the last cluster in use in the
// FAT16 file system r: what an update of the boot partition must send.
// The rest of the partition is free space.
func fatDataEnd(r io.ReaderAt) (int64, error) {
	var bpb [36]byte
	if _, err := r.ReadAt(bpb[:], 0); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	bps := int64(le.Uint16(bpb[11:]))
	spc := int64(bpb[13])
	reserved := int64(le.Uint16(bpb[14:]))
	fats := int64(bpb[16])
	rootEntries := int64(le.Uint16(bpb[17:]))
	fatSectors := int64(le.Uint16(bpb[22:]))
	if bps == 0 || spc == 0 || fats == 0 || fatSectors == 0 {
		return 0, errors.New("boot file system: not FAT16")
	}
	table := make([]byte, fatSectors*bps)
	if _, err := r.ReadAt(table, reserved*bps); err != nil {
		return 0, fmt.Errorf("boot file system: reading the FAT: %w", err)
	}
	last := int64(1)
	for i := int64(2); i < int64(len(table))/2; i++ {
		if le.Uint16(table[2*i:]) != 0 {
			last = i
		}
	}
	rootBytes := (rootEntries*32 + bps - 1) / bps * bps
	dataStart := (reserved+fats*fatSectors)*bps + rootBytes
	return dataStart + (last-1)*spc*bps, nil
}
