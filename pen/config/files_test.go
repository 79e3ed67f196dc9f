package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The admin UI may not name files: every command in fileCommands is
// refused from FromWeb when it would set a file name, and the refusal
// changes nothing.
func TestWebCannotNameFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("root:$6$topsecret:19000:0:99999:7:::\n"), 0o600)
	for _, line := range []string{
		"include " + secret,
		"write " + filepath.Join(dir, "out.cfg"),
		"log " + filepath.Join(dir, "access.log"),
		"web_stats " + filepath.Join(dir, "stats.html"),
		"admin_password_file " + filepath.Join(dir, "pw"),
		"admin_tls " + filepath.Join(dir, "c.pem"),
		"ssl_cert " + filepath.Join(dir, "c.pem"),
		"ssl_key " + filepath.Join(dir, "k.pem"),
		"ssl_ca_file " + filepath.Join(dir, "ca.pem"),
		"ssl_ca_dir " + dir,
		"ssl_sni_path " + dir,
		"ssl_ocsp_response " + filepath.Join(dir, "ocsp"),
		"listen " + filepath.Join(dir, "l.sock"),
		"control " + filepath.Join(dir, "c.sock"),
		"admin_listen " + filepath.Join(dir, "a.sock"),
		"admin_redirect " + filepath.Join(dir, "r.sock"),
		"server 0 address /run/docker.sock",
		"emergency_server /run/e.sock",
		"abuse_server /run/a.sock",
	} {
		t.Run(strings.Fields(line)[0], func(t *testing.T) {
			in := newTest(t)
			in.SetProcess(Process{ConfigFile: filepath.Join(dir, "pen.cfg")})
			before := string(in.Render("x"))
			_, err := in.Exec(line, FromWeb)
			if err == nil || !strings.Contains(err.Error(), "admin UI") {
				t.Fatalf("%q from the admin UI: %v, want a refusal", line, err)
			}
			if strings.Contains(err.Error(), "topsecret") {
				t.Errorf("error shows the file: %v", err)
			}
			if after := string(in.Render("x")); after != before {
				t.Errorf("refused %q changed the configuration", line)
			}
			if _, err := in.ExecLines("upload", []byte("blacklist 5\n"+line+"\n"), FromWeb); err == nil {
				t.Errorf("%q in an upload accepted", line)
			}
			if in.Config().Blacklist != DefaultBlacklist {
				t.Errorf("refused upload applied its first line")
			}
			if _, err := in.Preview("upload", []byte(line+"\n")); err == nil {
				t.Errorf("Preview accepted %q", line)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("refused commands left files: %v", entries)
	}
}

// A configuration downloaded from the admin UI uploads back unchanged,
// file names and all; and what does not name a file is allowed.
func TestWebKeepsFileNames(t *testing.T) {
	in := newTest(t)
	in.SetProcess(Process{ConfigFile: filepath.Join(t.TempDir(), "pen.cfg")})
	for _, line := range []string{
		"log /var/log/pen.log", "web_stats /var/www/pen.html", "admin_password_file /perm/pw",
		"admin_tls /perm/a.crt /perm/a.key", "ssl_cert /perm/c.pem", "ssl_ca_dir /perm/ca",
		"server 0 address /run/backend.sock", "server 1 address 127.0.0.1 port 80",
		"control /run/pen.ctl", "emergency_server /run/e.sock",
	} {
		exec(t, in, line)
	}
	text := in.Render("pen.cfg")
	if _, err := in.ExecLines("upload", text, FromWeb); err != nil {
		t.Fatalf("uploading the downloaded configuration: %v", err)
	}
	if got := in.Render("pen.cfg"); string(got) != string(text) {
		t.Errorf("round trip changed the configuration:\n%s\nwant\n%s", got, text)
	}
	for _, line := range []string{
		"log 127.0.0.1:514", // over UDP, not a file
		"no web_stats", "server 0 address 127.0.0.1 port 81", "listen 8080", "write",
		"dsr_if eth0", "blacklist 9",
	} {
		if _, err := in.Exec(line, FromWeb); err != nil {
			t.Errorf("%q from the admin UI: %v", line, err)
		}
	}
}

// A file that is not a configuration is never shown in an error, whoever
// includes it: the error names the file and the line.
func TestIncludeErrorHidesContent(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "shadow")
	os.WriteFile(secret, []byte("\n# x\nroot:$6$topsecret:19000::::::\n"), 0o600)
	nosecret := filepath.Join(dir, "no")
	os.WriteFile(nosecret, []byte("no topsecret\n"), 0o600)
	cfg := filepath.Join(dir, "pen.cfg")
	os.WriteFile(cfg, []byte("blacklist 5\ninclude "+secret+"\n"), 0o600)
	in := newTest(t)
	for _, tc := range []struct {
		run  func() error
		want string
	}{
		{func() error { _, err := in.Exec("include "+secret, FromControl); return err }, secret + ":3: "},
		{func() error { _, err := in.Exec("include "+nosecret, FromFlag); return err }, nosecret + ":1: "},
		{func() error { _, err := in.ExecFile(secret, FromFile); return err }, secret + ":3: "},
		{func() error { _, err := in.ExecFile(cfg, FromSignal); return err }, cfg + ":2: " + secret + ":3: "},
		{func() error {
			_, err := in.ExecLines("upload", []byte("include "+cfg+"\n"), FromControl)
			return err
		}, "upload:1: " + cfg + ":2: " + secret + ":3: "},
	} {
		err := tc.run()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got %v, want an error starting %q", err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "root") {
			t.Errorf("error shows the file's contents: %v", err)
		}
		var le *LineError
		if !errors.As(err, &le) {
			t.Errorf("%v is not a LineError", err)
		}
	}
	// A line of a configuration file that starts with a command keeps its
	// full error, so that a mistake in pen.cfg can be found.
	bad := filepath.Join(dir, "bad.cfg")
	os.WriteFile(bad, []byte("blacklist soon\n"), 0o600)
	if _, err := in.ExecFile(bad, FromFile); err == nil || !strings.Contains(err.Error(), `"soon" is not a number`) {
		t.Errorf("bad line: %v", err)
	}
	if in.Config().Blacklist != DefaultBlacklist {
		t.Error("failed file applied a line")
	}
}

