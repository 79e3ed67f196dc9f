package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Admin holds the settings of the admin UI and /metrics listener, and
// autowrite. Pen has none of these; they follow its style.
type Admin struct {
	Listen   string // admin_listen: listen spec; "" = off
	Redirect string // admin_redirect: plain HTTP listener that redirects to Listen
	TLSCert  string // admin_tls CERT [KEY]
	TLSKey   string
	ACL      int // admin_acl: -1 = everyone
	// admin_password_file FILE [FILE...]: the password is read from the
	// first of these files that exists (plain text, like gokrazy's
	// gokr-pw.txt, or a bcrypt hash); a new password is written to the
	// first one.
	PasswordFiles []string
}

// adminCmd handles the admin commands; ok is false for other commands.
func (x *txn) adminCmd(cmd string, args []string) (ok bool, err error) {
	a := &x.cfg.Admin
	switch cmd {
	case "admin_listen", "admin_redirect":
		p := &a.Listen
		if cmd == "admin_redirect" {
			p = &a.Redirect
		}
		if len(args) > 0 {
			spec, err := oneArg(cmd, args)
			if err != nil {
				return true, err
			}
			if _, err := ParseListen(spec, false, x.in.resolve); err != nil {
				return true, fmt.Errorf("%s: %w", cmd, err)
			}
			*p = spec
		}
		if *p != "" {
			x.printf("%s\n", *p)
		}
	case "admin_tls":
		if len(args) < 1 || len(args) > 2 {
			return true, errors.New("admin_tls: expected CERT [KEY]")
		}
		a.TLSCert, a.TLSKey = args[0], args[0]
		if len(args) == 2 {
			a.TLSKey = args[1]
		}
	case "admin_acl":
		if len(args) > 0 {
			n, err := aclNumber(cmd, args[0], -1)
			if err != nil {
				return true, err
			}
			if err := noArgs(cmd, args[1:]); err != nil {
				return true, err
			}
			a.ACL = n
		}
		x.printf("%d\n", a.ACL)
	case "admin_password_file":
		if len(args) == 0 {
			return true, errors.New("admin_password_file: expected FILE [FILE...]")
		}
		a.PasswordFiles = slices.Clone(args)
	case "autowrite":
		if err := noArgs(cmd, args); err != nil {
			return true, err
		}
		x.cfg.AutoWrite = true
	default:
		return false, nil
	}
	return true, nil
}

// adminNo handles "no admin_*" and "no autowrite".
func (x *txn) adminNo(what string) bool {
	a := &x.cfg.Admin
	switch what {
	case "admin_listen":
		a.Listen = ""
	case "admin_redirect":
		a.Redirect = ""
	case "admin_tls":
		a.TLSCert, a.TLSKey = "", ""
	case "admin_password_file":
		a.PasswordFiles = nil
	case "autowrite":
		x.cfg.AutoWrite = false
	default:
		return false
	}
	return true
}

// renderAdmin writes the admin settings for write.
func renderAdmin(pr func(string, ...any), c *Config) {
	a := c.Admin
	if a.Listen != "" {
		pr("admin_listen %s\n", a.Listen)
	} else {
		pr("no admin_listen\n")
	}
	if a.Redirect != "" {
		pr("admin_redirect %s\n", a.Redirect)
	}
	if a.TLSCert != "" {
		if a.TLSKey != "" && a.TLSKey != a.TLSCert {
			pr("admin_tls %s %s\n", a.TLSCert, a.TLSKey)
		} else {
			pr("admin_tls %s\n", a.TLSCert)
		}
	}
	pr("admin_acl %d\n", a.ACL)
	if len(a.PasswordFiles) > 0 {
		pr("admin_password_file %s\n", strings.Join(a.PasswordFiles, " "))
	}
	if c.AutoWrite {
		pr("autowrite\n")
	} else {
		pr("no autowrite\n")
	}
}

// AddOnChange arranges for f to be called, like OnChange and after any
// function already set there, whenever a command changed the
// configuration and the engine accepted it. f runs with the interpreter's
// lock held: it must not call the Interp, and should hand slow work to
// another goroutine.
func (in *Interp) AddOnChange(f func(c *Config, origin Origin)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	prev := in.OnChange
	in.OnChange = func(c *Config, origin Origin) {
		if prev != nil {
			prev(c, origin)
		}
		f(c, origin)
	}
}

// Preview runs the lines of data as ExecLines would, on a copy of the
// configuration, and returns the configuration they would produce without
// applying anything: no engine change, no file written, no runtime action.
// The admin UI uses it to refuse a change that would lock out the browser
// making it before the change is made. Errors are *LineError, as from
// ExecLines.
func (in *Interp) Preview(name string, data []byte) (*Config, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	x := in.begin(FromWeb)
	x.dry = true
	if err := x.runData(name, data); err != nil {
		return nil, err
	}
	return x.cfg, nil
}
