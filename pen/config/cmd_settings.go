package config

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Balancing, timing and table sizes, and the settings switched on and off.
var settingsCommands = map[string]*command{
	"abort_on_error": onOff(func(c *Config) *bool { return &c.AbortOnErr }),
	"ascii":          onOff(func(c *Config) *bool { return &c.ASCII }),
	"dummy":          onOff(func(c *Config) *bool { return &c.Dummy }),
	"hash":           onOff(func(c *Config) *bool { return &c.Hash }),
	"http":           onOff(func(c *Config) *bool { return &c.HTTP }),
	"keepalive":      onOff(func(c *Config) *bool { return &c.Keepalive }),
	"peek":           onOff(func(c *Config) *bool { return &c.Peek }),
	"prio":           onOff(func(c *Config) *bool { return &c.Prio }),
	"roundrobin":     onOff(func(c *Config) *bool { return &c.RoundRobin }),
	"stubborn":       onOff(func(c *Config) *bool { return &c.Stubborn }),
	"tcp_nodelay":    onOff(func(c *Config) *bool { return &c.NoDelay }),
	"transparent":    onOff(func(c *Config) *bool { return &c.Transparent }),
	"weight":         onOff(func(c *Config) *bool { return &c.Weight }),

	"blacklist":     {run: cmdBlacklist},
	"timeout":       {run: cmdTimeout},
	"tracking":      {run: cmdTracking},
	"idle_timeout":  {run: cmdIdleTimeout},
	"clients_max":   {run: cmdTableSize},
	"conn_max":      {run: cmdTableSize},
	"pending_max":   {run: cmdPendingMax},
	"multi_accept":  {run: cmdMultiAccept},
	"listen_queue":  {run: cmdListenQueue},
	"idlers":        {run: cmdIdlers},
	"tcp_fastclose": {run: cmdFastClose},
	"loops":         {run: cmdLoops},
	"kernel_relay": {
		run: cmdKernelRelay,
		off: func(x *txn, _ []string) error { x.cfg.KernelRelay = RelayOff; return nil },
	},
	"udp_kernel": {
		run: func(x *txn, cmd string, args []string) error { return x.flag(&x.cfg.NoUDPKernel, false, cmd, args) },
		off: func(x *txn, _ []string) error { x.cfg.NoUDPKernel = true; return nil },
	},

	// Where transparent mode's policy routing goes (docs/TRANSPARENT.md).
	"transparent_table":    {run: cmdTransparentRouting},
	"transparent_priority": {run: cmdTransparentRouting},

	// Pen chooses its event mechanism with these; pen always uses epoll,
	// so they are accepted and change nothing.
	"epoll":  {run: cmdEventMechanism},
	"kqueue": {run: cmdEventMechanism},
	"poll":   {run: cmdEventMechanism},
	"select": {run: cmdEventMechanism},
}

// intSetting runs a command that shows an integer setting and, given a
// number, sets it: below least is refused with tooLow, and the number must
// fit in at most limit (unit names it in the error: " seconds" or "").
func intSetting(x *txn, cmd string, args []string, p *int, least int, tooLow string, limit int, unit string) error {
	n, set, err := optInt(cmd, args)
	if err != nil {
		return err
	}
	if set {
		if n < least {
			return errors.New(tooLow)
		}
		if err := checkInt(cmd, n, 0, limit, unit); err != nil {
			return err
		}
		*p = n
	}
	x.printf("%d\n", *p)
	return nil
}

func cmdBlacklist(x *txn, cmd string, args []string) error {
	return intSetting(x, cmd, args, &x.cfg.Blacklist, 0, "blacklist: time must not be negative", MaxSeconds, " seconds")
}

func cmdTimeout(x *txn, cmd string, args []string) error {
	return intSetting(x, cmd, args, &x.cfg.Timeout, 1, "timeout: must be at least 1 second", MaxSeconds, " seconds")
}

func cmdTracking(x *txn, cmd string, args []string) error {
	return intSetting(x, cmd, args, &x.cfg.Tracking, 0, "tracking: time must not be negative", MaxSeconds, " seconds")
}

func cmdIdleTimeout(x *txn, cmd string, args []string) error {
	c := x.cfg
	n, set, err := optInt(cmd, args)
	if err != nil {
		return err
	}
	if set {
		n = max(n, 0) // as Pen does
		if err := checkSeconds(cmd, n); err != nil {
			return err
		}
		c.IdleTimeout = n
	}
	x.printf("Idle timeout: %d seconds\n", c.IdleTimeout)
	return nil
}

// cmdTableSize is clients_max and conn_max.
func cmdTableSize(x *txn, cmd string, args []string) error {
	c := x.cfg
	p, what, table := &c.ClientsMax, "client", 0
	if cmd == "conn_max" {
		p, what, table = &c.ConnMax, "connection", 1
	}
	n, set, err := optInt(cmd, args)
	if err != nil {
		return err
	}
	if set {
		if n < 1 || n > MaxTable {
			return fmt.Errorf("%s: %s table size %d out of range (1..%d)", cmd, what, n, MaxTable)
		}
		if x.in.eng == nil && !x.sized[table] {
			*p = n // the first size before pen serves is exact (Interp.sized)
			x.sized[table] = true
		} else if n > *p { // the tables only grow, as in Pen
			*p = n
		}
	}
	x.printf("%d\n", *p)
	return nil
}

