package boards

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBoards(t *testing.T) {
	for _, name := range []string{"pc", "rpi", "arm64"} {
		b, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if b.GOARCH != "amd64" && b.GOARCH != "arm64" {
			t.Errorf("%s: GOARCH %q", name, b.GOARCH)
		}
		if b.KernelModule == "" || len(b.KernelFiles) == 0 || b.SerialConsole == "" || b.Scheme != GPTHybridMBR {
			t.Errorf("%s: incomplete: %+v", name, b)
		}
		if !contains(b.Cmdline, "init=/gokrazy/init") {
			t.Errorf("%s: cmdline %q lacks init=/gokrazy/init", name, b.Cmdline)
		}
		for _, arg := range b.Cmdline {
			if strings.HasPrefix(arg, "root=") || strings.HasPrefix(arg, "console=") {
				t.Errorf("%s: cmdline sets %s, which the builder adds", name, arg)
			}
		}
		if (b.ConfigTxt == nil) == (b.EFILoader == nil) {
			t.Errorf("%s: want either config.txt (Pi firmware) or an EFI loader", name)
		}
	}
	if _, err := Lookup("vax"); err == nil {
		t.Errorf("Lookup(vax) succeeded")
	}
	if b, ok := ForModel("Raspberry Pi 4 Model B Rev 1.4", "arm64"); !ok || b.Name != "rpi" {
		t.Errorf("ForModel(Pi 4) = %s, %v", b.Name, ok)
	}
	if b, ok := ForModel("Standard PC (Q35 + ICH9, 2009)", "amd64"); !ok || b.Name != "pc" {
		t.Errorf("ForModel(qemu pc) = %s, %v", b.Name, ok)
	}
	if b, ok := ForModel("QEMU KVM Virtual Machine", "arm64"); !ok || b.Name != "arm64" {
		t.Errorf("ForModel(qemu virt) = %s, %v", b.Name, ok)
	}
}

// TestModuleFiles checks each board's globs and required files against
// the kernel and firmware modules go.mod selects.
func TestModuleFiles(t *testing.T) {
	for _, b := range All() {
		files := make(map[string]bool)
		for _, src := range []struct {
			mod   string
			globs []string
		}{{b.KernelModule, b.KernelFiles}, {b.FirmwareModule, b.FirmwareFiles}} {
			if src.mod == "" {
				continue
			}
			out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", src.mod).Output()
			if err != nil {
				t.Fatalf("go list -m %s: %v", src.mod, err)
			}
			dir := strings.TrimSpace(string(out))
			if dir == "" {
				t.Fatalf("%s is not in the module cache; run go mod download %s", src.mod, src.mod)
			}
			for _, g := range src.globs {
				m, err := filepath.Glob(filepath.Join(dir, g))
				if err != nil || len(m) == 0 {
					t.Errorf("%s: %s matches nothing in %s", b.Name, g, src.mod)
				}
				for _, p := range m {
					rel, _ := filepath.Rel(dir, p)
					files[filepath.ToSlash(rel)] = true
				}
			}
		}
		for _, f := range b.RequiredBootFiles {
			if !files[f] {
				t.Errorf("%s: required boot file %s is not provided", b.Name, f)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
