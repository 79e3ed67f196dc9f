package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Commands that name files.
//
// The admin UI must not be a way to read or write files on the machine:
// an administrator of the load balancer is not thereby an administrator of
// the machine. So a command from the admin UI (FromWeb: its forms and
// uploads) may not name a file. include and write with a file name are
// refused from there always. The other commands below are refused when
// they would set a file name (or a unix socket path) that is not already
// the one in effect, so that a configuration downloaded from the UI
// uploads back unchanged. Settings that name files are made in the -F file
// or with penctl.
//
// fileCommands is the one place that says which commands name files; a new
// command that takes a path adds its entry here.
var fileCommands = map[string]fileRule{
	"include": {always: func([]string) bool { return true }, what: "files cannot be read from the admin UI"},
	"write": {always: func(args []string) bool { return len(args) > 0 },
		what: "file names cannot be given from the admin UI (write without a file name saves the -F file)"},

	"log": {value: func(c *Config, _ []string) string {
		if isLogFile(c.Log) {
			return c.Log
		}
		return "" // host:port: request log over UDP, not a file
	}},
	"web_stats":           {value: func(c *Config, _ []string) string { return c.WebStats }},
	"ssl_cert":            {value: func(c *Config, _ []string) string { return c.TLS.Cert }},
	"ssl_key":             {value: func(c *Config, _ []string) string { return c.TLS.Key }},
	"ssl_ca_file":         {value: func(c *Config, _ []string) string { return c.TLS.CAFile }},
	"ssl_ca_dir":          {value: func(c *Config, _ []string) string { return c.TLS.CADir }},
	"ssl_sni_path":        {value: func(c *Config, _ []string) string { return c.TLS.SNIPath }},
	"ssl_ocsp_response":   {value: func(c *Config, _ []string) string { return c.TLS.OCSPResponse }},
	"admin_tls":           {value: func(c *Config, _ []string) string { return c.Admin.TLSCert + " " + c.Admin.TLSKey }},
	"admin_password_file": {value: func(c *Config, _ []string) string { return strings.Join(c.Admin.PasswordFiles, " ") }},

	// Unix sockets: listening on a path creates (and replaces) a file
	// there, connecting to one reaches whatever serves it.
	"listen":         {value: func(c *Config, _ []string) string { return unixPath(c.Listen) }},
	"control":        {value: func(c *Config, _ []string) string { return unixPath(c.Control) }},
	"admin_listen":   {value: func(c *Config, _ []string) string { return unixPath(c.Admin.Listen) }},
	"admin_redirect": {value: func(c *Config, _ []string) string { return unixPath(c.Admin.Redirect) }},
	"emergency_server": {value: func(c *Config, _ []string) string {
		if c.Emergency == nil {
			return ""
		}
		return c.Emergency.Host.Path
	}},
	"abuse_server": {value: func(c *Config, _ []string) string {
		if c.Abuse == nil {
			return ""
		}
		return c.Abuse.Host.Path
	}},
	"server": {value: func(c *Config, args []string) string {
		if len(args) == 0 {
			return ""
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 0 || n >= len(c.Servers) {
			return ""
		}
		return c.Servers[n].Host.Path
	}},
}

// fileRule says how a command names files.
type fileRule struct {
	// always reports whether the command with these arguments is refused
	// from the admin UI whatever it would do.
	always func(args []string) bool
	what   string // the reason given for always
	// value returns the file names that the setting the command changes
	// holds in c ("" for none).
	value func(c *Config, args []string) string
}

// webFileCheck is called for every command from the admin UI: before the
// command runs, it returns a check to make after the command ran, or
// refuses at once. Nothing is refused for other origins.
func (x *txn) webFileCheck(cmd string, args []string) (after func() error, err error) {
	r, ok := fileCommands[cmd]
	if !ok || x.origin != FromWeb {
		return nil, nil
	}
	if r.always != nil && r.always(args) {
		return nil, fmt.Errorf("%s: %s (use penctl or the -F file)", cmd, r.what)
	}
	if r.value == nil {
		return nil, nil
	}
	before := r.value(x.cfg, args)
	running := r.value(x.in.cfg, args)
	return func() error {
		v := r.value(x.cfg, args)
		if v == "" || v == before || v == running {
			return nil
		}
		return fmt.Errorf("%s: file names cannot be set from the admin UI (set them in the -F file or with penctl)", cmd)
	}, nil
}

// isLogFile reports whether a log target names a file rather than
// host:port (Pen's rule: a ':' in a name that does not start with '/'
// means host:port).
func isLogFile(s string) bool {
	return s != "" && (!strings.Contains(s, ":") || strings.HasPrefix(s, "/"))
}

// unixPath is the unix socket path of a listen spec, or "".
func unixPath(spec string) string {
	if strings.Contains(spec, "/") {
		return spec
	}
	return ""
}
