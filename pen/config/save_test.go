package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const userConfig = "# my servers\nserver 0 address 127.0.0.1 port 81\nserver 1 address 127.0.0.1 port 82\n"

func readString(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Nothing writes the -F file before it has been read: "pen -F pen.cfg -O
// autowrite" and "-O write" replaced the user's servers with an empty
// configuration before reading them.
func TestNotWrittenBeforeRead(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pen.cfg")
	os.WriteFile(file, []byte(userConfig), 0o644)
	in := newTest(t)
	in.SetProcess(Process{ConfigFile: file})
	if _, err := in.Exec("autowrite", FromFlag); err != nil {
		t.Fatalf("autowrite before the file is read: %v", err)
	}
	if _, err := in.Exec("blacklist 5", FromFlag); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"write", "write " + file, "write " + dir + "/./pen.cfg"} {
		if _, err := in.Exec(line, FromFlag); err == nil || !strings.Contains(err.Error(), "has not been read yet") {
			t.Errorf("%q before the file is read: %v", line, err)
		}
	}
	if got := readString(t, file); got != userConfig {
		t.Fatalf("the -F file was written before it was read:\n%s", got)
	}
	if _, err := in.ExecFile(file, FromFile); err != nil {
		t.Fatal(err)
	}
	exec(t, in, "blacklist 7")
	got := readString(t, file)
	for _, want := range []string{"\nserver 0 acl 0 address 127.0.0.1 port 81 ", "\nserver 1 acl 0 address 127.0.0.1 port 82 ", "\nblacklist 7\n", "\nautowrite\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("after reading and a change, the file lacks %q:\n%s", want, got)
		}
	}
	if _, err := os.Stat(file + ".rejected"); err == nil {
		t.Error("a file pen read and wrote itself was kept as rejected")
	}
	// A change made at run time while the -F file is unread (it appeared
	// after start-up) is applied and not saved, and says why.
	in3 := newTest(t)
	in3.SetProcess(Process{ConfigFile: file})
	if err := in3.Update(FromFlag, func(c *Config) error { c.AutoWrite = true; return nil }); err != nil {
		t.Fatal(err)
	}
	before := readString(t, file)
	_, err := in3.Exec("blacklist 8", FromControl)
	var se *SaveError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "has not been read yet") || in3.Config().Blacklist != 8 {
		t.Errorf("change with an unread -F file: %v", err)
	}
	if readString(t, file) != before {
		t.Error("the unread -F file was written")
	}
	// A -F file that does not exist holds nothing to lose: the first
	// change creates it.
	in2 := newTest(t)
	missing := filepath.Join(dir, "new.cfg")
	in2.SetProcess(Process{ConfigFile: missing})
	exec(t, in2, "autowrite")
	if !strings.Contains(readString(t, missing), "\nautowrite\n") {
		t.Error("autowrite did not create a missing -F file")
	}
	exec(t, in2, "blacklist 3")
	if !strings.Contains(readString(t, missing), "\nblacklist 3\n") {
		t.Error("autowrite stopped after creating the file")
	}
}

// When the -F file on disk is not what pen last read or wrote (a HUP
// refused the user's edit), its text is kept beside it before it is
// replaced.
func TestEditedFileKept(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pen.cfg")
	os.WriteFile(file, []byte(userConfig+"autowrite\n"), 0o640)
	in := newTest(t)
	in.SetProcess(Process{ConfigFile: file})
	if _, err := in.ExecFile(file, FromFile); err != nil {
		t.Fatal(err)
	}
	if in.Rejected() != "" {
		t.Errorf("Rejected before anything was kept: %q", in.Rejected())
	}
	edits := []string{
		userConfig + "server 2 address 127.0.0.1 port 83 bogus\n",
		userConfig + "server 2 address 127.0.0.1 port 84 bogus\n",
	}
	for i, edit := range edits {
		os.WriteFile(file, []byte(edit), 0o640)
		if _, err := in.ExecFile(file, FromSignal); err == nil {
			t.Fatal("the broken edit was accepted")
		}
		exec(t, in, "tracking "+string(rune('1'+i)))
		kept := file + ".rejected"
		if i > 0 {
			kept += ".1"
		}
		if got := readString(t, kept); got != edit {
			t.Errorf("edit %d: %s holds %q, want the user's text", i, kept, got)
		}
		if fi, err := os.Stat(kept); err != nil || fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: mode %v, %v; want the file's 0640", kept, fi.Mode(), err)
		}
		if in.Rejected() != kept {
			t.Errorf("Rejected() = %q, want %q", in.Rejected(), kept)
		}
		if !strings.Contains(readString(t, file), "\ntracking "+string(rune('1'+i))+"\n") {
			t.Errorf("edit %d: the change was not saved", i)
		}
	}
	// Another change with nothing edited keeps nothing more.
	exec(t, in, "blacklist 11")
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("directory holds %d files, want pen.cfg and two kept copies", len(entries))
	}
}

// Writing goes through a symlinked -F file: the link stays, its target
// gets the new text.
func TestWriteThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "real"), 0o755)
	target := filepath.Join(dir, "real", "pen.cfg")
	os.WriteFile(target, []byte(userConfig), 0o600)
	link := filepath.Join(dir, "pen.cfg")
	if err := os.Symlink("real/pen.cfg", link); err != nil {
		t.Fatal(err)
	}
	in := newTest(t)
	in.SetProcess(Process{ConfigFile: link})
	if _, err := in.ExecFile(link, FromFile); err != nil {
		t.Fatal(err)
	}
	exec(t, in, "autowrite")
	exec(t, in, "blacklist 6")
	fi, err := os.Lstat(link)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if got := readString(t, target); !strings.Contains(got, "\nblacklist 6\n") {
		t.Errorf("the link's target was not written:\n%s", got)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("target mode %v, want 0600 kept", fi.Mode())
	}
	exec(t, in, "write")
	if entries, _ := os.ReadDir(filepath.Join(dir, "real")); len(entries) != 1 {
		t.Errorf("real/ holds %v, want only pen.cfg", entries)
	}
}

