package webui

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pen-lb/pen-appliance/pen/acl"
	"github.com/pen-lb/pen-appliance/pen/config"
)

// A change that would cut off traffic is applied only after the user
// confirmed it with its consequences spelled out. The consequences are
// computed from the preview of the change (Interp.Preview) against the
// running state: the clients connected now, the servers available now.

// ConfirmError holds back a change until the user confirms its
// consequences.
type ConfirmError struct {
	Consequences []string
	Lines        []string
}

func (e *ConfirmError) Error() string {
	return "Confirm first: " + strings.Join(e.Consequences, " ")
}

// token names the consequences a confirmation was given for: when they
// differ by the time the confirmation arrives (more clients connected,
// another server failed), the user is asked again.
func (e *ConfirmError) token() string {
	h := sha256.Sum256([]byte(strings.Join(e.Consequences, "\n")))
	return hex.EncodeToString(h[:8])
}

// confirmation is what the page shows to ask for a confirmation: the
// consequences, and a form that posts the same change again with the
// token.
type confirmation struct {
	Consequences []string
	Lines        []string
	Action       string
	Values       []hiddenValue
	Token        string
	Back         string
	Submit       string
}

type hiddenValue struct{ Name, Value string }

// connected is what the consequences need to know of the running load
// balancer besides State: who is connected now.
type connected interface {
	Clients() []config.ClientState
	Conns() config.ConnTable
}

func (s engineState) Clients() []config.ClientState { return s.e.Clients() }
func (s engineState) Conns() config.ConnTable       { return s.e.Conns() }

