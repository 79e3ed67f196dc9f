package config

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/pen-lb/pen-appliance/pen/acl"
)

// Defaults from Pen 0.35.0.
const (
	DefaultBlacklist   = 30   // -b
	DefaultTimeout     = 3    // -t (pen.1 says 5; the code uses 3)
	DefaultClientsMax  = 2048 // -c
	DefaultConnMax     = 500  // -x
	DefaultPendingMax  = 100
	DefaultMultiAccept = 100 // -m
	DefaultListenQueue = 500 // -q
	DefaultRecent      = 300 // seconds for "recent" without argument
	DefaultRenegotiate = 3600
)

// The routing table and rule priority of transparent mode's policy
// routing (transparent_table, transparent_priority; see
// docs/TRANSPARENT.md): clear of the kernel's tables (252 to 255), of the
// table 100 that set-up guides use, and between the local table's rule (0)
// and the main table's (32766).
const (
	DefaultTransparentTable    = 736
	DefaultTransparentPriority = 7360
	MaxTransparentPriority     = 32765
)

// Limits of the configuration, so that every file write can produce is
// one that pen can read back.
const (
	// MaxServers is the number of server slots (server 0..MaxServers-1).
	MaxServers = 1 << 16
	// MaxACLEntries bounds the entries of one access list. Pen has no
	// bound; one is needed so that a configuration has a largest size.
	MaxACLEntries = 10000
	// MaxLineSize bounds one line of a configuration file or upload.
	MaxLineSize = 64 << 10
	// MaxConfigSize is the largest configuration file or upload pen
	// reads. The largest configuration write can produce (every server
	// slot with the longest address and numbers, every access list full)
	// is about 21 MB; TestMaxConfigFits checks that it fits.
	MaxConfigSize = 32 << 20
)

// FastClose says when a half-closed connection is closed at once (Pen's
// tcp_fastclose).
type FastClose uint8

const (
	FastCloseOff  FastClose = 0
	FastCloseUp   FastClose = 4 // after the server closes (Pen's CS_CLOSED_UP)
	FastCloseDown FastClose = 8 // after the client closes (CS_CLOSED_DOWN)
	FastCloseBoth FastClose = FastCloseUp | FastCloseDown
)

func (f FastClose) String() string {
	switch f {
	case FastCloseUp:
		return "up"
	case FastCloseDown:
		return "down"
	case FastCloseBoth:
		return "both"
	}
	return "off"
}

// Host is where a server lives: an IP address or a unix socket path.
// The zero Host is an empty slot.
type Host struct {
	IP   netip.Addr
	Path string
}

// IsUnix reports whether h is a unix socket path.
func (h Host) IsUnix() bool { return h.Path != "" }

// IsZero reports whether h was never set.
func (h Host) IsZero() bool { return !h.IP.IsValid() && h.Path == "" }

// String formats h as Pen's pen_ntoa does: the address or the path. An
// empty slot shows as 0.0.0.0 (Pen would print garbage there).
func (h Host) String() string {
	switch {
	case h.Path != "":
		return h.Path
	case h.IP.IsValid():
		return h.IP.String()
	}
	return "0.0.0.0"
}

// Server is one server slot.
type Server struct {
	Host   Host
	Port   int // for a unix socket Pen reports 1
	Max    int // soft connection limit, 0 = none
	Hard   int // hard limit for returning clients
	Weight int
	Prio   int
	ACL    int // server N acl A: clients allowed to use this server
	// Drain (server N drain 1): the server takes no new connections,
	// the open ones finish. pen only; Pen ignores the key.
	Drain bool
	// Name is a short note (name server N TEXT), shown by the admin UI;
	// it changes nothing. pen only; Pen ignores the command.
	Name string
	// Check is the server's active health check (check N ...), run by
	// the engine. pen only; Pen ignores the command.
	Check Check

	id uint64 // identity of the slot, kept while it is edited
}

var lastServerID atomic.Uint64

func newServerID() uint64 { return lastServerID.Add(1) }

