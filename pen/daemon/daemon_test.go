package daemon

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestGetopt(t *testing.T) {
	for _, tc := range []struct {
		args     string
		opts     string
		operands string
		err      string
	}{
		{"-r 8080 a b -F cfg", "r: F:cfg", "8080 a b", ""},
		{"-fdd -x100 -b 5 10000", "f: d: d: x:100 b:5", "10000", ""},
		{"8080 -- -h x", "", "8080 -h x", ""},
		{"-O hash -o 'x' 80", "O:hash o:'x'", "80", ""},
		{"-z", "", "", "invalid option -- 'z'"},
		{"-x", "", "", "option requires an argument -- 'x'"},
		{"- 80", "", "- 80", ""},
		{"--help", "", "", "--help"},
		{"--version -f 80", "", "", "--version"},
		{"--bogus", "", "", "unrecognized option '--bogus'"},
		{"-h 80", "h:", "80", ""},
	} {
		opts, ops, err := getopt(strings.Fields(tc.args))
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: err %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		var got []string
		for _, o := range opts {
			got = append(got, fmt.Sprintf("%c:%s", o.c, o.arg))
		}
		if g := strings.Join(got, " "); g != tc.opts {
			t.Errorf("%q: options %q, want %q", tc.args, g, tc.opts)
		}
		if g := strings.Join(ops, " "); g != tc.operands {
			t.Errorf("%q: operands %q, want %q", tc.args, g, tc.operands)
		}
	}
}

// prepare runs everything Main does before serving.
func prepare(t *testing.T, args ...string) (*Daemon, string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	d := New()
	d.Stdout, d.Stderr = &out, &errb
	d.proc.Foreground = true
	opts, operands, err := getopt(args)
	if err != nil {
		return d, out.String(), errb.String(), err
	}
	d.log = nil
	d.in = nil
	err = func() error {
		d.log = newTestLog(&errb)
		d.in = newInterp(d)
		if err := d.options(opts); err != nil {
			return err
		}
		d.in.SetProcess(d.proc)
		if d.cfgFile != "" {
			o, err := d.in.ExecFile(d.cfgFile, "file")
			out.WriteString(o)
			if err != nil {
				return err
			}
		}
		if d.in.Config().Listen == "" && len(operands) < 1 {
			return &UsageError{}
		}
		return d.positional(operands)
	}()
	return d, out.String(), errb.String(), err
}

