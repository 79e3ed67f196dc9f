package webui

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/engine"
)

// The servers' active health checks (check N ...) as the pages show them.

// healthReporter is the part of the running load balancer that runs the
// checks.
type healthReporter interface {
	Health() map[uint64]engine.HealthResult
}

func (s engineState) Health() map[uint64]engine.HealthResult { return s.e.Health() }

func (s *Server) health() map[uint64]engine.HealthResult {
	if h, ok := s.state.(healthReporter); ok {
		return h.Health()
	}
	return nil
}

// withHealth notes the check's last result in the row: a server that
// passes its check is up even before any client used it.
func (r *serverRow) withHealth(h engine.HealthResult, ok bool) {
	if !ok || h.At.IsZero() {
		return
	}
	r.CheckDone, r.CheckOK, r.CheckAt, r.CheckErr = true, h.OK, h.At, h.Err
	if r.State == "untried" && h.OK {
		r.State = "up"
	}
}

// checkText is the result of the check for the state column.
func (r serverRow) checkText() string {
	switch {
	case r.Check == "":
		return ""
	case !r.CheckDone:
		return "check " + r.Check + ": not run yet"
	case r.CheckOK:
		return fmt.Sprintf("check passed %s ago", since(r.Now, r.CheckAt))
	}
	return fmt.Sprintf("check failed %s ago: %s", since(r.Now, r.CheckAt), r.CheckErr)
}

// checkLine is the command that sets server n's check to the form's
// check field, if it differs from old ("" when it does not).
func checkLine(r *http.Request, f *form, n int, old config.Check) string {
	words := strings.Fields(r.PostFormValue("check"))
	if strings.Join(words, " ") == old.String() {
		return ""
	}
	if len(words) == 0 {
		return fmt.Sprintf("no check %d", n)
	}
	c, err := config.ParseCheck(words)
	if err != nil {
		f.Errors["check"] = err.Error()
		return ""
	}
	if c == old {
		return ""
	}
	return fmt.Sprintf("check %d %s", n, c)
}
