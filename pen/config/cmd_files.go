package config

import (
	"errors"
	"fmt"
)

// Reading and writing configuration files.
var fileCommands = map[string]*command{
	"include": {run: cmdInclude,
		files: fileRule{always: func([]string) bool { return true }, what: "files cannot be read from the admin UI"}},
	"write": {run: cmdWrite,
		files: fileRule{always: func(args []string) bool { return len(args) > 0 },
			what: "file names cannot be given from the admin UI (write without a file name saves the -F file)"}},
}

// maxInclude bounds include nesting (a file including itself).
const maxInclude = 16

func cmdInclude(x *txn, cmd string, args []string) error {
	f, err := oneArg(cmd, args)
	if err != nil {
		//lint:ignore ST1005 Pen's message, kept verbatim
		return errors.New("Usage: include filename")
	}
	if x.depth >= maxInclude {
		return fmt.Errorf("include: %s: nested more than %d deep", f, maxInclude)
	}
	data, err := readConfigFile(f)
	if err != nil {
		return fmt.Errorf("include: %w", err)
	}
	x.depth++
	defer func() { x.depth-- }()
	return x.runFile(f, data)
}

// cmdWrite queues the file for after the commit, so that it holds the
// change the transaction made.
func cmdWrite(x *txn, cmd string, args []string) error {
	file := x.in.proc.ConfigFile
	if len(args) > 0 {
		var err error
		if file, err = oneArg(cmd, args); err != nil {
			return err
		}
	}
	if file == "" {
		return errors.New("write: no file")
	}
	if err := x.in.checkMayWrite(file); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !x.dry {
		x.writes = append(x.writes, file)
	}
	return nil
}