func TestStartupOrder(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pen.cfg")
	os.WriteFile(cfg, []byte("server 0 address 127.0.0.1 port 100\nserver 1 address 127.0.0.1 port 101\nblacklist 20\n"), 0o644)
	// -O runs in order with the flags; -F comes after the options; the
	// positional servers override the file's slots.
	d, out, _, err := prepare(t, "-O", "blacklist 5", "-b", "7", "10000", "127.0.0.2:200", "-F", cfg, "-O", "blacklist")
	if err != nil {
		t.Fatal(err)
	}
	c := d.in.Config()
	if c.Blacklist != 20 {
		t.Errorf("blacklist %d, want the file's 20", c.Blacklist)
	}
	if out != "5\n7\n20\n" {
		t.Errorf("-O and file replies on stdout: %q", out)
	}
	if len(c.Servers) != 2 || c.Servers[0].Host.String() != "127.0.0.2" || c.Servers[0].Port != 200 || c.Servers[1].Port != 101 {
		t.Errorf("servers %+v", c.Servers)
	}
	if c.Listen != "10000" || d.proc.CLI.Listen != "10000" {
		t.Errorf("listen %q", c.Listen)
	}
	// A listen command in the file wins over the positional address, as
	// in Pen.
	os.WriteFile(cfg, []byte("listen 127.0.0.1:9999\n"), 0o644)
	d, _, _, err = prepare(t, "-F", cfg, "10000", "127.0.0.1:80")
	if err != nil || d.in.Config().Listen != "127.0.0.1:9999" {
		t.Errorf("listen from file: %q, %v", d.in.Config().Listen, err)
	}
	// Servers without a port take the listen port; -e and -B too.
	d, _, _, err = prepare(t, "-e", "127.0.0.1", "-B", "[::1]:103", "8080", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	c = d.in.Config()
	if c.Servers[0].Port != 8080 || c.Emergency.Port != 8080 || c.Abuse.Port != 103 || c.Abuse.Host.String() != "::1" {
		t.Errorf("ports: %+v %+v %+v", c.Servers[0], c.Emergency, c.Abuse)
	}
	if !reflect.DeepEqual(*d.proc.CLI.Emergency, *c.Emergency) {
		t.Errorf("CLI record of -e differs")
	}
}

func TestBadFileLine(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pen.cfg")
	os.WriteFile(cfg, []byte("blacklist 5\nserver 0 address 127.0.0.1 port 99999\n"), 0o644)
	_, _, _, err := prepare(t, "-F", cfg, "8080")
	if err == nil || !strings.Contains(err.Error(), cfg+":2: ") {
		t.Errorf("got %v, want an error naming %s:2", err, cfg)
	}
}

func TestMainUsageAndErrors(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		d := New()
		d.Stdout, d.Stderr = &out, &errb
		code := d.Main(args)
		return code, out.String(), errb.String()
	}
	code, out, errs := run("-z")
	if code != 0 || !strings.HasPrefix(out, "usage:\n  pen ") || !strings.Contains(errs, "invalid option -- 'z'") {
		t.Errorf("unknown option: %d %q %q", code, out[:min(len(out), 20)], errs)
	}
	if code, out, _ = run("-f"); code != 0 || !strings.HasPrefix(out, "usage:") {
		t.Errorf("no listener: %d %q", code, out)
	}
	if code, out, _ = run("-t", "0", "8080"); code != 0 || !strings.HasPrefix(out, "usage:") {
		t.Errorf("-t 0: %d", code)
	}
	if code, _, errs = run("-f", "-L", "sslv9", "8080"); code != 1 || errs != "protocol version sslv9 not known\n" {
		t.Errorf("-L: %d %q", code, errs)
	}
	if code, _, errs = run("-i", "x"); code != 0 || errs != "Windows only\n" {
		t.Errorf("-i: %d %q", code, errs)
	}
	if code, _, errs = run("-f", "-O", "acl 1 permit 1.2.3.999", "8080"); code != 1 || !strings.Contains(errs, "acl") {
		t.Errorf("bad -O: %d %q", code, errs)
	}
	if code, _, errs = run("-f", "[::1", "127.0.0.1:80"); code != 1 || errs == "" {
		t.Errorf("bad listen: %d %q", code, errs)
	}
}

// TestUsageMatchesOptions: the usage text describes every option getopt
// accepts, and no option it does not.
func TestUsageMatchesOptions(t *testing.T) {
	var b bytes.Buffer
	Usage(&b)
	text := b.String()
	described := map[byte]bool{}
	for _, line := range strings.Split(text, "\n") {
		// Option lines: two spaces, a dash, the letter, then space or tab.
		if len(line) > 4 && strings.HasPrefix(line, "  -") && line[3] != '-' && (line[4] == ' ' || line[4] == '\t') {
			c := line[3]
			if strings.IndexByte(optString, c) < 0 || c == ':' {
				t.Errorf("usage describes -%c, which getopt does not accept: %q", c, line)
			}
			described[c] = true
		}
	}
	for i := 0; i < len(optString); i++ {
		c := optString[i]
		if c == ':' || described[c] {
			continue
		}
		if !strings.Contains(text, fmt.Sprintf("-%c", c)) {
			t.Errorf("getopt accepts -%c, which the usage text does not mention", c)
		}
	}
	for _, want := range []string{"--help", "--version", "admin_listen", "autowrite", "no server N"} {
		if !strings.Contains(text, want) {
			t.Errorf("the usage text does not mention %s", want)
		}
	}
	// Options pen has but that do nothing must not be offered as features.
	for _, gone := range []string{"use poll()", "use kqueue", "without save server"} {
		if strings.Contains(text, gone) {
			t.Errorf("the usage text still offers %q", gone)
		}
	}
}
