package dsr

// Reason says why a frame was not forwarded. Frame handlers return a
// reason instead of logging; the forwarder counts them (Stats.Dropped).
// The zero value means "not dropped".
type Reason uint8

const (
	_             Reason = iota
	DropNotIPv4          // neither ARP nor IPv4 (IPv6, VLAN-tagged, ...)
	DropMalformed        // headers cut short or inconsistent
	DropNotOurs          // not for the VIP, its protocol and port, nor a tarpitted address
	DropNoServer         // for the VIP, but no server is available
	DropTruncated        // larger than the receive buffer
	DropTarpit           // to a tarpitted address, and not a SYN: never answered
	DropRateLimit        // a tarpit reply over the per-source or overall rate
	DropSendError        // the kernel refused to send it
	DropARP              // an ARP frame that needs no answer nor teaches anything
	numReasons
)

var reasonNames = [numReasons]string{
	DropNotIPv4:   "not_ipv4",
	DropMalformed: "malformed",
	DropNotOurs:   "not_ours",
	DropNoServer:  "no_server",
	DropTruncated: "truncated",
	DropTarpit:    "tarpit",
	DropRateLimit: "rate_limit",
	DropSendError: "send_error",
	DropARP:       "arp_ignored",
}

// String is the reason's name as counters label it.
func (r Reason) String() string {
	if r > 0 && r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every drop reason, for exporting counters.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := Reason(1); r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}
