// Package image implements the appliance's image builder: it cross-compiles
// the init process (package appliance), pen and gokrazy's system services
// for a board, and writes a complete disk image without root privileges or
// loop devices:
//
//	sector 0      hybrid MBR (partition 1 active FAT for the Pi firmware)
//	sectors 1-33  GPT (backup at the end of the disk)
//	4 MiB         partition 1, 100 MiB: boot, FAT16B (package image/fat)
//	104 MiB       partition 2, 500 MiB: root A, SquashFS (package image/squashfs)
//	604 MiB       partition 3, 500 MiB: root B, a copy of root A
//	1104 MiB      partition 4, the rest: /perm, ext4, holding pen/pen.cfg
//
// The boot partition holds the kernel, the board's firmware or EFI loader,
// cmdline.txt and, for UEFI boards, loader/entries/gokrazy.conf, all laid
// out so that the gokrazy runtime can rewrite root= in place when an update
// switches root partitions. Build checks the finished image with the
// runtime's own reading rules before it renames it into place.
package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/image/internal/fat"
	"github.com/pen-lb/pen-appliance/image/internal/partition"
	"github.com/pen-lb/pen-appliance/image/internal/squashfs"
	"github.com/pen-lb/pen-appliance/internal/services"
)

// DefaultConfig is the pen configuration an image carries unless the
// builder is given another.
//
//go:embed defaults/pen.cfg
var DefaultConfig []byte

// LoadConfigs reads penimage's -config: one file (pen's configuration,
// service main, as before), several separated by commas (the first is
// service main, each other file.cfg service "file"), or a directory
// (main.cfg or pen.cfg is service main, every other NAME.cfg service
// NAME).
func LoadConfigs(spec string) (main []byte, svcs map[string][]byte, err error) {
	var files []string
	mainFile := ""
	if fi, err := os.Stat(spec); err == nil && fi.IsDir() {
		entries, err := os.ReadDir(spec)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".cfg") || e.IsDir() {
				continue
			}
			p := filepath.Join(spec, e.Name())
			if e.Name() == "main.cfg" || (e.Name() == "pen.cfg" && mainFile == "") {
				mainFile = p
			}
			files = append(files, p)
		}
		if mainFile == "" {
			return nil, nil, fmt.Errorf("-config %s: the directory holds no main.cfg (or pen.cfg), the configuration of service main", spec)
		}
	} else {
		files = strings.Split(spec, ",")
		mainFile = files[0]
	}
	svcs = map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		if f == mainFile {
			main = data
			continue
		}
		name := strings.TrimSuffix(filepath.Base(f), ".cfg")
		if name == "pen" && filepath.Base(mainFile) == "main.cfg" {
			return nil, nil, fmt.Errorf("-config: both main.cfg and pen.cfg; keep one of them")
		}
		if err := services.ValidName(name); err != nil || name == services.MainName {
			return nil, nil, fmt.Errorf("-config %s: %q is not a service name (letters, digits, - and _, not main)", f, name)
		}
		if _, dup := svcs[name]; dup {
			return nil, nil, fmt.Errorf("-config: two files for service %s", name)
		}
		svcs[name] = data
	}
	return main, svcs, nil
}

// Ports the appliance's own services use (pen owns 80 and 443).
const (
	GokrazyHTTPPort  = 9080
	GokrazyHTTPSPort = 9443
)

// DefaultSize is the image size unless told otherwise: enough for the
// three fixed partitions and about 940 MiB of /perm.
const DefaultSize = 2 << 30

// DefaultHostname is the hostname unless told otherwise.
const DefaultHostname = "pen"

// ModulePath is the path of this module.
const ModulePath = "github.com/pen-lb/pen-appliance"

// Packages compiled into every image, by import path (so that they build
// from the source tree and from a module version alike), with where each
// binary goes in the root file system.
var programs = []struct{ pkg, dest string }{
	{ModulePath + "/appliance/cmd/init", "gokrazy/init"},
	{"github.com/gokrazy/gokrazy/cmd/dhcp", "gokrazy/dhcp"},
	{"github.com/gokrazy/gokrazy/cmd/ntp", "gokrazy/ntp"},
	{"github.com/gokrazy/gokrazy/cmd/randomd", "gokrazy/randomd"},
	{"github.com/gokrazy/gokrazy/cmd/heartbeat", "gokrazy/heartbeat"},
	{ModulePath + "/pen/cmd/pen", "user/pen"},
}

