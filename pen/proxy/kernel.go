package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/splice"
)

// The in-kernel relay (kernel_relay). Once a plain TCP connection has
// carried a few exchanges and nothing in pen needs to see its bytes (no
// X-Forwarded-For, request log, dump, TLS, unix or UDP socket), the loop
// hands its two sockets to the kernel: an sk_skb stream verdict program,
// attached to a sockhash, sends every segment that arrives on one socket
// out of the other, so that bytes move without waking pen.
//
// The program is built here with cilium/ebpf's asm package (no C compiler
// at build or test time). It uses three maps:
//
//	active  sockhash, key: socket cookie; the verdict program is attached
//	        to it, so it runs for every socket in it
//	targets sockhash, key: socket cookie; no program: the sockets data may
//	        be sent to
//	peers   hash, key: socket cookie; value: the peer's cookie and the
//	        bytes sent to it so far
//
// A hand-over puts both sockets in targets and their pairing in peers
// before it puts either in active, so that no segment ever finds its peer
// missing. Data that arrived after pen's last read and before the
// hand-over waits in the socket's receive queue; setting SO_RCVLOWAT runs
// the socket's data-ready callback, which hands it to the program in
// order ahead of anything newer.
//
// What pen still sees, and how:
//   - half-close and close: the sockets stay in pen's epoll set for
//     EPOLLRDHUP (a FIN or an error wakes pen, data does not); pen reads
//     the EOF and shuts down the other side, but only once the kernel has
//     written into that socket every byte it took from this one (the
//     count in peers against TCP_INFO's bytes acknowledged plus SIOCOUTQ),
//     since the program's sends run from a work queue after it returns;
//   - byte counts: the program adds each segment's length to its socket's
//     entry in peers; the loop adds what is new to the server's and the
//     client's counts once a second and at the close;
//   - idle timeout: a connection whose counts moved is not idle.
//
// Where the kernel has no BPF, or pen may not use it, connections stay in
// the loop, and one line says why.

// kernelNotes records, for the loops of a Group, that the log said the
// kernel cannot splice or relay connections, so that it says so once.
type kernelNotes struct {
	splice, relay atomic.Bool
}

// relayMaxConns bounds the connections the kernel relays at a time (the
// maps' size; entries are allocated as they are used).
const relayMaxConns = 1 << 16

// kernelRelay is the program and its maps, one per process, shared by
// every loop (map updates are system calls, safe from any goroutine).
type kernelRelay struct {
	prog                   *ebpf.Program
	active, targets, peers *ebpf.Map
}

var (
	relayMu    sync.Mutex
	relayTried bool
	relayKern  *kernelRelay // set once, then only read
	relayErr   error
	loadRelay  = loadKernelRelay // tests replace it to see the fall-back
)

// getKernelRelay loads the relay on first use.
func getKernelRelay() (*kernelRelay, error) {
	relayMu.Lock()
	defer relayMu.Unlock()
	if !relayTried {
		relayTried = true
		relayKern, relayErr = loadRelay()
	}
	return relayKern, relayErr
}

// relayProgram is the verdict program:
//
//	cookie = bpf_get_socket_cookie(skb)
//	p = bpf_map_lookup_elem(&peers, &cookie)
//	if !p: return SK_PASS            (not paired: pen reads it)
//	if skb->len == 0: return SK_DROP (a bare FIN: pen shuts the peer down)
//	atomic p->bytes += skb->len
//	return bpf_sk_redirect_hash(skb, &targets, &p->peer, 0)   (out of the peer)
func relayProgram(peers, targets *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // the skb
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, peers.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word), // skb->len
		asm.JEq.Imm(asm.R1, 0, "drop"),           // a bare FIN: pen sees it and shuts the peer down itself
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.Add.Imm(asm.R7, 8),
		asm.StoreXAdd(asm.R7, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R0), // &p->peer
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, targets.FD()),
		asm.Mov.Imm(asm.R4, 0), // egress: send it out of the peer
		asm.FnSkRedirectHash.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("pass"), // SK_PASS
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"), // SK_DROP
		asm.Return(),
	}
}

