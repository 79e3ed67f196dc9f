package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The admin UI and /metrics listener, and autowrite. Pen has none of
// these; they follow its style.
var adminCommands = map[string]*command{
	"admin_listen": {run: cmdAdminListen, off: clearString(func(c *Config) *string { return &c.Admin.Listen }),
		files: fileRule{value: func(c *Config, _ []string) string { return unixPath(c.Admin.Listen) }}},
	"admin_redirect": {run: cmdAdminListen, off: clearString(func(c *Config) *string { return &c.Admin.Redirect }),
		files: fileRule{value: func(c *Config, _ []string) string { return unixPath(c.Admin.Redirect) }}},
	"admin_tls": {run: cmdAdminTLS, off: func(x *txn, _ []string) error { x.cfg.Admin.TLSCert, x.cfg.Admin.TLSKey = "", ""; return nil },
		files: fileRule{value: func(c *Config, _ []string) string { return c.Admin.TLSCert + " " + c.Admin.TLSKey }}},
	"admin_acl": {run: cmdAdminACL},
	"admin_password_file": {run: cmdAdminPasswordFile, off: func(x *txn, _ []string) error { x.cfg.Admin.PasswordFiles = nil; return nil },
		files: fileRule{value: func(c *Config, _ []string) string { return strings.Join(c.Admin.PasswordFiles, " ") }}},
	"autowrite": onOff(func(c *Config) *bool { return &c.AutoWrite }),
}

// cmdAdminListen is admin_listen and admin_redirect.
func cmdAdminListen(x *txn, cmd string, args []string) error {
	p := &x.cfg.Admin.Listen
	if cmd == "admin_redirect" {
		p = &x.cfg.Admin.Redirect
	}
	if len(args) > 0 {
		spec, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		if _, err := ParseListen(spec, false, x.in.resolve); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		*p = spec
	}
	if *p != "" {
		x.printf("%s\n", *p)
	}
	return nil
}

func cmdAdminTLS(x *txn, _ string, args []string) error {
	a := &x.cfg.Admin
	if len(args) < 1 || len(args) > 2 {
		return errors.New("admin_tls: expected CERT [KEY]")
	}
	a.TLSCert, a.TLSKey = args[0], args[0]
	if len(args) == 2 {
		a.TLSKey = args[1]
	}
	return nil
}

func cmdAdminACL(x *txn, cmd string, args []string) error {
	a := &x.cfg.Admin
	if len(args) > 0 {
		n, err := aclNumber(cmd, args[0], -1)
		if err != nil {
			return err
		}
		if err := noArgs(cmd, args[1:]); err != nil {
			return err
		}
		a.ACL = n
	}
	x.printf("%d\n", a.ACL)
	return nil
}

func cmdAdminPasswordFile(x *txn, _ string, args []string) error {
	if len(args) == 0 {
		return errors.New("admin_password_file: expected FILE [FILE...]")
	}
	x.cfg.Admin.PasswordFiles = slices.Clone(args)
	return nil
}
