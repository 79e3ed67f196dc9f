package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadConfigs: penimage's -config takes one file (service main, as
// before), several separated by commas, or a directory with main.cfg.
func TestLoadConfigs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	one := write("one/pen.cfg", "listen 80\n")
	main, svcs, err := LoadConfigs(one)
	if err != nil || string(main) != "listen 80\n" || len(svcs) != 0 {
		t.Errorf("one file: %q %v %v", main, svcs, err)
	}
	dns := write("dns.cfg", "udp\nlisten 53\n")
	main, svcs, err = LoadConfigs(one + "," + dns)
	if err != nil || string(main) != "listen 80\n" || string(svcs["dns"]) != "udp\nlisten 53\n" || len(svcs) != 1 {
		t.Errorf("two files: %q %v %v", main, svcs, err)
	}
	write("d/main.cfg", "listen 80\n")
	write("d/https.cfg", "listen 443\n")
	write("d/dns.cfg", "udp\nlisten 53\n")
	write("d/README", "not a configuration\n")
	main, svcs, err = LoadConfigs(filepath.Join(dir, "d"))
	if err != nil || string(main) != "listen 80\n" || len(svcs) != 2 || string(svcs["https"]) != "listen 443\n" {
		t.Errorf("a directory: %q %v %v", main, svcs, err)
	}
	for _, bad := range []string{
		filepath.Dir(write("z/dns.cfg", "udp\n")),         // no main.cfg
		one + "," + write("x/bad name.cfg", "listen 1\n"), // not a name
		one + "," + write("y/main.cfg", "listen 1\n"),     // main twice
		one + "," + dns + "," + dns,                       // dns twice
		one + "," + filepath.Join(dir, "missing.cfg"),
	} {
		if _, _, err := LoadConfigs(bad); err == nil {
			t.Errorf("LoadConfigs(%s) accepted", strings.TrimPrefix(bad, dir))
		}
	}
}
