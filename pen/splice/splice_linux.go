//go:build linux

package splice

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/internal/tcx"
)

// flowKey and flowKey6 are keys of flows and flows6: addresses and
// ports as in the packet.
type (
	flowKey  [12]byte
	flowKey6 [36]byte
)

// flowCommon is the part of a flow value both families share; the
// offsets are prog_linux.go's v*.
type flowCommon struct {
	Ports    [4]byte
	Flags    uint32
	SeqAdd   uint32
	AckAdd   uint32
	TsvalAdd uint32
	TsecrAdd uint32
	TsBase   uint32
	LShift   uint8
	RShift   uint8
	Win      uint16
	Acked    uint32
	Nxt      uint32
	Fins     uint32
	Rsts     uint32
	FinEnd   uint32
	Tsval    uint32
	Ifindex  uint32
	Tag      [8]byte // the caller's tag of the pair (native order), sent to ends on a FIN or RST
}

// flowValue and flowValue6 are values of flows and flows6.
type (
	flowValue struct {
		flowCommon
		Addrs [8]byte
		Peer  flowKey
	}
	flowValue6 struct {
		flowCommon
		Addrs [32]byte
		Peer  flowKey6
	}
)

// maxPairs bounds the pairs spliced at a time (each has four entries).
const maxPairs = 1 << 15

// maxHeld bounds what pen takes from one of its sockets into memory when
// it splices a connection (the socket's receive queue, which pen then
// sends on itself).
const maxHeld = 16 << 20

// tsMargin is added to the clock of pen's socket when a direction's
// timestamps are first rewritten, so that they stay ahead of anything
// that socket sent before it fell silent (PAWS drops a segment whose
// TSval went back).
const tsMargin = 1 << 20

// Splicer is the program, its maps, the raw sockets pen sends through,
// and the program's attachments. One per process, shared by every loop:
// map updates are system calls, safe from any goroutine, the raw sockets
// are only written, hooks and addrs guard themselves, and endsMu guards the
// ring buffer's reader.
type Splicer struct {
	flows, flows6 *ebpf.Map
	ends          *ebpf.Map // ring buffer: the tags of pairs a FIN or RST passed for
	prog          *ebpf.Program
	link          link.Link
	raw, raw6     int // -1: none

	// For peers on other hosts: the sockets whose segments the egress
	// program drops, and the interfaces the programs are attached to.
	own     *ebpf.Map
	ownProg *ebpf.Program
	hooks   *tcx.Attacher
	addrs   tcx.Addrs // the host's addresses and their interfaces

	// ends is read by one goroutine, started by the first OnEnd and
	// ended by Close; endsMu guards endsRd.
	endsMu sync.Mutex
	endsRd *ringbuf.Reader
}

// OnEnd has f called, from a goroutine of the splicer's, with the tag of
// a spliced pair (Splice's tag) soon after a FIN or a RST of it passes,
// until the splicer is closed; the caller may then Poll the pair at once
// instead of waiting for its next regular Poll. Only the first call
// installs a function (it reports whether it did). A FIN does not end a
// pair alone: the acknowledgment of the last one, which follows within a
// round trip, does. When ends come faster than they are read, the ring
// (4,096 records) loses some; the regular Poll finds those pairs.
func (s *Splicer) OnEnd(f func(tag uint64)) (bool, error) {
	s.endsMu.Lock()
	defer s.endsMu.Unlock()
	if s.endsRd != nil {
		return false, nil
	}
	rd, err := ringbuf.NewReader(s.ends)
	if err != nil {
		return false, fmt.Errorf("ring buffer: %w", err)
	}
	s.endsRd = rd
	go func() {
		var rec ringbuf.Record
		for {
			err := rd.ReadInto(&rec)
			if errors.Is(err, ringbuf.ErrFlushed) {
				continue
			}
			if err != nil {
				return // closed: the splicer is
			}
			if len(rec.RawSample) >= 8 {
				f(binary.NativeEndian.Uint64(rec.RawSample))
			}
		}
	}()
	return true, nil
}

var (
	openMu   sync.Mutex
	opened   *Splicer
	openErr  error
	openDone bool
)

// Get opens the process's splicer on first use.
func Get() (*Splicer, error) {
	openMu.Lock()
	defer openMu.Unlock()
	if !openDone {
		openDone = true
		opened, openErr = open()
	}
	return opened, openErr
}

