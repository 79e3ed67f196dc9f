package daemon

import (
	"errors"
	"fmt"
	"strings"
)

// Pen's getopt string (pen.c:options), with the SSL options.
const optString = "B:C:F:O:S:T:b:c:e:i:j:l:m:o:p:q:t:u:w:x:DHNPQWXUadfhnrsE:K:G:A:ZRL:"

// opt is one option in command-line order.
type opt struct {
	c   byte
	arg string
}

// UsageError means the command line was not understood; Pen prints its
// usage to standard output and exits with status 0.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Long options pen adds; Pen has none. They must come first or alone.
var (
	errHelp    = errors.New("--help")
	errVersion = errors.New("--version")
)

// getopt parses args (without the program name) as glibc's getopt does by
// default: options and operands may be mixed, operands keep their order,
// "--" ends the options, "-" is an operand, flags group ("-fd"), and an
// option's argument may be attached ("-x100") or follow ("-x 100").
func getopt(args []string) ([]opt, []string, error) {
	var opts []opt
	var operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			operands = append(operands, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			operands = append(operands, a)
			continue
		}
		switch {
		case a == "--help":
			return nil, nil, errHelp
		case a == "--version":
			return nil, nil, errVersion
		case strings.HasPrefix(a, "--"):
			return nil, nil, &UsageError{fmt.Sprintf("unrecognized option '%s'", a)}
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			k := strings.IndexByte(optString, c)
			if k < 0 || c == ':' {
				return nil, nil, &UsageError{fmt.Sprintf("invalid option -- '%c'", c)}
			}
			if k+1 < len(optString) && optString[k+1] == ':' {
				var val string
				if j+1 < len(a) {
					val = a[j+1:]
				} else if i+1 < len(args) {
					i++
					val = args[i]
				} else {
					return nil, nil, &UsageError{fmt.Sprintf("option requires an argument -- '%c'", c)}
				}
				opts = append(opts, opt{c, val})
				break
			}
			opts = append(opts, opt{c: c})
		}
	}
	return opts, operands, nil
}
