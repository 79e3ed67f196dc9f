package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"syscall"
)

// The pidfile (-p). Pen overwrites whatever the path names. pen writes
// only a file that is missing, empty or holds a process id, and never
// through a symbolic link: "-p pen.cfg" typed for "-F pen.cfg" must not
// destroy the configuration, and pen started as root must not be led by a
// link in a shared directory to overwrite another file. At exit the file
// is removed only while it still holds pen's own process id.

// maxPidText is the longest text taken for a process id.
const maxPidText = 32

// holdsPid reports whether text is empty or a process id (decimal digits,
// a newline after them allowed), as pidfiles are.
func holdsPid(text []byte) bool {
	text = bytes.TrimSuffix(text, []byte("\n"))
	for _, c := range text {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(text) <= maxPidText
}

// openPidFile opens path with flags, never through a symbolic link, and
// checks that the file may be replaced by a pidfile.
func openPidFile(path string, flags int) (*os.File, error) {
	f, err := os.OpenFile(path, flags|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, errors.New("it is a symbolic link; pen writes its pidfile only to a file of its own")
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err == nil {
		var text []byte
		text, err = io.ReadAll(io.LimitReader(f, maxPidText+2))
		if err == nil && !holdsPid(text) {
			err = errors.New("it holds something other than a process id, and pen does not replace it (is it the file meant for -F?)")
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkPidFile reports at start-up, before anything is opened, a pidfile
// that pen could not write; pen then changes nothing and does not start.
func checkPidFile(path string) error {
	f, err := openPidFile(path, os.O_RDONLY|syscall.O_NONBLOCK)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		//lint:ignore ST1005 Pen's message, kept verbatim
		return fmt.Errorf("Can't create pidfile %s: %w", path, err)
	}
	return f.Close()
}

// writePidFile writes pen's process id to path.
func writePidFile(path string, pid int) error {
	f, err := openPidFile(path, os.O_RDWR|os.O_CREATE)
	if err == nil {
		if err = f.Truncate(0); err == nil {
			_, err = f.WriteAt([]byte(strconv.Itoa(pid)), 0)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		//lint:ignore ST1005 Pen's message, kept verbatim
		return fmt.Errorf("Can't create pidfile %s: %w", path, err)
	}
	return nil
}

// removePidFile removes path if it still holds pid: another pen started
// since with the same -p keeps its pidfile.
func removePidFile(path string, pid int) {
	text, err := os.ReadFile(path)
	if err == nil && string(bytes.TrimSuffix(text, []byte("\n"))) == strconv.Itoa(pid) {
		os.Remove(path)
	}
}