func loadKernelRelay() (*kernelRelay, error) {
	// Kernels before 5.11 count BPF memory against RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, err
	}
	k := &kernelRelay{}
	var err error
	sockhash := func(name string) (*ebpf.Map, error) {
		return ebpf.NewMap(&ebpf.MapSpec{Name: name, Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: 2 * relayMaxConns})
	}
	if k.active, err = sockhash("pen_active"); err != nil {
		return nil, fmt.Errorf("sockhash: %w", err)
	}
	if k.targets, err = sockhash("pen_targets"); err != nil {
		k.close()
		return nil, fmt.Errorf("sockhash: %w", err)
	}
	if k.peers, err = ebpf.NewMap(&ebpf.MapSpec{Name: "pen_peers", Type: ebpf.Hash, KeySize: 8, ValueSize: 16,
		MaxEntries: 2 * relayMaxConns, Flags: unix.BPF_F_NO_PREALLOC}); err != nil {
		k.close()
		return nil, fmt.Errorf("hash map: %w", err)
	}
	if k.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "pen_relay", Type: ebpf.SkSKB,
		AttachType: ebpf.AttachSkSKBStreamVerdict, License: "GPL", Instructions: relayProgram(k.peers, k.targets)}); err != nil {
		k.close()
		return nil, fmt.Errorf("sk_skb program: %w", err)
	}
	if err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: k.active.FD(), Program: k.prog,
		Attach: ebpf.AttachSkSKBStreamVerdict}); err != nil {
		k.close()
		return nil, fmt.Errorf("attaching the verdict program: %w", err)
	}
	return k, nil
}

func (k *kernelRelay) close() {
	if k.prog != nil {
		k.prog.Close()
	}
	for _, m := range []*ebpf.Map{k.active, k.targets, k.peers} {
		if m != nil {
			m.Close()
		}
	}
}

// relayState is what a relayed connection keeps (conn.kr).
type relayState struct {
	cookie  [2]uint64 // [sideDown], [sideUp]
	counted [2]uint64 // bytes from each side already added to the counts
	written [2]uint64 // bytes written into each socket before the hand-over
	since   int64     // when a shutdown started waiting for the kernel to drain
}

// peerValue is an entry of peers.
type peerValue struct {
	Peer  uint64
	Bytes uint64
}

func socketCookie(fd int) (uint64, error) {
	var b [8]byte
	l := uint32(8)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_COOKIE,
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// written is how many bytes were ever written into the TCP socket fd:
// those acknowledged plus those still in its send queue.
func written(fd int) (uint64, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, err
	}
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0, err
	}
	return ti.Bytes_acked + uint64(outq), nil
}

// handOver gives the connection's sockets to the kernel. On error nothing
// has changed and the loop keeps relaying.
func (k *kernelRelay) handOver(down, up int) (*relayState, error) {
	st := &relayState{}
	var err error
	for side, fd := range [2]int{down, up} {
		if st.cookie[side], err = socketCookie(fd); err != nil {
			return nil, fmt.Errorf("SO_COOKIE: %w", err)
		}
		if st.written[side], err = written(fd); err != nil {
			return nil, fmt.Errorf("TCP_INFO: %w", err)
		}
	}
	undo := func() {
		for _, c := range st.cookie {
			k.active.Delete(c)
			k.targets.Delete(c)
			k.peers.Delete(c)
		}
	}
	for side, fd := range [2]int{down, up} {
		if err := k.targets.Update(st.cookie[side], uint64(fd), ebpf.UpdateNoExist); err != nil {
			undo()
			return nil, fmt.Errorf("sockhash: %w", err)
		}
		if err := k.peers.Update(st.cookie[side], peerValue{Peer: st.cookie[1-side]}, ebpf.UpdateNoExist); err != nil {
			undo()
			return nil, fmt.Errorf("peers: %w", err)
		}
	}
	for side, fd := range [2]int{down, up} {
		if err := k.active.Update(st.cookie[side], uint64(fd), ebpf.UpdateNoExist); err != nil {
			if side == 1 {
				// The client's socket is relayed already: its data
				// went to the server. Only a close ends this cleanly.
				return st, fmt.Errorf("sockhash: %w (half handed over)", err)
			}
			undo()
			return nil, fmt.Errorf("sockhash: %w", err)
		}
	}
	// Run the data-ready callback for what arrived before the hand-over.
	for _, fd := range [2]int{down, up} {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1)
	}
	return st, nil
}

