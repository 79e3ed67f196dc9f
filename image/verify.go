package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/image/internal/fat"
	"github.com/pen-lb/pen-appliance/image/internal/partition"
)

// Verify checks an image of size bytes for board b and hostname the way the
// gokrazy runtime will read it at boot and during updates: the GUID of the
// first GPT entry, cmdline.txt and loader/entries/gokrazy.conf found by the
// runtime's FAT rules and pointing at root A, and the file systems of root
// A, root B and /perm in place.
func Verify(r io.ReaderAt, size int64, b boards.Board, hostname string) error {
	return VerifyWith(r, size, b, hostname, nil)
}

// VerifyWith is Verify for an image built with extra kernel arguments.
func VerifyWith(r io.ReaderAt, size int64, b boards.Board, hostname string, kernelArgs []string) error {
	layout, err := partition.NewLayout(size)
	if err != nil {
		return err
	}
	tab, err := partition.Read(r, layout.DiskSectors)
	if err != nil {
		return err
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(tab.Parts) != 4 {
		fail("%d partitions, want 4", len(tab.Parts))
	} else {
		for i, p := range tab.Parts {
			want := layout.Parts[i]
			if p.First != want.Start || p.Last != want.Last() {
				fail("partition %d spans sectors %d-%d, want %d-%d", i+1, p.First, p.Last, want.Start, want.Last())
			}
		}
	}
	if m := tab.MBR[0]; !m.Active || m.Type != 0x0C || uint64(m.Start) != layout.Parts[0].Start || uint64(m.Sectors) != layout.Parts[0].Sectors {
		fail("MBR entry 1 is %+v, want the active FAT boot partition", m)
	}
	if m := tab.MBR[1]; m.Type != 0xEE || m.Start != 1 {
		fail("MBR entry 2 is %+v, want the protective GPT entry", m)
	}
	guid, err := partition.RuntimeBootGUID(r)
	if err != nil {
		return err
	}
	if want := partition.GUID(hostname, partition.Boot); guid != want {
		fail("the runtime sees boot partition GUID %s, want %s", guid, want)
	}

	boot := layout.Part(partition.Boot)
	fr, err := fat.NewReader(io.NewSectionReader(r, boot.Offset(), boot.Size()))
	if err != nil {
		return fmt.Errorf("boot file system: %w", err)
	}
	cmdline := CmdlineWith(b, hostname, kernelArgs)
	got, err := fr.ReadFile("/cmdline.txt")
	if err != nil {
		fail("runtime rules: %v", err)
	} else if string(got) != cmdline {
		fail("cmdline.txt holds %q, want %q", got, cmdline)
	}
	if !strings.Contains(cmdline, "root="+partition.RootCmdline(hostname, partition.RootA)+" ") {
		fail("cmdline %q does not boot root A", cmdline)
	}
	if b.EFILoader != nil {
		got, err := fr.ReadFile("/loader/entries/gokrazy.conf")
		if err != nil {
			fail("runtime rules: %v", err)
		} else if string(got) != LoaderEntry(cmdline) {
			fail("loader/entries/gokrazy.conf holds %q, want %q", got, LoaderEntry(cmdline))
		}
	}
	if _, size, err := fr.Extents("/vmlinuz"); err != nil || size == 0 {
		fail("vmlinuz: %d bytes, %v", size, err)
	}

	for _, n := range []int{partition.RootA, partition.RootB} {
		p := layout.Part(n)
		sb := make([]byte, 96)
		if _, err := r.ReadAt(sb, p.Offset()); err != nil {
			return err
		}
		used := binary.LittleEndian.Uint64(sb[40:])
		if !bytes.Equal(sb[0:4], []byte("hsqs")) || used == 0 || int64(used) > p.Size() {
			fail("partition %d holds no SquashFS that fits", n)
		}
	}
	perm := layout.Part(partition.Perm)
	magic := make([]byte, 2)
	if _, err := r.ReadAt(magic, perm.Offset()+1024+56); err != nil {
		return err
	}
	if binary.LittleEndian.Uint16(magic) != 0xEF53 {
		fail("partition 4 holds no ext4 file system")
	}
	return errors.Join(errs...)
}