func open() (*Splicer, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, err
	}
	s := &Splicer{raw: -1, raw6: -1, addrs: tcx.Addrs{MaxAge: 5 * time.Second}}
	var err error
	if s.flows, s.flows6, s.ends, s.prog, err = loadProgram(); err != nil {
		return nil, err
	}
	snap, err := s.addrs.Get()
	if err == nil && snap.Loopback() == 0 {
		err = errors.New("no loopback interface")
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	lo := snap.Loopback()
	if s.link, err = link.AttachTCX(link.TCXOptions{Interface: lo, Program: s.prog, Attach: ebpf.AttachTCXIngress}); err != nil {
		s.Close()
		return nil, fmt.Errorf("attaching to the loopback interface: %w", err)
	}
	if s.raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
		s.Close()
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	if err = unix.SetsockoptInt(s.raw, unix.SOL_SOCKET, unix.SO_MARK, injectMark); err != nil {
		s.Close()
		return nil, fmt.Errorf("SO_MARK: %w", err)
	}
	// IPv6 pairs need a raw IPv6 socket (IPPROTO_RAW: pen writes the
	// header); without one (IPv6 disabled) they stay with the relay.
	if fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err == nil {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, injectMark) == nil {
			s.raw6 = fd
		} else {
			unix.Close(fd)
		}
	}
	if s.own, err = ebpf.NewMap(&ebpf.MapSpec{Name: "pen_splice_own", Type: ebpf.Hash, KeySize: 8, ValueSize: 1,
		MaxEntries: 2 * maxPairs, Flags: unix.BPF_F_NO_PREALLOC}); err != nil {
		s.Close()
		return nil, fmt.Errorf("hash map: %w", err)
	}
	if s.ownProg, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "pen_splice_own", Type: ebpf.SchedCLS,
		License: "GPL", Instructions: ownProgram(s.own.FD())}); err != nil {
		s.Close()
		return nil, fmt.Errorf("tc program: %w", err)
	}
	s.hooks = tcx.NewAttacher(tcx.Hook{Program: s.prog, Attach: ebpf.AttachTCXIngress},
		tcx.Hook{Program: s.ownProg, Attach: ebpf.AttachTCXEgress})
	return s, nil
}

// loadProgram makes the flows maps and the program.
func loadProgram() (flows, flows6, ends *ebpf.Map, prog *ebpf.Program, err error) {
	newMap := func(name string, key, value uintptr) (*ebpf.Map, error) {
		return ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.Hash, KeySize: uint32(key), ValueSize: uint32(value),
			MaxEntries: 4 * maxPairs, Flags: unix.BPF_F_NO_PREALLOC})
	}
	closeAll := func(ms ...*ebpf.Map) {
		for _, m := range ms {
			if m != nil {
				m.Close()
			}
		}
	}
	if flows, err = newMap("pen_splice", unsafe.Sizeof(flowKey{}), unsafe.Sizeof(flowValue{})); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("hash map: %w", err)
	}
	if flows6, err = newMap("pen_splice6", unsafe.Sizeof(flowKey6{}), unsafe.Sizeof(flowValue6{})); err != nil {
		closeAll(flows)
		return nil, nil, nil, nil, fmt.Errorf("hash map: %w", err)
	}
	// 16 bytes a record (8 of header, the 8-byte tag): room for 4,096
	// ends between two reads. When it is full the program's record is
	// lost, and the pair is found over by its next regular Poll.
	if ends, err = ebpf.NewMap(&ebpf.MapSpec{Name: "pen_splice_end", Type: ebpf.RingBuf, MaxEntries: 1 << 16}); err != nil {
		closeAll(flows, flows6)
		return nil, nil, nil, nil, fmt.Errorf("ring buffer: %w", err)
	}
	prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "pen_splice", Type: ebpf.SchedCLS,
		License: "GPL", Instructions: program(flows.FD(), flows6.FD(), ends.FD())})
	if err != nil {
		closeAll(flows, flows6, ends)
		return nil, nil, nil, nil, fmt.Errorf("tc program: %w", err)
	}
	return flows, flows6, ends, prog, nil
}

