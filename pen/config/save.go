package config

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pen-lb/pen-appliance/internal/atomicfile"
)

// Saving the configuration file.
//
// The write command and autowrite replace the -F file with the running
// configuration in write's layout (see Render). Autowrite saves the
// changes made through the control socket and the admin UI, not those of
// the command line (-O, flags), which is given again at every start, nor
// those of reading the -F file itself. What autowrite rewrites:
// the whole file. Comments, blank lines and the order of the lines are
// not kept, and an include line is not kept either: the settings the
// included file made are written into the -F file itself. Keep settings
// that must stay in a file of their own out of an autowritten
// configuration, or turn autowrite off.
//
// A configuration is never lost on the way:
//   - Nothing writes the -F file before pen has read and applied it once
//     (or found that it does not exist), so that "pen -F pen.cfg -O
//     autowrite" cannot replace the user's file with an empty
//     configuration before reading it.
//   - When the file on disk is not what pen last read or wrote there (the
//     user edited it, and a HUP refused it or came not yet), its text is
//     kept beside it as FILE.rejected (FILE.rejected.1, .2, ... when that
//     exists with other text) before it is replaced; the log says so and
//     Rejected names the copy.
//   - A symlink is written through: the file it points to is replaced, the
//     link stays.
//   - A save that fails is reported to whoever made the change, as a
//     *SaveError.

// SaveError reports a change that was applied to the running load balancer
// but could not be saved to the configuration file (autowrite). The
// change stays in effect; the file keeps its old contents.
type SaveError struct {
	Path string
	Err  error
}

func (e *SaveError) Error() string {
	return fmt.Sprintf("applied, but not saved to %s: %v", e.Path, e.Err)
}

func (e *SaveError) Unwrap() error { return e.Err }

// maxRejected bounds the numbered copies of rejected files kept beside one
// configuration file.
const maxRejected = 100

// digest identifies a file's contents.
type digest [sha256.Size]byte

// fileState is what the Interp knows of the files it reads and writes.
// The Interp's mutex guards it.
type fileState struct {
	// read is the -F file once pen has read and applied it, or written
	// it ("" before that).
	read string
	// known holds, per cleaned path, the contents pen last read from or
	// wrote to a configuration file, so that a change made on disk by
	// someone else is seen before the file is replaced.
	known map[string]digest
	// rejected is the last copy kept beside a configuration file.
	rejected string
}

// Rejected returns the path of the last copy of a configuration file that
// was kept aside because its text on disk was not what pen last read or
// wrote (see SaveError's package notes), or "" when there is none.
func (in *Interp) Rejected() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.files.rejected
}

// noteRead records that path was read with contents data and applied.
func (in *Interp) noteRead(path string, data []byte) {
	if in.files.known == nil {
		in.files.known = map[string]digest{}
	}
	in.files.known[filepath.Clean(path)] = sha256.Sum256(data)
	if in.proc.ConfigFile != "" && sameFile(path, in.proc.ConfigFile) {
		in.files.read = in.proc.ConfigFile
	}
}

// checkMayWrite refuses to write the -F file before it was read once.
func (in *Interp) checkMayWrite(path string) error {
	cf := in.proc.ConfigFile
	if cf == "" || in.files.read == cf || !sameFile(path, cf) {
		return nil
	}
	if _, err := os.Stat(cf); errors.Is(err, fs.ErrNotExist) {
		return nil // nothing there to lose
	}
	return fmt.Errorf("%s has not been read yet: writing it now would replace its settings", cf)
}

