package config

import "maps"

// The command table.
//
// Every command of the language is one entry in one of the tables below,
// grouped in files by subject. An entry says how to run the command, how
// "no NAME" turns its setting off (if it has that form), and which files
// it names (see files.go). Adding a command is adding an entry.
//
//	cmd_settings.go  balancing, timing and table sizes, on/off settings
//	cmd_listen.go    where pen listens and what it binds: listen, control, udp, dsr_*, source
//	cmd_servers.go   the server table, the emergency and abuse servers
//	cmd_acl.go       access lists and the lists that guard each door
//	cmd_tls.go       TLS termination (ssl_*)
//	cmd_admin.go     the admin UI and autowrite
//	cmd_logging.go   logging, the status page and debug
//	cmd_files.go     include and write
//	cmd_runtime.go   questions about the running load balancer and actions on it
//	cmd_names.go     names (notes) of servers and access lists
//	cmd_check.go     active health checks of servers

// command is one command of the language.
type command struct {
	// run runs "NAME args..."; cmd is the name, for handlers shared by
	// several names.
	run func(x *txn, cmd string, args []string) error
	// off runs "no NAME"; nil when the command has no such form. It gets
	// no arguments unless offArgs is set (no acl N, no server N).
	off     func(x *txn, args []string) error
	offArgs bool
	// files says how the command names files; the zero value names none.
	files fileRule
}

// commands is every command, by name. It is built by init from the tables
// of the cmd_*.go files, whose handlers in turn run commands (include): a
// variable initialised in its declaration could not refer to itself.
var commands map[string]*command

func init() {
	commands = map[string]*command{}
	for _, group := range []map[string]*command{
		settingsCommands, listenCommands, serverCommands, aclCommands,
		tlsCommands, adminCommands, loggingCommands, fileCommands, runtimeCommands, nameCommands, checkCommands,
	} {
		for name := range group {
			if _, dup := commands[name]; dup {
				panic("config: command " + name + " is defined twice")
			}
		}
		maps.Copy(commands, group)
	}
}

// runCmd runs one command that is not a "no" form.
func (x *txn) runCmd(cmd string, args []string) error {
	c, ok := commands[cmd]
	if !ok {
		return &UnknownCommandError{Word: cmd}
	}
	return c.run(x, cmd, args)
}

// runNo runs "no what args...".
func (x *txn) runNo(what string, args []string) error {
	c := commands[what]
	if c != nil && c.offArgs {
		return c.off(x, args)
	}
	if err := noArgs("no "+what, args); err != nil {
		return err
	}
	if c == nil || c.off == nil {
		return &UnknownCommandError{Word: "no " + what}
	}
	return c.off(x, args)
}

// onOff is a setting switched on by NAME and off by "no NAME".
func onOff(field func(c *Config) *bool) *command {
	return &command{
		run: func(x *txn, cmd string, args []string) error { return x.flag(field(x.cfg), true, cmd, args) },
		off: func(x *txn, _ []string) error { *field(x.cfg) = false; return nil },
	}
}

// clearString is an off handler that empties a text setting.
func clearString(field func(c *Config) *string) func(x *txn, _ []string) error {
	return func(x *txn, _ []string) error { *field(x.cfg) = ""; return nil }
}

// flag handles the commands that switch a setting on.
func (x *txn) flag(p *bool, v bool, cmd string, args []string) error {
	if err := noArgs(cmd, args); err != nil {
		return err
	}
	*p = v
	return nil
}