// A configuration file is a regular file of at most MaxConfigSize bytes.
func TestConfigFileLimits(t *testing.T) {
	dir := t.TempDir()
	in := newTest(t)
	for _, p := range []string{dir, "/dev/zero"} {
		if _, err := in.Exec("include "+p, FromControl); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("include %s: %v", p, err)
		}
	}
	big := filepath.Join(dir, "big.cfg")
	f, _ := os.Create(big)
	f.Truncate(MaxConfigSize + 1)
	f.Close()
	if _, err := in.ExecFile(big, FromFile); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
}

// No word of any command may hold a control character or a byte that is
// not UTF-8, whatever the origin: a NUL must never reach a written file.
func TestControlCharactersRefused(t *testing.T) {
	dir := t.TempDir()
	for _, line := range []string{
		"web_stats /x/\xff\x00x", "web_stats /x/\x00", "log /var/log/p\x1b[2Jen", "ssl_cert a\x7fb",
		"ssl_ciphers HIGH \x01", "server 0 address /s\x00", "dsr_if eth\x000", "admin_password_file /p\u0085w",
		"no web\x00_stats", "bl\x00acklist 3", "blacklist 3\x00", "admin_tls c\xc3",
	} {
		for _, o := range []Origin{FromControl, FromFlag, FromFile, FromWeb} {
			in := newTest(t)
			before := string(in.Render("x"))
			_, err := in.Exec(line, o)
			if err == nil || !strings.Contains(err.Error(), "refused") || strings.ContainsAny(err.Error(), "\x00\x01\x1b\x7f") {
				t.Errorf("%q from %s: %v, want a refusal that does not show the character", line, o, err)
			}
			if string(in.Render("x")) != before {
				t.Errorf("%q from %s changed the configuration", line, o)
			}
			file := filepath.Join(dir, "pen.cfg")
			os.WriteFile(file, []byte("blacklist 4\n"+line+"\n"), 0o600)
			if _, err := in.ExecFile(file, FromFile); err == nil || !strings.HasPrefix(err.Error(), file+":2: ") {
				t.Errorf("%q in a file: %v", line, err)
			}
		}
	}
	in := newTest(t)
	if _, err := in.Exec("web_stats /x/\xff\x00x", FromControl); err == nil || err.Error() != "web_stats: argument 1 contains a byte that is not UTF-8 (0xff): refused" {
		t.Errorf("error text: %v", err)
	}
	if _, err := in.Exec("no web_stats \x00", FromControl); err == nil || err.Error() != "no web_stats: argument 1 contains a control character (0x00): refused" {
		t.Errorf("error text: %v", err)
	}
	// What is not a control character stays allowed.
	exec(t, in, "web_stats /var/www/stäts.html")
	exec(t, in, "ssl_ciphers HIGH:!aNULL\t:!MD5")
}