// Close detaches the program and frees the map.
func (s *Splicer) Close() {
	if s.link != nil {
		s.link.Close()
	}
	if s.hooks != nil {
		s.hooks.Close()
	}
	if s.ownProg != nil {
		s.ownProg.Close()
	}
	if s.own != nil {
		s.own.Close()
	}
	if s.prog != nil {
		s.prog.Close()
	}
	s.endsMu.Lock()
	if s.endsRd != nil {
		s.endsRd.Close() // the reading goroutine ends
	}
	s.endsMu.Unlock()
	for _, m := range []*ebpf.Map{s.flows, s.flows6, s.ends} {
		if m != nil {
			m.Close()
		}
	}
	for _, fd := range []int{s.raw, s.raw6} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func notEligible(format string, a ...any) error {
	return &ErrNotEligible{Why: fmt.Sprintf(format, a...)}
}

// side is what Splice learns of one of pen's sockets.
type side struct {
	fd           int
	local, peer  netip.AddrPort
	info         *unix.TCPInfo // read by Splice, nil once it returns (memory)
	opts         uint8         // the connection's options (optTS, ...), from info
	wscales      uint8         // its window scales, from info (wscale)
	rcvWnd       uint32        // the window the socket offered at the splice
	rcvNxt       uint32        // next sequence number from the peer
	copied       uint32        // the first byte pen has not read
	writeSeq     uint32        // after the last byte pen wrote
	sndUna       uint32        // the first byte the peer has not acknowledged
	sndNxt       uint32        // the socket sent up to here
	ts           uint32        // the socket's timestamp clock
	unacked      []byte        // [sndUna, writeSeq): sent, not acknowledged
	inject       []byte        // what the peer has not acknowledged of what pen owes it
	injectAt     uint32        // the peer's sequence number of inject[0]
	sentTo       uint32        // sent (by the socket or pen) up to here
	wnd          uint32        // the peer's window, bytes from injectAt
	rto, rto0    time.Duration // wait before sending again; doubles while unanswered
	lastProgress time.Time
}

// tsOptions is the timestamps option of a segment pen sends this side's
// peer with TSval tsval, echoing the peer's latest TSval as the program
// saw it in from, the entry of the peer's own segments (0 until learnt);
// nil when the connection has no timestamps.
func (sd *side) tsOptions(tsval uint32, from *flowCommon) []byte {
	if sd.opts&optTS == 0 {
		return nil
	}
	var tsecr uint32
	if from.Flags&fLearned != 0 {
		tsecr = from.Tsval - from.TsvalAdd
	}
	return tsOpt(tsval, tsecr)
}

// Pair is a spliced connection: the client's socket (down) and the
// server's (up), whose segments the program now rewrites into each other.
// It belongs to the goroutine that spliced it (pen's loop): its methods
// are not safe for concurrent use.
type Pair struct {
	s     *Splicer
	keys  [4][]byte // client->pen, server->pen, pen->client, pen->server
	flows *ebpf.Map // s.flows or s.flows6
	raw   int       // s.raw or s.raw6
	sd    [2]side   // [0] down (client), [1] up (server)
	// The sockets' cookies in own (peers elsewhere), else 0.
	cookies [2]uint64
	mss     [2]int
	// lookup's buffer (a flowValue or flowValue6) and its arguments.
	lk struct {
		buf  []uint32
		val  any
		keys [4]any
	}
	// Counted up to here: the server's sequence numbers of the client's
	// bytes, the client's of the server's.
	countedTo [2]uint32
	done      time.Time // when both FINs were acknowledged, or a RST passed
}

// key is the flows or flows6 key of a segment from src to dst.
func key(src, dst netip.AddrPort) []byte {
	k := append(src.Addr().AsSlice(), dst.Addr().AsSlice()...)
	k = binary.BigEndian.AppendUint16(k, src.Port())
	return binary.BigEndian.AppendUint16(k, dst.Port())
}

// flowValueOf is the flows (v6: flows6) value of cm for segments
// rewritten to the key to (nil for pen's own sockets), whose other
// direction has the key peer.
func flowValueOf(cm flowCommon, to, peer []byte, v6 bool) any {
	if len(to) > 0 {
		copy(cm.Ports[:], to[len(to)-4:])
	}
	if v6 {
		v := flowValue6{flowCommon: cm}
		copy(v.Addrs[:], to)
		copy(v.Peer[:], peer)
		return v
	}
	v := flowValue{flowCommon: cm}
	copy(v.Addrs[:], to)
	copy(v.Peer[:], peer)
	return v
}

// lookup reads the entry of keys[i].
func (p *Pair) lookup(i int) (flowCommon, error) {
	// Into a buffer of the pair's own, through keys and buffer made
	// interface values once: Poll reads two entries of every spliced
	// connection once a second, and a value, a key and a buffer boxed
	// anew each time (six objects a Poll) grew pen's memory by more than a
	// kilobyte per idle spliced connection.
	if p.lk.val == nil {
		n := int(unsafe.Sizeof(flowValue{}))
		if p.flows == p.s.flows6 {
			n = int(unsafe.Sizeof(flowValue6{}))
		}
		p.lk.buf = make([]uint32, n/4) // flowCommon's alignment
		p.lk.val = unsafe.Slice((*byte)(unsafe.Pointer(&p.lk.buf[0])), n)
		for j, k := range p.keys {
			p.lk.keys[j] = k
		}
	}
	if err := p.flows.Lookup(p.lk.keys[i], p.lk.val); err != nil {
		return flowCommon{}, err
	}
	return *(*flowCommon)(unsafe.Pointer(&p.lk.buf[0])), nil
}

func sockAddrs(fd int) (local, peer netip.AddrPort, err error) {
	conv := func(sa unix.Sockaddr) (netip.AddrPort, bool) {
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), true
		case *unix.SockaddrInet6:
			ad := netip.AddrFrom16(a.Addr).Unmap()
			return netip.AddrPortFrom(ad, uint16(a.Port)), ad.Is4() || a.ZoneId == 0 && !ad.IsLinkLocalUnicast()
		}
		return netip.AddrPort{}, false
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return local, peer, notEligible("getsockname: %v", err)
	}
	pa, err := unix.Getpeername(fd)
	if err != nil {
		return local, peer, notEligible("getpeername: %v", err) // the peer has gone
	}
	l, ok1 := conv(sa)
	p, ok2 := conv(pa)
	if !ok1 || !ok2 {
		return local, peer, notEligible("not an IP socket, or a link-local address")
	}
	return l, p, nil
}

