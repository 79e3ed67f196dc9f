package fat

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// bootFiles is a boot partition like the images carry: a large kernel,
// names with and without extensions, names too long for 8.3, nested
// directories and a directory with many entries.
func bootFiles() []File {
	rnd := rand.New(rand.NewSource(1))
	blob := func(n int) []byte {
		b := make([]byte, n)
		rnd.Read(b)
		return b
	}
	files := []File{
		Bytes("vmlinuz", blob(5<<20+123)),
		Bytes("bcm2711-rpi-4-b.dtb", blob(50000)),
		Bytes("bcm2711-rpi-400.dtb", blob(50001)),
		Bytes("bcm2712-rpi-5-b.dtb", blob(50002)),
		Bytes("start4.elf", blob(2<<20)),
		Bytes("fixup4.dat", blob(5499)),
		Bytes("empty.txt", nil),
		Bytes("cmdline.txt", []byte("console=tty1 root=PARTUUID=60c24cc1-f3f9-427a-8199-0a0b0c0d0001/PARTNROFF=1 init=/gokrazy/init"+strings.Repeat(" ", 64))),
		Bytes("loader/entries/gokrazy.conf", []byte("title pen\nlinux /vmlinuz\noptions root=x"+strings.Repeat(" ", 64))),
		Bytes("config.txt", []byte("arm_control=0x200\nenable_uart=1\nkernel=vmlinuz\n")),
		Bytes("EFI/BOOT/BOOTX64.EFI", blob(140000)),
	}
	for i := 0; i < 120; i++ {
		files = append(files, Bytes(fmt.Sprintf("overlays/overlay-number-%d.dtbo", i), blob(100+i)))
	}
	return files
}

const testSectors = 204800 // 100 MiB, the boot partition's size

func writeTestImage(t *testing.T, files []File) (string, *Layout) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "boot.fat")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(testSectors * SectorSize); err != nil {
		t.Fatal(err)
	}
	layout, err := Write(f, 0, Options{
		Sectors:       testSectors,
		HiddenSectors: 8192,
		Label:         "PENBOOT",
		VolumeID:      0x1234abcd,
		Time:          time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC),
	}, files)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, layout
}

