package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/pen-lb/pen-appliance/pen/acl"
)

// Names: a short note on a server or an access list, shown by the admin
// UI and saved by write; it changes nothing else. Pen does not know the
// command and ignores it in a configuration file ("ignoring command"), so
// a file with names still reads in Pen.
//
//	name server N TEXT...    no name server N
//	name acl N TEXT...       no name acl N
//
// A server's name stays with it when slots move (no server N).
var nameCommands = map[string]*command{
	"name": {run: cmdName, off: cmdNoName, offArgs: true},
}

// MaxNameLen bounds a name, in bytes.
const MaxNameLen = 64

func cmdName(x *txn, _ string, args []string) error {
	if len(args) < 3 {
		return errors.New("name: expected name server|acl N TEXT")
	}
	text := strings.Join(args[2:], " ")
	if len(text) > MaxNameLen {
		return fmt.Errorf("name: at most %d bytes", MaxNameLen)
	}
	if !utf8.ValidString(text) || strings.IndexFunc(text, func(r rune) bool { return unicode.IsControl(r) }) >= 0 {
		return errors.New("name: printable text only")
	}
	if strings.HasPrefix(text, "#") {
		return errors.New("name: must not start with #")
	}
	return setName(x, args[0], args[1], text)
}

func cmdNoName(x *txn, args []string) error {
	if len(args) != 2 {
		return errors.New("no name: expected no name server|acl N")
	}
	return setName(x, args[0], args[1], "")
}

func setName(x *txn, what, num, text string) error {
	switch what {
	case "server":
		n, err := atoi("name server", num)
		if err != nil {
			return err
		}
		if n < 0 || n >= len(x.cfg.Servers) {
			return fmt.Errorf("name server: server %d does not exist", n)
		}
		s := x.writableServers()
		s[n].Name = text
		return nil
	case "acl":
		n, err := atoi("name acl", num)
		if err != nil {
			return err
		}
		if n < 0 || n >= acl.Lists {
			return fmt.Errorf("name acl: acl %d outside (0,%d)", n, acl.Lists-1)
		}
		x.cfg.ACLNames[n] = text
		return nil
	}
	return fmt.Errorf("name: %q is not server or acl", what)
}

// renderNames writes the names for write.
func renderNames(pr func(string, ...any), c *Config) {
	for i, s := range c.Servers {
		if s.Name != "" {
			pr("name server %d %s\n", i, s.Name)
		}
	}
	for i, n := range c.ACLNames {
		if n != "" {
			pr("name acl %d %s\n", i, n)
		}
	}
}
