package webui

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/dsr"
	"github.com/pen-lb/pen-appliance/pen/metrics"
)

// dsrView is the dashboard's DSR card (dsr_if set): the mode, each
// server's MAC as learnt by ARP and whether it takes flows, and the
// tarpit's counters (docs/DSR.md).
type dsrView struct {
	Interface   string
	VIP         string // the listen address; "" for a tarpit without DSR (tarpit_if)
	Running     bool   // DSR runs (false: applying dsr_if failed, or pen stopped)
	FastPath    bool
	Received    uint64
	Forwarded   uint64
	Dropped     uint64
	Drops       []dsrDrop // reasons with frames dropped, in dsr.Reasons' order
	ARPSent     uint64
	ARPReplies  uint64
	ARPAnswered uint64
	Servers     []dsrServer
	// Tarpit is set when tarpit_acl names a list with entries.
	Tarpit      bool
	TarpitACL   int
	TarpitSYNs  uint64
	TarpitAddrs uint64
}

type dsrDrop struct {
	Reason string
	Frames uint64
}

// dsrServer is one server as DSR sees it.
type dsrServer struct {
	Slot    string
	Address string
	MAC     string // "" while unknown
	Learnt  time.Time
	State   string // pill class: up, down, blacklisted, untried
	Text    string
	Frames  uint64
	Bytes   uint64
}

// Mode is how frames are forwarded.
func (v *dsrView) Mode() string {
	if v.FastPath {
		return "fast path (in the kernel)"
	}
	return "user space (pen)"
}

// dsrData is the DSR card for c: nil without dsr_if, and only the
// tarpit's counters for a tarpit without DSR (tarpit_if).
func (s *Server) dsrData(c *config.Config, rows []serverRow) *dsrView {
	tarpit := c.TarpitACL >= 0 && c.TarpitACL < len(c.ACLs) && len(c.ACLs[c.TarpitACL]) > 0
	if c.DSRIf == "" && (c.TarpitIf == "" || !tarpit) {
		return nil
	}
	v := &dsrView{Interface: c.DSRIf, VIP: c.Listen, TarpitACL: c.TarpitACL, Tarpit: tarpit}
	if c.DSRIf == "" {
		v.Interface, v.VIP = c.TarpitIf, ""
	}
	var st dsr.Stats
	if ds, ok := s.state.(metrics.DSRSource); ok {
		st, v.Running = ds.DSRStats()
	}
	if !v.Running || v.VIP == "" {
		v.TarpitSYNs, v.TarpitAddrs = st.TarpitSYNs, st.TarpitAddrs
		return v
	}
	v.FastPath, v.Received, v.Forwarded = st.FastPath, st.Received, st.Forwarded
	for _, r := range dsr.Reasons() {
		if n := st.Dropped[r]; n > 0 {
			v.Dropped += n
			v.Drops = append(v.Drops, dsrDrop{r.String(), n})
		}
	}
	v.ARPSent, v.ARPReplies, v.ARPAnswered = st.ARPRequests, st.ARPLearnt, st.ARPAnswered
	v.TarpitSYNs, v.TarpitAddrs = st.TarpitSYNs, st.TarpitAddrs
	neigh := map[netip.Addr]dsr.NeighbourState{}
	for _, n := range st.Neighbours {
		neigh[n.Addr] = n
	}
	type fwd struct {
		frames, bytes uint64
		inTable       bool
	}
	byIndex := map[int]*fwd{}
	for _, ss := range st.Servers {
		f := byIndex[ss.Index]
		if f == nil {
			f = &fwd{}
			byIndex[ss.Index] = f
		}
		f.frames += ss.Frames
		f.bytes += ss.Bytes
		f.inTable = f.inTable || ss.InTable
	}
	add := func(slot string, i int, sv config.Server, state string) {
		d := dsrServer{Slot: slot, Address: sv.Host.String()}
		n, known := neigh[sv.Host.IP.Unmap()]
		if known && n.MAC != nil {
			d.MAC, d.Learnt = n.MAC.String(), n.Learnt
		}
		var f fwd
		if p := byIndex[i]; p != nil {
			f = *p
		}
		d.Frames, d.Bytes = f.frames, f.bytes
		switch {
		case known && n.Down:
			d.State, d.Text = "down", "down: ARP unanswered"
		case f.inTable:
			d.State, d.Text = "up", "taking flows"
		case state == "unused":
			d.State, d.Text = "unused", "unused"
		case state == "blacklisted":
			d.State, d.Text = "blacklisted", "blacklisted"
		case d.MAC == "":
			d.State, d.Text = "untried", "MAC not learnt yet"
		default:
			d.State, d.Text = "unused", "not taking flows"
		}
		v.Servers = append(v.Servers, d)
	}
	for i, sv := range c.Servers {
		state := ""
		if i < len(rows) {
			state = rows[i].State
		}
		add(strconv.Itoa(i), i, sv, state)
	}
	if c.Emergency != nil {
		add("emergency", config.EmergencyServer, *c.Emergency, "")
	}
	return v
}

// cells are the DSR card's live cells and pills for /api/state.
func (v *dsrView) cells(cells, states map[string]string) {
	if v == nil || !v.Running {
		return
	}
	cells["tarpit:syns"] = strconv.FormatUint(v.TarpitSYNs, 10)
	cells["tarpit:addrs"] = strconv.FormatUint(v.TarpitAddrs, 10)
	if v.VIP == "" {
		return
	}
	cells["dsr:forwarded"] = strconv.FormatUint(v.Forwarded, 10)
	cells["dsr:dropped"] = strconv.FormatUint(v.Dropped, 10)
	cells["dsr:received"] = strconv.FormatUint(v.Received, 10)
	cells["dsr:arp_sent"] = strconv.FormatUint(v.ARPSent, 10)
	cells["dsr:arp_replies"] = strconv.FormatUint(v.ARPReplies, 10)
	cells["dsr:arp_answered"] = strconv.FormatUint(v.ARPAnswered, 10)
	for _, d := range v.Servers {
		p := "dsr:" + d.Slot + ":"
		cells[p+"mac"] = d.MAC
		cells[p+"state"] = d.Text
		cells[p+"frames"] = strconv.FormatUint(d.Frames, 10)
		cells[p+"bytes"] = humanBytes(d.Bytes)
		states["dsr:"+d.Slot] = d.State
	}
}
