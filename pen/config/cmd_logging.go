package config

import (
	"strings"
)

// Logging, the status page and the debug level.
var loggingCommands = map[string]*command{
	"log": {run: cmdLog, off: clearString(func(c *Config) *string { return &c.Log }),
		files: fileRule{value: func(c *Config, _ []string) string {
			if isLogFile(c.Log) {
				return c.Log
			}
			return "" // host:port: the request log over UDP, not a file
		}}},
	"web_stats": {run: cmdWebStats, off: clearString(func(c *Config) *string { return &c.WebStats }),
		files: fileRule{value: func(c *Config, _ []string) string { return c.WebStats }}},
	"status": {run: cmdStatus},
	"debug":  {run: cmdDebug},
}

func cmdLog(x *txn, cmd string, args []string) error {
	c := x.cfg
	if len(args) > 0 {
		s, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		if err := checkLogTarget(s); err != nil {
			return err
		}
		c.Log = s
	}
	if c.Log != "" {
		x.printf("%s\n", c.Log)
	}
	return nil
}

// isLogFile reports whether a log target names a file rather than
// host:port (Pen's rule: a ':' in a name that does not start with '/'
// means host:port).
func isLogFile(s string) bool {
	return s != "" && (!strings.Contains(s, ":") || strings.HasPrefix(s, "/"))
}

func cmdWebStats(x *txn, cmd string, args []string) error {
	c := x.cfg
	if len(args) > 0 {
		s, err := oneArg(cmd, args)
		if err != nil {
			return err
		}
		c.WebStats = s
	}
	if c.WebStats != "" {
		x.printf("%s\n", c.WebStats)
	}
	return nil
}

func cmdStatus(x *txn, cmd string, args []string) error {
	c := x.cfg
	if err := noArgs(cmd, args); err != nil {
		return err
	}
	if c.WebStats == "" {
		x.printf("Unable to create webstats\n")
		return nil
	}
	page := x.in.statusPage(c)
	if !x.dry {
		if err := x.in.writeStatusFile(c.WebStats, page); err != nil {
			x.in.log.Printf("Can't write to %s: %v", c.WebStats, err)
			x.printf("Unable to create webstats\n")
			return nil
		}
	}
	x.out.Write(page)
	return nil
}

func cmdDebug(x *txn, cmd string, args []string) error {
	return intSetting(x, cmd, args, &x.cfg.Debug, 0, "debug: level must not be negative", MaxInt, "")
}