// ID identifies a server slot across changes: editing a slot keeps its ID,
// removing a slot (no server N) moves later slots down with their IDs, so
// the engine can carry each server's counters along. Zero means a slot
// made outside this package; the engine then matches by position.
func (s Server) ID() uint64 { return s.id }

// WithID returns s with a fresh identity, for servers made by ParseServer
// from the command line.
func (s Server) WithID() Server {
	s.id = newServerID()
	return s
}

// WithIDOf returns s with the identity of the slot old held, or a fresh
// one when old is an empty slot: the server that takes a slot's place
// keeps its counters.
func (s Server) WithIDOf(old Server) Server {
	if old.id == 0 {
		return s.WithID()
	}
	s.id = old.id
	return s
}

// Unused reports whether the slot holds no server: never set, address
// 0.0.0.0 (Pen's way of removing a server), or port 0.
func (s Server) Unused() bool {
	if s.Host.IsUnix() {
		return false
	}
	return !s.Host.IP.IsValid() || s.Host.IP.IsUnspecified() || s.Port == 0
}

// Addr is the server's network address for dialing (not for unix sockets).
func (s Server) Addr() netip.AddrPort {
	return netip.AddrPortFrom(s.Host.IP, uint16(s.Port))
}

// ReportedPort is the port as Pen reports it (1 for a unix socket).
func (s Server) ReportedPort() int {
	if s.Host.IsUnix() {
		return 1
	}
	return s.Port
}

// Spec formats s in the command-line server syntax
// host[:port[:max[:hard[:weight[:prio]]]]], brackets around IPv6.
func (s Server) Spec() string {
	h := s.Host.String()
	if s.Host.IP.Is6() && !s.Host.IP.Is4In6() {
		h = "[" + h + "]"
	}
	if s.Host.IsUnix() {
		return h
	}
	out := h + ":" + strconv.Itoa(s.Port)
	if s.Max != 0 || s.Hard != 0 || s.Weight != 0 || s.Prio != 0 {
		out += ":" + strconv.Itoa(s.Max) + ":" + strconv.Itoa(s.Hard) + ":" + strconv.Itoa(s.Weight) + ":" + strconv.Itoa(s.Prio)
	}
	return out
}

// TLS holds the TLS termination settings (Pen's -E/-K/-G/-A/-Z/-R/-L and
// ssl_* commands).
type TLS struct {
	Cert, Key     string // PEM files; Key defaults to Cert
	CAFile, CADir string // for verifying client certificates
	Compat        bool   // -Z
	RequireClient bool   // -R
	Protocol      string // -L: ssl23 (default), ssl2, ssl3, tls1
	Ciphers       string
	Options       []string // ssl_option names, in order given
	SNIPath       string
	OCSPResponse  string
	Renegotiate   int // ssl_client_renegotiation_interval, seconds
}

// Enabled reports whether TLS termination is on (Pen: giving -E).
func (t TLS) Enabled() bool { return t.Cert != "" }

