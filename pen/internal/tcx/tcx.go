//go:build linux

// Package tcx keeps BPF programs on the TCX hooks of the interfaces that
// traffic turns up on, and knows which interface holds each of this
// host's addresses. Its users (pen/splice, and udp_kernel in pen/proxy)
// follow connections onto whichever interfaces their peers use, so they
// attach on first use, once per interface, and remember a refusal rather
// than ask the kernel again for every connection.
package tcx

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Hook is a program and the hook it goes on (ebpf.AttachTCXIngress or
// ebpf.AttachTCXEgress).
type Hook struct {
	Program *ebpf.Program
	Attach  ebpf.AttachType
}

// Attacher puts its hooks on an interface the first time it is asked
// to. Safe for concurrent use: mu guards the maps.
type Attacher struct {
	hooks  []Hook
	mu     sync.Mutex
	links  map[int][]link.Link
	failed map[int]error
}

// NewAttacher makes an Attacher for hooks, which it attaches in order.
func NewAttacher(hooks ...Hook) *Attacher {
	return &Attacher{hooks: hooks, links: map[int][]link.Link{}, failed: map[int]error{}}
}

// Attach puts every hook on interface ifindex unless they are there. When
// one is refused, those already attached there come off again, and
// Attach returns the same error for that interface from then on.
func (a *Attacher) Attach(ifindex int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.links[ifindex]; ok {
		return nil
	}
	if err, ok := a.failed[ifindex]; ok {
		return err
	}
	var ls []link.Link
	for _, h := range a.hooks {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: h.Program, Attach: h.Attach})
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			a.failed[ifindex] = err
			return err
		}
		ls = append(ls, l)
	}
	a.links[ifindex] = ls
	return nil
}

// Close takes every hook off every interface.
func (a *Attacher) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for idx, ls := range a.links {
		for _, l := range ls {
			l.Close()
		}
		delete(a.links, idx)
	}
}

// Addrs maps this host's addresses to the interfaces that hold them, as
// read at most MaxAge ago. Safe for concurrent use: mu guards the rest.
type Addrs struct {
	MaxAge time.Duration

	mu   sync.Mutex
	snap Snapshot
	read time.Time
}

// Snapshot is the host's addresses and their interfaces at one moment.
type Snapshot struct {
	byAddr map[netip.Addr]int
	lo     int
}

// Get returns the host's addresses, read again when the last reading is
// older than MaxAge or lacks one of own (addresses the caller knows to be
// this host's, such as a socket's local address).
func (a *Addrs) Get(own ...netip.Addr) (Snapshot, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fresh := a.snap.byAddr != nil && time.Since(a.read) < a.MaxAge
	for _, ad := range own {
		if a.snap.Index(ad) == 0 {
			fresh = false
		}
	}
	if !fresh {
		s, err := readAddrs()
		if err != nil {
			return Snapshot{}, err
		}
		a.snap, a.read = s, time.Now()
	}
	return a.snap, nil
}

func readAddrs() (Snapshot, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{byAddr: map[netip.Addr]int{}}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 && s.lo == 0 {
			s.lo = ifi.Index
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if n, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					s.byAddr[ip.Unmap()] = ifi.Index
				}
			}
		}
	}
	return s, nil
}

// Index is the interface that holds ad (the loopback interface for any
// loopback address), or 0 when ad is not this host's (or, for a loopback
// address, when the host has no loopback interface).
func (s Snapshot) Index(ad netip.Addr) int {
	if ad.IsLoopback() {
		return s.lo
	}
	return s.byAddr[ad.Unmap()]
}

// Local reports whether ad is one of this host's addresses.
func (s Snapshot) Local(ad netip.Addr) bool { return s.Index(ad) != 0 }

// Loopback is the loopback interface's index, 0 when there is none.
func (s Snapshot) Loopback() int { return s.lo }