const (
	tcpRepair      = 19
	tcpRepairQueue = 20
	tcpQueueSeq    = 21
	tcpTimestamp   = 24
	tcpRecvQueue   = 1
	tcpSendQueue   = 2
	repairOffNoWP  = -1
)

// snapshot reads the socket's sequence numbers, in repair mode.
func (sd *side) snapshot() error {
	fd := sd.fd
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpRepair, 1); err != nil {
		if errors.Is(err, unix.EPERM) {
			return notEligible("TCP_REPAIR needs CAP_NET_ADMIN")
		}
		return fmt.Errorf("TCP_REPAIR: %w", err)
	}
	defer unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpRepair, repairOffNoWP)
	get := func(q int) (uint32, error) {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpRepairQueue, q); err != nil {
			return 0, err
		}
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, tcpQueueSeq)
		return uint32(v), err
	}
	for try := 0; ; try++ {
		r, err := get(tcpRecvQueue)
		if err != nil {
			return fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
		}
		inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return err
		}
		r2, err := get(tcpRecvQueue)
		if err != nil {
			return err
		}
		if r == r2 {
			sd.rcvNxt, sd.copied = r, r-uint32(inq)
			break
		}
		if try == 10 {
			return notEligible("data keeps arriving")
		}
	}
	w, err := get(tcpSendQueue)
	if err != nil {
		return fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
	}
	sd.writeSeq = w
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return err
	}
	sd.sndUna = w - uint32(outq)
	unsent, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return err
	}
	sd.sndNxt = w - uint32(unsent)
	if outq > 0 {
		// The send queue, read in repair mode: pen resends it if the
		// peer needs it, since the socket will not.
		buf := make([]byte, outq)
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != nil || n != outq {
			return notEligible("cannot read the send queue (%d of %d bytes: %v)", n, outq, err)
		}
		sd.unacked = buf
	}
	ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, tcpTimestamp)
	if err != nil {
		return err
	}
	sd.ts = uint32(ts)
	return nil
}

const (
	optTS     = 1
	optSACK   = 2
	optWscale = 4
	optECN    = 8
)

