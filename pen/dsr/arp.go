package dsr

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
)

var broadcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

const arpFrameLen = ethHeaderLen + 28

// parseARP reads an Ethernet frame carrying an IPv4-over-Ethernet ARP
// packet. Anything else (other hardware or protocol types, other address
// lengths) is not for us.
func parseARP(f []byte) (*arp.Packet, Reason) {
	if etherType(f) != etherTypeARP {
		return nil, DropNotOurs
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f[ethHeaderLen:]); err != nil {
		return nil, DropMalformed
	}
	if p.HardwareType != 1 || p.ProtocolType != etherTypeIPv4 || p.HardwareAddrLength != 6 || p.IPLength != 4 {
		return nil, DropARP
	}
	return &p, 0
}

// arpFrame builds an Ethernet frame carrying an ARP packet into b (which
// must hold arpFrameLen bytes) and returns it.
func arpFrame(b []byte, ethDst, ethSrc [6]byte, op arp.Operation, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) []byte {
	p := arp.Packet{
		HardwareType:       1,
		ProtocolType:       etherTypeIPv4,
		HardwareAddrLength: 6,
		IPLength:           4,
		Operation:          op,
		SenderHardwareAddr: net.HardwareAddr(sha[:]),
		SenderIP:           spa,
		TargetHardwareAddr: net.HardwareAddr(tha[:]),
		TargetIP:           tpa,
	}
	body, _ := p.MarshalBinary() // never fails
	b = b[:arpFrameLen]
	copy(b[0:6], ethDst[:])
	copy(b[6:12], ethSrc[:])
	binary.BigEndian.PutUint16(b[12:14], etherTypeARP)
	copy(b[ethHeaderLen:], body)
	return b
}

// arpReply answers an ARP request for an address we stand for: to the
// requester, from our MAC, saying the requested address is at our MAC.
func arpReply(b []byte, ours [6]byte, req *arp.Packet) []byte {
	sha := [6]byte(req.SenderHardwareAddr)
	return arpFrame(b, sha, ours, arp.OperationReply, ours, req.TargetIP, sha, req.SenderIP)
}

// arpRequest asks who has ip, broadcast, from our MAC. spa is our own
// IPv4 address on the interface, or 0.0.0.0 when it has none (an ARP
// probe, RFC 5227, which the backend answers without learning anything
// about us).
func arpRequest(b []byte, ours [6]byte, spa, ip netip.Addr) []byte {
	return arpFrame(b, broadcastMAC, ours, arp.OperationRequest, ours, spa, [6]byte{}, ip)
}

// gratuitousARP announces that ip is at our MAC (a broadcast reply), so
// that the clients' neighbour caches stop pointing at whoever held the
// address before.
func gratuitousARP(b []byte, ours [6]byte, ip netip.Addr) []byte {
	return arpFrame(b, broadcastMAC, ours, arp.OperationReply, ours, ip, broadcastMAC, ip)
}

// neighbour is what DSR knows of one backend address's MAC.
type neighbour struct {
	mac     [6]byte
	known   bool
	since   time.Time // when mac was last confirmed by a reply we asked for
	asked   time.Time // when the last request went out; zero: none pending
	misses  int       // requests in a row that went unanswered
	next    time.Time // when to ask next
	down    bool      // unanswered long enough to count as a failed server
	reqs    uint64
	replies uint64
}

// neighbours learns backend MACs by asking (ARP requests), and only from
// replies to its own requests: an unsolicited reply or a gratuitous ARP
// teaches it nothing, so nobody on the segment can pull a VIP's traffic to
// themselves by announcing a backend's address.
type neighbours struct {
	mu      sync.Mutex
	m       map[netip.Addr]*neighbour
	refresh time.Duration // a known MAC is asked again this often
	retry   time.Duration // first retry of an unanswered request
	maxWait time.Duration // longest back-off between unanswered requests
	misses  int           // unanswered requests before a backend counts as down
}

