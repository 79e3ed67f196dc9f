package config

import (
	"errors"
	"fmt"
	"net/netip"
)

// Where pen listens and what it binds.
var listenCommands = map[string]*command{
	"listen": {run: cmdListen, off: clearString(func(c *Config) *string { return &c.Listen }),
		files: fileRule{value: func(c *Config, _ []string) string { return unixPath(c.Listen) }}},
	"control": {run: cmdControl, off: clearString(func(c *Config) *string { return &c.Control }),
		files: fileRule{value: func(c *Config, _ []string) string { return unixPath(c.Control) }}},
	"udp":    onOff(func(c *Config) *bool { return &c.UDP }),
	"dsr_if": {run: cmdDSRIf, off: clearString(func(c *Config) *string { return &c.DSRIf })},
	"dsr_ip": {run: cmdDSRIP},
	// tarpit_if runs the tarpit on an interface without DSR (with dsr_if
	// the tarpit runs on dsr_if's interface).
	"tarpit_if": {run: cmdTarpitIf, off: clearString(func(c *Config) *string { return &c.TarpitIf })},
	"source":    {run: cmdSource, off: func(x *txn, _ []string) error { x.cfg.Source = netip.Addr{}; return nil }},
}

func cmdListen(x *txn, cmd string, args []string) error {
	c := x.cfg
	if len(args) > 0 {
		spec, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		if err := x.checkListen(spec, c.UDP, c.DSRIf); err != nil {
			return err
		}
		c.Listen = spec
	}
	x.printf("%s\n", c.Listen)
	return nil
}

func (x *txn) checkListen(spec string, udp bool, dsrIf string) error {
	if dsrIf != "" {
		if _, err := ParseDSRListen(spec); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		return nil
	}
	if _, err := ParseListen(spec, udp, x.in.resolve); err != nil {
		return err
	}
	return nil
}

func cmdControl(x *txn, cmd string, args []string) error {
	c := x.cfg
	if len(args) > 0 {
		spec, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		if _, err := ParseListen(spec, false, x.in.resolve); err != nil {
			return fmt.Errorf("control: %w", err)
		}
		c.Control = spec
	}
	if c.Control == "" {
		x.printf("(null)\n")
	} else {
		x.printf("%s\n", c.Control)
	}
	return nil
}

func cmdDSRIf(x *txn, cmd string, args []string) error {
	s, err := oneArg(cmd, args)
	if err != nil {
		return err
	}
	x.cfg.DSRIf = s
	return nil
}

func cmdTarpitIf(x *txn, cmd string, args []string) error {
	s, err := oneArg(cmd, args)
	if err != nil {
		return err
	}
	x.cfg.TarpitIf = s
	return nil
}

func cmdDSRIP(x *txn, cmd string, args []string) error {
	s, err := oneArg(cmd, args)
	if err != nil {
		return err
	}
	x.cfg.DSRIP = s
	return nil
}

func cmdSource(x *txn, cmd string, args []string) error {
	s, err := oneArg(cmd, args)
	if err != nil {
		return errors.New("source: expected an address")
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		h, herr := ResolveHost(x.in.resolve, s)
		if herr != nil || h.IsUnix() {
			return fmt.Errorf("unable to set source address to '%s'", s)
		}
		a = h.IP
	}
	x.cfg.Source = a.Unmap()
	return nil
}
