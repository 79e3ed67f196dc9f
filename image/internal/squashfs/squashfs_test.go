package squashfs

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

type entry struct {
	path   string
	mode   fs.FileMode
	data   []byte
	target string
	dir    bool
}

func testTree() []entry {
	rnd := rand.New(rand.NewSource(2))
	random := func(n int) []byte {
		b := make([]byte, n)
		rnd.Read(b)
		return b
	}
	entries := []entry{
		{path: "gokrazy/init", mode: 0o755, data: random(3*BlockSize + 77)},
		{path: "user/pen", mode: 0o755, data: bytes.Repeat([]byte("pen "), 100000)},
		{path: "etc/hostname", mode: 0o444, data: []byte("pen")},
		{path: "etc/gokr-pw.txt", mode: 0o400, data: []byte("secret")},
		{path: "etc/exact", mode: 0o644, data: random(BlockSize)},
		{path: "etc/empty", mode: 0o644, data: nil},
		{path: "etc/resolv.conf", target: "/tmp/resolv.conf"},
		{path: "var", target: "/perm/var"},
		{path: "perm", mode: 0o755, dir: true},
		{path: "tmp", mode: 0o555, dir: true},
	}
	// A directory with more entries than one listing header and one
	// metadata block hold.
	for i := 0; i < 600; i++ {
		entries = append(entries, entry{path: fmt.Sprintf("lib/modules/many/file-with-a-longish-name-%04d.ko", i), mode: 0o444, data: []byte(fmt.Sprint(i))})
	}
	return entries
}

func build(t *testing.T, entries []entry) string {
	t.Helper()
	f := New(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	for _, e := range entries {
		var err error
		switch {
		case e.dir:
			err = f.Mkdir(e.path, e.mode)
		case e.target != "":
			err = f.Symlink(e.path, e.target)
		default:
			err = f.Bytes(e.path, e.mode, e.data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "root.squashfs")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// Write at an offset, as into a partition.
	const off = 4096
	size, err := f.Write(out, off)
	if err != nil {
		t.Fatal(err)
	}
	if size%4096 != 0 {
		t.Errorf("size %d is not a multiple of 4 KiB", size)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != off+size {
		t.Errorf("file is %d bytes, want %d", len(b), off+size)
	}
	if err := os.WriteFile(path, b[off:], 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUnsquashfs rereads an image with squashfs-tools and compares every
// entry, its type, mode, owner and contents.
func TestUnsquashfs(t *testing.T) {
	unsquashfs := testenv.NeedProgram(t, "unsquashfs", "squashfs-tools")
	entries := testTree()
	img := build(t, entries)

	out, err := exec.Command(unsquashfs, "-s", img).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -s: %v\n%s", err, out)
	}
	for _, want := range []string{"Compression gzip", "Block size 131072", "Number of ids 1"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("unsquashfs -s lacks %q:\n%s", want, out)
		}
	}

	out, err = exec.Command(unsquashfs, "-lln", "-d", "", img).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -lln: %v\n%s", err, out)
	}
	listing := make(map[string]string) // path -> "mode owner"
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || len(f[0]) != 10 {
			continue
		}
		name := f[5]
		listing[strings.TrimPrefix(name, "/")] = f[0] + " " + f[1]
	}
	for _, e := range entries {
		got, ok := listing[e.path]
		if !ok {
			t.Errorf("unsquashfs does not list %s", e.path)
			continue
		}
		var want string
		switch {
		case e.dir:
			want = "d" + e.mode.Perm().String()[1:] + " 0/0"
		case e.target != "":
			want = "lrwxrwxrwx 0/0"
		default:
			want = "-" + e.mode.Perm().String()[1:] + " 0/0"
		}
		if got != want {
			t.Errorf("%s: unsquashfs lists %q, want %q", e.path, got, want)
		}
	}

	dest := filepath.Join(t.TempDir(), "x")
	if out, err := exec.Command(unsquashfs, "-no-xattrs", "-d", dest, img).CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	for _, e := range entries {
		p := filepath.Join(dest, e.path)
		switch {
		case e.target != "":
			got, err := os.Readlink(p)
			if err != nil || got != e.target {
				t.Errorf("%s: link to %q (%v), want %q", e.path, got, err, e.target)
			}
		case !e.dir:
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, e.data) {
				t.Errorf("%s: contents differ (%d bytes, want %d)", e.path, len(got), len(e.data))
			}
		}
	}
}

func TestErrors(t *testing.T) {
	f := New(time.Now())
	if err := f.Bytes("a/b", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.Bytes("a/b", 0o644, nil); err == nil {
		t.Errorf("adding a/b twice succeeded")
	}
	if err := f.Bytes("a/b/c", 0o644, nil); err == nil {
		t.Errorf("adding a file below a file succeeded")
	}
	if err := f.Mkdir("/", 0o755); err == nil {
		t.Errorf("Mkdir(/) succeeded")
	}
	if err := f.Symlink("l", ""); err == nil {
		t.Errorf("empty symlink target accepted")
	}
}