// sent reports the bytes the kernel has taken from each side so far.
func (k *kernelRelay) sent(st *relayState) (down, up uint64, err error) {
	var v peerValue
	if err := k.peers.Lookup(st.cookie[sideDown], &v); err != nil {
		return 0, 0, err
	}
	down = v.Bytes
	if err := k.peers.Lookup(st.cookie[sideUp], &v); err != nil {
		return 0, 0, err
	}
	return down, v.Bytes, nil
}

// forget removes the connection's entries (its sockets leave the
// sockhashes when they close).
func (k *kernelRelay) forget(st *relayState) {
	for _, c := range st.cookie {
		k.peers.Delete(c)
	}
}

// The loop's side of the relay.

// relayAfter is how many reads from the client a connection must have
// seen before it is handed over: a connection with one request and one
// answer ends before a hand-over would pay for itself.
//
// A direction that carries bulk data (splice mode) keeps the connection
// with pen: pen's splice moves it about twice as fast as the relay, whose
// redirected data is sent from a kernel work queue (make bench's 1 GiB
// download, 3 rounds alternated: 1,740-1,978 MB/s by splice, 886-1,017
// MB/s by the relay). Once its bursts are small again it may go.
const relayAfter = 2

// relayFlushWait is how long a half-close waits at most for the kernel to
// write what it took from the other side.
const relayFlushWait = 10

// maybeRelay hands c to the kernel when it may go there and is quiet now.
func (l *Loop) maybeRelay(c *conn) {
	if c.turns < relayAfter || c.fl&(fReadDown|fReadUp|fNoRelay|fSpliceUp|fSpliceDown) != 0 || !relayable(c) {
		return
	}
	if l.set.Splice && c.spTries < spliceTries {
		c.spTries++
		if l.trySplice(c) {
			c.fl |= fNoRelay
			return
		}
		if !l.set.Relay {
			// Not now (data on its way, say): at a later quiet moment,
			// a few times at most.
			return
		}
	}
	c.fl |= fNoRelay // the sockmap relay is tried once, whatever happens
	if !l.set.Relay {
		return
	}
	k, err := getKernelRelay()
	if err != nil {
		if !l.notes.relay.Swap(true) {
			l.log.Printf("kernel_relay: BPF is not available (%v); pen relays every connection itself", err)
		}
		return
	}
	st, err := k.handOver(int(c.down), int(c.up))
	if st == nil {
		l.logFull("kernel_relay: hand-over of connection %d: %v; pen relays it", c.slot, err)
		return
	}
	c.kr = st
	if err != nil {
		l.logFull("kernel_relay: connection %d: %v; closing it", c.slot, err)
		l.closeConn(c)
		return
	}
	// From now on only a FIN or an error wakes the loop.
	for side, fd := range [2]int32{c.down, c.up} {
		unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, int(fd), &unix.EpollEvent{
			Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: c.slot, Pad: int32(c.gen<<1 | uint32(side))})
	}
	l.relayed.Add(1)
}

