package transparent

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/pen-lb/pen-appliance/boards"
)

// TestBoardKernels reads the configuration built into each board's kernel
// (CONFIG_IKCONFIG) and checks what transparent mode needs, as
// docs/TRANSPARENT.md reports it: policy routing for IPv6 everywhere, for
// IPv4 everywhere but on the arm64 board; and what pen's BPF programs
// need. When a kernel module update
// changes that, the test fails and the page needs updating.
func TestBoardKernels(t *testing.T) {
	noIPv4 := map[string]bool{"arm64": true}
	for _, b := range boards.All() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", b.KernelModule).Output()
		if err != nil {
			t.Fatalf("go list -m %s: %v", b.KernelModule, err)
		}
		dir := strings.TrimSpace(string(out))
		if dir == "" {
			t.Fatalf("%s is not in the module cache; run go mod download %s", b.KernelModule, b.KernelModule)
		}
		img, err := os.ReadFile(filepath.Join(dir, "vmlinuz"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := ikconfig(img)
		if cfg == nil {
			t.Errorf("%s: no configuration found in %s/vmlinuz (CONFIG_IKCONFIG)", b.Name, b.KernelModule)
			continue
		}
		has := func(opt string) bool { return bytes.Contains(cfg, []byte("\n"+opt+"=y\n")) }
		if !has("CONFIG_IPV6_MULTIPLE_TABLES") {
			t.Errorf("%s: %s lacks CONFIG_IPV6_MULTIPLE_TABLES", b.Name, b.KernelModule)
		}
		if got := has("CONFIG_IP_MULTIPLE_TABLES"); got != !noIPv4[b.Name] {
			t.Errorf("%s: %s: CONFIG_IP_MULTIPLE_TABLES=y is %v; docs/TRANSPARENT.md says %v", b.Name, b.KernelModule, got, !noIPv4[b.Name])
		}
		t.Logf("%s (%s): CONFIG_IP_MULTIPLE_TABLES=y %v, CONFIG_IPV6_MULTIPLE_TABLES=y %v", b.Name, b.KernelModule, has("CONFIG_IP_MULTIPLE_TABLES"), has("CONFIG_IPV6_MULTIPLE_TABLES"))
		// What the BPF programs need (DSR's fast path and udp_kernel:
		// TCX; kernel_relay: sockmap); without them pen does the work
		// itself. Without the JIT the kernel interprets them (the pc
		// kernel has none).
		for _, opt := range []string{"CONFIG_BPF_SYSCALL", "CONFIG_NET_XGRESS", "CONFIG_NET_SOCK_MSG"} {
			if !has(opt) {
				t.Errorf("%s: %s lacks %s", b.Name, b.KernelModule, opt)
			}
		}
		t.Logf("%s: CONFIG_BPF_JIT=y %v", b.Name, has("CONFIG_BPF_JIT"))
	}
}

// ikconfig returns the kernel configuration embedded in a kernel image:
// between IKCFG_ST and IKCFG_ED, gzipped, in the image itself (arm64's
// Image) or in its compressed payload (x86's bzImage, zstd or gzip).
func ikconfig(img []byte) []byte {
	if cfg := between(img); cfg != nil {
		return cfg
	}
	for _, magic := range [][]byte{{0x28, 0xb5, 0x2f, 0xfd}, {0x1f, 0x8b, 0x08}} {
		for off := 0; ; off++ {
			i := bytes.Index(img[off:], magic)
			if i < 0 {
				break
			}
			off += i
			var r io.ReadCloser
			var err error
			if magic[0] == 0x28 {
				var d *zstd.Decoder
				if d, err = zstd.NewReader(bytes.NewReader(img[off:]), zstd.WithDecoderMaxMemory(1<<30)); err == nil {
					r = d.IOReadCloser()
				}
			} else {
				r, err = gzip.NewReader(bytes.NewReader(img[off:]))
			}
			if err != nil {
				continue
			}
			data, _ := io.ReadAll(io.LimitReader(r, 512<<20))
			r.Close()
			if cfg := between(data); cfg != nil {
				return cfg
			}
		}
	}
	return nil
}

func between(b []byte) []byte {
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte("IKCFG_ST"))
		if i < 0 {
			return nil
		}
		start := off + i + len("IKCFG_ST")
		end := bytes.Index(b[start:], []byte("IKCFG_ED"))
		if end < 0 {
			return nil
		}
		if z, err := gzip.NewReader(bytes.NewReader(b[start : start+end])); err == nil {
			if cfg, err := io.ReadAll(z); err == nil {
				return cfg
			}
		}
		off = start
	}
}
