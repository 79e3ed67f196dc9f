package config

import (
	"encoding/json"
	"os"
	"time"
)

// Questions about the running load balancer, and actions on it. They
// change no setting.
var runtimeCommands = map[string]*command{
	"close":      {run: cmdConnection},
	"connection": {run: cmdConnection},
	"exit":       {run: cmdExit},
	"mode":       {run: cmdMode},
	"pid":        {run: func(x *txn, _ string, _ []string) error { x.printf("%d\n", os.Getpid()); return nil }},
	"recent":     {run: cmdRecent},
	"socket":     {run: cmdSocket},
	"state":      {run: cmdState},
}

// cmdConnection is close and connection.
func cmdConnection(x *txn, cmd string, args []string) error {
	n := 0
	if len(args) > 0 {
		var err error
		if n, err = atoi(cmd, args[0]); err != nil {
			return err
		}
	}
	if n < 0 || n >= x.cfg.ConnMax {
		x.printf("Connection %d out of range\n", n)
		return nil
	}
	if cmd == "close" {
		x.printf("Forcibly closing connection %d\n", n)
		x.later(func(e Engine) {
			if e != nil {
				e.CloseConn(n)
			}
		})
		return nil
	}
	s := ConnState{Slot: n, DownFD: -1, UpFD: -1}
	if x.in.eng != nil {
		s = x.in.eng.Conn(n)
	}
	x.printf("Connection %d:\nstate = %d\ndownfd = %d, upfd = %d\nclient = %d, server = %d\npend = %d\n",
		n, s.State, s.DownFD, s.UpFD, s.Client, s.Server, s.Pend)
	return nil
}

func cmdExit(x *txn, _ string, _ []string) error {
	if !x.in.proc.ExitEnabled {
		x.printf("%s\n", ErrExitDisabled.Error())
		return nil
	}
	x.later(func(e Engine) {
		if e != nil {
			e.Quit()
		}
	})
	return nil
}

func cmdMode(x *txn, cmd string, args []string) error {
	if err := noArgs(cmd, args); err != nil {
		return err
	}
	x.printf("%s", x.cfg.Mode())
	return nil
}

func cmdRecent(x *txn, cmd string, args []string) error {
	secs, set, err := optInt(cmd, args)
	if err != nil {
		return err
	}
	if !set {
		secs = DefaultRecent
	}
	if err := checkInt(cmd, secs, 0, MaxSeconds, " seconds"); err != nil {
		return err
	}
	if x.in.eng != nil {
		since := x.in.now().Add(-time.Duration(secs) * time.Second).Truncate(time.Second)
		for _, cl := range x.in.eng.Clients() {
			if cl.Last.Before(since) {
				continue
			}
			x.printf("%s connects %d sx %d rx %d\n", ClientName(cl.Addr), cl.Connects, cl.Sent, cl.Received)
		}
	}
	return nil
}

func cmdSocket(x *txn, cmd string, args []string) error {
	fd := 0
	if len(args) > 0 {
		var err error
		if fd, err = atoi(cmd, args[0]); err != nil {
			return err
		}
	}
	conn := -1
	if x.in.eng != nil {
		conn = x.in.eng.SocketConn(fd)
	}
	x.printf("Socket %d belongs to connection %d\n", fd, conn)
	return nil
}

// State is the reply of the state command: pen's running state as one
// JSON object, for programs (the appliance's admin UI reads every
// service's pen this way through its control socket).
type State struct {
	PID        int               `json:"pid"`
	Listen     string            `json:"listen"`
	UDP        bool              `json:"udp"`
	DSR        string            `json:"dsr_if,omitempty"`
	ConfigFile string            `json:"config_file,omitempty"`
	AutoWrite  bool              `json:"autowrite"`
	Changes    map[Origin]uint64 `json:"changes"`
	// Config is the configuration as write would save it.
	Config string `json:"config"`
	// Runtime is what the status hook reports (SetStatus); null without
	// one.
	Runtime any `json:"runtime"`
}

// SetStatus sets the hook whose value the state command reports as
// "runtime" (the admin UI sets it to the engine's counters). It is
// called with the interpreter locked.
func (in *Interp) SetStatus(f func(c *Config) any) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.status = f
}

func cmdState(x *txn, cmd string, args []string) error {
	if err := noArgs(cmd, args); err != nil {
		return err
	}
	c := x.cfg
	st := State{
		PID: os.Getpid(), Listen: c.Listen, UDP: c.UDP, DSR: c.DSRIf,
		ConfigFile: x.in.proc.ConfigFile, AutoWrite: c.AutoWrite,
		Changes: x.in.ChangesBy(),
		Config:  string(Render(c, x.in.proc, x.in.proc.ConfigFile, x.in.now())),
	}
	if x.in.status != nil && !x.dry {
		st.Runtime = x.in.status(c)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	x.printf("%s\n", data)
	return nil
}
