package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pen-lb/pen-appliance/image"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// TestStandalone installs penimage from a module version, as a user does
// with go install .../penimage@VERSION, and builds an image with it inside
// another Go module: the image holds the appliance of the tool's version.
// The module version is this checkout's HEAD, served by a module proxy
// in a directory (GOPROXY=file://), with the dependencies from the local
// module cache; nothing is fetched from the network.
func TestStandalone(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the appliance from a module version; skipped with -short")
	}
	git := testenv.NeedProgram(t, "git", "git")
	root, err := exec.Command(git, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		testenv.Skip(t, "not a git checkout: "+err.Error())
	}
	const version = "v0.0.1-standalone.test"
	dir := t.TempDir()
	proxy := filepath.Join(dir, "proxy")
	vdir := filepath.Join(proxy, image.ModulePath, "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := strings.TrimSpace(string(root))
	zip, err := exec.Command(git, "-C", src, "archive", "--format=zip", "--prefix="+image.ModulePath+"@"+version+"/", "HEAD").Output()
	if err != nil {
		t.Fatalf("git archive: %v", err)
	}
	gomod, err := exec.Command(git, "-C", src, "show", "HEAD:go.mod").Output()
	if err != nil {
		t.Fatalf("git show HEAD:go.mod: %v", err)
	}
	for name, data := range map[string][]byte{
		version + ".zip":  zip,
		version + ".mod":  gomod,
		version + ".info": []byte(`{"Version":"` + version + `","Time":"2026-01-01T00:00:00Z"}`),
		"list":            []byte(version + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(vdir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"GOPROXY=file://"+proxy+",file://"+filepath.Join(strings.TrimSpace(string(modcache)), "cache", "download"),
		"GOMODCACHE="+filepath.Join(dir, "modcache"),
		"GOFLAGS=-modcacherw -buildvcs=false",
		"GOSUMDB=off",
		"GOBIN="+filepath.Join(dir, "bin"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
	)
	run := func(wd string, name string, args ...string) (string, string, error) {
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = wd, env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	if _, stderr, err := run(dir, "go", "install", image.ModulePath+"/image/cmd/penimage@"+version); err != nil {
		t.Fatalf("go install: %v\n%s", err, stderr)
	}
	penimage := filepath.Join(dir, "bin", "penimage")

	// Inside another module, where penimage used to fail in go mod download.
	other := filepath.Join(dir, "other")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n\ngo 1.22\n"), 0o644)
	img := filepath.Join(other, "pen.img")
	stdout, stderr, err := run(other, penimage, "build", "-board", "pc", "-o", img, "-password", "standalone-test", "-size", "1300M")
	if err != nil {
		t.Fatalf("penimage build: %v\n%s%s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "building from "+image.ModulePath+"@"+version) {
		t.Errorf("penimage build does not say where it builds from:\n%s", stderr)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	parts, err := image.ReadParts(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	if parts.Info.Version != version {
		t.Errorf("the image holds pen %q, want the tool's version %q", parts.Info.Version, version)
	}

	// A penimage built from the tree says what to do outside it.
	tree := filepath.Join(dir, "penimage-tree")
	if out, err := exec.Command("go", "build", "-o", tree, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	_, stderr, err = run(other, tree, "build", "-board", "pc", "-o", img, "-password", "x")
	if err == nil || !strings.Contains(stderr, "go install "+image.ModulePath+"/image/cmd/penimage@VERSION") {
		t.Errorf("a tree-built penimage outside the tree: %v\n%s", err, stderr)
	}
}
