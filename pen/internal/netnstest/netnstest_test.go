package netnstest

import (
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
)

// Two hosts on a link reach each other; Do runs code inside a host and
// leaves the test where it was; everything is gone after the test.
func TestHostsAndCleanup(t *testing.T) {
	var names []string
	t.Run("net", func(t *testing.T) {
		n := New(t)
		a, b := n.Host("a"), n.Host("b")
		names = []string{a.Name, b.Name}
		n.Link(a, "eth0", []string{"198.18.5.1/24", "2001:db8:5::1/64"}, b, "eth0", []string{"198.18.5.2/24", "2001:db8:5::2/64"})
		for _, addr := range []string{"198.18.5.2:7", "[2001:db8:5::2]:7"} {
			var ln net.Listener
			if err := b.Do(func() error {
				var err error
				ln, err = net.Listen("tcp", addr)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			go func() {
				c, err := ln.Accept()
				if err == nil {
					io.WriteString(c, "hello")
					c.Close()
				}
			}()
			c, err := a.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("dial %s from a: %v", addr, err)
			}
			got, _ := io.ReadAll(c)
			c.Close()
			ln.Close()
			if string(got) != "hello" {
				t.Errorf("%s: %q", addr, got)
			}
		}
		// The test itself is not in b: the address is not reachable
		// from here.
		if _, err := net.Listen("tcp", "198.18.5.2:7"); err == nil {
			t.Error("b's address is bindable outside b: Do did not restore the namespace")
		}
		if out := a.Run("cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(out) != "0" {
			t.Errorf("ip_forward in a: %q", out)
		}
		a.Sysctl("net.ipv4.ip_forward", "1")
		if out := a.Run("cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(out) != "1" {
			t.Errorf("ip_forward in a after Sysctl: %q", out)
		}
		cmd := b.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if strings.Contains(string(out), name) {
			t.Errorf("namespace %s is left after the test:\n%s", name, out)
		}
	}
}
