package webui

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// apply runs lines of pen's command language as one change made by the
// browser of r: it previews the change, refuses it if it would lock that
// browser out, then executes it with origin config.FromWeb and notes the
// commands for the next page. The error is the text to show the user.
func (s *Server) apply(r *http.Request, x *session, lines []string) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	data := []byte(strings.Join(lines, "\n") + "\n")
	cur := s.in.Config()
	next, err := s.in.Preview("webui", data)
	if err != nil {
		return lineErr(err)
	}
	if err := lockout(cur, next, browserOf(r)); err != nil {
		return err
	}
	if err := stopsPen(data); err != nil {
		return err
	}
	if cons := s.consequences(cur, next, lines); len(cons) > 0 {
		ce := &ConfirmError{Consequences: cons, Lines: lines}
		if r.PostFormValue("confirm") != ce.token() {
			return ce
		}
	}
	var states []config.ServerState
	if s.state != nil {
		states = s.state.Servers()
	}
	undo := s.undos(cur, states, lines)
	for i := range undo {
		undo[i].Back = pageOf(r)
	}
	rejected := s.in.Rejected()
	if s.remote != nil {
		err = s.remote(lines) // another service's pen (services.go)
	} else if len(lines) == 1 {
		_, err = s.in.Exec(lines[0], config.FromWeb)
	} else {
		_, err = s.in.ExecLines("webui", data, config.FromWeb)
	}
	f := Flash{Cmds: lines, Undo: undo}
	if err = s.saved(&f, err, rejected); err != nil {
		return lineErr(err)
	}
	s.log.Printf("admin UI: %s applied: %s", clientName(clientAddr(r)), strings.Join(lines, "; "))
	s.sessions.addFlash(x, f)
	return nil
}

// saved notes in f what the user must know of a change that was
// applied: that it was not saved (err is a *config.SaveError: the change
// is in effect, the configuration file keeps its old text), and that the
// configuration file had been edited and its text was kept beside it
// (Interp.Rejected differs from rejected, its value before the change).
// Any other error means nothing was applied; it is returned.
func (s *Server) saved(f *Flash, err error, rejected string) error {
	var se *config.SaveError
	if errors.As(err, &se) {
		f.Unsaved = fmt.Sprintf("writing %s: %v", se.Path, se.Err)
	} else if err != nil {
		return err
	}
	if now := s.in.Rejected(); now != "" && now != rejected {
		f.Rejected = now
	}
	return nil
}