// relayCount adds what the kernel moved since the last count to the
// server's and the client's counts; it reports whether anything moved.
func (l *Loop) relayCount(c *conn) bool {
	k := relayKern
	down, up, err := k.sent(c.kr)
	if err != nil {
		return false
	}
	moved := false
	if d := down - c.kr.counted[sideDown]; d > 0 {
		c.sess.Sent(int(d))
		c.kr.counted[sideDown] = down
		moved = true
	}
	if d := up - c.kr.counted[sideUp]; d > 0 {
		c.sess.Received(int(d))
		c.kr.counted[sideUp] = up
		moved = true
	}
	return moved
}

// relayDrained reports whether the kernel has written into the socket of
// dir (sideUp: the server's) every byte it took from the other side, so
// that a shutdown of that socket loses nothing. A wait longer than
// relayFlushWait seconds gives up.
func (l *Loop) relayDrained(c *conn, dir int) bool {
	k := relayKern
	down, up, err := k.sent(c.kr)
	if err != nil {
		return true
	}
	took, fd := down, c.up
	if dir == sideDown {
		took, fd = up, c.down
	}
	w, err := written(int(fd))
	if err != nil || w-c.kr.written[dir] >= took {
		c.kr.since = 0
		return true
	}
	if c.kr.since == 0 {
		c.kr.since = l.now
	}
	if l.now-c.kr.since > relayFlushWait {
		l.logFull("kernel_relay: connection %d: %d bytes not delivered after %d seconds", c.slot, took-(w-c.kr.written[dir]), relayFlushWait)
		return true
	}
	if c.fl&fFlushing == 0 {
		c.fl |= fFlushing
		l.flushing = append(l.flushing, c.slot)
	}
	return false
}

// runFlushing looks again at connections waiting for the kernel to drain.
func (l *Loop) runFlushing() {
	if len(l.flushing) == 0 {
		return
	}
	f := l.flushing
	l.flushing = nil
	for _, slot := range f {
		c := l.conns[slot]
		if c == nil || c.state == stateUnused {
			continue
		}
		c.fl &^= fFlushing
		l.work(c)
	}
}

// relayEnd counts the last bytes and forgets the connection's entries.
func (l *Loop) relayEnd(c *conn) {
	l.relayCount(c)
	relayKern.forget(c.kr)
	c.kr = nil
	l.relayed.Add(-1)
}

// relayable reports whether nothing in pen needs to see c's bytes and
// nothing waits in pen to be written.
func relayable(c *conn) bool {
	return c.state == stateConnected && c.q[sideDown] == nil && c.q[sideUp] == nil &&
		c.fl&(fBuffered|fTLS|fUnixUp|fUDP|fIdler|fDummy|fHupDown|fHupUp) == 0 && c.peer.Addr().IsValid()
}

// spliceTries bounds the attempts to splice a connection, at quiet
// moments or as it carries bulk data (one that fails early, on the
// addresses, costs a few system calls; one in repair mode some twenty).
const spliceTries = 8

// maybeSpliceBulk splices a connection that carries bulk data, which the
// sockmap relay would carry slower than pen's splice(2) (relayAfter) but
// splicing segments carries as fast as a direct connection. Unlike
// maybeRelay it does not wait for a quiet moment: what reached pen's
// sockets and was not yet read, pen sends on itself (Pair.Pump).
func (l *Loop) maybeSpliceBulk(c *conn) {
	if !l.set.Splice || c.sp != nil || c.spTries >= spliceTries || !relayable(c) {
		return
	}
	c.spTries++
	l.trySplice(c)
}

// The loop's side of splicing (package splice, docs/SPLICE.md): over
// IPv4 and IPv6, where both peers are on this host or both elsewhere, the kernel
// rewrites each connection's segments into the other's and pen's sockets
// fall silent; where a pair is not eligible, the sockmap relay above
// takes it.

// getSplicer is splice.Get; tests replace it to see the sockmap relay.
var getSplicer = splice.Get

