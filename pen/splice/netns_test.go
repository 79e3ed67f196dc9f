//go:build linux

package splice

import (
	"net"
	"testing"

	"github.com/pen-lb/pen-appliance/pen/internal/netnstest"
)

// Peers on other hosts: client -- pen -- server, each in a network
// namespace of its own, on veths with their offloads at their defaults.
// The program takes the client's segments on the ingress of pen's
// interface toward it, rewrites them and sends them out of the
// interface toward the server (bpf_redirect_neigh), and back; pen's
// sockets, silenced by the egress program, receive nothing.
func TestSpliceAcrossHosts(t *testing.T) {
	n := netnstest.New(t)
	client, pen, server := n.Host("client"), n.Host("pen"), n.Host("server")
	n.Link(client, "eth0", []string{"198.18.10.1/24"}, pen, "c0", []string{"198.18.10.2/24"})
	n.Link(pen, "s0", []string{"198.18.20.2/24"}, server, "eth0", []string{"198.18.20.3/24"})
	in := pen.Do

	var s *Splicer
	var ls, lm net.Listener
	if err := in(func() (err error) { s, err = open(); return }); err != nil {
		t.Fatalf("splicer: %v", err)
	}
	t.Cleanup(s.Close)
	if err := server.Do(func() (err error) { ls, err = net.Listen("tcp4", "198.18.20.3:8080"); return }); err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if err := in(func() (err error) { lm, err = net.Listen("tcp4", "198.18.10.2:80"); return }); err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	c, err := client.Dial("tcp4", "198.18.10.2:80")
	if err != nil {
		t.Fatal(err)
	}
	down, err := lm.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var up net.Conn
	if err := in(func() (err error) { up, err = net.Dial("tcp4", "198.18.20.3:8080"); return }); err != nil {
		t.Fatal(err)
	}
	sv, err := ls.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); down.Close(); up.Close(); sv.Close() })
	carryBothWays(t, s, c, down, up, sv, in)
}
