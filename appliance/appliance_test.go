package appliance

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestEnsureConfig(t *testing.T) {
	root := t.TempDir()
	perm := filepath.Join(root, "perm")
	def := filepath.Join(root, "etc", "pen.cfg")
	if err := os.MkdirAll(filepath.Dir(def), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(perm, 0o755); err != nil {
		t.Fatal(err)
	}
	const defaults = "listen 80\nserver 0 address 10.0.2.2 port 8000\n"
	if err := os.WriteFile(def, []byte(defaults), 0o444); err != nil {
		t.Fatal(err)
	}

	// First boot: the default is copied.
	got, err := EnsureConfig(perm, def)
	if err != nil {
		t.Fatal(err)
	}
	if want := PermConfig(perm); got != want {
		t.Errorf("EnsureConfig = %s, want %s", got, want)
	}
	b, err := os.ReadFile(got)
	if err != nil || string(b) != defaults {
		t.Fatalf("copied configuration %q, %v", b, err)
	}

	// Later boots keep what the operator changed.
	const changed = "listen 80\nserver 0 address 192.0.2.7 port 80\n"
	if err := os.WriteFile(got, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if got2, err := EnsureConfig(perm, def); err != nil || got2 != got {
		t.Fatalf("second EnsureConfig = %s, %v", got2, err)
	}
	if b, _ := os.ReadFile(got); string(b) != changed {
		t.Errorf("configuration overwritten: %q", b)
	}
}

func TestEnsureConfigReadOnlyPerm(t *testing.T) {
	// Root may write into read-only directories, so block /perm/pen with
	// a file instead of taking away write permission.
	root := t.TempDir()
	def := filepath.Join(root, "pen.cfg")
	os.WriteFile(def, []byte("listen 80\n"), 0o444)
	perm := filepath.Join(root, "perm")
	// /perm/pen cannot be created: a file is in the way.
	os.MkdirAll(perm, 0o755)
	os.WriteFile(filepath.Join(perm, "pen"), nil, 0o444)
	got, err := EnsureConfig(perm, def)
	if err == nil {
		t.Errorf("EnsureConfig succeeded without a usable /perm")
	}
	if got != def {
		t.Errorf("EnsureConfig = %s, want the default %s", got, def)
	}
}

func TestCommands(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"gokrazy/init", "gokrazy/ntp", "gokrazy/dhcp", "gokrazy/randomd", "gokrazy/heartbeat", "user/pen"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmds, err := Commands(root, "/perm/pen/pen.cfg")
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for _, c := range cmds {
		rel, _ := filepath.Rel(root, c.Path)
		got = append(got, append([]string{rel}, c.Args[1:]...))
	}
	want := [][]string{
		{"gokrazy/dhcp"}, {"gokrazy/heartbeat"}, {"gokrazy/ntp"}, {"gokrazy/randomd"},
		{"user/pen", "-f", "-F", "/perm/pen/pen.cfg"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Commands = %q, want %q", got, want)
	}

	os.Remove(filepath.Join(root, "user/pen"))
	if cmds, err := Commands(root, "x"); err == nil || len(cmds) != 4 {
		t.Errorf("without pen: %d commands, %v; want 4 and an error", len(cmds), err)
	}
}