// trySplice splices c; it reports whether it did.
func (l *Loop) trySplice(c *conn) bool {
	s, err := getSplicer()
	if err != nil {
		if !l.notes.splice.Swap(true) {
			then := "pen carries every connection itself"
			if l.set.Relay {
				then = "the sockmap relay carries connections"
			}
			l.log.Printf("kernel_relay: splicing segments is not available (%v); %s", err, then)
		}
		return false
	}
	l.watchEnds(s)
	p, err := s.Splice(int(c.down), int(c.up), nil, nil, uint64(l.endID)<<32|uint64(uint32(c.slot)))
	if err != nil {
		var ne *splice.ErrNotEligible
		if !errors.As(err, &ne) {
			l.logFull("kernel_relay: splicing connection %d: %v", c.slot, err)
		}
		return false
	}
	c.sp = p
	for _, fd := range [2]int32{c.down, c.up} {
		unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, int(fd), nil)
	}
	l.relayed.Add(1)
	l.spliced.Add(1)
	if p.Pending() {
		l.injecting = append(l.injecting, c.slot)
	}
	return true
}

// Ends of spliced connections. pen's sockets of a spliced pair hear
// nothing, so the loop learns that the peers closed the connection from
// the splicer: its program tells OnEnd's function when a FIN or RST
// passes, with the pair's tag (the loop's endID and the slot), and
// spliceEnded hands the slot to that loop (l.ended, under l.mu). The loop
// looks at the pair then (endSeen): a connection is over once both FINs
// are acknowledged, which comes a round trip after the last FIN, so a
// pair not over yet is looked at again after 1, 2, 4 ... 256 ms
// (l.ending, runEnding) and after that only by the regular look once a
// second (timers). The slot and the server's count are free as soon as
// the connection is over, not up to a second later.

// endLoops maps the endIDs of the loops that splice to the loops; the
// splicer's goroutine reads it.
var (
	endLoops  sync.Map // uint32 -> *Loop
	endNext   atomic.Uint32
	endsWatch sync.Once
)

// watchEnds has the splicer report ends to the loops (once a process),
// and gives this loop its endID (once a loop).
func (l *Loop) watchEnds(s *splice.Splicer) {
	endsWatch.Do(func() {
		if _, err := s.OnEnd(spliceEnded); err != nil {
			l.log.Printf("kernel_relay: %v; ends of spliced connections are seen within a second instead of at once", err)
		}
	})
	if l.endID == 0 {
		l.endID = endNext.Add(1)
		endLoops.Store(l.endID, l)
	}
}

// spliceEnded runs on the splicer's goroutine: a FIN or RST passed for
// the pair tagged tag.
func spliceEnded(tag uint64) {
	v, ok := endLoops.Load(uint32(tag >> 32))
	if !ok {
		return // the loop has ended
	}
	l := v.(*Loop)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.running || l.stopped || l.closing {
		return // the loop is ending: its pairs end with it
	}
	l.ended = append(l.ended, int32(uint32(tag)))
	if len(l.ended) == 1 {
		// Under mu: the loop does not close its eventfd meanwhile
		// (Run sets closing first), so no other file gets the write.
		wakeUp(l.wake)
	}
}

// endingPair is a spliced slot looked at again at due (unix ms), step ms
// after the last look.
type endingPair struct {
	slot int32
	gen  uint32
	due  int64
	step int64
}

// endSeen looks at the pairs of the slots spliceEnded reported.
func (l *Loop) endSeen(slots []int32) {
	for _, slot := range slots {
		if slot < 0 || int(slot) >= len(l.conns) {
			continue
		}
		c := l.conns[slot]
		if c == nil || c.sp == nil {
			continue // ended already, or a tag of the slot's last pair
		}
		l.kernelCounts(c) // closes the connection if it is over
		if c.sp != nil && !slices.ContainsFunc(l.ending, func(e endingPair) bool { return e.slot == slot && e.gen == c.gen }) {
			l.ending = append(l.ending, endingPair{slot: slot, gen: c.gen, due: l.nowMs + 1, step: 1})
		}
	}
}

