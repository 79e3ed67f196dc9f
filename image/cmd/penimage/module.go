package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/pen-lb/pen-appliance/image"
)

// source is where the appliance's programs are compiled from.
type source struct {
	dir        string // where the go commands run
	standalone bool   // dir's go.mod requires version of the module
	version    string // the module version (standalone only)
}

// findSource returns the source tree of the module when the current
// directory is inside it. Otherwise, when this penimage was installed from
// a module version (go install .../penimage@VERSION), it prepares a build
// directory in the user's cache whose go.mod requires that version, as
// gokrazy's gok builds from module versions: the image then holds the
// appliance of the same version as the tool.
func findSource(ctx context.Context, progress io.Writer) (*source, error) {
	cmd := exec.CommandContext(ctx, "go", "env", "GOMOD")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %v (is Go installed? penimage compiles with it)", err)
	}
	if gomod := strings.TrimSpace(string(out)); strings.HasSuffix(gomod, "go.mod") {
		if b, err := os.ReadFile(gomod); err == nil && modulePath(b) == image.ModulePath {
			return &source{dir: filepath.Dir(gomod)}, nil
		}
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Path != image.ModulePath || bi.Main.Version == "" || bi.Main.Version == "(devel)" || strings.HasSuffix(bi.Main.Version, "+dirty") {
		v := "unknown"
		if ok {
			v = bi.Main.Version
		}
		return nil, fmt.Errorf("this penimage (module version %s) was built from a source tree: run it inside %s's source tree, or install a released one with go install %s/image/cmd/penimage@VERSION, which builds images from that version anywhere", v, image.ModulePath, image.ModulePath)
	}
	version := bi.Main.Version
	cache, err := os.UserCacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "penimage", version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	gomod := filepath.Join(dir, "go.mod")
	if _, err := os.Stat(gomod); errors.Is(err, os.ErrNotExist) {
		content := fmt.Sprintf("// Written by penimage %s: the appliance is built from this module version.\nmodule penimage-build\n\ngo %s\n\nrequire %s %s\n",
			version, strings.TrimPrefix(bi.GoVersion, "go"), image.ModulePath, version)
		if err := os.WriteFile(gomod, []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(progress, "penimage: building from %s@%s (the tool's version), in %s\n", image.ModulePath, version, dir)
	dl := exec.CommandContext(ctx, "go", "mod", "download", image.ModulePath)
	dl.Dir = dir
	var stderr bytes.Buffer
	dl.Stderr = &stderr
	if err := dl.Run(); err != nil {
		return nil, fmt.Errorf("fetching %s@%s: %v\n%s", image.ModulePath, version, err, stderr.String())
	}
	return &source{dir: dir, standalone: true, version: version}, nil
}

// modulePath returns the module path a go.mod file declares.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`+"`")
		}
	}
	return ""
}