// lineErr drops the "file:line:" of a one-change error: the user sees
// the grammar's own message.
func lineErr(err error) error {
	var le *config.LineError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// LockoutError explains why a change from the admin UI was refused.
type LockoutError struct{ Reason string }

func (e *LockoutError) Error() string { return e.Reason }

// browser is how the browser making a change reaches the admin UI.
type browser struct {
	client netip.Addr // its address; invalid for a unix socket
	local  net.Addr   // the address it connected to (nil if unknown)
	tls    bool
}

func browserOf(r *http.Request) browser {
	b := browser{client: clientAddr(r), tls: r.TLS != nil}
	b.local, _ = r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return b
}

const usePenctl = " Use penctl or the configuration file for that."

// lockout refuses a change that would cut off the browser making it:
// turning off or moving the admin listener where this browser cannot
// follow, admin_tls with a certificate the listener could not use (it
// would stop serving) or turned off under an https page, a password
// setting with which nobody could log in, or an admin_acl that no longer
// permits the browser's address.
func lockout(cur, next *config.Config, b browser) error {
	ca, na := cur.Admin, next.Admin
	if ca.Listen != "" && na.Listen == "" {
		return &LockoutError{"Refused: this change turns off the admin listener (no admin_listen), and with it this page." + usePenctl}
	}
	if na.Listen != ca.Listen {
		if err := reachable(na.Listen, b); err != nil {
			return err
		}
	}
	if na.TLSCert != "" && (na.TLSCert != ca.TLSCert || na.TLSKey != ca.TLSKey) {
		if err := certUsable(na.TLSCert, na.TLSKey); err != nil {
			return &LockoutError{"Refused: the admin listener could not serve TLS, so this page would go off: " + err.Error() + "."}
		}
	}
	if ca.TLSCert != "" && na.TLSCert == "" && b.tls {
		return &LockoutError{"Refused: this change turns off TLS on the admin listener (no admin_tls): this https page would stop answering, " +
			"and the password would cross the network in clear text." + usePenctl}
	}
	if len(ca.PasswordFiles) > 0 && len(na.PasswordFiles) == 0 {
		return &LockoutError{"Refused: without admin_password_file nobody could log in to this page again."}
	}
	if !slices.Equal(ca.PasswordFiles, na.PasswordFiles) {
		if _, err := readPassword(na.PasswordFiles); err != nil {
			return &LockoutError{"Refused: with this admin_password_file nobody could log in to this page again: " + err.Error() + "."}
		}
	}
	if adminAllowed(cur, b.client) && !adminAllowed(next, b.client) {
		n := na.ACL
		return &LockoutError{fmt.Sprintf("Refused: your browser connects from %s, and after this change admin_acl %d would not permit that address, "+
			"so you would lock yourself out. Permit %s in ACL %d first (entries are checked in order; the first match decides), or choose another admin_acl.",
			b.client, n, b.client, n)}
	}
	return nil
}

// stopsPen refuses exit, which (with -X) stops pen and with it the admin
// UI: the change's preview cannot show that, as exit changes no setting.
func stopsPen(data []byte) error {
	for _, line := range strings.Split(string(data), "\n") {
		if w := config.Split(line); len(w) > 0 && w[0] == "exit" {
			return &LockoutError{"Refused: exit stops pen, and with it this page." + usePenctl}
		}
	}
	return nil
}

// reachable refuses an admin_listen spec that the browser could not
// reach: a unix socket (no browser speaks to one), or an address other
// than the one the browser connected to (a wildcard address includes it;
// another port is fine, the browser follows by its address).
func reachable(spec string, b browser) error {
	p, err := config.ParseListen(spec, false, nil)
	if err != nil {
		return &LockoutError{"Refused: admin_listen " + spec + ": " + err.Error()}
	}
	if p.Path != "" {
		return &LockoutError{"Refused: admin_listen " + spec + " is a unix socket, which no browser can reach, so this page would go off." + usePenctl}
	}
	ip := p.Addr.Addr().Unmap()
	switch l := b.local.(type) {
	case *net.TCPAddr:
		if have := l.AddrPort().Addr().Unmap(); have != ip && !ip.IsUnspecified() {
			return &LockoutError{fmt.Sprintf("Refused: your browser connects to this page at %s, and after this change the admin UI would listen only on %s, "+
				"so you would lock yourself out. Listen on %s (or on all addresses, as with the port alone) instead.", have, ip, net.JoinHostPort(have.String(), strconv.Itoa(int(p.Addr.Port()))))}
		}
	case *net.UnixAddr:
		return &LockoutError{"Refused: your browser reaches this page through the unix socket " + l.Name + ", which this change would close." + usePenctl}
	default:
		return &LockoutError{"Refused: the address your browser connects to is unknown, so moving the admin listener could lock you out." + usePenctl}
	}
	return nil
}

// check runs one command line through the grammar without applying it and
// returns its error text, or "".
func (s *Server) check(line string) string {
	if _, err := s.in.Preview("webui", []byte(line+"\n")); err != nil {
		return lineErr(err).Error()
	}
	return ""
}

// word validates a form value that becomes one word of a command.
func word(v string) (string, string) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", "Required."
	}
	for _, r := range v {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "", "One word, without spaces."
		}
	}
	if strings.HasPrefix(v, "#") {
		return "", "Must not start with #."
	}
	return v, ""
}