// A change that was applied but not saved says so to whoever made it: a
// *SaveError with the reply; write that fails answers with the reason.
func TestSaveErrorReported(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pen.cfg")
	os.WriteFile(file, []byte(userConfig+"autowrite\n"), 0o644)
	in := newTest(t)
	in.SetProcess(Process{ConfigFile: file})
	if _, err := in.ExecFile(file, FromFile); err != nil {
		t.Fatal(err)
	}
	// The file becomes a link to a directory that does not exist: every
	// save fails.
	os.Remove(file)
	if err := os.Symlink(filepath.Join(dir, "gone", "pen.cfg"), file); err != nil {
		t.Fatal(err)
	}
	check := func(what, reply string, err error, wantReply string) {
		t.Helper()
		var se *SaveError
		if !errors.As(err, &se) || se.Path != file || !strings.HasPrefix(err.Error(), "applied, but not saved to "+file+": ") {
			t.Errorf("%s: %v, want a SaveError for %s", what, err, file)
		}
		if reply != wantReply {
			t.Errorf("%s: reply %q, want %q", what, reply, wantReply)
		}
	}
	reply, err := in.Exec("blacklist 12", FromControl)
	check("Exec", reply, err, "12\n")
	reply, err = in.ExecLines("upload", []byte("tracking 4\ntimeout 8\n"), FromWeb)
	check("ExecLines", reply, err, "4\n8\n")
	err = in.Update(FromControl, func(c *Config) error { c.Hash = true; return nil })
	check("Update", "", err, "")
	// The command line is not saved: it is given again at every start.
	if err := in.Update(FromFlag, func(c *Config) error { c.Stubborn = true; return nil }); err != nil {
		t.Errorf("Update from the command line: %v", err)
	}
	if c := in.Config(); c.Blacklist != 12 || c.Tracking != 4 || c.Timeout != 8 || !c.Hash {
		t.Errorf("the changes were not applied: %+v", c)
	}
	// write without a change: the reason, not "applied".
	_, err = in.Exec("write", FromControl)
	var se *SaveError
	if err == nil || errors.As(err, &se) || !strings.HasPrefix(err.Error(), "write: not saved to "+file+": ") {
		t.Errorf("failed write: %v", err)
	}
	_, err = in.Exec("write "+dir, FromControl)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("write to a directory: %v", err)
	}
	// Without autowrite, a change is not saved and that is no error.
	if _, err := in.Exec("no autowrite", FromControl); err != nil {
		t.Errorf("no autowrite: %v", err)
	}
	if _, err := in.Exec("blacklist 13", FromControl); err != nil {
		t.Errorf("change without autowrite: %v", err)
	}
}

// write FILE and web_stats FILE replace what they name, as in Pen, but a
// file there that pen did not make (a hand-written configuration named by
// mistake) is kept beside it as FILE.orig first; pen's own output there,
// a configuration Pen wrote included, is replaced without a copy.
func TestForeignFileKeptBeforeReplacing(t *testing.T) {
	dir := t.TempDir()
	in := newTest(t)
	exec(t, in, "server 0 address 127.0.0.1 port 81")

	mine := filepath.Join(dir, "mine.cfg")
	os.WriteFile(mine, []byte(userConfig), 0o640)
	exec(t, in, "write "+mine)
	if got := readString(t, mine+".orig"); got != userConfig {
		t.Errorf("mine.cfg.orig holds %q, want the user's text", got)
	}
	if fi, err := os.Stat(mine + ".orig"); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mine.cfg.orig: %v, %v; want the file's mode 0640", fi, err)
	}
	if !strings.HasPrefix(readString(t, mine), "# Generated by pen ") {
		t.Error("write did not write the file it names")
	}
	// Written by pen now: another write keeps nothing more, also from a
	// pen that did not write it (a restart).
	exec(t, in, "blacklist 9")
	exec(t, in, "write "+mine)
	newTest(t).Exec("write "+mine, FromControl)
	penMade := filepath.Join(dir, "pen-made.cfg")
	os.WriteFile(penMade, []byte("# Generated by pen 2020-01-01 00:00:00\n# pen 8080\nno acl 0\n"), 0o644)
	exec(t, in, "write "+penMade)
	empty := filepath.Join(dir, "empty.cfg")
	os.WriteFile(empty, nil, 0o644)
	exec(t, in, "write "+empty)

	// The status page replaces only a status page without a copy.
	page := filepath.Join(dir, "status.html")
	notes := "my notes\n"
	os.WriteFile(page, []byte(notes), 0o600)
	exec(t, in, "web_stats "+page)
	exec(t, in, "status")
	if got := readString(t, page+".orig"); got != notes {
		t.Errorf("status.html.orig holds %q, want the user's text", got)
	}
	if !strings.Contains(readString(t, page), "<title>Pen status page</title>") {
		t.Error("status did not write the page")
	}
	if err := in.WriteStatus(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := "empty.cfg mine.cfg mine.cfg.orig pen-made.cfg status.html status.html.orig"; strings.Join(names, " ") != want {
		t.Errorf("directory holds %q, want %q", strings.Join(names, " "), want)
	}
}