// Options configure a build.
type Options struct {
	Board boards.Board
	// Output is the image file to write; it is replaced atomically.
	Output string
	// Hostname names the appliance; the partition GUIDs derive from it,
	// so updates must be built with the same one.
	Hostname string
	// Password protects gokrazy's status and update API (user "gokrazy").
	Password string
	// Config is pen's default configuration; DefaultConfig when nil. It
	// becomes the appliance's service "main".
	Config []byte
	// Services are further default services, by name (see LoadConfigs):
	// /etc/pen/services/NAME.cfg, installed into /perm on the first boot
	// with services.
	Services map[string][]byte
	// Size is the image size in bytes.
	Size int64
	// ModuleDir is where the go commands run: the root of this module's
	// source tree, or, with Standalone, a directory whose go.mod requires
	// a version of this module.
	ModuleDir string
	// Standalone builds from the module version ModuleDir's go.mod
	// requires, as an installed penimage does: the go commands may add
	// what they download to go.mod and go.sum (-mod=mod).
	Standalone bool
	// Version is pen's version string; "git describe" of ModuleDir when
	// empty.
	Version string
	// Time is the build timestamp; now when zero.
	Time time.Time
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
	// KernelArgs are extra kernel arguments, after the board's (e.g.
	// pen.trial_timeout=90s).
	KernelArgs []string
	// PenPackage is the package installed as /user/pen, ModulePath+"/pen/cmd/pen"
	// when empty; experiments may substitute another program.
	PenPackage string
}

// Result describes a finished image.
type Result struct {
	Output   string
	Size     int64 // apparent size in bytes
	Stored   int64 // bytes the sparse file occupies on disk
	BootUsed int64 // bytes of the boot partition holding data
	RootSize int64 // size of each root file system
	Cmdline  string
	Duration time.Duration
}

// GeneratePassword returns a random password for gokrazy's API.
func GeneratePassword() string {
	return rand.Text()
}

// ValidHostname checks that h is a single DNS label.
func ValidHostname(h string) error {
	if len(h) == 0 || len(h) > 63 {
		return fmt.Errorf("hostname %q: want 1 to 63 characters", h)
	}
	for i, c := range h {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(h)-1
		if !ok {
			return fmt.Errorf("hostname %q: use letters, digits and inner hyphens only", h)
		}
	}
	return nil
}

// ParseSize parses an image size: a number of bytes, or a number with the
// suffix K, M, G or T (powers of 1024, optionally written KiB, MiB, ...).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 || v > (1<<50)/mult {
		return 0, fmt.Errorf("invalid size %q: want e.g. 2G, 1800M or a number of bytes", s)
	}
	return v * mult, nil
}

// Cmdline returns the kernel command line for board b on the appliance
// called hostname, booting root A, padded with 64 spaces so that the
// runtime can rewrite root= in place.
func Cmdline(b boards.Board, hostname string) string {
	return CmdlineWith(b, hostname, nil)
}

// CmdlineWith is Cmdline with extra kernel arguments after the board's.
func CmdlineWith(b boards.Board, hostname string, extra []string) string {
	args := []string{"console=tty1"}
	if b.SerialConsole != "" {
		args = append(args, "console="+b.SerialConsole)
	}
	args = append(args, "root="+partition.RootCmdline(hostname, partition.RootA))
	args = append(args, b.Cmdline...)
	args = append(args, extra...)
	return strings.Join(args, " ") + strings.Repeat(" ", 64)
}

// checkKernelArgs refuses kernel arguments that would break the command
// line: empty ones, white space, root=, and a line longer than the one
// sector the runtime and boot loaders read.
func checkKernelArgs(b boards.Board, hostname string, extra []string) error {
	for _, a := range extra {
		if a == "" || strings.ContainsAny(a, " \t\r\n\x00") || strings.HasPrefix(a, "root=") {
			return fmt.Errorf("kernel argument %q: want one word, not root=", a)
		}
	}
	if n := len(CmdlineWith(b, hostname, extra)); n > 511 {
		return fmt.Errorf("the kernel command line would be %d bytes with its padding; at most 511 fit", n)
	}
	return nil
}

