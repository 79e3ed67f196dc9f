package image

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/image/internal/fat"
	"github.com/pen-lb/pen-appliance/image/internal/partition"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"2G": 2 << 30, "2GiB": 2 << 30, "1800M": 1800 << 20, "1800m": 1800 << 20,
		"4096": 4096, "1T": 1 << 40, "512K": 512 << 10, "3gb": 3 << 30,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1G", "2X", "1.5G", "99999999999T"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestValidHostname(t *testing.T) {
	for _, h := range []string{"pen", "pen-1", "LB7", strings.Repeat("a", 63)} {
		if err := ValidHostname(h); err != nil {
			t.Errorf("ValidHostname(%q) = %v", h, err)
		}
	}
	for _, h := range []string{"", "-pen", "pen-", "pen.example", "pen_1", "pen 1", strings.Repeat("a", 64)} {
		if err := ValidHostname(h); err == nil {
			t.Errorf("ValidHostname(%q) succeeded", h)
		}
	}
}

func TestCmdline(t *testing.T) {
	b, err := boards.Lookup("pc")
	if err != nil {
		t.Fatal(err)
	}
	got := Cmdline(b, "pen")
	want := "console=tty1 console=ttyS0,115200 root=PARTUUID=" + partition.GUID("pen", 1) + "/PARTNROFF=1 ro init=/gokrazy/init panic=10 oops=panic rootwait=30 pci=nommconf" + strings.Repeat(" ", 64)
	if got != want {
		t.Errorf("Cmdline = %q\nwant      %q", got, want)
	}
	if len(got) >= fat.ClusterSize {
		t.Errorf("command line does not fit one cluster")
	}
	if p1, p2 := GeneratePassword(), GeneratePassword(); p1 == p2 || len(p1) < 20 {
		t.Errorf("GeneratePassword: %q, %q", p1, p2)
	}
}

// Images built once per test run and shared by the layout and boot tests.

const (
	testHostname = "pentest"
	testPassword = "test-password-7b1e"
	testSize     = 1300 << 20
	// guestBackend is where pen inside the VM finds the backend: the boot
	// tests have qemu forward this address to a server on the host.
	guestBackendAddr = "10.0.2.100"
	guestBackendPort = 8000
)

var testConfig = []byte(fmt.Sprintf("# pen configuration of the image tests\nlisten 80\nserver 0 address %s port %d\n", guestBackendAddr, guestBackendPort))

type testImage struct {
	path  string
	board boards.Board
	time  time.Time
	res   *Result
	err   error
}

var (
	imagesMu  sync.Mutex
	images    = make(map[string]*testImage)
	imagesDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imagesDir != "" {
		os.RemoveAll(imagesDir)
	}
	os.Exit(code)
}

func moduleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// statSources stats every Go source file, go.mod and go.sum of the module.
// The images these tests build compile the whole module in a separate go
// process, which go test's result cache cannot see; the stats it can, so a
// changed source file makes the tests run again instead of reporting a
// cached result.
func statSources(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "images" || name == "out") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum" || name == "pen.cfg" {
			_, err := os.Stat(p)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// buildTestImage builds the image for board once per test binary run.
