package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAdminPasswordFiles(t *testing.T) {
	in := newTest(t)
	exec(t, in, "admin_password_file /perm/gokr-pw.txt /etc/gokr-pw.txt")
	if got := in.Config().Admin.PasswordFiles; strings.Join(got, " ") != "/perm/gokr-pw.txt /etc/gokr-pw.txt" {
		t.Errorf("files %q", got)
	}
	if !strings.Contains(string(in.Render("x")), "\nadmin_password_file /perm/gokr-pw.txt /etc/gokr-pw.txt\n") {
		t.Error("write does not save both files")
	}
	if _, err := in.Exec("admin_password_file", FromControl); err == nil {
		t.Error("admin_password_file without a file accepted")
	}
	exec(t, in, "no admin_password_file")
	if in.Config().Admin.PasswordFiles != nil {
		t.Error("no admin_password_file kept files")
	}
}

func TestPreviewChangesNothing(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pen.cfg")
	in := newTest(t)
	in.SetProcess(Process{ConfigFile: file})
	exec(t, in, "autowrite")
	os.Remove(file)
	changes := in.Changes()
	next, err := in.Preview("upload", []byte("server 0 address 127.0.0.1 port 80\nadmin_acl 2\nwrite\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Servers) != 1 || next.Admin.ACL != 2 {
		t.Errorf("preview: %d servers, admin_acl %d", len(next.Servers), next.Admin.ACL)
	}
	if c := in.Config(); len(c.Servers) != 0 || c.Admin.ACL != -1 || in.Changes() != changes {
		t.Error("preview changed the configuration")
	}
	if _, err := os.Stat(file); err == nil {
		t.Error("preview wrote a file")
	}
	_, err = in.Preview("upload", []byte("blacklist 5\nserver 1 port 70000\n"))
	var le *LineError
	if !errors.As(err, &le) || le.File != "upload" || le.Line != 2 {
		t.Errorf("error %v, want upload line 2", err)
	}
}

func TestAddOnChange(t *testing.T) {
	in := newTest(t)
	var got []string
	in.OnChange = func(c *Config, o Origin) { got = append(got, "first "+string(o)) }
	in.AddOnChange(func(c *Config, o Origin) { got = append(got, "second "+string(o)) })
	exec(t, in, "blacklist 7")
	exec(t, in, "blacklist 7") // no change, no call
	if strings.Join(got, ",") != "first control,second control" {
		t.Errorf("calls %q", got)
	}
}