// LoaderEntry returns systemd-boot's entry for the kernel command line.
// It carries no final newline, like cmdline.txt.
func LoaderEntry(cmdline string) string {
	return "title pen appliance\nlinux /vmlinuz\noptions " + cmdline
}

type progress struct {
	w     io.Writer
	n, of int
	start time.Time
}

func (p *progress) begin(format string, args ...any) {
	p.n++
	p.start = time.Now()
	fmt.Fprintf(p.w, "[%d/%d] %s ... ", p.n, p.of, fmt.Sprintf(format, args...))
}

func (p *progress) done(format string, args ...any) {
	fmt.Fprintf(p.w, "%s (%.1fs)\n", fmt.Sprintf(format, args...), time.Since(p.start).Seconds())
}

// Build writes the image described by opts.
func Build(ctx context.Context, opts Options) (_ *Result, err error) {
	started := time.Now()
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Hostname == "" {
		opts.Hostname = DefaultHostname
	}
	if err := ValidHostname(opts.Hostname); err != nil {
		return nil, err
	}
	if opts.Password == "" || strings.ContainsAny(opts.Password, " \t\r\n") {
		return nil, errors.New("the password must be given and must not contain white space")
	}
	if opts.Size == 0 {
		opts.Size = DefaultSize
	}
	if opts.Config == nil {
		opts.Config = DefaultConfig
	}
	if opts.Time.IsZero() {
		opts.Time = time.Now()
	}
	if opts.Output == "" {
		return nil, errors.New("no output file given")
	}
	if err := checkKernelArgs(opts.Board, opts.Hostname, opts.KernelArgs); err != nil {
		return nil, err
	}
	b := opts.Board
	layout, err := partition.NewLayout(opts.Size)
	if err != nil {
		return nil, err
	}
	if b.EFILoader != nil {
		if _, err := os.Stat(b.EFILoader.Source); err != nil {
			return nil, fmt.Errorf("board %s boots by UEFI through systemd-boot, but %s is missing: install the Debian package %s (apt-get install %s)",
				b.Name, b.EFILoader.Source, b.EFILoader.DebianPackage, b.EFILoader.DebianPackage)
		}
	}
	if opts.Version == "" {
		opts.Version = gitVersion(opts.ModuleDir)
	}
	p := &progress{w: opts.Progress, of: 7}
	fmt.Fprintf(p.w, "penimage: board %s (%s), hostname %s, %s image %s\n", b.Name, b.GOARCH, opts.Hostname, humanBytes(opts.Size), opts.Output)

	// 1. Kernel and firmware modules.
	p.begin("locating kernel and firmware modules")
	mods := []string{b.KernelModule}
	if b.FirmwareModule != "" {
		mods = append(mods, b.FirmwareModule)
	}
	dirs, err := moduleDirs(ctx, opts.ModuleDir, mods)
	if err != nil {
		return nil, err
	}
	p.done("%s", strings.Join(mods, ", "))

	// 2. Programs.
	tmp, err := os.MkdirTemp("", "penimage")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	p.begin("compiling %d programs for linux/%s", len(programs), b.GOARCH)
	bins, err := compile(ctx, opts, tmp)
	if err != nil {
		return nil, err
	}
	var binBytes int64
	for _, bin := range bins {
		fi, err := os.Stat(bin)
		if err != nil {
			return nil, err
		}
		binBytes += fi.Size()
	}
	p.done("%s of binaries", humanBytes(binBytes))

	// The image is written to a temporary file next to the output and
	// renamed into place once it is complete and checked.
	outDir := filepath.Dir(opts.Output)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(outDir, "."+filepath.Base(opts.Output)+".*.tmp")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Truncate(opts.Size); err != nil {
		return nil, fmt.Errorf("sizing image: %w", err)
	}

	// 3. Partition table.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.begin("partition table")
	if err := partition.Write(f, layout, partition.Options{Hostname: opts.Hostname, GOARCH: b.GOARCH}); err != nil {
		return nil, err
	}
	p.done("GPT with hybrid MBR, disk GUID %s", partition.GUID(opts.Hostname, 0))

	// 4. Boot file system.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cmdline := CmdlineWith(b, opts.Hostname, opts.KernelArgs)
	p.begin("boot file system")
	info := BuildInfo{Board: b.Name, Hostname: opts.Hostname, Version: opts.Version, Timestamp: buildTimestamp(opts.Time), KernelArgs: opts.KernelArgs}
	files, err := bootFiles(b, dirs, cmdline, info)
	if err != nil {
		return nil, err
	}
	bootPart := layout.Part(partition.Boot)
	fl, err := fat.Write(f, bootPart.Offset(), fat.Options{
		Sectors:       uint32(bootPart.Sectors),
		HiddenSectors: uint32(bootPart.Start),
		Label:         "PENBOOT",
		VolumeID:      partition.DiskSignature(opts.Hostname),
		Time:          opts.Time,
	}, files)
	if err != nil {
		return nil, fmt.Errorf("writing boot file system: %w", err)
	}
	p.done("%d files, %s used of %s", len(files), humanBytes(fl.DataEnd), humanBytes(bootPart.Size()))

	// 5. Root file systems.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.begin("root file system")
	root, err := rootFS(opts, bins, dirs[b.KernelModule])
	if err != nil {
		return nil, err
	}
	rootA := layout.Part(partition.RootA)
	rootSize, err := root.Write(f, rootA.Offset())
	if err != nil {
		return nil, fmt.Errorf("writing root file system: %w", err)
	}
	if rootSize > rootA.Size() {
		return nil, fmt.Errorf("root file system is %s, more than the %s partition", humanBytes(rootSize), humanBytes(rootA.Size()))
	}
	// Root B starts out as a copy, so that either partition boots.
	rootB := layout.Part(partition.RootB)
	if _, err := io.Copy(io.NewOffsetWriter(f, rootB.Offset()), io.NewSectionReader(f, rootA.Offset(), rootSize)); err != nil {
		return nil, fmt.Errorf("copying root A to root B: %w", err)
	}
	p.done("SquashFS (zlib) of %s, in root A and root B", humanBytes(rootSize))

	// 6. /perm.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	perm := layout.Part(partition.Perm)
	p.begin("/perm file system")
	if err := writePerm(f, perm, opts.Config); err != nil {
		return nil, fmt.Errorf("writing /perm: %w", err)
	}
	p.done("ext4 of %s holding pen/pen.cfg", humanBytes(perm.Size()))

	// 7. Check and install.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.begin("checking with the runtime's reading rules")
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := VerifyWith(f, opts.Size, b, opts.Hostname, opts.KernelArgs); err != nil {
		return nil, fmt.Errorf("checking the image: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), opts.Output); err != nil {
		return nil, err
	}
	p.done("ok")

	res := &Result{
		Output:   opts.Output,
		Size:     opts.Size,
		BootUsed: fl.DataEnd,
		RootSize: rootSize,
		Cmdline:  strings.TrimSpace(cmdline),
		Duration: time.Since(started),
	}
	if fi, err := os.Stat(opts.Output); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			res.Stored = st.Blocks * 512
		}
	}
	return res, nil
}