// Splice hands the pair of sockets down (client) and up (server) to the
// program. toUp and toDown are bytes pen has read and not yet written
// (from the client, and from the server); Splice takes them over. On an
// error nothing has changed and pen keeps relaying; *ErrNotEligible says
// why the pair cannot be spliced (now). tag is what OnEnd's function is
// given when the pair's connection ends.
func (s *Splicer) Splice(down, up int, toUp, toDown []byte, tag uint64) (*Pair, error) {
	p := &Pair{s: s}
	p.sd[0].fd, p.sd[1].fd = down, up
	var opts [2]uint8
	for i := range p.sd {
		sd := &p.sd[i]
		var err error
		if sd.local, sd.peer, err = sockAddrs(sd.fd); err != nil {
			return nil, err
		}
		if sd.info, err = unix.GetsockoptTCPInfo(sd.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			return nil, err
		}
		if sd.info.State != unix.BPF_TCP_ESTABLISHED {
			return nil, notEligible("not established")
		}
		opts[i] = sd.info.Options & (optTS | optSACK | optWscale | optECN)
		p.mss[i] = int(sd.info.Snd_mss)
		sd.opts, sd.wscales, sd.rcvWnd = sd.info.Options, wscale(sd.info), sd.info.Rcv_wnd
	}
	// One family throughout.
	v6 := p.sd[0].peer.Addr().Is6()
	for i := range p.sd {
		if p.sd[i].peer.Addr().Is6() != v6 || p.sd[i].local.Addr().Is6() != v6 {
			return nil, notEligible("between IPv4 and IPv6")
		}
	}
	p.flows, p.raw = s.flows, s.raw
	if v6 {
		if s.raw6 < 0 {
			return nil, notEligible("no raw IPv6 socket")
		}
		p.flows, p.raw = s.flows6, s.raw6
	}
	// Both peers on this host (their segments pass the loopback
	// interface, and go on up the stack), or both elsewhere (they arrive
	// on the interfaces holding pen's addresses and go out of them).
	var ifindex [2]int // where each side's segments arrive, and the other's leave
	host, err := s.addrs.Get()
	if err != nil {
		return nil, notEligible("the host's addresses: %v", err)
	}
	cLocal, sLocal := host.Local(p.sd[0].peer.Addr()), host.Local(p.sd[1].peer.Addr())
	switch {
	case cLocal && sLocal:
		// The program is on the loopback interface from the start.
	case !cLocal && !sLocal:
		for i := range p.sd {
			a := p.sd[i].local.Addr()
			if ifindex[i] = host.Index(a); ifindex[i] == 0 || a.IsLoopback() {
				return nil, notEligible("no interface holds %v", a)
			}
		}
	default:
		return nil, notEligible("one peer is on this host and the other is not")
	}
	if opts[0] != opts[1] {
		return nil, notEligible("the two connections negotiated different options (%#x, %#x)", opts[0], opts[1])
	}
	if opts[0]&optECN != 0 {
		return nil, notEligible("ECN")
	}
	// Each peer sends segments as large as pen told it it may: the path
	// to the other must carry them.
	if a, b := p.sd[0].info, p.sd[1].info; a.Advmss != b.Advmss || a.Pmtu != b.Pmtu {
		return nil, notEligible("the two paths differ (MSS %d and %d, MTU %d and %d)", a.Advmss, b.Advmss, a.Pmtu, b.Pmtu)
	}
	for _, idx := range ifindex {
		if idx == 0 {
			continue
		}
		if err := s.hooks.Attach(idx); err != nil {
			return nil, notEligible("cannot attach to interface %d: %v", idx, err)
		}
	}
	for i := range p.sd {
		// What pen would have to hold: what waits in the socket.
		if inq, err := unix.IoctlGetInt(p.sd[i].fd, unix.SIOCINQ); err != nil || inq > maxHeld {
			return nil, notEligible("%d bytes wait in a socket", inq)
		}
		if err := p.sd[i].snapshot(); err != nil {
			return nil, err
		}
	}
	if len(toUp) > 1<<16 || len(toDown) > 1<<16 {
		return nil, notEligible("too much data waiting")
	}
	c, sv := &p.sd[0], &p.sd[1]
	// The first client byte the server has not been sent is copied -
	// len(toUp); it goes to the server at sv.writeSeq. Likewise the other
	// way.
	upFirst := c.copied - uint32(len(toUp))
	downFirst := sv.copied - uint32(len(toDown))
	seqUp := sv.writeSeq - upFirst    // client sequence -> server sequence
	seqDown := c.writeSeq - downFirst // server sequence -> client sequence
	now := time.Now()
	p.countedTo = [2]uint32{sv.writeSeq, c.writeSeq}
	for i, extra := range [2][]byte{toDown, toUp} {
		sd := &p.sd[i]
		// What the socket has not sent yet, pen sends at once: the
		// program drops the socket's segments from now on.
		sd.inject, sd.injectAt, sd.sentTo = append(sd.unacked, extra...), sd.sndUna, sd.sndNxt
		sd.wnd, sd.lastProgress = sd.info.Snd_wnd, now
		// Resent when the peer has acknowledged nothing for four times
		// the connection's smoothed round-trip time (10 ms at least),
		// then after twice as long each time, up to a minute.
		sd.rto0 = max(4*time.Duration(sd.info.Rtt)*time.Microsecond, 10*time.Millisecond)
		sd.rto = sd.rto0
	}

	kc := key(c.peer, c.local)   // client -> pen
	ks := key(sv.peer, sv.local) // server -> pen
	kpc := key(c.local, c.peer)  // pen -> client
	kps := key(sv.local, sv.peer)
	p.keys = [4][]byte{kc, ks, kpc, kps}
	flags := uint32(fWin)
	if opts[0]&optTS != 0 {
		flags |= fTS
	}
	mk := func(seqAdd, ackAdd uint32, base uint32, from, into *side, ifindex int) flowCommon {
		v := flowCommon{Flags: flags, SeqAdd: seqAdd, AckAdd: ackAdd, TsBase: base + tsMargin, Ifindex: uint32(ifindex)}
		binary.NativeEndian.PutUint64(v.Tag[:], tag)
		v.LShift, v.RShift = wscale(from.info)&0xf, wscale(into.info)>>4
		return v
	}
	common := [4]flowCommon{
		mk(seqUp, -seqDown, sv.ts, c, sv, ifindex[1]),
		mk(seqDown, -seqUp, c.ts, sv, c, ifindex[0]),
		{Flags: fDrop},
		{Flags: fDrop},
	}
	// The new addresses and ports: what the rewritten segment's key would
	// be; and the key of the other direction.
	to := [4][]byte{kps, kpc}
	peers := [4][]byte{ks, kc}
	var vals [4]any
	for i, cm := range common {
		vals[i] = flowValueOf(cm, to[i], peers[i], p.flows == s.flows6)
	}
	if ifindex[0] != 0 {
		// Elsewhere, what pen's sockets send leaves by the interfaces'
		// egress: the egress program drops it by the sockets' cookies.
		for i := range p.sd {
			ck, err := unix.GetsockoptUint64(p.sd[i].fd, unix.SOL_SOCKET, unix.SO_COOKIE)
			if err == nil {
				err = s.own.Update(ck, uint8(1), ebpf.UpdateAny)
			}
			if err != nil {
				p.dropOwn()
				return nil, fmt.Errorf("socket cookie: %w", err)
			}
			p.cookies[i] = ck
		}
	}
	// Silence pen's sockets first, then splice both ways.
	for _, i := range []int{2, 3, 0, 1} {
		if err := p.flows.Update(p.keys[i], vals[i], ebpf.UpdateNoExist); err != nil {
			for _, j := range []int{2, 3, 0, 1} {
				if j == i {
					break
				}
				p.flows.Delete(p.keys[j])
			}
			p.dropOwn()
			return nil, fmt.Errorf("splice map: %w", err)
		}
	}
	for i := range p.sd {
		unix.SetsockoptInt(p.sd[i].fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0)
	}
	for i := range p.sd {
		p.sd[i].info = nil // some 240 bytes each, for every spliced connection
	}
	p.drain()
	p.Pump(now)
	return p, nil
}