func contents(t *testing.T, f File) []byte {
	t.Helper()
	r, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRuntimeFindsFiles checks that the runtime's lookup rules find the
// files it patches, and the data is where the layout says.
func TestRuntimeFindsFiles(t *testing.T) {
	files := bootFiles()
	path, layout := writeTestImage(t, files)
	img, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	r, err := NewReader(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		ext, ok := layout.Files[f.Path]
		if !ok {
			t.Fatalf("layout lacks %s", f.Path)
		}
		got := make([]byte, ext.Size)
		if _, err := img.ReadAt(got, ext.Offset); err != nil && ext.Size > 0 {
			t.Fatal(err)
		}
		if !bytes.Equal(got, contents(t, f)) {
			t.Errorf("%s: data at layout offset %d differs", f.Path, ext.Offset)
		}
	}
	for _, p := range []string{"cmdline.txt", "loader/entries/gokrazy.conf", "vmlinuz", "config.txt", "start4.elf", "EFI/BOOT/BOOTX64.EFI"} {
		off, size, err := r.Extents("/" + p)
		if err != nil {
			t.Errorf("runtime rules: %v", err)
			continue
		}
		if want := layout.Files[p]; off != want.Offset || size != want.Size {
			t.Errorf("runtime rules: %s at (%d, %d), want (%d, %d)", p, off, size, want.Offset, want.Size)
		}
	}
	if off := layout.Files["vmlinuz"].Offset; off%ClusterSize != 0 {
		t.Errorf("vmlinuz at %d, not cluster-aligned", off)
	}
	if _, _, err := r.Extents("/loader/entries/missing.conf"); err == nil {
		t.Errorf("found a file that does not exist")
	}
}

// TestIndependentTools rereads the file system with fsck.fat and mtools.
func TestIndependentTools(t *testing.T) {
	fsck := testenv.NeedProgram(t, "fsck.fat", "dosfstools")
	mtype := testenv.NeedProgram(t, "mtype", "mtools")
	minfo := testenv.NeedProgram(t, "minfo", "mtools")
	files := bootFiles()
	path, _ := writeTestImage(t, files)

	out, err := exec.Command(fsck, "-n", "-v", path).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat: %v\n%s", err, out)
	}
	for _, bad := range []string{"Bad short file name", "differ", "Free cluster summary wrong", "Dirty bit", "cluster chain", "Orphaned", "has a large number of bad entries"} {
		if bytes.Contains(out, []byte(bad)) {
			t.Errorf("fsck.fat reports %q:\n%s", bad, out)
		}
	}
	if !bytes.Contains(out, []byte("1 FATs, 16 bit entries")) {
		t.Errorf("fsck.fat does not see FAT16 with one FAT:\n%s", out)
	}

	env := append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	info := exec.Command(minfo, "-i", path, "::")
	info.Env = env
	if out, err := info.CombinedOutput(); err != nil {
		t.Fatalf("minfo: %v\n%s", err, out)
	} else if !bytes.Contains(out, []byte("fats: 1\n")) || !bytes.Contains(out, []byte("cluster size: 4 sectors")) {
		t.Errorf("minfo does not see one FAT and 2 KiB clusters:\n%s", out)
	}
	for _, f := range files {
		cmd := exec.Command(mtype, "-i", path, "::/"+f.Path)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		got, err := cmd.Output()
		if err != nil {
			t.Fatalf("mtype %s: %v\n%s", f.Path, err, stderr.Bytes())
		}
		if !bytes.Equal(got, contents(t, f)) {
			t.Errorf("mtype %s: %d bytes differ from the %d written", f.Path, len(got), f.Size)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	w := &bytesWriterAt{}
	opts := Options{Sectors: testSectors, Label: "PENBOOT"}
	for _, tc := range []struct {
		name  string
		opts  Options
		files []File
	}{
		{"duplicate", opts, []File{Bytes("a.txt", nil), Bytes("A.TXT", nil)}},
		{"file as directory", opts, []File{Bytes("a", nil), Bytes("a/b", nil)}},
		{"bad character", opts, []File{Bytes("a?.txt", nil)}},
		{"too big", opts, []File{Bytes("big", make([]byte, 101<<20))}},
		{"too small a file system", Options{Sectors: 2000}, nil},
		{"too large a file system", Options{Sectors: 8 << 20}, nil},
		{"lower-case label", Options{Sectors: testSectors, Label: "boot"}, nil},
	} {
		if _, err := Write(w, 0, tc.opts, tc.files); err == nil {
			t.Errorf("%s: Write succeeded, want an error", tc.name)
		}
	}
}

type bytesWriterAt struct{ b []byte }

func (w *bytesWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(w.b)) {
		w.b = append(w.b, make([]byte, end-int64(len(w.b)))...)
	}
	return copy(w.b[off:], p), nil
}

func (w *bytesWriterAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(w.b)) {
		return 0, fmt.Errorf("read past end")
	}
	n := copy(p, w.b[off:])
	if n < len(p) {
		return n, fmt.Errorf("short read")
	}
	return n, nil
}

func TestShortNames(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"cmdline.txt", "CMDLINE.TXT"},
		{"vmlinuz", "vmlinuz"},
		{"loader", "loader"},
		{"EFI", "EFI"},
		{"BOOTX64.EFI", "BOOTX64.EFI"},
		{"start4cd.elf", "START4CD.ELF"},
	} {
		s, ok := exactShortName(tc.name)
		if !ok || s.String() != tc.want {
			t.Errorf("exactShortName(%q) = %q, %v; want %q", tc.name, s, ok, tc.want)
		}
	}
	for _, name := range []string{"gokrazy.conf", "bcm2712-rpi-5-b.dtb", "a b.txt", ".hidden", "x+y.txt", "toolongname"} {
		if s, ok := exactShortName(name); ok {
			t.Errorf("exactShortName(%q) = %q, want no exact short name", name, s)
		}
	}
	if got := lossyShortName("gokrazy.conf", 1).String(); got != "GOKRAZ~1.CON" {
		t.Errorf("lossyShortName(gokrazy.conf) = %q", got)
	}
	if got := lossyShortName("bcm2712-rpi-5-b.dtb", 12).String(); got != "BCM27~12.DTB" {
		t.Errorf("lossyShortName(bcm2712-rpi-5-b.dtb, 12) = %q", got)
	}
	for _, tc := range []struct{ component, want string }{
		{"cmdline.txt", "CMDLINE.TXT"},
		{"gokrazy.conf", "GOKRAZ~1.CON"},
		{"vmlinuz", "VMLINUZ."},
		{"pieeprom.sig", "PIEEPROM.SIG"},
		{"s.conf", "S~1.CON"},
	} {
		if got := runtimeShortName(tc.component); got != tc.want {
			t.Errorf("runtimeShortName(%q) = %q, want %q", tc.component, got, tc.want)
		}
	}
	shorts, lfn, err := assignShortNames([]string{"abcdefghij.txt", "abcdef~1.txt", "ABCDEFGHIJ.TX"})
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{shorts[0].String(), shorts[1].String(), shorts[2].String()}; strings.Join(got, " ") != "ABCDEF~2.TXT ABCDEF~1.TXT ABCDEF~1.TX" {
		t.Errorf("assignShortNames = %q", got)
	}
	if !lfn[0] || !lfn[1] || !lfn[2] {
		t.Errorf("assignShortNames: long names not marked: %v", lfn)
	}
}