// moduleDirs returns the module cache directory of each module, as go.mod
// of moduleDir selects it, downloading it when needed.
func moduleDirs(ctx context.Context, moduleDir string, mods []string) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, "go", append([]string{"mod", "download", "-json"}, mods...)...)
	cmd.Dir = moduleDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	dec := json.NewDecoder(bytes.NewReader(out))
	dirs := make(map[string]string)
	var problems []string
	for {
		var m struct{ Path, Version, Dir, Error string }
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go mod download: %w", err)
		}
		if m.Error != "" {
			problems = append(problems, m.Error)
		}
		if m.Dir != "" {
			dirs[m.Path] = m.Dir
		}
	}
	for _, m := range mods {
		if dirs[m] == "" {
			problems = append(problems, m+": not downloaded")
		}
	}
	if err != nil || len(problems) > 0 {
		return nil, fmt.Errorf("go mod download %s: %v %s %s", strings.Join(mods, " "), err, strings.Join(problems, "; "), strings.TrimSpace(stderr.String()))
	}
	return dirs, nil
}

// compile builds every program for the board and returns the binaries by
// their destination in the root file system.
func compile(ctx context.Context, opts Options, outDir string) (map[string]string, error) {
	ldflags := fmt.Sprintf("-X main.buildTimestamp=%s -X github.com/pen-lb/pen-appliance/pen/version.Version=%s",
		buildTimestamp(opts.Time), opts.Version)
	args := []string{"build", "-trimpath", "-tags", "gokrazy,netgo,osusergo", "-ldflags", ldflags, "-o", outDir + string(filepath.Separator)}
	if opts.Standalone {
		args = append(args, "-mod=mod")
	}
	pkgs := make([]string, len(programs))
	for i, prog := range programs {
		pkgs[i] = prog.pkg
		if prog.dest == "user/pen" && opts.PenPackage != "" {
			pkgs[i] = opts.PenPackage
		}
	}
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = opts.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+opts.Board.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("compiling: %w", ctx.Err())
		}
		return nil, fmt.Errorf("go build for linux/%s: %w\n%s", opts.Board.GOARCH, err, out)
	}
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[opts.Board.GOARCH]
	bins := make(map[string]string)
	for i, prog := range programs {
		bin := filepath.Join(outDir, path.Base(pkgs[i]))
		ef, err := elf.Open(bin)
		if err != nil {
			return nil, fmt.Errorf("compiled %s: %w", pkgs[i], err)
		}
		m := ef.Machine
		ef.Close()
		if m != machine {
			return nil, fmt.Errorf("compiled %s is for %v, want %v", pkgs[i], m, machine)
		}
		bins[prog.dest] = bin
	}
	return bins, nil
}

