package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Resolver turns a host name into one address, as Pen's pen_aton does with
// getaddrinfo (the first answer wins). Literal addresses never reach it.
type Resolver func(ctx context.Context, host string) (netip.Addr, error)

// ResolveTimeout bounds one name lookup, so that a command naming a host
// whose DNS does not answer cannot hang the control socket.
const ResolveTimeout = 5 * time.Second

// DefaultResolver looks names up with the system's resolver.
func DefaultResolver(ctx context.Context, host string) (netip.Addr, error) {
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("no address for %s", host)
	}
	return ips[0].Unmap(), nil
}

// ResolveHost turns Pen's address syntax into a Host: a name containing '/'
// is a unix socket path, a literal IP is used as it is, anything else is
// looked up.
func ResolveHost(r Resolver, name string) (Host, error) {
	if strings.Contains(name, "/") {
		if len(name) > 107 {
			return Host{}, fmt.Errorf("unix socket path %q is longer than 107 bytes", name)
		}
		return Host{Path: name}, nil
	}
	if name == "" {
		return Host{}, errors.New("empty address")
	}
	if a, err := netip.ParseAddr(name); err == nil {
		return Host{IP: a.Unmap()}, nil
	}
	if !validHostname(name) {
		return Host{}, fmt.Errorf("unknown or invalid address [%s]", name)
	}
	if r == nil {
		r = DefaultResolver
	}
	ctx, cancel := context.WithTimeout(context.Background(), ResolveTimeout)
	defer cancel()
	a, err := r(ctx, name)
	if err != nil {
		return Host{}, fmt.Errorf("unknown or invalid address [%s]: %v", name, err)
	}
	return Host{IP: a}, nil
}

// validHostname accepts DNS names (letters, digits, '-', '_', '.'), so that
// garbage is refused without asking a resolver.
func validHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// ParsePort accepts a number or a service name (getservbyname in Pen).
// Port 0 is allowed: it marks a server slot that is not configured.
func ParsePort(s string, udp bool) (int, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > 65535 {
			return 0, fmt.Errorf("port %d out of range", n)
		}
		return n, nil
	}
	network := "tcp"
	if udp {
		network = "udp"
	}
	n, err := net.LookupPort(network, s)
	if err != nil {
		return 0, fmt.Errorf("unknown port %q", s)
	}
	return n, nil
}

func atoi(what, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a number", what, s)
	}
	return n, nil
}

// ParseServer parses the command-line server syntax
// host[:port[:max[:hard[:weight[:prio]]]]] (IPv6 in brackets), used by the
// positional arguments, -e and -B. A missing port is defaultPort (Pen uses
// the listen port); missing numbers are 0.
func ParseServer(spec string, defaultPort int, udp bool, r Resolver) (Server, error) {
	var host string
	var rest []string
	if strings.HasPrefix(spec, "[") {
		end := strings.IndexByte(spec, ']')
		if end < 0 {
			return Server{}, fmt.Errorf("server %q: missing ']'", spec)
		}
		host = spec[1:end]
		tail := spec[end+1:]
		if tail != "" {
			if tail[0] != ':' {
				return Server{}, fmt.Errorf("server %q: expected ':' after ']'", spec)
			}
			rest = strings.Split(tail[1:], ":")
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return Server{}, fmt.Errorf("server %q: %q is not an IPv6 address", spec, host)
		}
	} else if strings.Contains(spec, "/") {
		// A unix socket path; Pen's sscanf would stop at the first ':'.
		parts := strings.Split(spec, ":")
		host, rest = parts[0], parts[1:]
	} else {
		parts := strings.Split(spec, ":")
		host, rest = parts[0], parts[1:]
	}
	if len(rest) > 5 {
		return Server{}, fmt.Errorf("server %q: too many fields (host:port:max:hard:weight:prio)", spec)
	}
	h, err := ResolveHost(r, host)
	if err != nil {
		return Server{}, fmt.Errorf("server %q: %w", spec, err)
	}
	s := Server{Host: h, Port: defaultPort}
	if len(rest) > 0 {
		if s.Port, err = ParsePort(rest[0], udp); err != nil {
			return Server{}, fmt.Errorf("server %q: %w", spec, err)
		}
	}
	nums := []*int{&s.Max, &s.Hard, &s.Weight, &s.Prio}
	names := []string{"max", "hard", "weight", "prio"}
	for i, f := range rest[min(len(rest), 1):] {
		n, err := atoi(names[i], f)
		if err != nil {
			return Server{}, fmt.Errorf("server %q: %w", spec, err)
		}
		if n < 0 {
			return Server{}, fmt.Errorf("server %q: %s must not be negative", spec, names[i])
		}
		if err := checkInt(names[i], n, 0, MaxInt, ""); err != nil {
			return Server{}, fmt.Errorf("server %q: %w", spec, err)
		}
		*nums[i] = n
	}
	if h.IsUnix() {
		s.Port = 1
	}
	return s, nil
}