// FuzzReader feeds arbitrary file systems to the reader: it must fail
// cleanly, never panic.
func FuzzReader(f *testing.F) {
	w := &bytesWriterAt{}
	if _, err := Write(w, 0, Options{Sectors: 16500, Label: "PENBOOT"}, []File{
		Bytes("cmdline.txt", []byte("root=x")),
		Bytes("loader/entries/gokrazy.conf", []byte("options root=x")),
	}); err != nil {
		f.Fatal(err)
	}
	// The seeds end with the last byte the reader needs: the whole file
	// system is 8 MiB, which the fuzzer mutates and minimizes slowly.
	r, err := NewReader(bytes.NewReader(w.b))
	if err != nil {
		f.Fatal(err)
	}
	var end int64
	for _, p := range []string{"/cmdline.txt", "/loader/entries/gokrazy.conf"} {
		off, size, err := r.Extents(p)
		if err != nil {
			f.Fatal(err)
		}
		end = max(end, off+size)
	}
	f.Add(w.b[:end], "/cmdline.txt")
	f.Add(w.b[:end], "/loader/entries/gokrazy.conf")
	f.Add([]byte{}, "/x")
	f.Fuzz(func(t *testing.T, img []byte, path string) {
		r, err := NewReader(bytes.NewReader(img))
		if err != nil {
			return
		}
		if off, size, err := r.Extents(path); err == nil {
			if off < 0 || size < 0 {
				t.Errorf("Extents(%q) = %d, %d", path, off, size)
			}
		}
		r.ReadFile(path)
	})
}

// FuzzShortNames checks that names in one directory always get distinct,
// well-formed short names, and that the runtime finds every name that has
// an exact short name.
func FuzzShortNames(f *testing.F) {
	f.Add("cmdline.txt", "CMDLINE.TXT", "gokrazy.conf")
	f.Add("vmlinuz", "VMLINUZ", "a.b.c")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		var names []string
		seen := make(map[string]bool)
		for _, n := range []string{a, b, c} {
			if validLongName(n) != nil || seen[strings.ToUpper(n)] {
				continue
			}
			seen[strings.ToUpper(n)] = true
			names = append(names, n)
		}
		shorts, _, err := assignShortNames(names)
		if err != nil {
			t.Fatal(err)
		}
		keys := make(map[string]bool)
		for i, s := range shorts {
			k := strings.ToUpper(string(s[:]))
			if keys[k] {
				t.Fatalf("names %q: short name %q given twice", names, s)
			}
			keys[k] = true
			if s[0] == ' ' || s[0] == 0 || s[0] == 0xE5 {
				t.Fatalf("name %q: bad short name %q", names[i], s)
			}
			// The runtime never finds names with a one- or two-letter
			// extension: it keeps the extension's padding spaces.
			if _, ok := exactShortName(names[i]); ok && exactShortName2(s) && (s[8] == ' ' || s[10] != ' ') {
				got := s.String()
				if !strings.EqualFold(runtimeName(s), runtimeShortName(names[i])) && runtimeName(s) != names[i] {
					t.Errorf("runtime would not find %q stored as %q", names[i], got)
				}
			}
		}
	})
}

// exactShortName2 reports whether s carries no numbered tail.
func exactShortName2(s shortName) bool { return !strings.Contains(string(s[:8]), "~") }

// runtimeName is how the runtime's reader renders a stored short name.
func runtimeName(s shortName) string {
	name := string(s[:8])
	if i := strings.IndexByte(name, ' '); i >= 0 {
		name = name[:i]
	}
	if s[8] != ' ' {
		name += "." + string(s[8:])
	}
	return name
}
