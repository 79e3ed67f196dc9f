package acceptance

// Bad input over the control socket is refused with a clear answer and
// never reaches the written configuration.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Control characters in a word are refused in Pen's protocol and through
// penctl; a NUL never reaches the file write saves.
func TestConfigControlCharactersRefused(t *testing.T) {
	begin(t, 60*time.Second)
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "pen.cfg")
	writeFile(t, cfg, userCfg(dir))
	p := startPen(t, penOpts{Control: true, Dir: dir}, "-F", cfg)
	for _, line := range []string{"web_stats /x/\xff\x00x", "log /tmp/a\x00b", "ssl_cert \x1b[2J"} {
		got, err := rawControl("unix", p.Ctl, "", line)
		if err != nil || !strings.Contains(got, "refused") {
			t.Errorf("%q answered %q (%v), want a refusal", line, got, err)
		}
	}
	penctlFails(t, p.Ctl, "web_stats /x/\x7fx", "web_stats: argument 1 contains a control character (0x7f): refused")
	p.expectCtl("write", "")
	text := readText(t, cfg)
	if strings.ContainsAny(text, "\x00\x1b\x7f") || strings.IndexByte(text, 0xff) >= 0 || strings.Contains(text, "web_stats /x") || strings.Contains(text, "\nlog ") {
		t.Errorf("the written configuration holds refused input:\n%q", text)
	}
}

// Times out of range are refused: server 0 blacklist 9223372037 overflowed
// a time.Duration and did not blacklist.
func TestConfigNumbersRangeChecked(t *testing.T) {
	begin(t, 60*time.Second)
	dir := sharedDir(t)
	cfg := filepath.Join(dir, "pen.cfg")
	writeFile(t, cfg, userCfg(dir))
	p := startPen(t, penOpts{Control: true, Dir: dir}, "-F", cfg)
	p.expectCtlRefused("server 0 blacklist 9223372037", "server 0: blacklist: 9223372037 seconds out of range (0..2147483647)\n")
	p.expectCtlRefused("blacklist 9223372037", "blacklist: 9223372037 seconds out of range (0..2147483647)\n")
	p.expectCtl("blacklist", "30\n")
	p.expectCtl("server 0 blacklist 2147483647", "")
}
