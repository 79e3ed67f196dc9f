package config

import (
	"bytes"
	"fmt"
	"time"
)

// StatusPage renders Pen's HTML status page (the status command, SIGUSR1
// with -w).
func (in *Interp) StatusPage() []byte {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.statusPage(in.cfg)
}

// WriteStatus writes the status page to the web_stats file, if one is set.
func (in *Interp) WriteStatus() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cfg.WebStats == "" {
		return fmt.Errorf("don't know where to write web stats; see -w option")
	}
	return in.writeStatusFile(in.cfg.WebStats, in.statusPage(in.cfg))
}

// statusPageStart begins every status page, Pen's too.
const statusPageStart = "<html>\n<head>\n<title>Pen status page</title>\n"

// writeStatusFile replaces the web_stats file with page. A file there that
// is not a status page (web_stats naming another file by mistake) is kept
// beside it as FILE.orig first.
func (in *Interp) writeStatusFile(path string, page []byte) error {
	kept, err := keepForeign(path, func(text []byte) bool { return bytes.HasPrefix(text, []byte(statusPageStart)) })
	if err != nil {
		return fmt.Errorf("%s is not a status page, and its text could not be kept: %w", path, err)
	}
	if kept != "" {
		in.log.Printf("web_stats: %s was not a status page; its text is kept in %s", path, kept)
	}
	return WriteFileAtomic(path, page, 0o644)
}

func (in *Interp) statusPage(c *Config) []byte {
	now := in.now()
	var st []ServerState
	var clients []ClientState
	conns := ConnTable{Max: c.ConnMax}
	current := 0
	if in.eng != nil {
		st = in.eng.Servers()
		clients = in.eng.Clients()
		conns = in.eng.Conns()
		current = in.eng.Current()
	}
	var b bytes.Buffer
	pr := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	pr("%s</head>\n<body bgcolor=\"#ffffff\"><h1>Pen status page</h1>\n", statusPageStart)
	pr("Time %s, %d servers, %d current<p>\n", now.Format("2006-01-02 15:04:05"), len(c.Servers), current)
	header := func(cols ...string) {
		pr("<table bgcolor=\"#c0c0c0\">\n<tr>\n")
		for _, col := range cols {
			pr("<td bgcolor=\"#80f080\">%s</td>\n", col)
		}
		pr("</tr>\n")
	}
	row := func(cells ...any) {
		pr("<tr>\n")
		for _, cell := range cells {
			pr("<td>%v</td>\n", cell)
		}
		pr("</tr>\n")
	}
	header("server", "address", "status", "port", "connections", "max soft", "max hard", "sent", "received", "weight", "prio")
	for i, s := range c.Servers {
		var ss ServerState
		if i < len(st) {
			ss = st[i]
		}
		row(i, htmlEscape(s.Host.String()), penStatus(ss, c.Blacklist), s.ReportedPort(), ss.Conns, s.Max, s.Hard, ss.Sent, ss.Received, s.Weight, s.Prio)
	}
	pr("</table>\n")
	pr("<h2>Active clients</h2>")
	pr("Max number of clients: %d<p>", c.ClientsMax)
	header("client", "address", "age(secs)", "last server", "connects", "sent", "received")
	for _, cl := range clients {
		row(cl.Slot, ClientName(cl.Addr), int64(now.Sub(cl.Last)/time.Second), cl.Server, cl.Connects, cl.Sent, cl.Received)
	}
	pr("</table>\n")
	pr("<h2>Active connections</h2>")
	pr("Number of connections: %d max, %d used, %d last<p>", conns.Max, conns.Used, conns.Last)
	header("connection", "downfd", "upfd", "pending data down", "pending data up", "client", "server")
	for _, cn := range conns.Conns {
		row(cn.Slot, cn.DownFD, cn.UpFD, cn.PendingDown, cn.PendingUp, cn.Client, cn.Server)
	}
	pr("</table>\n")
	pr("</body>\n</html>\n")
	return b.Bytes()
}

// penStatus is Pen's raw status column: the time_t of the last failure
// (or, after "server N blacklist T", now+T-blacklist), 0 if none.
func penStatus(s ServerState, blacklist int) int64 {
	if s.Until.IsZero() {
		return 0
	}
	return s.Until.Unix() - int64(blacklist)
}

func htmlEscape(s string) string {
	var b bytes.Buffer
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TextStats is what SIGUSR1 logs when no web_stats file is set: Pen's
// textstats, with the client block Pen garbles written out correctly.
func (in *Interp) TextStats() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	c := in.cfg
	now := in.now()
	var out []string
	pr := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	var st []ServerState
	var clients []ClientState
	conns := ConnTable{Max: c.ConnMax}
	current := 0
	if in.eng != nil {
		st, clients, conns, current = in.eng.Servers(), in.eng.Clients(), in.eng.Conns(), in.eng.Current()
	}
	pr("Time %s, %d servers, %d current", now.Format("2006-01-02 15:04:05"), len(c.Servers), current)
	for i, s := range c.Servers {
		var ss ServerState
		if i < len(st) {
			ss = st[i]
		}
		pr("Server %d status:\naddress %s\n%d\nport %d\n%d connections (%d soft, %d hard)\n%d sent, %d received\n",
			i, s.Host, penStatus(ss, c.Blacklist), s.ReportedPort(), ss.Conns, s.Max, s.Hard, ss.Sent, ss.Received)
	}
	pr("Max number of clients: %d", c.ClientsMax)
	pr("Active clients:")
	for _, cl := range clients {
		pr("Client %d status:\naddress %s\nlast used %d\nlast server %d\nconnects %d\nsent %d\nreceived %d\n",
			cl.Slot, ClientName(cl.Addr), int64(now.Sub(cl.Last)/time.Second), cl.Server, cl.Connects, cl.Sent, cl.Received)
	}
	pr("Max number of connections: %d", conns.Max)
	pr("Active connections:")
	for _, cn := range conns.Conns {
		pr("Connection %d status:\ndownfd = %d, upfd = %d\npending data %d down, %d up\nclient %d, server %d\n",
			cn.Slot, cn.DownFD, cn.UpFD, cn.PendingDown, cn.PendingUp, cn.Client, cn.Server)
	}
	return out
}
