package config

import (
	"strings"
	"testing"
)

// Names and drain are saved by write after what Pen saves, read back to
// the same configuration, and follow a server when slots move.
func TestNamesAndDrain(t *testing.T) {
	in := newTest(t)
	for _, l := range []string{
		"server 0 address 127.0.0.1 port 81",
		"server 1 address 127.0.0.1 port 82",
		"server 2 address 127.0.0.1 port 83",
		"name server 1 web-2 (rack B)",
		"name server 2 db",
		"name acl 3 office network",
		"server 2 drain 1",
	} {
		exec(t, in, l)
	}
	c := in.Config()
	if c.Servers[1].Name != "web-2 (rack B)" || !c.Servers[2].Drain || c.ACLNames[3] != "office network" {
		t.Fatalf("servers %+v, acl names %q", c.Servers, c.ACLNames)
	}
	out := string(in.Render("x"))
	_, penOnly, _ := strings.Cut(out, "# Settings below are not saved by Pen")
	for _, want := range []string{"server 2 drain 1\n", "name server 1 web-2 (rack B)\n", "name server 2 db\n", "name acl 3 office network\n"} {
		if !strings.Contains(penOnly, want) {
			t.Errorf("write lacks %q after Pen's settings:\n%s", want, out)
		}
	}
	again := newTest(t)
	if _, err := again.ExecLines("x", []byte(out), FromFile); err != nil {
		t.Fatal(err)
	}
	if got := string(again.Render("x")); got != out {
		t.Errorf("read back differently:\n%s\nwant\n%s", got, out)
	}
	exec(t, in, "no server 0")
	c = in.Config()
	if c.Servers[0].Name != "web-2 (rack B)" || c.Servers[1].Name != "db" || !c.Servers[1].Drain {
		t.Errorf("after no server 0: %+v", c.Servers)
	}
	exec(t, in, "no name server 0")
	exec(t, in, "no name acl 3")
	exec(t, in, "server 1 drain 0")
	if c := in.Config(); c.Servers[0].Name != "" || c.ACLNames[3] != "" || c.Servers[1].Drain {
		t.Errorf("names or drain not cleared: %+v %q", c.Servers, c.ACLNames)
	}
	for _, bad := range []string{"name server 7 x", "name acl 10 x", "name host 1 x", "name server 0", "server 0 drain 2", "name server 0 " + strings.Repeat("x", 65)} {
		if _, err := in.Exec(bad, FromControl); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Health checks are saved by write after Pen's settings, read back, and
// follow a server when slots move.
func TestCheckCommand(t *testing.T) {
	in := newTest(t)
	for _, l := range []string{
		"server 0 address 127.0.0.1 port 81",
		"server 1 address 127.0.0.1 port 82",
		"check 0 tcp",
		"check 1 http /health 204 10",
	} {
		exec(t, in, l)
	}
	out := string(in.Render("x"))
	for _, want := range []string{"check 0 tcp 5\n", "check 1 http /health 204 10\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("write lacks %q:\n%s", want, out)
		}
	}
	again := newTest(t)
	if _, err := again.ExecLines("x", []byte(out), FromFile); err != nil {
		t.Fatal(err)
	}
	if got := string(again.Render("x")); got != out {
		t.Errorf("read back differently:\n%s", got)
	}
	exec(t, in, "no server 0")
	if c := in.Config().Servers[0].Check; c != (Check{Kind: "http", Path: "/health", Status: 204, Interval: 10}) {
		t.Errorf("after no server 0: %+v", c)
	}
	exec(t, in, "no check 0")
	if c := in.Config().Servers[0].Check; c.Kind != "" {
		t.Errorf("after no check: %+v", c)
	}
	for _, bad := range []string{"check 5 tcp", "check 0 udp", "check 0 http health", "check 0 http /h 700", "check 0 tcp 0", "check 0 tcp 5 x", "no check 9"} {
		if _, err := in.Exec(bad, FromControl); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
