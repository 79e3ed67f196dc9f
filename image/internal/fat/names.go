package fat

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
)

// shortName is an 8.3 directory entry name as stored on disk: 8 bytes of
// base name and 3 bytes of extension, both padded with spaces.
type shortName [11]byte

func (s shortName) String() string {
	base := strings.TrimRight(string(s[:8]), " ")
	ext := strings.TrimRight(string(s[8:]), " ")
	if ext == "" {
		return base
	}
	return base + "." + ext
}

// checksum is the checksum over the short name that every long file name
// entry belonging to it carries.
func (s shortName) checksum() byte {
	var sum byte
	for _, c := range s {
		sum = (sum>>1 | sum<<7) + c
	}
	return sum
}

// validLongName reports whether name may be used as a long file name.
func validLongName(name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("invalid file name %q", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`"*/:<>?\|`, r) {
			return fmt.Errorf("file name %q contains %q, which FAT does not allow", name, r)
		}
	}
	if n := len(utf16.Encode([]rune(name))); n > 255 {
		return fmt.Errorf("file name %q is %d UTF-16 units long, more than 255", name, n)
	}
	if strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") {
		return fmt.Errorf("file name %q ends in a dot or space, which FAT drops", name)
	}
	return nil
}

// sfnByte maps one byte of a name onto the character set of short names and
// reports whether it was kept as it is.
func sfnByte(c byte) (byte, bool) {
	switch {
	case c >= 'a' && c <= 'z':
		return c - 'a' + 'A', true
	case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return c, true
	case c >= 0x80:
		return '_', false
	case strings.IndexByte("!#$%&'()-@^_`{}~", c) >= 0:
		return c, true
	default: // space, + , ; = [ ] and the like
		return '_', false
	}
}

// splitName splits name the way the gokrazy runtime's reader does before it
// derives a short name: spaces and leading dots are dropped, and the
// extension is what follows the last dot.
func splitName(name string) (base, ext string, hasExt bool) {
	basis := strings.ReplaceAll(name, " ", "")
	basis = strings.TrimLeft(basis, ".")
	if i := strings.LastIndexByte(basis, '.'); i >= 0 {
		return basis[:i], basis[i+1:], true
	}
	return basis, "", false
}

// exactShortName returns the short name that stores name without loss, if
// there is one.
//
// A name without an extension keeps its case: the gokrazy runtime's reader
// matches such names only byte for byte against the path it looks up
// (e.g. "loader", "entries", "vmlinuz"). A name with an extension is stored
// in upper case, which the reader matches case-insensitively (e.g.
// "cmdline.txt" as CMDLINE.TXT).
func exactShortName(name string) (shortName, bool) {
	var s shortName
	for i := range s {
		s[i] = ' '
	}
	base, ext, hasExt := splitName(name)
	if base != name && (!hasExt || base+"."+ext != name) {
		return s, false // spaces or leading dots were dropped
	}
	if base == "" || len(base) > 8 || len(ext) > 3 || (hasExt && ext == "") {
		return s, false
	}
	for i := 0; i < len(base); i++ {
		c, ok := sfnByte(base[i])
		if !ok {
			return s, false
		}
		if !hasExt {
			c = base[i] // keep the case, see above
		}
		s[i] = c
	}
	for i := 0; i < len(ext); i++ {
		c, ok := sfnByte(ext[i])
		if !ok {
			return s, false
		}
		s[8+i] = c
	}
	if s[0] == 0xE5 || s[0] == ' ' {
		return s, false
	}
	return s, true
}

// lossyShortName returns the n-th numbered short name for a name that does
// not fit 8.3: the upper-cased base name cut to leave room for "~n", and
// the first three characters of the extension. For n == 1 this is the name
// the gokrazy runtime's reader looks for (e.g. "gokrazy.conf" as
// GOKRAZ~1.CON).
func lossyShortName(name string, n int) shortName {
	var s shortName
	for i := range s {
		s[i] = ' '
	}
	base, ext, _ := splitName(name)
	conv := func(in string, max int) []byte {
		var out []byte
		for i := 0; i < len(in) && len(out) < max; i++ {
			c, _ := sfnByte(in[i])
			out = append(out, c)
		}
		return out
	}
	tail := "~" + strconv.Itoa(n)
	b := conv(base, 8-len(tail))
	if len(b) == 0 {
		b = []byte{'_'}
	}
	copy(s[:], append(b, tail...))
	copy(s[8:], conv(ext, 3))
	return s
}

// assignShortNames gives every name in one directory a unique short name,
// reporting for each whether it needs long file name entries. Names that
// fit 8.3 are served first, so that numbered names never take their place.
func assignShortNames(names []string) ([]shortName, []bool, error) {
	shorts := make([]shortName, len(names))
	needLFN := make([]bool, len(names))
	taken := make(map[string]bool)
	key := func(s shortName) string { return strings.ToUpper(string(s[:])) }
	exact := make([]bool, len(names))
	for i, name := range names {
		s, ok := exactShortName(name)
		if !ok || taken[key(s)] {
			continue
		}
		exact[i] = true
		shorts[i] = s
		taken[key(s)] = true
		// Lower-case short names are kept only for the runtime's reader;
		// everything else sees the long name.
		needLFN[i] = s.String() != name || strings.ToUpper(name) != name
	}
	for i, name := range names {
		if exact[i] {
			continue
		}
		found := false
		for n := 1; n <= 999999; n++ {
			s := lossyShortName(name, n)
			if !taken[key(s)] {
				shorts[i] = s
				taken[key(s)] = true
				found = true
				break
			}
		}
		if !found {
			return nil, nil, fmt.Errorf("no free short name for %q", name)
		}
		needLFN[i] = true
	}
	return shorts, needLFN, nil
}

// lfnEntryCount is the number of long file name entries name needs.
func lfnEntryCount(name string) int {
	return (len(utf16.Encode([]rune(name))) + 12) / 13
}