// ListenPort is the port of a listen spec, which server specs without a
// port inherit (Pen uses the listen port); 0 for a unix socket, no spec, or
// a spec that does not parse.
func ListenPort(spec string, udp bool) int {
	if spec == "" || strings.Contains(spec, "/") {
		return 0
	}
	if i := strings.LastIndexByte(spec, ':'); i >= 0 {
		spec = spec[i+1:]
	}
	p, err := ParsePort(spec, udp)
	if err != nil {
		return 0
	}
	return p
}

// ClientName is how replies, the status page and the request log name a
// client: its address, or "unix" for a unix-socket client.
func ClientName(a netip.Addr) string {
	if !a.IsValid() {
		return "unix"
	}
	return a.String()
}

// Listen is a parsed listen spec.
type Listen struct {
	Path string         // unix socket, if set
	Addr netip.AddrPort // otherwise
}

// String gives the address to show in messages.
func (l Listen) String() string {
	if l.Path != "" {
		return l.Path
	}
	return l.Addr.String()
}

// ParseListen parses Pen's listen spec: "port", "host:port" split at the
// last ':' (so "::1:8080" and ":::8080" work), or a path containing '/'
// for a unix socket. "[::1]:8080" and ":8080" are accepted too.
func ParseListen(spec string, udp bool, r Resolver) (Listen, error) {
	if spec == "" {
		return Listen{}, errors.New("empty listen address")
	}
	if strings.Contains(spec, "/") {
		if len(spec) > 107 {
			return Listen{}, fmt.Errorf("unix socket path %q is longer than 107 bytes", spec)
		}
		return Listen{Path: spec}, nil
	}
	host, port := "0.0.0.0", spec
	if i := strings.LastIndexByte(spec, ':'); i >= 0 {
		host, port = spec[:i], spec[i+1:]
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
		if host == "" {
			host = "0.0.0.0"
		}
	}
	p, err := ParsePort(port, udp)
	if err != nil {
		return Listen{}, fmt.Errorf("listen %q: %w", spec, err)
	}
	if p < 1 {
		return Listen{}, fmt.Errorf("listen %q: port %d out of range", spec, p)
	}
	h, err := ResolveHost(r, host)
	if err != nil || h.IsUnix() {
		return Listen{}, fmt.Errorf("listen %q: can't convert address '%s'", spec, host)
	}
	return Listen{Addr: netip.AddrPortFrom(h.IP, uint16(p))}, nil
}

// checkLogTarget accepts a file name, or host:port for logging over UDP
// (Pen's rule: a ':' in a name that does not start with '/').
func checkLogTarget(s string) error {
	if !strings.Contains(s, ":") || strings.HasPrefix(s, "/") {
		return nil
	}
	i := strings.LastIndexByte(s, ':')
	if i == 0 {
		return fmt.Errorf("log: bogus host in %q", s)
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("log: bogus port in %q", s)
	}
	return nil
}

// ParseDSRListen parses the listen spec of DSR mode: IPv4[:port], port 0
// or none meaning every port.
func ParseDSRListen(spec string) (netip.AddrPort, error) {
	host, port, found := strings.Cut(spec, ":")
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("direct server return needs an IPv4 address, got %q", host)
	}
	p := 0
	if found {
		if p, err = strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
		}
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}