// Config is the whole configuration of a running pen. Use Default for a
// starting point and Clone before changing a Config someone else holds.
type Config struct {
	Listen    string // listen spec; "" = not set
	UDP       bool   // -U
	Control   string // control listener spec; "" = none
	Servers   []Server
	Emergency *Server // -e
	Abuse     *Server // -B
	ACLs      [acl.Lists]acl.List
	// ACLNames are notes on the access lists (name acl N TEXT).
	ACLNames   [acl.Lists]string
	ClientACL  int
	ControlACL int
	TarpitACL  int // -1 = off

	Blacklist   int // seconds
	Timeout     int // connect timeout, seconds
	Tracking    int // client tracking time, seconds, 0 = forever
	Debug       int
	ASCII       bool
	Hash        bool
	RoundRobin  bool
	Stubborn    bool
	Weight      bool
	Prio        bool
	HTTP        bool // X-Forwarded-For
	Log         string
	WebStats    string
	FastClose   FastClose
	NoDelay     bool
	IdleTimeout int
	PendingMax  int
	Idlers      int
	Keepalive   bool
	Transparent bool
	Source      netip.Addr
	Dummy       bool
	Peek        bool
	AbortOnErr  bool
	ClientsMax  int
	ConnMax     int
	MultiAccept int
	ListenQueue int
	DSRIf       string
	DSRIP       string
	TarpitIf    string // tarpit_acl's interface without dsr_if
	TLS         TLS
	Admin       Admin
	AutoWrite   bool // write every accepted change back to the -F file

	// Loops is the number of event loops (loops N): 0, the default, is
	// one per CPU; 1 serves every connection on one core, as Pen does.
	Loops int
	// KernelRelay is how plain TCP connections that need no user-space
	// work go to the kernel (kernel_relay; docs/SPLICE.md).
	KernelRelay RelayMode
	// NoUDPKernel keeps every UDP flow in pen (no udp_kernel); by
	// default the kernel carries a flow once pen has placed it.
	NoUDPKernel bool

	// Where transparent mode's policy routing goes; 0 is the default.
	TransparentTable    int
	TransparentPriority int
}

// Admin holds the settings of the admin UI and /metrics listener, and
// autowrite. Pen has none of these; they follow its style.
type Admin struct {
	Listen   string // admin_listen: listen spec; "" = off
	Redirect string // admin_redirect: plain HTTP listener that redirects to Listen
	TLSCert  string // admin_tls CERT [KEY]
	TLSKey   string
	ACL      int // admin_acl: -1 = everyone
	// admin_password_file FILE [FILE...]: the password is read from the
	// first of these files that exists (plain text, like gokrazy's
	// gokr-pw.txt, or a bcrypt hash); a new password is written to the
	// first one.
	PasswordFiles []string
}

// Default returns Pen's defaults.
func Default() *Config {
	return &Config{
		TarpitACL:   -1,
		Blacklist:   DefaultBlacklist,
		Timeout:     DefaultTimeout,
		PendingMax:  DefaultPendingMax,
		ClientsMax:  DefaultClientsMax,
		ConnMax:     DefaultConnMax,
		MultiAccept: DefaultMultiAccept,
		ListenQueue: DefaultListenQueue,
		TLS:         TLS{Protocol: "ssl23", Renegotiate: DefaultRenegotiate},
		Admin:       Admin{ACL: -1},

		TransparentTable:    DefaultTransparentTable,
		TransparentPriority: DefaultTransparentPriority,
	}
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	n := *c
	n.Servers = slices.Clone(c.Servers)
	if c.Emergency != nil {
		e := *c.Emergency
		n.Emergency = &e
	}
	if c.Abuse != nil {
		a := *c.Abuse
		n.Abuse = &a
	}
	for i := range c.ACLs {
		n.ACLs[i] = slices.Clone(c.ACLs[i])
	}
	n.TLS.Options = slices.Clone(c.TLS.Options)
	return &n
}

