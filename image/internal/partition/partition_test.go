package partition

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

func TestLayout(t *testing.T) {
	l, err := NewLayout(2 << 30)
	if err != nil {
		t.Fatal(err)
	}
	want := [4]Extent{{8192, 204800}, {212992, 1024000}, {1236992, 1024000}, {2260992, 0}}
	for i := 0; i < 3; i++ {
		if l.Parts[i] != want[i] {
			t.Errorf("partition %d = %+v, want %+v", i+1, l.Parts[i], want[i])
		}
	}
	if l.Parts[3].Start != want[3].Start {
		t.Errorf("perm starts at %d, want %d", l.Parts[3].Start, want[3].Start)
	}
	if end := l.Parts[3].Last(); end > l.DiskSectors-34 || l.Parts[3].Sectors%8 != 0 {
		t.Errorf("perm ends at %d (%d sectors) on a disk of %d sectors", end, l.Parts[3].Sectors, l.DiskSectors)
	}
	if _, err := NewLayout(1 << 30); err == nil {
		t.Errorf("1 GiB disk accepted")
	}
	if _, err := NewLayout(2<<30 + 1); err == nil {
		t.Errorf("odd size accepted")
	}
}

func TestGUID(t *testing.T) {
	// FNV-1a (32 bit) of "a", from the FNV reference test vectors.
	if got := DiskSignature("a"); got != 0xe40c292c {
		t.Errorf("DiskSignature(a) = %08x", got)
	}
	g := GUID("pen", 1)
	if !strings.HasPrefix(g, "60c24cc1-f3f9-427a-8199-") || !strings.HasSuffix(g, "0001") {
		t.Errorf("GUID = %s", g)
	}
	if got := RootCmdline("pen", RootB); got != "PARTUUID="+g+"/PARTNROFF=2" {
		t.Errorf("RootCmdline = %s", got)
	}
	enc, err := encodeGUID(g)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.ToLower(decodeGUID(enc[:])); got != g {
		t.Errorf("GUID round trip: %s, want %s", got, g)
	}
	// Mixed endianness, from the UEFI specification's example.
	enc, _ = encodeGUID(TypeESP)
	if got := enc[:4]; !bytes.Equal(got, []byte{0x28, 0x73, 0x2A, 0xC1}) {
		t.Errorf("ESP type encodes as % x", enc)
	}
}

func writeDisk(t *testing.T, size int64) (string, Layout) {
	t.Helper()
	l, err := NewLayout(size)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := Write(f, l, Options{Hostname: "pen", GOARCH: "arm64"}); err != nil {
		t.Fatal(err)
	}
	return path, l
}

func TestReadBack(t *testing.T) {
	path, l := writeDisk(t, 2<<30)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Read(f, l.DiskSectors)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Parts) != 4 {
		t.Fatalf("%d partitions, want 4", len(tab.Parts))
	}
	for i, p := range tab.Parts {
		if p.First != l.Parts[i].Start || p.Last != l.Parts[i].Last() {
			t.Errorf("partition %d: %d-%d, want %d-%d", i+1, p.First, p.Last, l.Parts[i].Start, l.Parts[i].Last())
		}
		if !strings.EqualFold(p.GUID, GUID("pen", i+1)) {
			t.Errorf("partition %d GUID %s", i+1, p.GUID)
		}
	}
	if tab.Parts[0].Type != TypeESP || tab.Parts[1].Type != TypeRootARM64 || tab.Parts[3].Type != TypeLinuxData {
		t.Errorf("types: %+v", tab.Parts)
	}
	if tab.DiskSignature != DiskSignature("pen") {
		t.Errorf("disk signature %08x", tab.DiskSignature)
	}
	want := [4]MBREntry{
		{true, 0x0C, 8192, 204800},
		{false, 0xEE, 1, 8191},
	}
	if tab.MBR != want {
		t.Errorf("MBR = %+v, want %+v", tab.MBR, want)
	}
	got, err := RuntimeBootGUID(f)
	if err != nil || got != GUID("pen", 1) {
		t.Errorf("RuntimeBootGUID = %s, %v", got, err)
	}
}

// TestSfdisk rereads the table with util-linux's sfdisk.
func TestSfdisk(t *testing.T) {
	sfdisk := testenv.NeedProgram(t, "sfdisk", "fdisk")
	path, l := writeDisk(t, 3<<30)
	out, err := exec.Command(sfdisk, "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var dump struct {
		PartitionTable struct {
			Label      string `json:"label"`
			ID         string `json:"id"`
			FirstLBA   uint64 `json:"firstlba"`
			LastLBA    uint64 `json:"lastlba"`
			Partitions []struct {
				Start uint64 `json:"start"`
				Size  uint64 `json:"size"`
				Type  string `json:"type"`
				UUID  string `json:"uuid"`
				Name  string `json:"name"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pt := dump.PartitionTable
	if pt.Label != "gpt" || !strings.EqualFold(pt.ID, GUID("pen", 0)) || pt.FirstLBA != 34 || pt.LastLBA != l.DiskSectors-34 {
		t.Errorf("sfdisk sees %s %s %d-%d", pt.Label, pt.ID, pt.FirstLBA, pt.LastLBA)
	}
	if len(pt.Partitions) != 4 {
		t.Fatalf("sfdisk sees %d partitions:\n%s", len(pt.Partitions), out)
	}
	for i, p := range pt.Partitions {
		if p.Start != l.Parts[i].Start || p.Size != l.Parts[i].Sectors || !strings.EqualFold(p.UUID, GUID("pen", i+1)) {
			t.Errorf("sfdisk partition %d: %+v", i+1, p)
		}
	}
	// sfdisk --verify checks overlaps, alignment and the backup header.
	if out, err := exec.Command(sfdisk, "--verify", path).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("No errors detected")) {
		t.Errorf("sfdisk --verify: %v\n%s", err, out)
	}
}

// FuzzRead feeds arbitrary disks to the reader: it must fail cleanly.
func FuzzRead(f *testing.F) {
	l, err := NewLayout(MinDiskSize)
	if err != nil {
		f.Fatal(err)
	}
	w := &memDisk{}
	if err := Write(w, l, Options{Hostname: "pen", GOARCH: "amd64"}); err != nil {
		f.Fatal(err)
	}
	// Seed with the primary table only, the backup sits far away.
	f.Add(w.b[:34*SectorSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		Read(r, uint64(len(b)/SectorSize))
		RuntimeBootGUID(r)
	})
}

type memDisk struct{ b []byte }

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		if end > 64<<20 {
			return len(p), nil // drop the far-away backup in tests
		}
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}