// drain reads what reached pen's sockets before the program took their
// segments; it goes to the other side after what pen held.
func (p *Pair) drain() {
	for i := range p.sd {
		sd, other := &p.sd[i], &p.sd[1-i]
		for {
			inq, err := unix.IoctlGetInt(sd.fd, unix.SIOCINQ)
			if err != nil || inq <= 0 {
				break
			}
			// Read straight into the tail of what the other side is owed.
			other.inject = slices.Grow(other.inject, inq)
			tail := other.inject[len(other.inject) : len(other.inject)+inq]
			n, _, err := unix.Recvfrom(sd.fd, tail, unix.MSG_DONTWAIT)
			if n <= 0 || err != nil {
				break
			}
			other.inject = other.inject[:len(other.inject)+n]
		}
	}
}

// Pending reports whether pen owes a peer bytes and expects it to
// acknowledge them soon: Pump then wants calling again within
// milliseconds. Once a peer has left what pen sent unacknowledged for
// a second or more, Poll's calls, once a second, are enough.
func (p *Pair) Pending() bool {
	for i := range p.sd {
		if len(p.sd[i].inject) > 0 && p.sd[i].rto < time.Second {
			return true
		}
	}
	return false
}

// Pump sends, from pen's raw socket, what pen owes the peers as far as
// their windows allow, and again what they have not acknowledged after
// a while (side.rto). It reports whether anything is still owed.
func (p *Pair) Pump(now time.Time) bool {
	v, err := p.entries()
	if err != nil {
		return false
	}
	return p.pump(now, &v)
}

