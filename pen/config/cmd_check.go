package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Active health checks: pen probes a server every INTERVAL seconds, by a
// TCP connect or an HTTP GET that must answer STATUS; a failed probe
// blacklists the server until a probe passes (the engine runs them).
// Pen does not know the command and ignores it in a configuration file.
//
//	check N tcp [INTERVAL]
//	check N http PATH [STATUS [INTERVAL]]
//	no check N
//
// A server's check stays with it when slots move.
var checkCommands = map[string]*command{
	"check": {run: cmdCheck, off: cmdNoCheck, offArgs: true},
}

// Check is a server's active health check; the zero value is none.
type Check struct {
	Kind     string // "", "tcp" or "http"
	Path     string // http: the path to GET
	Status   int    // http: the status that passes
	Interval int    // seconds between probes
}

// Check defaults and limits.
const (
	DefaultCheckInterval = 5
	MaxCheckInterval     = 3600
)

// String is the check as its command writes it, after "check N".
func (c Check) String() string {
	switch c.Kind {
	case "tcp":
		return fmt.Sprintf("tcp %d", c.Interval)
	case "http":
		return fmt.Sprintf("http %s %d %d", c.Path, c.Status, c.Interval)
	}
	return ""
}

// ParseCheck parses the words after "check N".
func ParseCheck(args []string) (Check, error) {
	if len(args) == 0 {
		return Check{}, errors.New("check: expected tcp or http")
	}
	c := Check{Kind: args[0], Interval: DefaultCheckInterval}
	rest := args[1:]
	switch c.Kind {
	case "tcp":
	case "http":
		if len(rest) == 0 || !strings.HasPrefix(rest[0], "/") {
			return Check{}, errors.New("check: http needs a path starting with /")
		}
		c.Path, c.Status, rest = rest[0], 200, rest[1:]
		for _, r := range c.Path {
			if r <= ' ' || r == 0x7f {
				return Check{}, errors.New("check: the path must not contain spaces or control characters")
			}
		}
		if len(rest) > 0 {
			st, err := strconv.Atoi(rest[0])
			if err != nil || st < 100 || st > 599 {
				return Check{}, fmt.Errorf("check: status %q is not 100..599", rest[0])
			}
			c.Status, rest = st, rest[1:]
		}
	default:
		return Check{}, fmt.Errorf("check: %q is not tcp or http", c.Kind)
	}
	if len(rest) > 0 {
		iv, err := strconv.Atoi(rest[0])
		if err != nil || iv < 1 || iv > MaxCheckInterval {
			return Check{}, fmt.Errorf("check: interval %q is not 1..%d seconds", rest[0], MaxCheckInterval)
		}
		c.Interval, rest = iv, rest[1:]
	}
	if len(rest) > 0 {
		return Check{}, fmt.Errorf("check: unexpected %q", rest[0])
	}
	return c, nil
}

func checkSlot(x *txn, cmd, arg string) (int, error) {
	n, err := atoi(cmd, arg)
	if err != nil {
		return 0, err
	}
	if n < 0 || n >= len(x.cfg.Servers) {
		return 0, fmt.Errorf("%s: server %d does not exist", cmd, n)
	}
	return n, nil
}

func cmdCheck(x *txn, _ string, args []string) error {
	if len(args) < 2 {
		return errors.New("check: expected check N tcp or check N http PATH")
	}
	n, err := checkSlot(x, "check", args[0])
	if err != nil {
		return err
	}
	c, err := ParseCheck(args[1:])
	if err != nil {
		return err
	}
	x.writableServers()[n].Check = c
	return nil
}

func cmdNoCheck(x *txn, args []string) error {
	if len(args) != 1 {
		return errors.New("no check: expected no check N")
	}
	n, err := checkSlot(x, "no check", args[0])
	if err != nil {
		return err
	}
	x.writableServers()[n].Check = Check{}
	return nil
}

// renderChecks writes the checks for write.
func renderChecks(pr func(string, ...any), c *Config) {
	for i, s := range c.Servers {
		if s.Check.Kind != "" {
			pr("check %d %s\n", i, s.Check)
		}
	}
}
