package engine

import (
	"slices"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/transparent"
)

// router is what the engine needs of transparent.Router.
type router interface {
	Sync([]transparent.Server) error
	Cleanup() error
	Close()
}

func openRouter(table, priority int) (router, error) {
	r, err := transparent.New(table, priority)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// routing is the engine's view of the policy routing that transparent
// mode needs (package transparent): what it installed, and what it said
// about a refusal, so that a refusal is logged once, not at every change.
type routing struct {
	open func(table, priority int) (router, error)

	r               router // nil until first needed
	table, priority int    // of r
	servers         []transparent.Server
	installed       bool   // r's rules are in place for servers
	refused         string // the last refusal logged, "" after a success
	started         bool   // the predecessor's leftovers were looked for
}

// routingTable returns the table and rule priority that c asks for
// (transparent_table, transparent_priority).
func routingTable(c *config.Config) (table, priority int) {
	table, priority = c.TransparentTable, c.TransparentPriority
	if table == 0 {
		table = transparent.DefaultTable
	}
	if priority == 0 {
		priority = transparent.DefaultPriority
	}
	return table, priority
}

// transparentServers lists the servers whose replies pen must receive on
// transparent sockets: the server table, the emergency and the abuse
// server, with the protocol pen speaks to them.
func transparentServers(c *config.Config) []transparent.Server {
	var out []transparent.Server
	add := func(s config.Server) {
		if s.Host.IsUnix() || !s.Host.IP.IsValid() || s.Host.IP.IsUnspecified() || s.Port == 0 {
			return
		}
		out = append(out, transparent.Server{Addr: s.Addr(), UDP: c.UDP})
	}
	for _, s := range c.Servers {
		add(s)
	}
	if c.Emergency != nil {
		add(*c.Emergency)
	}
	if c.Abuse != nil {
		add(*c.Abuse)
	}
	return out
}

// wantsTransparent reports whether c's connections leave from the client's
// address: transparent is on and no source address takes priority.
func wantsTransparent(c *config.Config) bool {
	return c.Transparent && !c.Source.IsValid()
}

// apply makes the routing fit c and reports whether the data path may
// bind to clients' addresses. When the routing cannot be made, the reason
// is logged (once, until it changes or a later attempt succeeds) and pen
// carries on without transparency: connections leave from pen's own
// address, which still works, instead of from addresses whose replies
// would never reach pen.
func (rt *routing) apply(c *config.Config, log func(string, ...any)) bool {
	want := wantsTransparent(c)
	table, priority := routingTable(c)
	if rt.r != nil && (rt.table != table || rt.priority != priority) {
		// Another table or priority: what was installed goes first.
		if err := rt.r.Cleanup(); err != nil {
			log("%v", err)
		}
		rt.r.Close()
		rt.r, rt.installed, rt.servers = nil, false, nil
	}
	if !want && rt.r == nil && rt.started {
		return false
	}
	if rt.r == nil {
		r, err := rt.open(table, priority)
		if err != nil {
			rt.started = true
			if want {
				rt.refuse(err.Error(), log)
			}
			return false
		}
		rt.r, rt.table, rt.priority = r, table, priority
	}
	if !want {
		if rt.installed || !rt.started {
			// Turned off, or at start-up: remove what pen (or a
			// killed predecessor) installed.
			if err := rt.r.Cleanup(); err != nil {
				log("%v", err)
			}
		}
		rt.r.Close()
		rt.r, rt.started, rt.installed, rt.servers, rt.refused = nil, true, false, nil, ""
		return false
	}
	rt.started = true
	servers := transparentServers(c)
	if rt.installed && slices.Equal(servers, rt.servers) {
		return true
	}
	if err := rt.r.Sync(servers); err != nil {
		// Half a set of rules helps nobody: take it all away.
		rt.r.Cleanup()
		rt.installed, rt.servers = false, nil
		rt.refuse(err.Error(), log)
		return false
	}
	rt.installed, rt.servers, rt.refused = true, servers, ""
	return true
}

func (rt *routing) refuse(msg string, log func(string, ...any)) {
	if msg != rt.refused {
		log("%s; pen goes on without transparency: connections to servers leave from pen's own address", msg)
		rt.refused = msg
	}
}

// stop removes what pen installed.
func (rt *routing) stop(log func(string, ...any)) {
	if rt.r == nil {
		return
	}
	if rt.installed {
		if err := rt.r.Cleanup(); err != nil {
			log("%v", err)
		}
	}
	rt.r.Close()
	rt.r, rt.installed, rt.servers = nil, false, nil
}
