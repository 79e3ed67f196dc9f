package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// TLS termination.
var tlsCommands = map[string]*command{
	"ssl_cert": tlsFile(func(c *Config) *string { return &c.TLS.Cert }, true),
	// ssl_key, ssl_ca_file and ssl_ca_dir have no "no" form in Pen.
	"ssl_key":           tlsFile(func(c *Config) *string { return &c.TLS.Key }, false),
	"ssl_ca_file":       tlsFile(func(c *Config) *string { return &c.TLS.CAFile }, false),
	"ssl_ca_dir":        tlsFile(func(c *Config) *string { return &c.TLS.CADir }, false),
	"ssl_ocsp_response": tlsFile(func(c *Config) *string { return &c.TLS.OCSPResponse }, true),
	"ssl_sni_path": {run: cmdSNIPath, off: clearString(func(c *Config) *string { return &c.TLS.SNIPath }),
		files: fileRule{value: func(c *Config, _ []string) string { return c.TLS.SNIPath }}},
	"ssl_protocol":                      {run: cmdTLSProtocol},
	"ssl_compat":                        onOff(func(c *Config) *bool { return &c.TLS.Compat }),
	"ssl_require_client_cert":           onOff(func(c *Config) *bool { return &c.TLS.RequireClient }),
	"ssl_ciphers":                       {run: func(x *txn, _ string, args []string) error { x.cfg.TLS.Ciphers = strings.Join(args, " "); return nil }},
	"ssl_client_renegotiation_interval": {run: cmdRenegotiate},
	"ssl_option":                        {run: cmdTLSOption, off: func(x *txn, _ []string) error { x.cfg.TLS.Options = nil; return nil }},
}

// tlsFile is a command that names a file of the TLS settings; withOff
// gives it a "no" form that empties the setting.
func tlsFile(field func(c *Config) *string, withOff bool) *command {
	cmd := &command{
		run: func(x *txn, cmd string, args []string) error {
			s, err := oneArg(cmd, args)
			if err != nil {
				return err
			}
			*field(x.cfg) = s
			return nil
		},
		files: fileRule{value: func(c *Config, _ []string) string { return *field(c) }},
	}
	if withOff {
		cmd.off = clearString(field)
	}
	return cmd
}

func cmdSNIPath(x *txn, cmd string, args []string) error {
	s, err := oneArg(cmd, args)
	if err != nil {
		//lint:ignore ST1005 Pen's message, kept verbatim
		return errors.New("Missing ssl_sni_path")
	}
	x.cfg.TLS.SNIPath = s
	return nil
}

func cmdTLSProtocol(x *txn, cmd string, args []string) error {
	s, err := oneArg(cmd, args)
	if err != nil {
		return err
	}
	switch s {
	case "ssl23", "ssl2", "ssl3", "tls1":
	default:
		return fmt.Errorf("protocol version %s not known", s)
	}
	x.cfg.TLS.Protocol = s
	return nil
}

func cmdRenegotiate(x *txn, cmd string, args []string) error {
	n, _, err := optInt(cmd, args)
	if err != nil || len(args) == 0 {
		return errors.New("ssl_client_renegotiation_interval: expected seconds")
	}
	if err := checkInt(cmd, n, 0, MaxSeconds, " seconds"); err != nil {
		return err
	}
	x.cfg.TLS.Renegotiate = n
	return nil
}

func cmdTLSOption(x *txn, cmd string, args []string) error {
	c := x.cfg
	s, err := oneArg(cmd, args)
	if err != nil {
		//lint:ignore ST1005 Pen's message, kept verbatim
		return errors.New("Missing option")
	}
	switch s {
	case "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1.1", "no_tlsv1.2", "cipher_server_preference":
	default:
		return fmt.Errorf("ssl_option: unknown option %q", s)
	}
	if slices.Contains(c.TLS.Options, s) {
		return nil
	}
	c.TLS.Options = append(slices.Clip(c.TLS.Options), s) // shared with the running configuration
	return nil
}