// Every number a command takes is range-checked: blacklist 9223372037
// seconds overflowed a time.Duration and blacklisted nothing.
func TestNumbersInRange(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"server 0 blacklist 9223372037", "server 0: blacklist: 9223372037 seconds out of range (0..2147483647)"},
		{"blacklist 9223372037", "blacklist: 9223372037 seconds out of range"},
		{"blacklist 99999999999999999999", `blacklist: "99999999999999999999" is not a number`},
		{"timeout 2147483648", "timeout: 2147483648 seconds out of range"},
		{"idle_timeout -9223372037", ""},
		{"tracking 4294967296", "tracking: 4294967296 seconds out of range"},
		{"idle_timeout 9223372036854775807", "idle_timeout: 9223372036854775807 seconds out of range"},
		{"recent 9223372037", "recent: 9223372037 seconds out of range (0..2147483647)"},
		{"ssl_client_renegotiation_interval -1", "ssl_client_renegotiation_interval: -1 seconds out of range"},
		{"debug 4294967296", "debug: 4294967296 out of range"},
		{"pending_max 4294967296", "pending_max: 4294967296 out of range"},
		{"multi_accept 4294967296", "multi_accept: 4294967296 out of range"},
		{"listen_queue 4294967346", "listen_queue: 4294967346 out of range"},
		{"server 0 address 127.0.0.1 port 80 max 4294967296", "server 0: max: 4294967296 out of range"},
		{"server 0 weight 2147483648", "server 0: weight: 2147483648 out of range"},
		{"emergency_server 127.0.0.1:80:1:1:4294967297", `server "127.0.0.1:80:1:1:4294967297": weight: 4294967297 out of range`},
		{"server 65536 address 127.0.0.1", "server: server number 65536 out of range (0..65535)"},
	} {
		in := newTest(t)
		before := string(in.Render("x"))
		_, err := in.Exec(tc.line, FromControl)
		if tc.want == "" {
			if err != nil || in.Config().IdleTimeout != 0 {
				t.Errorf("%q: %v, idle_timeout %d; want 0 as in Pen", tc.line, err, in.Config().IdleTimeout)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.line, err, tc.want)
		}
		if string(in.Render("x")) != before {
			t.Errorf("%q changed the configuration", tc.line)
		}
	}
	in := newTest(t)
	for _, line := range []string{"server 0 blacklist 2147483647", "blacklist 2147483647", "timeout 2147483647", "recent 2147483647"} {
		exec(t, in, line)
	}
	// Settings made directly (the command-line flags) are checked too.
	if err := in.Update(FromFlag, func(c *Config) error { c.Blacklist = 9223372037; return nil }); err == nil || !strings.Contains(err.Error(), "blacklist: 9223372037 seconds out of range") {
		t.Errorf("Update with blacklist 9223372037: %v", err)
	}
	if err := in.Update(FromFlag, func(c *Config) error { c.ClientsMax = 1 << 40; return nil }); err == nil {
		t.Error("Update with a client table of 2^40 slots accepted")
	}
	if in.Config().Blacklist != 2147483647 {
		t.Errorf("refused Update changed blacklist to %d", in.Config().Blacklist)
	}
	// An access list is bounded, so that a configuration has a largest
	// size.
	lines := strings.Repeat("acl 1 permit 10.0.0.1\n", MaxACLEntries)
	if _, err := in.ExecLines("big", []byte(lines), FromControl); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Exec("acl 1 deny 10.0.0.2", FromControl); err == nil || !strings.Contains(err.Error(), "acl 1 is full") {
		t.Errorf("entry past MaxACLEntries: %v", err)
	}
}

// Names from the command line in write's comment line cannot start a
// command in the written file.
func TestWrittenCommentLine(t *testing.T) {
	in := newTest(t)
	in.SetProcess(Process{ConfigFile: "/tmp/a\nexit\x00.cfg", PidFile: "/run/p\rid", User: "no\xffbody", Chroot: "/j\x85"})
	out := string(in.Render("/tmp/a\nexit\x00.cfg"))
	first, _, _ := strings.Cut(out, "\n")
	second, _, _ := strings.Cut(out[len(first)+1:], "\n")
	if !strings.HasPrefix(second, "# pen ") || !strings.Contains(second, "-F '/tmp/a?exit?.cfg'") ||
		!strings.Contains(second, "-p '/run/p?id'") || !strings.Contains(second, "-u 'no?body'") || !strings.Contains(second, "-j '/j?'") {
		t.Errorf("comment line %q", second)
	}
	if strings.Contains(out, "\nexit") {
		t.Error("a name from the command line started a command in the written file")
	}
}
