package config

import (
	"fmt"
	"strings"
)

// Commands that name files.
//
// The admin UI must not be a way to read or write files on the machine:
// an administrator of the load balancer is not thereby an administrator of
// the machine. So a command from the admin UI (FromWeb: its forms and
// uploads) may not name a file. include and write with a file name are
// refused from there always. The other commands that name files are
// refused when they would set a file name (or a unix socket path) that is
// not already the one in effect, so that a configuration downloaded from the UI
// uploads back unchanged. Settings that name files are made in the -F file
// or with penctl.
//
// The fileRule of each command's entry in the command table (see
// commands.go) is the one place that says whether it names files; a new
// command that takes a path says so there.

// fileRule says how a command names files.
type fileRule struct {
	// always reports whether the command with these arguments is refused
	// from the admin UI whatever it would do.
	always func(args []string) bool
	what   string // the reason given for always
	// value returns the file names that the setting the command changes
	// holds in c ("" for none).
	value func(c *Config, args []string) string
}

// webFileCheck is called for every command from the admin UI: before the
// command runs, it returns a check to make after the command ran, or
// refuses at once. Nothing is refused for other origins.
func (x *txn) webFileCheck(cmd string, args []string) (after func() error, err error) {
	c, ok := commands[cmd]
	if !ok || x.origin != FromWeb {
		return nil, nil
	}
	r := c.files
	if r.always != nil && r.always(args) {
		return nil, fmt.Errorf("%s: %s (use penctl or the -F file)", cmd, r.what)
	}
	if r.value == nil {
		return nil, nil
	}
	before := r.value(x.cfg, args)
	running := r.value(x.in.cfg, args)
	return func() error {
		v := r.value(x.cfg, args)
		if v == "" || v == before || v == running {
			return nil
		}
		return fmt.Errorf("%s: file names cannot be set from the admin UI (set them in the -F file or with penctl)", cmd)
	}, nil
}

// unixPath is the unix socket path of a listen spec, or "".
func unixPath(spec string) string {
	if strings.Contains(spec, "/") {
		return spec
	}
	return ""
}
