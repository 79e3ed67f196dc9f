// Package acl implements Pen's access lists: ten numbered lists of entries,
// each an IPv4 address with a netmask, an IPv6 prefix, or a country code.
//
// Matching follows Pen: entries are checked in order and the first match
// decides; when nothing matches, the answer is the opposite of the last
// entry's permit, so an empty list permits everybody and a list of permits
// denies everybody else. Unlike Pen, an entry's address is masked when the
// entry is made, so "permit 127.0.0.1 255.0.0.0" means 127.0.0.0/8 (Pen
// compares against the unmasked address and never matches such an entry).
package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Lists is the number of access lists (Pen's ACLS_MAX).
const Lists = 10

// Kind says what an entry matches.
type Kind uint8

const (
	_       Kind = iota // zero value is invalid
	IPv4                // address and netmask
	IPv6                // address prefix
	Country             // two-letter country code
)

// Entry is one line of an access list.
type Entry struct {
	Permit  bool
	Kind    Kind
	Addr    netip.Addr // masked network address (IPv4, IPv6)
	Mask    [4]byte    // IPv4 netmask; need not be contiguous, as in Pen
	Bits    int        // IPv6 prefix length
	Country string     // upper-case ISO 3166 code (Country)
}

// CountryFunc maps an address to its two-letter country code, or "" when
// unknown. A nil CountryFunc never matches a country entry.
type CountryFunc func(netip.Addr) string

// List is one access list.
type List []Entry

// Match reports whether addr is permitted by l. An invalid addr stands for
// a unix-socket peer, which Pen always permits.
func (l List) Match(addr netip.Addr, country CountryFunc) bool {
	if !addr.IsValid() {
		return true
	}
	addr = addr.Unmap()
	permit := false
	looked := false
	cc := ""
	for i := range l {
		e := &l[i]
		permit = e.Permit
		switch e.Kind {
		case IPv4:
			if addr.Is4() && matchMask4(addr, e.Addr, e.Mask) {
				return permit
			}
		case IPv6:
			if addr.Is6() && e.Addr.Is6() {
				p := netip.PrefixFrom(e.Addr, e.Bits)
				if p.Contains(addr) {
					return permit
				}
			}
		case Country:
			if country == nil {
				break
			}
			if !looked {
				cc = strings.ToUpper(country(addr))
				looked = true
			}
			if cc != "" && cc == e.Country {
				return permit
			}
		}
	}
	return !permit
}

func matchMask4(addr, network netip.Addr, mask [4]byte) bool {
	a := addr.As4()
	n := network.As4()
	for i := 0; i < 4; i++ {
		if a[i]&mask[i] != n[i] {
			return false
		}
	}
	return true
}

// String returns the entry as Pen's write command emits it after
// "acl N ": "permit 10.0.0.0 255.0.0.0", "deny 2001:db8::/32",
// "permit country SE".
func (e Entry) String() string {
	pd := "deny"
	if e.Permit {
		pd = "permit"
	}
	switch e.Kind {
	case IPv4:
		return pd + " " + e.Addr.String() + " " + netip.AddrFrom4(e.Mask).String()
	case IPv6:
		return pd + " " + e.Addr.String() + "/" + strconv.Itoa(e.Bits)
	case Country:
		return pd + " country " + e.Country
	}
	return pd + " ?"
}

// ErrSyntax is wrapped by every error ParseEntry returns.
var ErrSyntax = errors.New("acl syntax")

// ParseEntry parses the words after "acl N" of Pen's command:
//
//	permit|deny IPv4 [MASK]
//	permit|deny IPv6[/LEN]
//	permit|deny country CC
//
// The address is masked, so the entry means what its mask says.
func ParseEntry(words []string) (Entry, error) {
	if len(words) < 2 {
		return Entry{}, fmt.Errorf("%w: expected permit|deny and an address", ErrSyntax)
	}
	var e Entry
	switch words[0] {
	case "permit":
		e.Permit = true
	case "deny":
	default:
		return Entry{}, fmt.Errorf("%w: expected permit|deny, got %q", ErrSyntax, words[0])
	}
	rest := words[1:]
	switch {
	case rest[0] == "country":
		if len(rest) != 2 {
			return Entry{}, fmt.Errorf("%w: expected a country code after 'country'", ErrSyntax)
		}
		cc := strings.ToUpper(rest[1])
		if len(cc) != 2 || cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' || cc[1] > 'Z' {
			return Entry{}, fmt.Errorf("%w: country code %q is not two letters", ErrSyntax, rest[1])
		}
		e.Kind, e.Country = Country, cc
	case strings.Contains(rest[0], ":"):
		if len(rest) != 1 {
			return Entry{}, fmt.Errorf("%w: unexpected %q after IPv6 prefix", ErrSyntax, rest[1])
		}
		s, bits := rest[0], 128
		if i := strings.IndexByte(s, '/'); i >= 0 {
			n, err := strconv.Atoi(s[i+1:])
			if err != nil || n < 0 || n > 128 {
				return Entry{}, fmt.Errorf("%w: bad IPv6 prefix length %q", ErrSyntax, s[i+1:])
			}
			s, bits = s[:i], n
		}
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return Entry{}, fmt.Errorf("%w: %q is not an IPv6 address", ErrSyntax, s)
		}
		p, _ := a.Prefix(bits)
		e.Kind, e.Addr, e.Bits = IPv6, p.Addr(), bits
	default:
		if len(rest) > 2 {
			return Entry{}, fmt.Errorf("%w: unexpected %q after netmask", ErrSyntax, rest[2])
		}
		a, err := parseIPv4(rest[0])
		if err != nil {
			return Entry{}, fmt.Errorf("%w: bogus address %q", ErrSyntax, rest[0])
		}
		mask := [4]byte{255, 255, 255, 255}
		if len(rest) == 2 {
			m, err := parseIPv4(rest[1])
			if err != nil {
				return Entry{}, fmt.Errorf("%w: bogus mask %q", ErrSyntax, rest[1])
			}
			mask = m.As4()
		}
		b := a.As4()
		for i := range b {
			b[i] &= mask[i]
		}
		e.Kind, e.Addr, e.Mask = IPv4, netip.AddrFrom4(b), mask
	}
	return e, nil
}

// parseIPv4 accepts dotted quads only. (Pen's inet_aton also takes forms
// like "10.1" or "0x7f.1"; nobody writes ACLs that way and netip refuses
// them, so we do too.)
func parseIPv4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if !a.Is4() {
		return netip.Addr{}, errors.New("not IPv4")
	}
	return a, nil
}
