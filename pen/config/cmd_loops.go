package config

import "fmt"

// kernel_relay / no kernel_relay (cmd_settings.go): whether quiet plain
// TCP connections are handed to the kernel's sockmap relay.

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