// entries reads the entries of both directions (keys[0] and keys[1]).
func (p *Pair) entries() (v [2]flowCommon, err error) {
	for i := range v {
		if v[i], err = p.lookup(i); err != nil {
			return v, err
		}
	}
	return v, nil
}

// pump is Pump with the entries read.
func (p *Pair) pump(now time.Time, v *[2]flowCommon) bool {
	p.drain()
	for i := range p.sd {
		sd := &p.sd[i]
		if len(sd.inject) == 0 {
			continue
		}
		// What the peer acknowledged (v[i].Acked, in the peer's own view
		// of the stream pen sends it) and its window.
		if v[i].Acked != 0 {
			if d := int32(v[i].Acked - sd.injectAt); d > 0 {
				sd.inject = sd.inject[min(int(d), len(sd.inject)):]
				sd.injectAt = v[i].Acked
				if int32(sd.sentTo-sd.injectAt) < 0 {
					sd.sentTo = sd.injectAt
				}
				sd.lastProgress, sd.rto = now, sd.rto0
			}
			sd.wnd = uint32(v[i].Win) << (sd.wscales & 0xf)
		}
		if len(sd.inject) == 0 {
			sd.inject = nil
			continue
		}
		if now.Sub(sd.lastProgress) >= sd.rto {
			sd.sentTo = sd.injectAt // send it all again, and wait twice as long
			sd.lastProgress, sd.rto = now, min(2*sd.rto, time.Minute)
		}
		end := sd.injectAt + uint32(len(sd.inject))
		if lim := sd.injectAt + max(sd.wnd, 1); int32(end-lim) > 0 {
			end = lim // no further than the window
		}
		if int32(end-sd.sentTo) <= 0 {
			continue
		}
		// Timestamps: the peer's last TSval echoed, and the clock of pen's
		// socket when it fell silent (one tick later). The peer's
		// ts_recent moves only with segments in order, and what pen owes
		// comes before anything the program sends it, whose TSvals start
		// tsMargin later (TsBase); so it passes PAWS, and what follows
		// does too.
		opts := sd.tsOptions(sd.ts+1, &v[i])
		mss := max(p.mss[i]-len(opts), 500)
		// The window the other peer offers, as the program rewrites it.
		win := uint16(min(sd.rcvWnd>>(sd.wscales>>4), 0xffff))
		if o := &v[1-i]; o.Win != 0 {
			win = uint16(min((uint32(o.Win)<<o.LShift)>>o.RShift, 0xffff))
		}
		for seq := sd.sentTo; int32(end-seq) > 0; {
			off := int(seq - sd.injectAt)
			n := min(int(end-seq), mss)
			seg := segment(sd.local, sd.peer, seq, sd.rcvNxt, flagACK|flagPSH, max(win, 1), opts, sd.inject[off:off+n])
			if err := p.send(seg, sd.peer); err != nil {
				break
			}
			seq += uint32(n)
			sd.sentTo = seq
		}
	}
	return p.Pending()
}

// Status is what Poll reports.
type Status struct {
	FromClient, FromServer uint64 // bytes delivered since the last Poll
	Over                   bool   // closed both ways, or reset: the counts are final
	Done                   bool   // over and settled: Release may follow
}

// settle is how long a closed pair keeps its entries, for a FIN or its
// acknowledgment sent again.
const settle = 3 * time.Second

