package config

import (
	"errors"
	"fmt"
	"slices"

	"github.com/pen-lb/pen-appliance/pen/acl"
)

// Access lists, and the lists that guard the load balancer's doors
// (admin_acl is with the admin commands).
var aclCommands = map[string]*command{
	"acl":         {run: cmdACL, off: cmdNoACL, offArgs: true},
	"client_acl":  {run: cmdDoorACL},
	"control_acl": {run: cmdDoorACL},
	"tarpit_acl":  {run: cmdTarpitACL},
}

func cmdACL(x *txn, cmd string, args []string) error {
	if len(args) < 1 {
		return errors.New("acl: expected acl N permit|deny address")
	}
	n, err := aclNumber(cmd, args[0], 0)
	if err != nil {
		return err
	}
	e, err := acl.ParseEntry(args[1:])
	if err != nil {
		return fmt.Errorf("acl: %w", err)
	}
	if len(x.cfg.ACLs[n]) >= MaxACLEntries {
		return fmt.Errorf("acl: acl %d is full (%d entries)", n, MaxACLEntries)
	}
	x.appendACL(n, e)
	return nil
}

func cmdNoACL(x *txn, args []string) error {
	if len(args) != 1 {
		return errors.New("no acl: expected an acl number")
	}
	n, err := aclNumber("no acl", args[0], 0)
	if err != nil {
		return err
	}
	x.cfg.ACLs[n] = nil
	return nil
}

// cmdDoorACL is client_acl and control_acl.
func cmdDoorACL(x *txn, cmd string, args []string) error {
	p := &x.cfg.ClientACL
	if cmd == "control_acl" {
		p = &x.cfg.ControlACL
	}
	if len(args) > 0 {
		n, err := aclNumber(cmd, args[0], 0)
		if err != nil {
			return err
		}
		if err := noArgs(cmd, args[1:]); err != nil {
			return err
		}
		*p = n
	}
	x.printf("%d\n", *p)
	return nil
}

func cmdTarpitACL(x *txn, cmd string, args []string) error {
	c := x.cfg
	if len(args) > 0 {
		n, err := aclNumber(cmd, args[0], -1)
		if err != nil {
			return err
		}
		if err := noArgs(cmd, args[1:]); err != nil {
			return err
		}
		c.TarpitACL = n
	}
	x.printf("tarpit_acl = %d", c.TarpitACL)
	return nil
}

func aclNumber(cmd, s string, low int) (int, error) {
	n, err := atoi(cmd, s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not an acl number", cmd, s)
	}
	if n < low || n >= acl.Lists {
		return 0, fmt.Errorf("%s: acl %d outside (%d,%d)", cmd, n, low, acl.Lists-1)
	}
	return n, nil
}

// appendACL adds e to access list n, copying the list the first time.
func (x *txn) appendACL(n int, e acl.Entry) {
	l := x.cfg.ACLs[n]
	if !x.ownACL[n] {
		l = slices.Clip(l) // the next append copies
		x.ownACL[n] = true
	}
	x.cfg.ACLs[n] = append(l, e)
}