// bootFiles lists the boot partition's files in the order they are laid
// out: the kernel first (starting at the first cluster), then the other
// kernel files, firmware, cmdline.txt, config.txt, the loader entry and
// the EFI loader, and BuildInfoFile.
func bootFiles(b boards.Board, dirs map[string]string, cmdline string, info BuildInfo) ([]fat.File, error) {
	var files []fat.File
	have := make(map[string]bool)
	addGlobs := func(dir string, globs []string) error {
		for _, g := range globs {
			matches, err := filepath.Glob(filepath.Join(dir, g))
			if err != nil {
				return err
			}
			if len(matches) == 0 {
				return fmt.Errorf("%s matches nothing in %s", g, dir)
			}
			sort.Strings(matches)
			for _, m := range matches {
				rel, err := filepath.Rel(dir, m)
				if err != nil {
					return err
				}
				rel = filepath.ToSlash(rel)
				if have[rel] {
					continue
				}
				f, err := fat.HostFile(rel, m)
				if err != nil {
					return err
				}
				have[rel] = true
				files = append(files, f)
			}
		}
		return nil
	}
	kdir := dirs[b.KernelModule]
	if err := checkKernel(filepath.Join(kdir, "vmlinuz"), b.GOARCH); err != nil {
		return nil, err
	}
	if err := addGlobs(kdir, append([]string{"vmlinuz"}, b.KernelFiles...)); err != nil {
		return nil, err
	}
	if b.FirmwareModule != "" {
		if err := addGlobs(dirs[b.FirmwareModule], b.FirmwareFiles); err != nil {
			return nil, err
		}
	}
	for _, req := range b.RequiredBootFiles {
		if !have[req] {
			return nil, fmt.Errorf("board %s needs %s on the boot partition, but its modules do not provide it", b.Name, req)
		}
	}
	files = append(files, fat.Bytes("cmdline.txt", []byte(cmdline)))
	if c := b.ConfigTxt; c != nil {
		src, err := os.ReadFile(filepath.Join(kdir, c.From))
		if err != nil {
			return nil, err
		}
		files = append(files, fat.Bytes("config.txt", []byte(replaceLines(string(src), c.Replace))))
	}
	if l := b.EFILoader; l != nil {
		files = append(files, fat.Bytes("loader/entries/gokrazy.conf", []byte(LoaderEntry(cmdline))))
		f, err := fat.HostFile(l.Target, l.Source)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	files = append(files, fat.Bytes(BuildInfoFile, info.marshal()))
	return files, nil
}

func replaceLines(s string, pairs []string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		for j := 0; j+1 < len(pairs); j += 2 {
			if strings.TrimSpace(l) == pairs[j] {
				lines[i] = pairs[j+1]
			}
		}
	}
	return strings.Join(lines, "\n")
}