// Equal reports whether c and o are the same configuration. Tables that
// share their storage are equal without a look at their entries: most
// changes leave the server table and the access lists alone.
func (c *Config) Equal(o *Config) bool {
	if !sameSlice(c.Servers, o.Servers) || !slices.Equal(c.TLS.Options, o.TLS.Options) ||
		!slices.Equal(c.Admin.PasswordFiles, o.Admin.PasswordFiles) ||
		!sameServer(c.Emergency, o.Emergency) || !sameServer(c.Abuse, o.Abuse) {
		return false
	}
	for i := range c.ACLs {
		if !sameSlice(c.ACLs[i], o.ACLs[i]) {
			return false
		}
	}
	// What is left is a few dozen scalars.
	a, b := *c, *o
	for _, x := range []*Config{&a, &b} {
		x.Servers, x.ACLs, x.TLS.Options, x.Admin.PasswordFiles, x.Emergency, x.Abuse = nil, [acl.Lists]acl.List{}, nil, nil, nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// sameSlice compares two tables, at once when they share storage.
func sameSlice[E comparable](a, b []E) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

func sameServer(a, b *Server) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// SetServer stores s in slot i, growing the table as Pen does.
func (c *Config) SetServer(i int, s Server) {
	for len(c.Servers) <= i {
		c.Servers = append(c.Servers, Server{})
	}
	c.Servers[i] = s
}

// Mode is Pen's reply to the "mode" command.
func (c *Config) Mode() string {
	no := func(b bool) string {
		if b {
			return ""
		}
		return "no "
	}
	return no(c.Hash) + "hash " + no(c.RoundRobin) + "roundrobin " + no(c.Stubborn) + "stubborn " + no(c.Weight) + "weight " + no(c.Prio) + "prio\n"
}

// MaxInt is the largest number a command takes: Pen's numbers are C ints,
// and a configuration pen writes must mean the same to Pen.
const MaxInt = math.MaxInt32

// Bounds of the client and connection tables and of the idle upstream
// connections held, which are allocated to these sizes.
const (
	MaxTable  = 1 << 20
	MaxIdlers = 10000
)

// MaxLoops bounds the loops command (event loops, one per core).
const MaxLoops = 256

// MaxSeconds is the longest time a command takes, about 68 years; times
// are seconds, and the longest one times time.Second must fit a
// time.Duration (blacklist 9223372037 overflowed it and blacklisted
// nothing).
const MaxSeconds = MaxInt

// checkInt refuses n outside lo..hi; unit follows the number in the error.
func checkInt(what string, n, lo, hi int, unit string) error {
	if n < lo || n > hi {
		return fmt.Errorf("%s: %d%s out of range (%d..%d)", what, n, unit, lo, hi)
	}
	return nil
}

// CheckNumbers refuses numbers out of the range the commands accept, for
// settings made directly (Update: the command-line flags).
func (c *Config) CheckNumbers() error {
	for _, v := range []struct {
		name   string
		n      int
		lo, hi int
		unit   string
	}{
		{"blacklist", c.Blacklist, 0, MaxSeconds, " seconds"},
		{"timeout", c.Timeout, 1, MaxSeconds, " seconds"},
		{"tracking", c.Tracking, 0, MaxSeconds, " seconds"},
		{"idle_timeout", c.IdleTimeout, 0, MaxSeconds, " seconds"},
		{"ssl_client_renegotiation_interval", c.TLS.Renegotiate, 0, MaxSeconds, " seconds"},
		{"debug", c.Debug, 0, MaxInt, ""},
		{"clients_max", c.ClientsMax, 1, MaxTable, ""},
		{"conn_max", c.ConnMax, 1, MaxTable, ""},
		{"pending_max", c.PendingMax, 1, MaxInt, ""},
		{"multi_accept", c.MultiAccept, 1, MaxInt, ""},
		{"listen_queue", c.ListenQueue, 1, MaxInt, ""},
		{"idlers", c.Idlers, 0, MaxIdlers, ""},
		{"loops", c.Loops, 0, MaxLoops, ""},
		{"transparent_table", c.TransparentTable, 0, MaxInt, ""},
		{"transparent_priority", c.TransparentPriority, 0, MaxTransparentPriority, ""},
	} {
		if err := checkInt(v.name, v.n, v.lo, v.hi, v.unit); err != nil {
			return err
		}
	}
	return nil
}

// RelayMode says which plain TCP connections pen hands to the kernel.
type RelayMode uint8

const (
	// RelaySplice, the default (kernel_relay splice): connections that
	// can be spliced are; the others stay with pen.
	RelaySplice RelayMode = iota
	// RelayAll (kernel_relay): as RelaySplice, and the kernel's sockmap
	// relay takes the connections that cannot be spliced.
	RelayAll
	// RelayOff (no kernel_relay): pen carries every connection itself.
	RelayOff
)

// Splice reports whether connections may be spliced.
func (m RelayMode) Splice() bool { return m != RelayOff }

// Sockmap reports whether the sockmap relay takes what cannot be spliced.
func (m RelayMode) Sockmap() bool { return m == RelayAll }
