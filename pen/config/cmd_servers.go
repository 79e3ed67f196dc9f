package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/pen-lb/pen-appliance/pen/acl"
)

// The server table, and the emergency and abuse servers.
var serverCommands = map[string]*command{
	"server": {run: cmdServer, off: cmdNoServer, offArgs: true,
		// server N address /path: a unix socket reaches whatever serves it.
		files: fileRule{value: func(c *Config, args []string) string {
			if len(args) == 0 {
				return ""
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 || n >= len(c.Servers) {
				return ""
			}
			return c.Servers[n].Host.Path
		}}},
	"servers": {run: cmdServers},
	"emergency_server": {run: cmdSpecialServer, off: func(x *txn, _ []string) error { x.cfg.Emergency = nil; return nil },
		files: fileRule{value: func(c *Config, _ []string) string { return specialPath(c.Emergency) }}},
	"abuse_server": {run: cmdSpecialServer, off: func(x *txn, _ []string) error { x.cfg.Abuse = nil; return nil },
		files: fileRule{value: func(c *Config, _ []string) string { return specialPath(c.Abuse) }}},
}

func specialPath(s *Server) string {
	if s == nil {
		return ""
	}
	return s.Host.Path
}

func (x *txn) parseServerSpec(spec string) (Server, error) {
	return ParseServer(spec, ListenPort(x.cfg.Listen, x.cfg.UDP), x.cfg.UDP, x.in.resolve)
}

func cmdServer(x *txn, _ string, args []string) error {
	if len(args) == 0 {
		return errors.New("server: expected a server number")
	}
	n, err := atoi("server", args[0])
	if err != nil {
		return err
	}
	if n < 0 || n >= MaxServers {
		return fmt.Errorf("server: server number %d out of range (0..%d)", n, MaxServers-1)
	}
	kv := args[1:]
	if len(kv)%2 != 0 {
		return fmt.Errorf("server: %q has no value", kv[len(kv)-1])
	}
	c := x.cfg
	var s Server
	if n < len(c.Servers) {
		s = c.Servers[n]
	}
	if s.ID() == 0 { // a slot keeps its identity while it is edited
		s = s.WithID()
	}
	var bl *int
	for i := 0; i < len(kv); i += 2 {
		k, v := kv[i], kv[i+1]
		if k == "address" {
			h, err := ResolveHost(x.in.resolve, v)
			if err != nil {
				return fmt.Errorf("server %d: %w", n, err)
			}
			s.Host = h
			if h.IsUnix() {
				s.Port = 1
			}
			continue
		}
		if k == "port" {
			p, err := ParsePort(v, c.UDP)
			if err != nil {
				return fmt.Errorf("server %d: %w", n, err)
			}
			if !s.Host.IsUnix() {
				s.Port = p
			}
			continue
		}
		num, err := atoi("server "+k, v)
		if err != nil {
			return err
		}
		switch k {
		case "acl":
			if num < 0 || num >= acl.Lists {
				return fmt.Errorf("server %d: acl %d outside (0,%d)", n, num, acl.Lists-1)
			}
			s.ACL = num
		case "max", "hard", "weight", "prio":
			if num < 0 {
				return fmt.Errorf("server %d: %s must not be negative", n, k)
			}
			if err := checkInt(fmt.Sprintf("server %d: %s", n, k), num, 0, MaxInt, ""); err != nil {
				return err
			}
			switch k {
			case "max":
				s.Max = num
			case "hard":
				s.Hard = num
			case "weight":
				s.Weight = num
			case "prio":
				s.Prio = num
			}
		case "drain":
			if num != 0 && num != 1 {
				return fmt.Errorf("server %d: drain is 1 (no new connections) or 0", n)
			}
			s.Drain = num == 1
		case "blacklist":
			if num < 0 {
				return fmt.Errorf("server %d: blacklist time must not be negative", n)
			}
			if err := checkSeconds(fmt.Sprintf("server %d: blacklist", n), num); err != nil {
				return err
			}
			t := num
			bl = &t
		default:
			return fmt.Errorf("server %d: unknown setting %q (acl, address, port, max, hard, blacklist, weight, prio, drain)", n, k)
		}
	}
	x.setServer(n, s)
	if bl != nil {
		d := time.Duration(*bl) * time.Second
		x.later(func(e Engine) {
			if e != nil {
				e.Blacklist(n, d)
			}
		})
	}
	return nil
}

func cmdNoServer(x *txn, args []string) error {
	if len(args) != 1 {
		return errors.New("no server: expected a server number")
	}
	n, err := atoi("no server", args[0])
	if err != nil {
		return err
	}
	if n < 0 || n >= len(x.cfg.Servers) {
		return fmt.Errorf("no server: server %d does not exist", n)
	}
	x.deleteServer(n)
	return nil
}

func cmdServers(x *txn, cmd string, args []string) error {
	if err := noArgs(cmd, args); err != nil {
		return err
	}
	var st []ServerState
	if x.in.eng != nil {
		st = x.in.eng.Servers()
	}
	for i, s := range x.cfg.Servers {
		var ss ServerState
		if i < len(st) {
			ss = st[i]
		}
		x.printf("%d addr %s port %d conn %d max %d hard %d weight %d prio %d sx %d rx %d\n",
			i, s.Host, s.ReportedPort(), ss.Conns, s.Max, s.Hard, s.Weight, s.Prio, ss.Sent, ss.Received)
	}
	return nil
}

// cmdSpecialServer is emergency_server and abuse_server.
func cmdSpecialServer(x *txn, cmd string, args []string) error {
	c := x.cfg
	spec, err := oneArg(cmd, args)
	if err != nil {
		return err
	}
	s, err := x.parseServerSpec(spec)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	p := &c.Emergency
	if cmd == "abuse_server" {
		p = &c.Abuse
	}
	if *p != nil {
		s = s.WithIDOf(**p)
	} else {
		s = s.WithID()
	}
	*p = &s
	return nil
}

// writableServers returns the transaction's server table, copying it the
// first time: the running configuration's table is never changed in place.
func (x *txn) writableServers() []Server {
	if !x.ownServers {
		x.cfg.Servers = slices.Clone(x.cfg.Servers)
		x.ownServers = true
	}
	return x.cfg.Servers
}

// setServer stores s in slot i, growing the table as Pen does.
func (x *txn) setServer(i int, s Server) {
	c := x.cfg
	c.Servers = x.writableServers()
	if i >= len(c.Servers) {
		c.Servers = slices.Grow(c.Servers, i+1-len(c.Servers))[:i+1]
	}
	c.Servers[i] = s
}

// deleteServer removes slot i; later slots move down. The shorter side of
// the table moves, so that removing the first or the last slot, even
// 20,000 times in one change, costs nothing per slot.
func (x *txn) deleteServer(i int) {
	s := x.writableServers()
	if i < len(s)/2 {
		copy(s[1:i+1], s[:i])
		s[0] = Server{}
		x.cfg.Servers = s[1:]
		return
	}
	x.cfg.Servers = slices.Delete(s, i, i+1)
}