func newNeighbours(refresh time.Duration) *neighbours {
	retry := time.Second
	if refresh < retry {
		retry = refresh
	}
	return &neighbours{m: map[netip.Addr]*neighbour{}, refresh: refresh, retry: retry, maxWait: max(refresh, 30*time.Second), misses: 3}
}

// track makes the table follow the set of backend addresses: new ones are
// asked at once, ones no longer wanted are forgotten.
func (ns *neighbours) track(addrs map[netip.Addr]bool, now time.Time) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for a := range ns.m {
		if !addrs[a] {
			delete(ns.m, a)
		}
	}
	for a := range addrs {
		if ns.m[a] == nil {
			ns.m[a] = &neighbour{next: now}
		}
	}
}

// due returns the addresses to ask now and those that have just missed a
// reply once too often (they are down: the caller fails them). It records
// the requests as sent.
func (ns *neighbours) due(now time.Time) (ask, failed []netip.Addr) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for a, n := range ns.m {
		if now.Before(n.next) {
			continue
		}
		if !n.asked.IsZero() {
			// The last request went unanswered.
			n.misses++
			if n.misses >= ns.misses {
				n.known = false
				n.down = true
				failed = append(failed, a)
			}
		}
		wait := ns.retry
		if n.misses >= ns.misses {
			// Back off: 2 s, 4 s, ... up to maxWait.
			wait = min(ns.retry<<min(n.misses-ns.misses+1, 16), ns.maxWait)
		}
		n.asked, n.next = now, now.Add(wait)
		n.reqs++
		ask = append(ask, a)
	}
	return ask, failed
}

// learn takes an ARP reply into account. It returns true when the reply
// answered one of our requests and changed what we know (a MAC learnt,
// changed, or a backend back up), false otherwise: an unsolicited reply
// is ignored.
func (ns *neighbours) learn(p *arp.Packet, ours [6]byte, now time.Time) (used, changed bool) {
	if p.Operation != arp.OperationReply || [6]byte(p.TargetHardwareAddr) != ours {
		return false, false
	}
	return ns.answered(p.SenderIP, [6]byte(p.SenderHardwareAddr), now)
}

// answered takes in that ip is at mac (an ARP reply or a neighbour
// advertisement), if we asked for ip and are waiting for the answer.
func (ns *neighbours) answered(ip netip.Addr, mac [6]byte, now time.Time) (used, changed bool) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	n := ns.m[ip]
	if n == nil || n.asked.IsZero() {
		return false, false
	}
	if mac == ([6]byte{}) || mac == broadcastMAC || mac[0]&1 != 0 {
		return false, false
	}
	changed = !n.known || n.mac != mac || n.down
	n.mac, n.known, n.down = mac, true, false
	n.since, n.asked, n.misses = now, time.Time{}, 0
	n.next = now.Add(ns.refresh)
	n.replies++
	return true, changed
}

// mac returns the MAC learnt for a, if any.
func (ns *neighbours) mac(a netip.Addr) ([6]byte, bool) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if n := ns.m[a]; n != nil && n.known {
		return n.mac, true
	}
	return [6]byte{}, false
}

// NeighbourState is what DSR knows of one backend address.
type NeighbourState struct {
	Addr     netip.Addr
	MAC      net.HardwareAddr // nil while unknown
	Learnt   time.Time        // last confirmed by a reply; zero if never
	Down     bool             // unanswered requests made it count as failed
	Requests uint64           // ARP requests sent for it
	Replies  uint64           // replies to them that were taken
}

func (ns *neighbours) states() []NeighbourState {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	out := make([]NeighbourState, 0, len(ns.m))
	for a, n := range ns.m {
		s := NeighbourState{Addr: a, Learnt: n.since, Down: n.down, Requests: n.reqs, Replies: n.replies}
		if n.known {
			s.MAC = append(net.HardwareAddr(nil), n.mac[:]...)
		}
		out = append(out, s)
	}
	return out
}