// connectedClients are the addresses of clients with a connection open
// now (each once, at most 1000 looked at).
func (s *Server) connectedClients() []netip.Addr {
	cs, ok := s.state.(connected)
	if !ok {
		return nil
	}
	clients := map[int]netip.Addr{}
	for _, c := range cs.Clients() {
		clients[c.Slot] = c.Addr
	}
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for i, c := range cs.Conns().Conns {
		if i >= 1000 {
			break
		}
		a, ok := clients[c.Client]
		if !ok || !a.IsValid() || seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// consequences lists what the change from cur to next (made by lines)
// would do to traffic that the user should confirm: clients connected
// now whom client_acl would refuse, weight mode that leaves servers or
// every server without a weight, no server left to take clients.
func (s *Server) consequences(cur, next *config.Config, lines []string) []string {
	var out []string
	if m := s.refusedClients(cur, next); m != "" {
		out = append(out, m)
	}
	if m := weightConsequence(cur, next); m != "" {
		out = append(out, m)
	}
	if m := s.noServerLeft(cur, next, lines); m != "" {
		out = append(out, m)
	}
	return out
}

func (s *Server) refusedClients(cur, next *config.Config) string {
	if cur.ClientACL == next.ClientACL && listText(cur.ACLs[cur.ClientACL]) == listText(next.ACLs[next.ClientACL]) {
		return ""
	}
	var refused []string
	n := 0
	for _, a := range s.connectedClients() {
		if cur.ACLs[cur.ClientACL].Match(a, nil) && !next.ACLs[next.ClientACL].Match(a, nil) {
			n++
			if len(refused) < 5 {
				refused = append(refused, a.String())
			}
		}
	}
	if n == 0 {
		return ""
	}
	who := strings.Join(refused, ", ")
	if n > len(refused) {
		who += fmt.Sprintf(" and %d more", n-len(refused))
	}
	return fmt.Sprintf("client_acl %d would refuse %s connected now (%s): their open connections go on, every new connection of theirs is refused.",
		next.ClientACL, fmt.Sprintf("%d %s", n, plural(n, "client", "clients")), who)
}

func weightConsequence(cur, next *config.Config) string {
	if !next.Weight || next.Prio {
		return ""
	}
	var zero, weighted []string
	for i, sv := range next.Servers {
		if sv.Unused() || sv.Drain {
			continue
		}
		if sv.Weight == 0 {
			zero = append(zero, strconv.Itoa(i))
		} else {
			weighted = append(weighted, strconv.Itoa(i))
		}
	}
	same := cur.Weight && !cur.Prio && len(cur.Servers) == len(next.Servers)
	if same {
		for i := range cur.Servers {
			if (cur.Servers[i].Weight == 0) != (next.Servers[i].Weight == 0) || cur.Servers[i].Unused() != next.Servers[i].Unused() {
				same = false
			}
		}
	}
	switch {
	case same || len(zero) == 0:
		return ""
	case len(weighted) == 0:
		return "In weight mode every server's weight is 0. pen then sends each client to the server with the fewest connections, " +
			"but Pen 0.35.0 refuses every client in that case, so this configuration stops all traffic if Pen reads it. Give the servers weights first."
	default:
		return fmt.Sprintf("In weight mode %s with weight 0 %s no new clients while %s with a weight %s available.",
			plural(len(zero), "server "+zero[0], "servers "+strings.Join(zero, ", ")), map[bool]string{true: "gets", false: "get"}[len(zero) == 1],
			plural(len(weighted), "server "+weighted[0], "servers "+strings.Join(weighted, ", ")), map[bool]string{true: "is", false: "are"}[len(weighted) == 1])
	}
}

// noServerLeft: servers available now (in use, not draining, not
// blacklisted) and none after the change (removed, made unused, drained,
// or blacklisted by a line).
func (s *Server) noServerLeft(cur, next *config.Config, lines []string) string {
	now := s.now()
	var st []config.ServerState
	if s.state != nil {
		st = s.state.Servers()
	}
	blacklistedNow := map[uint64]bool{}
	availNow := 0
	for i, sv := range cur.Servers {
		if sv.Unused() || sv.Drain {
			continue
		}
		if i < len(st) && st[i].Until.After(now) {
			blacklistedNow[sv.ID()] = true
			continue
		}
		availNow++
	}
	if availNow == 0 {
		return ""
	}
	// Lines "server N blacklist T" with T > 0 take N out; T = 0 brings it back.
	blacklisting := map[int]bool{}
	for _, l := range lines {
		w := config.Split(l)
		if len(w) < 4 || w[0] != "server" {
			continue
		}
		n, err := strconv.Atoi(w[1])
		if err != nil {
			continue
		}
		for k := 2; k+1 < len(w); k += 2 {
			if w[k] == "blacklist" {
				t, err := strconv.Atoi(w[k+1])
				blacklisting[n] = err == nil && t > 0
			}
		}
	}
	availNext := 0
	for i, sv := range next.Servers {
		if sv.Unused() || sv.Drain {
			continue
		}
		if b, ok := blacklisting[i]; ok {
			if !b {
				availNext++
			}
			continue
		}
		if !blacklistedNow[sv.ID()] {
			availNext++
		}
	}
	if availNext > 0 {
		return ""
	}
	where := "every new client is refused"
	if next.Emergency != nil {
		where = "every new client goes to the emergency server"
	}
	return fmt.Sprintf("No server would be left to take clients (%s available now, none after this change): %s until a server is back.",
		plural(availNow, "1 is", fmt.Sprintf("%d are", availNow)), where)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// fail notes err for the page: a ConfirmError becomes a confirmation
// of the same form, anything else the form's error.
func (f *form) fail(err error) {
	ce, ok := err.(*ConfirmError)
	if !ok {
		f.Errors[""] = err.Error()
		return
	}
	c := &confirmation{Consequences: ce.Consequences, Lines: ce.Lines, Action: f.Action, Token: ce.token(), Back: f.Back, Submit: "Apply anyway"}
	for _, k := range sortedKeys(f.Values) {
		if k == "csrf" || k == "confirm" {
			continue
		}
		for _, v := range f.Values[k] {
			c.Values = append(c.Values, hiddenValue{k, v})
		}
	}
	f.Confirm = c
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// refused reports whether the form must be shown again: errors, or a
// change waiting for confirmation.
func (f *form) refused() bool { return len(f.Errors) > 0 || f.Confirm != nil }

// since is a duration for "for 3m20s".
func since(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return humanDuration(now.Sub(t))
}

func listText(l acl.List) string {
	var b strings.Builder
	for _, e := range l {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	return b.String()
}
