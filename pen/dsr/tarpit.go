package dsr

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// The tarpit answers every SYN to a tarpitted address with a SYN/ACK and
// then stays silent: the scanner's stack thinks the connection is
// established and waits on it, retransmitting with back-off, until it
// gives up.
//
// Unlike Pen, which turns the SYN around in place (keeping its options as
// zeroed payload and summing a fixed 40-byte pseudo-header, so that the
// checksum is wrong for nearly every SYN and a real client's kernel drops
// the reply), the reply is built afresh: a 20-byte IPv4 header and a
// 20-byte TCP header without options, whose checksums are computed over
// exactly those bytes, whatever options the SYN carried.
const (
	tarpitReplyLen = ethHeaderLen + ipv4MinHeader + tcpMinHeader
	// tarpitWindow is the window the SYN/ACK advertises: room for a few
	// bytes, never acknowledged, so the peer's stack retransmits them
	// with back-off for as long as its retry limit allows (LaBrea's
	// choice). A zero window would keep it probing instead.
	tarpitWindow = 10
	tarpitTTL    = 64
)

// tarpitReply builds into b (at least tarpitReplyLen bytes) the SYN/ACK
// answering the SYN in frame f (parsed as p), from our MAC. The initial
// sequence number is a keyed hash of the connection, so repeated SYNs get
// the same answer and nobody can predict it without the key.
func tarpitReply(b, f []byte, p ipFrame, ours [6]byte, key uint64) []byte {
	b = b[:tarpitReplyLen]
	copy(b[0:6], f[6:12]) // back to the sender's MAC
	copy(b[6:12], ours[:])
	binary.BigEndian.PutUint16(b[12:14], etherTypeIPv4)

	ip := b[ethHeaderLen : ethHeaderLen+ipv4MinHeader]
	ip[0] = 0x45
	ip[1] = 0
	binary.BigEndian.PutUint16(ip[2:4], ipv4MinHeader+tcpMinHeader)
	binary.BigEndian.PutUint16(ip[4:6], 0)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ip[8] = tarpitTTL
	ip[9] = protoTCP
	ip[10], ip[11] = 0, 0
	d, s := p.dst.As4(), p.src.As4()
	copy(ip[12:16], d[:])
	copy(ip[16:20], s[:])
	binary.BigEndian.PutUint16(ip[10:12], ipv4HeaderChecksum(ip))

	t := b[ethHeaderLen+ipv4MinHeader:]
	binary.BigEndian.PutUint16(t[0:2], p.dport)
	binary.BigEndian.PutUint16(t[2:4], p.sport)
	isn := uint32(mix64(key ^ uint64(binary.BigEndian.Uint32(d[:]))<<32 ^ uint64(binary.BigEndian.Uint32(s[:])) ^ uint64(p.sport)<<16 ^ uint64(p.dport)<<48))
	binary.BigEndian.PutUint32(t[4:8], isn)
	binary.BigEndian.PutUint32(t[8:12], p.seq+1)
	t[12] = (tcpMinHeader / 4) << 4
	t[13] = tcpSYN | tcpACK
	binary.BigEndian.PutUint16(t[14:16], tarpitWindow)
	t[16], t[17], t[18], t[19] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(t[16:18], transportChecksum(p.dst, p.src, protoTCP, t[:tcpMinHeader]))
	return b
}

// isSYN reports whether a TCP frame opens a connection: SYN without ACK,
// RST or FIN. Only those get a tarpit reply.
func isSYN(flags uint8) bool {
	return flags&(tcpSYN|tcpACK|tcpRST|tcpFIN) == tcpSYN
}

// limiter is a token bucket per source address (hashed into a fixed
// number of buckets, so memory stays bounded whatever the sources) and
// one for all sources together: tarpit replies cannot be used to reflect
// a flood at a forged source. It belongs to the reading goroutine.
type limiter struct {
	rate, burst float64 // per source: tokens per second, bucket size
	allRate     float64 // all sources together
	buckets     [4096]bucket
	all         bucket
	seed        uint64
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(perSource, burst, overall float64, seed uint64) *limiter {
	return &limiter{rate: perSource, burst: burst, allRate: overall, seed: seed}
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if now.After(b.last) {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	if now.After(b.last) {
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// allow reports whether a reply to src may go out now.
func (l *limiter) allow(src netip.Addr, now time.Time) bool {
	a := src.As4()
	i := mix64(l.seed^uint64(binary.BigEndian.Uint32(a[:]))) % uint64(len(l.buckets))
	if !l.buckets[i].take(now, l.rate, l.burst) {
		return false
	}
	return l.all.take(now, l.allRate, l.allRate)
}
