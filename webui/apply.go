package webui

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
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
	if err := lockout(cur, next, clientAddr(r)); err != nil {
		return err
	}
	if len(lines) == 1 {
		_, err = s.in.Exec(lines[0], config.FromWeb)
	} else {
		_, err = s.in.ExecLines("webui", data, config.FromWeb)
	}
	if err != nil {
		return lineErr(err)
	}
	s.log.Printf("admin UI: %s applied: %s", clientName(clientAddr(r)), strings.Join(lines, "; "))
	s.sessions.addFlash(x, Flash{Cmds: lines})
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

// lockout refuses a change that would cut off the browser making it: one
// after which admin_acl no longer permits the browser's address, or that
// turns off the admin listener or the password.
func lockout(cur, next *config.Config, client netip.Addr) error {
	if cur.Admin.Listen != "" && next.Admin.Listen == "" {
		return &LockoutError{"Refused: this change turns off the admin listener (no admin_listen), and with it this page. Use penctl or the configuration file for that."}
	}
	if len(cur.Admin.PasswordFiles) > 0 && len(next.Admin.PasswordFiles) == 0 {
		return &LockoutError{"Refused: without admin_password_file nobody could log in to this page again."}
	}
	if adminAllowed(cur, client) && !adminAllowed(next, client) {
		n := next.Admin.ACL
		return &LockoutError{fmt.Sprintf("Refused: your browser connects from %s, and after this change admin_acl %d would not permit that address, "+
			"so you would lock yourself out. Permit %s in ACL %d first (entries are checked in order; the first match decides), or choose another admin_acl.",
			client, n, client, n)}
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