// save writes the running configuration to path (write, autowrite).
func (in *Interp) save(path string) error {
	if err := in.checkMayWrite(path); err != nil {
		return err
	}
	target, err := resolveLink(path)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(target); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("writing %s: not a regular file", path)
	}
	data := Render(in.cfg, in.proc, path, in.now())
	if err := in.keepEdited(path, target); err != nil {
		return err
	}
	if err := WriteFileAtomic(target, data, 0o644); err != nil {
		return err
	}
	if in.files.known == nil {
		in.files.known = map[string]digest{}
	}
	in.files.known[filepath.Clean(path)] = sha256.Sum256(data)
	if in.proc.ConfigFile != "" && sameFile(path, in.proc.ConfigFile) {
		in.files.read = in.proc.ConfigFile // it holds the running configuration now
	}
	return nil
}

// keepEdited keeps the text of a configuration file beside it when it is
// not what pen last read or wrote there, before it is replaced. A file
// pen knows nothing of is the -F file found after start-up, kept as
// FILE.rejected, or one named by write FILE: write replaces what the
// command names, as in Pen, but keeps its text as FILE.orig unless pen
// wrote it (it starts with write's first line).
func (in *Interp) keepEdited(path, target string) error {
	known, ok := in.files.known[filepath.Clean(path)]
	if !ok && (in.proc.ConfigFile == "" || !sameFile(path, in.proc.ConfigFile)) {
		kept, err := keepForeign(target, writtenByPen)
		if err != nil {
			return fmt.Errorf("%s was not written by pen, and its text could not be kept: %w", path, err)
		}
		if kept != "" {
			in.log.Printf("write: %s was not written by pen; its text is kept in %s", path, kept)
		}
		return nil
	}
	old, err := os.ReadFile(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s before replacing it: %w", target, err)
	}
	if ok && known == sha256.Sum256(old) {
		return nil
	}
	kept, err := keepAside(target, old, ".rejected")
	if err != nil {
		return fmt.Errorf("%s was changed since pen read it, and its text could not be kept: %w", path, err)
	}
	in.files.rejected = kept
	in.log.Printf("%s was changed since pen last read or wrote it; its text is kept in %s", path, kept)
	return nil
}

// writtenByPen reports whether a file's text is a configuration that
// write made: it starts with write's first line.
func writtenByPen(text []byte) bool {
	return bytes.HasPrefix(text, []byte(generatedBy))
}

// keepForeign keeps the text of file as FILE.orig (FILE.orig.1, ... when
// that exists with other text) before pen replaces the file with output
// of its own, unless the file is missing, empty, or already pen's output
// (own). It returns the copy's path, or "" when nothing needed keeping.
func keepForeign(file string, own func([]byte) bool) (string, error) {
	old, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s before replacing it: %w", file, err)
	}
	if len(old) == 0 || own(old) {
		return "", nil
	}
	return keepAside(file, old, ".orig")
}

// keepAside writes data to the first of FILE+suffix, FILE+suffix.1, ...
// that does not exist or already holds data, with the mode of the file.
func keepAside(file string, data []byte, suffix string) (string, error) {
	perm := os.FileMode(0o600)
	if fi, err := os.Stat(file); err == nil {
		perm = fi.Mode().Perm()
	}
	for i := 0; i < maxRejected; i++ {
		name := file + suffix
		if i > 0 {
			name += "." + strconv.Itoa(i)
		}
		have, err := os.ReadFile(name)
		switch {
		case err == nil && bytes.Equal(have, data):
			return name, nil
		case err == nil:
			continue
		case !errors.Is(err, fs.ErrNotExist):
			return "", err
		}
		if err := atomicfile.WriteFile(name, data, perm); err != nil {
			return "", err
		}
		return name, nil
	}
	return "", fmt.Errorf("%s%s.1 to .%d all exist", file, suffix, maxRejected-1)
}

// resolveLink returns the file path names, following symlinks, so that a
// symlinked file is replaced where it lives and the link stays. A path
// that does not exist is returned as it is; a link to nothing is refused.
func resolveLink(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return path, nil
	}
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("writing %s: following the symlink: %w", path, err)
	}
	return target, nil
}

// sameFile reports whether a and b name the same file: the same path, or
// the same inode.
func sameFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