// Poll counts what the peers acknowledged (so that a byte sent again is
// counted once), sends on what pen owes them, and says whether the
// connection is over.
func (p *Pair) Poll(now time.Time) Status {
	var st Status
	v, err := p.entries()
	if err != nil {
		if p.done.IsZero() {
			p.done = now.Add(-settle) // nothing to settle: the entries are gone
		}
		st.Over, st.Done = true, true
		return st
	}
	p.pump(now, &v)
	// v[1].Acked is the server's acknowledgment of the client's bytes,
	// v[0].Acked the client's of the server's; a FIN takes a sequence
	// number but is no byte.
	for i, into := range [2]int{1, 0} {
		ack := v[into].Acked
		if ack == 0 {
			continue
		}
		if v[i].Fins > 0 && int32(ack-(v[i].FinEnd-1)) > 0 {
			ack = v[i].FinEnd - 1
		}
		if d := int32(ack - p.countedTo[i]); d > 0 {
			if i == 0 {
				st.FromClient = uint64(d)
			} else {
				st.FromServer = uint64(d)
			}
			p.countedTo[i] = ack
		}
	}
	over := v[0].Rsts+v[1].Rsts > 0
	if v[0].Fins > 0 && v[1].Fins > 0 &&
		int32(v[1].Acked-v[0].FinEnd) >= 0 && // the server acknowledged the client's FIN
		int32(v[0].Acked-v[1].FinEnd) >= 0 {
		over = true
	}
	if over && p.done.IsZero() {
		p.done = now
	}
	st.Over = !p.done.IsZero()
	st.Done = st.Over && now.Sub(p.done) >= settle
	return st
}

// Settled reports whether a pair that is over has kept its entries long
// enough for a FIN or its acknowledgment sent again (Poll's Done).
func (p *Pair) Settled(now time.Time) bool {
	return !p.done.IsZero() && now.Sub(p.done) >= settle
}

// Over reports whether the peers have closed the connection (both FINs
// acknowledged) or one reset it.
func (p *Pair) Over() bool { return !p.done.IsZero() }

// Close ends the connection for both peers, as closing pen's sockets
// would: each gets a FIN after the last byte it was sent. Release
// follows; what the peers send after that is answered with a reset.
func (p *Pair) Close() {
	v, err := p.entries()
	if err != nil {
		return
	}
	for i := range p.sd {
		// After the last byte peer i was sent: by pen, by the program,
		// or as far as it acknowledged.
		sd, o := &p.sd[i], &v[1-i] // o: the segments toward peer i
		seq := sd.injectAt + uint32(len(sd.inject))
		for _, s := range []uint32{o.Nxt, v[i].Acked} {
			if s != 0 && int32(s-seq) > 0 {
				seq = s
			}
		}
		ack := sd.rcvNxt
		if v[i].Nxt != 0 {
			if a := v[i].Nxt - v[i].SeqAdd; int32(a-ack) > 0 {
				ack = a
			}
		}
		tsval := sd.ts + 1
		if o.Flags&fLearned != 0 && int32(o.Tsval-tsval) > 0 {
			tsval = o.Tsval // the peer has seen these already: not older
		}
		seg := segment(sd.local, sd.peer, seq, ack, flagACK|flagFIN, 0xffff, sd.tsOptions(tsval, &v[i]), nil)
		p.send(seg, sd.peer)
	}
}

// send sends the IP packet pkt to to from pen's raw socket.
func (p *Pair) send(pkt []byte, to netip.AddrPort) error {
	if to.Addr().Is4() {
		return unix.Sendto(p.raw, pkt, 0, &unix.SockaddrInet4{Addr: to.Addr().As4()})
	}
	return unix.Sendto(p.raw, pkt, 0, &unix.SockaddrInet6{Addr: to.Addr().As16()})
}

// Release removes the pair's entries and puts pen's sockets in repair
// mode, so that closing them sends nothing. The caller closes them.
func (p *Pair) Release() {
	for i := range p.sd {
		unix.SetsockoptInt(p.sd[i].fd, unix.IPPROTO_TCP, tcpRepair, 1)
	}
	for _, k := range p.keys {
		p.flows.Delete(k)
	}
	p.dropOwn()
}

func (p *Pair) dropOwn() {
	for i, ck := range p.cookies {
		if ck != 0 {
			p.s.own.Delete(ck)
			p.cookies[i] = 0
		}
	}
}

// wscale is tcp_info's byte of window scales (the peer's in the low four
// bits, the socket's own in the high four), which x/sys leaves as
// padding.
func wscale(ti *unix.TCPInfo) uint8 {
	return (*[8]byte)(unsafe.Pointer(ti))[6]
}
