// Package netnstest builds small networks of hosts for tests out of
// network namespaces: hosts, veth links and bridges between them, and
// programs and Go code run inside a host.
//
// Every namespace is named after the test's own prefix and removed when the
// test ends, after whatever runs inside it was stopped. Tests must use
// addresses from 198.18.0.0/15 and 2001:db8::/32 and send traffic only to
// hosts they made. Creating namespaces needs root: without it the test is
// skipped, or fails under CI (see testenv).
package netnstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

var seq atomic.Int64

// Net is the set of hosts of one test.
type Net struct {
	t      testing.TB
	prefix string
}

// New starts a network for t. It skips t (fails it under CI) when the
// caller is not root or iproute2 is missing.
func New(t testing.TB) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "network namespaces need root")
	}
	testenv.NeedProgram(t, "ip", "iproute2")
	return &Net{t: t, prefix: fmt.Sprintf("pen%d-%d", os.Getpid(), seq.Add(1))}
}

// Host is a network namespace.
type Host struct {
	Name string // the namespace's name, for ip netns exec
	n    *Net
}

// Host makes a namespace with its loopback up. It is removed when the test
// ends, after every process in it was killed.
func (n *Net) Host(name string) *Host {
	n.t.Helper()
	h := &Host{Name: n.prefix + "-" + name, n: n}
	run(n.t, "ip", "netns", "add", h.Name)
	n.t.Cleanup(func() {
		h.killAll()
		if out, err := exec.Command("ip", "netns", "delete", h.Name).CombinedOutput(); err != nil {
			n.t.Errorf("ip netns delete %s: %v: %s", h.Name, err, out)
		}
	})
	h.IP("link", "set", "lo", "up")
	return h
}

// killAll kills what still runs in the namespace, in bounded rounds.
func (h *Host) killAll() {
	for range 50 {
		out, _ := exec.Command("ip", "netns", "pids", h.Name).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Link joins host a and host b with a veth pair named aIf in a and bIf in
// b, both up, with the given addresses (CIDR) on each end. IPv6 addresses
// skip duplicate address detection, so they are usable at once.
func (n *Net) Link(a *Host, aIf string, aAddrs []string, b *Host, bIf string, bAddrs []string) {
	n.t.Helper()
	// Made in a's namespace directly: no name is ever taken in the
	// namespace the test runs in.
	a.IP("link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	a.Up(aIf, aAddrs...)
	b.Up(bIf, bAddrs...)
}

// Bridge makes a bridge named name in h, up, with the given addresses.
func (h *Host) Bridge(name string, addrs ...string) {
	h.n.t.Helper()
	h.IP("link", "add", name, "type", "bridge")
	h.Up(name, addrs...)
}

// Switch makes a bridge that stands for a hardware switch: frames cross
// it without passing the host's packet filter. A kernel with br_netfilter
// loaded (Docker loads it, and every new namespace then inherits
// bridge-nf-call-iptables=1) sends every bridged IP frame through
// netfilter's hooks, CPU a real switch never takes from the hosts, and
// twice for a frame that a middlebox on the same switch forwards.
func (h *Host) Switch(name string) {
	h.n.t.Helper()
	h.Bridge(name)
	if _, err := h.Output("sysctl", "-n", "net.bridge.bridge-nf-call-iptables"); err != nil {
		return // no br_netfilter: nothing to turn off
	}
	for _, k := range []string{"iptables", "ip6tables", "arptables"} {
		h.Sysctl("net.bridge.bridge-nf-call-"+k, "0")
	}
}

// Port makes dev a port of bridge br (both in h).
func (h *Host) Port(br, dev string) {
	h.n.t.Helper()
	h.IP("link", "set", dev, "master", br)
}

// Up gives dev the addresses and sets it up.
func (h *Host) Up(dev string, addrs ...string) {
	h.n.t.Helper()
	for _, a := range addrs {
		args := []string{"addr", "add", a, "dev", dev}
		if strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		h.IP(args...)
	}
	h.IP("link", "set", dev, "up")
}

// Route adds a route in h (the arguments of ip route add).
func (h *Host) Route(args ...string) {
	h.n.t.Helper()
	fam := "-4"
	for _, a := range args {
		if strings.Contains(a, ":") {
			fam = "-6"
		}
	}
	h.IP(append([]string{fam, "route", "add"}, args...)...)
}

// Sysctl sets a sysctl in h, e.g. Sysctl("net.ipv4.ip_forward", "1").
func (h *Host) Sysctl(key, value string) {
	h.n.t.Helper()
	h.Run("sysctl", "-q", "-w", key+"="+value)
}

// IP runs ip -n NAME args and fails the test on error.
func (h *Host) IP(args ...string) string {
	h.n.t.Helper()
	return run(h.n.t, "ip", append([]string{"-n", h.Name}, args...)...)
}

// Run runs a program in h, waits for it (at most a minute) and returns
// its output; the test fails when it fails.
func (h *Host) Run(args ...string) string {
	h.n.t.Helper()
	return run(h.n.t, "ip", append([]string{"netns", "exec", h.Name}, args...)...)
}

// Output runs a program in h and returns its standard output and error.
func (h *Host) Output(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Command returns the command that runs a program in h, for the caller to
// start. Whatever is still running in h when the test ends is killed.
func (h *Host) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.Name}, args...)...)
}

// Do runs f on a thread that is in h's namespace: sockets that f opens
// belong to h for good, wherever they are used afterwards.
func (h *Host) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns.Get: %v", err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(h.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: %v", h.Name, err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %v", h.Name, err)
	}
	defer func() {
		// A thread that cannot go back stays locked and dies with
		// the goroutine instead of serving others in the wrong
		// namespace.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return f()
}

// Handle opens h's namespace (for netlink.NewHandleAt); the caller closes
// it.
func (h *Host) Handle() (netns.NsHandle, error) { return netns.GetFromName(h.Name) }

// Dial connects from h to addr ("tcp" or "udp" networks).
func (h *Host) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	return c, err
}

// WaitTCP waits (at most 10 s) until addr accepts connections from h.
func (h *Host) WaitTCP(addr string) {
	h.n.t.Helper()
	var err error
	for range 200 {
		var c net.Conn
		if c, err = h.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.n.t.Fatalf("%s: nothing accepts on %s: %v", h.Name, addr, err)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