func cmdPendingMax(x *txn, cmd string, args []string) error {
	c := x.cfg
	n, _, err := optInt(cmd, args)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		if err := checkInt(cmd, n, math.MinInt32, MaxInt, ""); err != nil {
			return err
		}
		c.PendingMax = n
	}
	if c.PendingMax <= 0 {
		c.PendingMax = 1
	}
	return nil
}

func cmdMultiAccept(x *txn, cmd string, args []string) error {
	n, _, err := optInt(cmd, args)
	if err != nil || len(args) == 0 {
		return errors.New("multi_accept: expected a number")
	}
	if err := checkInt(cmd, n, math.MinInt32, MaxInt, ""); err != nil {
		return err
	}
	x.cfg.MultiAccept = max(n, 1)
	return nil
}

func cmdListenQueue(x *txn, cmd string, args []string) error {
	n, _, err := optInt(cmd, args)
	if err != nil || len(args) == 0 {
		return errors.New("listen_queue: expected a number")
	}
	if err := checkInt(cmd, n, math.MinInt32, MaxInt, ""); err != nil {
		return err
	}
	x.cfg.ListenQueue = max(n, 50)
	return nil
}

func cmdIdlers(x *txn, cmd string, args []string) error {
	c := x.cfg
	n, set, err := optInt(cmd, args)
	if err != nil {
		return err
	}
	if set {
		if n < 0 || n > MaxIdlers {
			return fmt.Errorf("idlers: %d out of range (0..%d)", n, MaxIdlers)
		}
		c.Idlers = n
	}
	have := 0
	if x.in.eng != nil {
		have = x.in.eng.IdlersActive()
	}
	x.printf("Idlers: %d/%d\n", have, c.Idlers)
	return nil
}

func cmdFastClose(x *txn, _ string, args []string) error {
	if len(args) == 0 {
		x.printf("do_cmd: ignoring tcp_fastclose without argument\n")
		return nil
	}
	switch args[0] {
	case "both":
		x.cfg.FastClose = FastCloseBoth
	case "up":
		x.cfg.FastClose = FastCloseUp
	case "down":
		x.cfg.FastClose = FastCloseDown
	default:
		x.cfg.FastClose = FastCloseOff
	}
	return nil
}

func cmdEventMechanism(_ *txn, cmd string, args []string) error { return noArgs(cmd, args) }

// cmdTransparentRouting is transparent_table and transparent_priority:
// where transparent mode's policy routing goes. Without an argument it
// answers the value in effect.
func cmdTransparentRouting(x *txn, cmd string, args []string) error {
	c := x.cfg
	p, def := &c.TransparentTable, DefaultTransparentTable
	if cmd == "transparent_priority" {
		p, def = &c.TransparentPriority, DefaultTransparentPriority
	}
	n, set, err := optInt(cmd, args)
	if err != nil {
		return err
	}
	if set {
		if err := checkTransparentRouting(cmd, n); err != nil {
			return err
		}
		*p = n
	}
	if *p == 0 {
		*p = def
	}
	x.printf("%d\n", *p)
	return nil
}

// checkTransparentRouting refuses a table the kernel keeps for itself
// (252 to 255) and a priority that is not between the local table's rule
// (0) and the main table's (32766).
func checkTransparentRouting(cmd string, n int) error {
	if cmd == "transparent_priority" {
		return checkInt(cmd, n, 1, MaxTransparentPriority, "")
	}
	if err := checkInt(cmd, n, 1, MaxInt, ""); err != nil {
		return err
	}
	if n >= 252 && n <= 255 {
		return fmt.Errorf("%s: %d is one of the kernel's own tables (252..255)", cmd, n)
	}
	return nil
}

// kernel_relay [splice] / no kernel_relay: which plain TCP connections
// that need no user-space work pen hands to the kernel. "kernel_relay
// splice", the default, splices those that can be; "kernel_relay" also
// gives the others to the sockmap relay; "no kernel_relay" keeps every
// connection in pen.
func cmdKernelRelay(x *txn, cmd string, args []string) error {
	switch {
	case len(args) == 0:
		x.cfg.KernelRelay = RelayAll
	case len(args) == 1 && args[0] == "splice":
		x.cfg.KernelRelay = RelaySplice
	default:
		return fmt.Errorf("%s: expected nothing or \"splice\", got %q", cmd, strings.Join(args, " "))
	}
	return nil
}

// udp_kernel / no udp_kernel: whether UDP flows, once placed, are carried
// by the kernel (on by default; pen/proxy/udpkernel.go).

// loops [N]: how many event loops serve the clients. 0 (the default) is
// one per CPU; 1 serves everything on one core, as Pen does. Without N it
// prints the number configured.
func cmdLoops(x *txn, cmd string, args []string) error {
	n, set, err := optInt(cmd, args)
	if err != nil {
		return err
	}
	if set {
		if n < 0 || n > MaxLoops {
			return fmt.Errorf("loops: %d out of range (0..%d; 0 = one per CPU)", n, MaxLoops)
		}
		x.cfg.Loops = n
	}
	x.printf("%d\n", x.cfg.Loops)
	return nil
}