// checkKernel makes sure vmlinuz is a kernel for goarch.
func checkKernel(p, goarch string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return fmt.Errorf("reading %s: %w", p, err)
	}
	switch {
	case goarch == "amd64" && string(hdr[0x202:0x206]) == "HdrS":
	case goarch == "arm64" && string(hdr[0x38:0x3c]) == "ARMd":
	default:
		return fmt.Errorf("%s is not a Linux kernel for %s", p, goarch)
	}
	return nil
}

// rootFS assembles the root file system.
func rootFS(opts Options, bins map[string]string, kernelDir string) (*squashfs.FS, error) {
	r := squashfs.New(opts.Time)
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "perm", "lib", "run", "mnt", "gokrazy", "user"} {
		check(r.Mkdir(d, 0o755))
	}
	dests := make([]string, 0, len(bins))
	for dest := range bins {
		dests = append(dests, dest)
	}
	sort.Strings(dests)
	for _, dest := range dests {
		check(r.HostFile(dest, 0o755, bins[dest]))
	}
	check(r.Symlink("var", "/perm/var"))
	check(r.Symlink("etc/resolv.conf", "/tmp/resolv.conf"))
	check(r.Bytes("etc/hostname", 0o444, []byte(opts.Hostname)))
	check(r.Bytes("etc/hosts", 0o444, []byte("127.0.0.1 localhost\n::1 localhost\n")))
	check(r.Bytes("etc/gokr-pw.txt", 0o400, []byte(opts.Password)))
	check(r.Bytes("etc/http-port.txt", 0o444, []byte(strconv.Itoa(GokrazyHTTPPort))))
	check(r.Bytes("etc/https-port.txt", 0o444, []byte(strconv.Itoa(GokrazyHTTPSPort))))
	check(r.Bytes("etc/pen/pen.cfg", 0o444, opts.Config))
	for _, name := range slices.Sorted(maps.Keys(opts.Services)) {
		if err := services.ValidName(name); err != nil || name == services.MainName {
			check(fmt.Errorf("default service %q: not a service name", name))
			continue
		}
		check(r.Bytes("etc/pen/services/"+name+".cfg", 0o444, opts.Services[name]))
	}
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		check(r.HostFile("etc/ssl/ca-bundle.pem", 0o444, "/etc/ssl/certs/ca-certificates.crt"))
	}
	// Kernel modules (e.g. the Pi 5 fan driver the runtime loads).
	modDir := filepath.Join(kernelDir, "lib", "modules")
	if _, err := os.Stat(modDir); err == nil {
		check(filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(kernelDir, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			switch {
			case d.IsDir():
				return r.Mkdir(rel, 0o755)
			case d.Type().IsRegular():
				return r.HostFile(rel, 0o444, p)
			}
			return nil
		}))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("assembling root file system: %w", err)
	}
	return r, nil
}

// writePerm creates the ext4 file system of /perm with pen's configuration.
func writePerm(f *os.File, perm partition.Extent, config []byte) error {
	fsys, err := ext4.Create(file.New(f, false), perm.Size(), perm.Offset(), partition.SectorSize, &ext4.Params{VolumeName: "perm"})
	if err != nil {
		return err
	}
	if err := makeLostFound(fsys); err != nil {
		return fmt.Errorf("lost+found: %w", err)
	}
	if err := fsys.Mkdir("pen"); err != nil {
		return err
	}
	w, err := fsys.OpenFile("pen/pen.cfg", os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	if _, err := w.Write(config); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := fsys.Chmod("pen/pen.cfg", 0o644); err != nil {
		return err
	}
	if err := fsys.Chmod("pen", 0o755); err != nil {
		return err
	}
	return fsys.Close()
}

// makeLostFound creates lost+found as mke2fs does, as the first inode
// after the reserved ones, mode 0700. Without it, every e2fsck that may
// write (as at boot) creates one and reports the file system as
// modified. mke2fs also gives it a few blocks in advance; the ext4 writer
// cannot size a directory, and e2fsck extends lost+found itself when it
// needs the room.
func makeLostFound(fsys *ext4.FileSystem) error {
	const dir = "lost+found"
	if err := fsys.Mkdir(dir); err != nil {
		return err
	}
	return fsys.Chmod(dir, 0o700)
}

func gitVersion(dir string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return "dev"
	}
	return string(bytes.TrimSpace(out))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