// runEnding looks again at the pairs that were not over when a FIN
// passed.
func (l *Loop) runEnding() {
	if len(l.ending) == 0 {
		return
	}
	keep := l.ending[:0]
	for _, e := range l.ending {
		c := l.conns[e.slot]
		if c == nil || c.gen != e.gen || c.sp == nil {
			continue
		}
		if l.nowMs >= e.due {
			l.kernelCounts(c)
			if c.sp == nil || e.step >= 256 {
				continue // over; or left to the regular look (a half-close that goes on)
			}
			e.step *= 2
			e.due = l.nowMs + e.step
		}
		keep = append(keep, e)
	}
	clear(l.ending[len(keep):])
	l.ending = keep
}

// endingWait is how long the loop may wait for events before runEnding
// has a pair to look at, in milliseconds.
func (l *Loop) endingWait() int {
	w := int64(1000)
	for _, e := range l.ending {
		w = min(w, e.due-l.nowMs)
	}
	return int(max(w, 0))
}

// runInjecting sends on what spliced connections still owe their peers
// (Pair.Pump); the loop comes back every millisecond while any does.
func (l *Loop) runInjecting() {
	if len(l.injecting) == 0 {
		return
	}
	now := time.Now()
	keep := l.injecting[:0]
	for _, slot := range l.injecting {
		c := l.conns[slot]
		if c == nil || c.sp == nil {
			continue
		}
		if c.sp.Pump(now) {
			keep = append(keep, slot)
		}
	}
	l.injecting = keep
}

// spliceCount adds what moved since the last call to the counts; it
// reports whether anything moved, and whether the peers have ended the
// connection (the counts are final then).
func (l *Loop) spliceCount(c *conn) (moved, over bool) {
	st := c.sp.Poll(time.Now())
	if st.FromClient > 0 {
		c.sess.Sent(int(st.FromClient))
		moved = true
	}
	if st.FromServer > 0 {
		c.sess.Received(int(st.FromServer))
		moved = true
	}
	return moved, st.Over
}

// spliceEnd counts the last bytes and takes the pair from the kernel.
// When pen ends a connection the peers have not (idle timeout, the
// close command, a shutdown), both get a FIN, as from closing pen's
// sockets, and the pair goes at once. When the peers ended it, the slot
// is free now, and the pair with pen's two sockets waits in l.settling
// (runSettling) for a FIN or its acknowledgment sent again; the open
// sockets keep their ports from a new connection meanwhile.
func (l *Loop) spliceEnd(c *conn) {
	l.spliceCount(c)
	if c.sp.Over() {
		l.clearFD(int(c.down))
		l.clearFD(int(c.up))
		l.settling = append(l.settling, settlingPair{c.sp, [2]int32{c.down, c.up}})
		c.down, c.up = -1, -1
	} else {
		c.sp.Close()
		c.sp.Release()
	}
	c.sp = nil
	l.relayed.Add(-1)
	l.spliced.Add(-1)
}

// settlingPair is a spliced pair whose peers closed it, with pen's two
// sockets, kept until it settles; the loop owns it (l.settling).
type settlingPair struct {
	p   *splice.Pair
	fds [2]int32
}

// runSettling releases the pairs that have settled, or all of them when
// all is set (shutdown), and closes their sockets.
func (l *Loop) runSettling(all bool) {
	now := time.Now()
	keep := l.settling[:0]
	for _, sp := range l.settling {
		if !all && !sp.p.Settled(now) {
			keep = append(keep, sp)
			continue
		}
		sp.p.Release()
		for _, fd := range sp.fds {
			unix.Close(int(fd))
		}
	}
	clear(l.settling[len(keep):])
	l.settling = keep
}