func buildTestImage(t *testing.T, board string) *testImage {
	t.Helper()
	imagesMu.Lock()
	defer imagesMu.Unlock()
	statSources(t, moduleRoot(t))
	if img, ok := images[board]; ok {
		if img.err != nil {
			t.Fatalf("building %s image failed earlier: %v", board, img.err)
		}
		return img
	}
	b, err := boards.Lookup(board)
	if err != nil {
		t.Fatal(err)
	}
	if l := b.EFILoader; l != nil {
		testenv.NeedFile(t, l.Source, l.DebianPackage)
	}
	if imagesDir == "" {
		if imagesDir, err = os.MkdirTemp("", "penimage-test"); err != nil {
			t.Fatal(err)
		}
	}
	img := &testImage{
		path:  filepath.Join(imagesDir, "pen-"+board+".img"),
		board: b,
		time:  time.Now().Truncate(time.Second),
	}
	images[board] = img
	var progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	img.res, img.err = Build(ctx, Options{
		Board:     b,
		Output:    img.path,
		Hostname:  testHostname,
		Password:  testPassword,
		Config:    testConfig,
		Size:      testSize,
		ModuleDir: moduleRoot(t),
		Time:      img.time,
		Progress:  &progress,
	})
	t.Logf("building the %s image:\n%s", board, progress.Bytes())
	if img.err != nil {
		t.Fatalf("Build: %v", img.err)
	}
	t.Logf("%s image: %d bytes, %d stored, root file system %d bytes, boot data %d bytes, built in %v",
		board, img.res.Size, img.res.Stored, img.res.RootSize, img.res.BootUsed, img.res.Duration.Round(100*time.Millisecond))
	return img
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// extract copies a partition into a file of its own, keeping holes, for
// tools that cannot read at an offset.
func extract(t *testing.T, img string, e partition.Extent, name string) string {
	t.Helper()
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(t.TempDir(), name)
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(e.Size()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	r := io.NewSectionReader(src, e.Offset(), e.Size())
	for off := int64(0); ; {
		n, err := io.ReadFull(r, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestImageLayout builds every board's image and rereads it with
// independent tools (sfdisk, fdisk, fsck.fat, mtools, unsquashfs, e2fsck,
// debugfs) and with the gokrazy runtime's reading rules.
func TestImageLayout(t *testing.T) {
	tools := map[string]string{
		"sfdisk": "fdisk", "fdisk": "fdisk", "fsck.fat": "dosfstools", "mtype": "mtools", "mdir": "mtools",
		"unsquashfs": "squashfs-tools", "e2fsck": "e2fsprogs", "debugfs": "e2fsprogs",
	}
	for name, pkg := range tools {
		testenv.NeedProgram(t, name, pkg)
	}
	for _, board := range []string{"pc", "rpi", "arm64"} {
		t.Run(board, func(t *testing.T) {
			img := buildTestImage(t, board)
			checkLayout(t, img)
		})
	}
}

func checkLayout(t *testing.T, img *testImage) {
	b := img.board
	layout, err := partition.NewLayout(testSize)
	if err != nil {
		t.Fatal(err)
	}

	// GPT, as util-linux sees it.
	var dump struct {
		PartitionTable struct {
			Label      string `json:"label"`
			Partitions []struct {
				Start, Size uint64
				Type, UUID  string
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(run(t, "sfdisk", "--json", img.path), &dump); err != nil {
		t.Fatal(err)
	}
	pt := dump.PartitionTable
	if pt.Label != "gpt" || len(pt.Partitions) != 4 {
		t.Fatalf("sfdisk sees a %q table with %d partitions", pt.Label, len(pt.Partitions))
	}
	rootType, _ := partition.RootType(b.GOARCH)
	types := []string{partition.TypeESP, rootType, rootType, partition.TypeLinuxData}
	for i, p := range pt.Partitions {
		want := layout.Parts[i]
		if p.Start != want.Start || p.Size != want.Sectors || !strings.EqualFold(p.UUID, partition.GUID(testHostname, i+1)) || p.Type != types[i] {
			t.Errorf("sfdisk: partition %d is %+v, want start %d size %d uuid %s type %s", i+1, p, want.Start, want.Sectors, partition.GUID(testHostname, i+1), types[i])
		}
	}
	if out := run(t, "sfdisk", "--verify", img.path); !bytes.Contains(out, []byte("No errors detected")) {
		t.Errorf("sfdisk --verify:\n%s", out)
	}
	// The hybrid MBR, as fdisk sees it when told to read only the MBR.
	mbr := string(run(t, "fdisk", "-l", "-t", "dos", img.path))
	for _, re := range []string{`img1 +\* +8192 +212991 +204800 +100M +c `, `img2 +1 +8191 +8191 +4M +ee `} {
		if !regexp.MustCompile(re).MatchString(mbr) {
			t.Errorf("fdisk -t dos: no line matching %q:\n%s", re, mbr)
		}
	}

	// Boot file system.
	boot := extract(t, img.path, layout.Part(partition.Boot), "boot.fat")
	fsck := string(run(t, "fsck.fat", "-n", "-v", boot))
	if !strings.Contains(fsck, "1 FATs, 16 bit entries") || !strings.Contains(fsck, "2048 bytes per cluster") {
		t.Errorf("fsck.fat does not see FAT16 with one FAT and 2 KiB clusters:\n%s", fsck)
	}
	if !regexp.MustCompile(`boot.fat: \d+ files, \d+/\d+ clusters\n$`).MatchString(fsck) {
		t.Errorf("fsck.fat reports problems:\n%s", fsck)
	}
	cmdline := Cmdline(b, testHostname)
	if got := string(run(t, "mtype", "-i", boot, "::cmdline.txt")); got != cmdline {
		t.Errorf("mtools reads cmdline.txt as %q, want %q", got, cmdline)
	}
	fr, err := os.Open(boot)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Close()
	rd, err := fat.NewReader(fr)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rd.ReadFile("/cmdline.txt"); err != nil || string(got) != cmdline {
		t.Errorf("runtime rules: cmdline.txt = %q, %v", got, err)
	}
	// The runtime finds its boot device by the GUID that root= names.
	m := regexp.MustCompile(`root=PARTUUID=([0-9a-f-]+)/PARTNROFF=1 `).FindStringSubmatch(cmdline)
	if m == nil {
		t.Fatalf("cmdline %q: no root=PARTUUID=.../PARTNROFF=1", cmdline)
	}
	imgFile, err := os.Open(img.path)
	if err != nil {
		t.Fatal(err)
	}
	defer imgFile.Close()
	if got, err := partition.RuntimeBootGUID(imgFile); err != nil || got != m[1] {
		t.Errorf("runtime sees boot GUID %s (%v), cmdline names %s", got, err, m[1])
	}
	if err := Verify(imgFile, testSize, b, testHostname); err != nil {
		t.Errorf("Verify: %v", err)
	}

	kdir := moduleDir(t, b.KernelModule)
	listing := string(run(t, "mdir", "-/", "-b", "-i", boot, "::"))
	mustHave := append([]string{}, b.RequiredBootFiles...)
	if b.EFILoader != nil {
		mustHave = append(mustHave, b.EFILoader.Target, "loader/entries/gokrazy.conf")
		if got, err := rd.ReadFile("/loader/entries/gokrazy.conf"); err != nil || string(got) != LoaderEntry(cmdline) {
			t.Errorf("runtime rules: gokrazy.conf = %q, %v", got, err)
		}
		want, _ := os.ReadFile(b.EFILoader.Source)
		if got := run(t, "mtype", "-i", boot, "::"+b.EFILoader.Target); !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s", b.EFILoader.Target, b.EFILoader.Source)
		}
	}
	if b.ConfigTxt != nil {
		mustHave = append(mustHave, "config.txt")
		cfg := string(run(t, "mtype", "-i", boot, "::config.txt"))
		for _, line := range []string{"arm_control=0x200", "enable_uart=1", "kernel=vmlinuz"} {
			if !strings.Contains(cfg, line+"\n") {
				t.Errorf("config.txt lacks %s:\n%s", line, cfg)
			}
		}
	}
	for _, f := range mustHave {
		if !strings.Contains(listing, "::/"+f+"\n") {
			t.Errorf("boot partition lacks %s; mdir lists:\n%s", f, listing)
		}
	}
	vmlinuz, err := os.ReadFile(filepath.Join(kdir, "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	if got := run(t, "mtype", "-i", boot, "::vmlinuz"); !bytes.Equal(got, vmlinuz) {
		t.Errorf("vmlinuz on the boot partition differs from %s's", b.KernelModule)
	}

	// Root file systems A and B.
	for _, part := range []int{partition.RootA, partition.RootB} {
		off := fmt.Sprint(layout.Part(part).Offset())
		list := string(run(t, "unsquashfs", "-o", off, "-lln", "-d", "", img.path))
		for _, want := range []string{
			"-rwxr-xr-x 0/0 /gokrazy/init", "-rwxr-xr-x 0/0 /gokrazy/dhcp", "-rwxr-xr-x 0/0 /gokrazy/ntp",
			"-rwxr-xr-x 0/0 /gokrazy/randomd", "-rwxr-xr-x 0/0 /gokrazy/heartbeat", "-rwxr-xr-x 0/0 /user/pen",
			"-r-------- 0/0 /etc/gokr-pw.txt", "-r--r--r-- 0/0 /etc/hostname", "-r--r--r-- 0/0 /etc/http-port.txt",
			"-r--r--r-- 0/0 /etc/pen/pen.cfg", "lrwxrwxrwx 0/0 /etc/resolv.conf -> /tmp/resolv.conf",
			"lrwxrwxrwx 0/0 /var -> /perm/var", "drwxr-xr-x 0/0 /perm", "drwxr-xr-x 0/0 /proc",
		} {
			f := strings.Fields(want)
			re := regexp.QuoteMeta(f[0]) + ` +` + regexp.QuoteMeta(f[1]) + ` +\d+ \S+ \S+ ` + regexp.QuoteMeta(strings.Join(f[2:], " ")) + `\n`
			if !regexp.MustCompile(re).MatchString(list) {
				t.Errorf("root partition %d: unsquashfs lists no %q", part, want)
			}
		}
	}
	root := filepath.Join(t.TempDir(), "root")
	run(t, "unsquashfs", "-o", fmt.Sprint(layout.Part(partition.RootA).Offset()), "-d", root, img.path)
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[b.GOARCH]
	for _, bin := range []string{"user/pen", "gokrazy/init", "gokrazy/dhcp"} {
		ef, err := elf.Open(filepath.Join(root, bin))
		if err != nil {
			t.Fatal(err)
		}
		if ef.Machine != machine || ef.Class != elf.ELFCLASS64 {
			t.Errorf("/%s is %v %v, want %v", bin, ef.Class, ef.Machine, machine)
		}
		ef.Close()
	}
	for file, want := range map[string]string{
		"etc/hostname":      testHostname,
		"etc/gokr-pw.txt":   testPassword,
		"etc/http-port.txt": "9080",
		"etc/pen/pen.cfg":   string(testConfig),
	} {
		if got, err := os.ReadFile(filepath.Join(root, file)); err != nil || string(got) != want {
			t.Errorf("/%s = %q, %v; want %q", file, got, err, want)
		}
	}

	// /perm.
	perm := extract(t, img.path, layout.Part(partition.Perm), "perm.ext4")
	run(t, "e2fsck", "-f", "-n", perm)
	if got := run(t, "debugfs", "-R", "cat /pen/pen.cfg", perm); !bytes.Equal(got, testConfig) {
		t.Errorf("/perm/pen/pen.cfg = %q, want %q", got, testConfig)
	}
}

func moduleDir(t *testing.T, mod string) string {
	t.Helper()
	dirs, err := moduleDirs(context.Background(), moduleRoot(t), []string{mod})
	if err != nil {
		t.Fatal(err)
	}
	return dirs[mod]
}

// TestBuildErrors checks that bad options fail before anything is written.
func TestBuildErrors(t *testing.T) {
	pc, _ := boards.Lookup("pc")
	out := filepath.Join(t.TempDir(), "x.img")
	missing := pc
	missing.EFILoader = &boards.EFILoader{Source: "/nonexistent/systemd-bootx64.efi", Target: "EFI/BOOT/BOOTX64.EFI", DebianPackage: "systemd-boot-efi"}
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no password", Options{Board: pc, Output: out}, "password"},
		{"bad hostname", Options{Board: pc, Output: out, Password: "x", Hostname: "a.b"}, "hostname"},
		{"too small", Options{Board: pc, Output: out, Password: "x", Size: 1 << 30}, "disk size"},
		{"no EFI loader", Options{Board: missing, Output: out, Password: "x"}, "apt-get install systemd-boot-efi"},
	} {
		_, err := Build(context.Background(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Build error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a failed build left %s behind", out)
	}
}
