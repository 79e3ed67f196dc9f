package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pen-lb/pen-appliance/pen/acl"
)

// txn is one change in progress: commands work on a copy of the
// configuration, replies collect in out, and runtime actions wait in after
// until the engine has taken the new configuration.
type txn struct {
	in     *Interp
	cfg    *Config
	out    bytes.Buffer
	after  []func(Engine)
	origin Origin
	depth  int
	dry    bool     // validating only: no runtime actions, no files written
	writes []string // files the write command saves after the commit

	// Which of cfg's tables this transaction has copied and may change
	// in place; the others are shared with the running configuration.
	ownServers bool
	ownACL     [acl.Lists]bool

	sized [2]bool // Interp.sized as this transaction leaves it
}

// begin starts a transaction on a copy of the running configuration. The
// copy shares the server table and the access lists with the running
// configuration until a command changes them (see writableServers and
// appendACL), so that a command costs the same with 20,000 servers as
// with two.
func (in *Interp) begin(origin Origin) *txn {
	c := *in.cfg
	return &txn{in: in, cfg: &c, origin: origin, sized: in.sized}
}

// runData runs the lines of an upload or of -O/-o text; errors name the
// source and the line.
func (x *txn) runData(name string, data []byte) error { return x.runLines(name, data, false) }

// runFile runs the lines of a file read from disk (-F, include).
func (x *txn) runFile(name string, data []byte) error { return x.runLines(name, data, true) }

// errNotCommand replaces the error for a line of a file that does not
// start with a command, so that the error does not show the line.
var errNotCommand = errors.New("not a pen command (the line is not shown)")

func (x *txn) runLines(name string, data []byte, fromDisk bool) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), MaxLineSize+len("\r\n")) // the line and its end
	n := 0
	for sc.Scan() {
		n++
		if err := x.run(sc.Text()); err != nil {
			// A file that is not a configuration (include
			// /etc/shadow) fails at its first line, which
			// does not start with a command: say where, not
			// what.
			var u *UnknownCommandError
			if fromDisk && errors.As(err, &u) {
				err = errNotCommand
			}
			return &LineError{File: name, Line: n, Err: err}
		}
	}
	if err := sc.Err(); err != nil {
		return &LineError{File: name, Line: n + 1, Err: err}
	}
	return nil
}

// Split cuts a command line as Pen does: at the first CR and the first LF,
// then into words at spaces (and, unlike Pen, tabs).
func Split(line string) []string {
	if i := strings.IndexByte(line, '\r'); i >= 0 {
		line = line[:i]
	}
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	return strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
}

func (x *txn) printf(format string, args ...any) { fmt.Fprintf(&x.out, format, args...) }

// later queues a runtime action for after the commit.
func (x *txn) later(f func(Engine)) {
	if !x.dry {
		x.after = append(x.after, f)
	}
}

func (x *txn) run(line string) error {
	if len(line) > MaxLineSize {
		// A file's lines are cut at this length when read back; write
		// must not produce a longer one.
		return fmt.Errorf("command line longer than %d bytes: refused", MaxLineSize)
	}
	w := Split(line)
	if len(w) == 0 || strings.HasPrefix(w[0], "#") {
		return nil
	}
	if err := checkWords(w); err != nil {
		return err
	}
	if w[0] == "no" {
		if len(w) < 2 {
			return errors.New("no: expected a setting to turn off")
		}
		return x.runNo(w[1], w[2:])
	}
	check, err := x.webFileCheck(w[0], w[1:])
	if err != nil {
		return err
	}
	if err := x.runCmd(w[0], w[1:]); err != nil {
		return err
	}
	if check != nil {
		return check()
	}
	return nil
}

// checkWords refuses control characters and bytes that are not UTF-8 in
// any word: they would end up in the file write saves (a NUL cuts a C
// string, a newline would start a new command), in log lines and on the
// admin UI's pages. The error does not show the word, which may come from
// a file that is not a configuration.
func checkWords(w []string) error {
	for i, word := range w {
		bad, ok := controlChar(word)
		if ok {
			continue
		}
		if i == 0 {
			return fmt.Errorf("command word contains %s: refused", bad)
		}
		cmd := w[0]
		if cmd == "no" && i > 1 {
			cmd += " " + w[1]
			i--
		}
		return fmt.Errorf("%s: argument %d contains %s: refused", cmd, i, bad)
	}
	return nil
}

// controlChar finds the first control character (C0, DEL or C1) or
// invalid UTF-8 in s and describes it; ok is true when there is none.
func controlChar(s string) (what string, ok bool) {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && isInvalidAt(s, i):
			return fmt.Sprintf("a byte that is not UTF-8 (0x%02x)", s[i]), false
		case r < 0x20 || r == 0x7f:
			return fmt.Sprintf("a control character (0x%02x)", r), false
		case r >= 0x80 && r < 0xa0:
			return fmt.Sprintf("a control character (U+%04X)", r), false
		}
	}
	return "", true
}

// isInvalidAt reports whether the rune at s[i] is an encoding error rather
// than a literal U+FFFD.
func isInvalidAt(s string, i int) bool {
	r, size := utf8.DecodeRuneInString(s[i:])
	return r == utf8.RuneError && size == 1
}

// checkSeconds refuses a time longer than MaxSeconds.
func checkSeconds(what string, n int) error { return checkInt(what, n, 0, MaxSeconds, " seconds") }

// optInt parses an optional numeric argument.
func optInt(cmd string, args []string) (int, bool, error) {
	if len(args) == 0 {
		return 0, false, nil
	}
	if len(args) > 1 {
		return 0, false, fmt.Errorf("%s: unexpected %q", cmd, args[1])
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return 0, false, fmt.Errorf("%s: %q is not a number", cmd, args[0])
	}
	return n, true, nil
}

func noArgs(cmd string, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s: unexpected %q", cmd, args[0])
	}
	return nil
}

func oneArg(cmd string, args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("%s: expected one argument", cmd)
	}
	return args[0], nil
}
