package acl

import (
	"net/netip"
	"strings"
	"testing"
)

func mustEntry(t *testing.T, s string) Entry {
	t.Helper()
	e, err := ParseEntry(strings.Fields(s))
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return e
}

func TestMatch(t *testing.T) {
	a := netip.MustParseAddr
	cc := func(addr netip.Addr) string {
		if addr == a("192.0.2.7") {
			return "se"
		}
		return ""
	}
	for _, tc := range []struct {
		name    string
		entries []string
		addr    netip.Addr
		want    bool
	}{
		{"empty permits", nil, a("1.2.3.4"), true},
		{"permit match", []string{"permit 127.0.0.1"}, a("127.0.0.1"), true},
		{"all-permit denies others", []string{"permit 127.0.0.1"}, a("127.0.0.2"), false},
		{"deny then rest permitted", []string{"deny 127.0.0.2"}, a("127.0.0.1"), true},
		{"masked on entry", []string{"permit 127.0.0.1 255.0.0.0"}, a("127.8.9.10"), true},
		{"first match wins", []string{"deny 10.0.0.0 255.0.0.0", "permit 10.1.0.0 255.255.0.0"}, a("10.1.2.3"), false},
		{"no match: opposite of last", []string{"deny 10.0.0.0 255.0.0.0", "permit 11.0.0.0 255.0.0.0"}, a("12.0.0.1"), false},
		{"v6 prefix", []string{"permit 2001:db8::/32"}, a("2001:db8::5"), true},
		{"v6 outside", []string{"permit 2001:db8::/32"}, a("2001:db9::5"), false},
		{"v4 entries skipped for v6", []string{"deny 127.0.0.1"}, a("::1"), true},
		{"v4-mapped client is v4", []string{"permit 127.0.0.1"}, a("::ffff:127.0.0.1"), true},
		{"country", []string{"deny country SE"}, a("192.0.2.7"), false},
		{"country other", []string{"deny country SE"}, a("192.0.2.8"), true},
		{"unix peer passes", []string{"deny 0.0.0.0 0.0.0.0"}, netip.Addr{}, true},
	} {
		var l List
		for _, e := range tc.entries {
			l = append(l, mustEntry(t, e))
		}
		if got := l.Match(tc.addr, cc); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"permit 10.1.2.3 255.0.0.0": "permit 10.0.0.0 255.0.0.0",
		"deny 1.2.3.4":              "deny 1.2.3.4 255.255.255.255",
		"deny 2001:db8::1/32":       "deny 2001:db8::/32",
		"permit ::1":                "permit ::1/128",
		"permit country se":         "permit country SE",
	} {
		if got := mustEntry(t, in).String(); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{"permit 10.0.0.0 255.0.0.0", "deny ::1/64", "permit country SE", "deny 1.2.3.4", "permit", "deny ::/129"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEntry(strings.Fields(s))
		if err != nil {
			return
		}
		back, err := ParseEntry(strings.Fields(e.String()))
		if err != nil || back != e {
			t.Fatalf("%q -> %q -> %+v, %v", s, e.String(), back, err)
		}
		_ = List{e}.Match(netip.MustParseAddr("10.0.0.1"), nil)
	})
}
