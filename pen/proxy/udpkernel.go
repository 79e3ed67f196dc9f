package proxy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/internal/bpfasm"
	"github.com/pen-lb/pen-appliance/pen/internal/tcx"
)

// The in-kernel path for UDP flows (udp_kernel). Through pen, every
// datagram costs two sends in user space, each of which runs the whole
// receive path of its destination: DNS through pen came to about 0.7 of
// a direct connection. Once a flow has carried a few datagrams through
// pen, the loop hands it to a BPF program on the interfaces' TCX ingress
// hook, which rewrites each of the flow's datagrams as pen would send it
// and lets it go on, so that it never reaches user space:
//
//	client -> VIP:port          becomes  pen's upstream socket -> server
//	server -> upstream socket   becomes  VIP:port -> client
//
// The flow's upstream socket stays open and watched: its address is the
// one the server answers, and an ICMP error about the flow (the server's
// port is closed) still reaches it, so pen fails the server over as it
// always does. Pen's semantics hold: the first datagrams of every flow
// pass through pen, which chooses the server (client tracking, hash,
// round-robin, weights, ACLs); the program only repeats that choice.
// Counts and idle time come from the program's per-flow counters, read
// once a second; a flow whose server becomes unusable (removed,
// blacklisted) is taken back at the next second, and its next datagram is
// placed again in user space.
//
// When the new destination is an address of this host the datagram goes
// on up the stack; otherwise the program sends it out of the interface
// that holds the address pen would send from (bpf_redirect_neigh, which
// resolves the next hop's MAC, by ARP or neighbour discovery). IPv4 and
// IPv6 flows alike; flows that would cross between loopback and another
// interface (which the kernel drops as martians), link-local IPv6
// addresses, IPv6 datagrams with extension headers, unix socket servers
// and transparent mode stay in user space.
//
// Where the kernel has no BPF or no TCX (before 6.6), or pen may not use
// them, every flow stays in pen, and one line says why.

const (
	// ukAfter is how many datagrams from the client a flow carries
	// through pen before the kernel takes it: a flow of one question
	// (a resolver's random source port) never costs two map updates.
	ukAfter = 4
	// ukMaxFlows bounds the flows the kernel carries at a time.
	ukMaxFlows = 1 << 16

	tcxNext   = -1 // TCX_NEXT: the packet goes on as if unseen
	tcActOK   = 0  // TC_ACT_OK: go on up the stack
	tcActShot = 2  // TC_ACT_SHOT: drop

	ethHeaderLen  = 14
	ipv4MinHeader = 20
	ipv6Header    = 40
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd

	bpfFRecomputeCsum = 1 << 0 // BPF_F_RECOMPUTE_CSUM
	bpfFPseudoHdr     = 1 << 4 // BPF_F_PSEUDO_HDR
	bpfFMarkMangled   = 1 << 5 // BPF_F_MARK_MANGLED_0
)

// ukKey is a datagram's addresses and ports, in network order.
type ukKey struct {
	Src, Dst     [4]byte
	SPort, DPort [2]byte
}

// ukValue is what the datagram becomes, where it goes (0: up the stack,
// else out of that interface) and the flow's counters.
type ukValue struct {
	Src, Dst     [4]byte
	SPort, DPort [2]byte
	Ifindex      uint32
	Packets      uint64
	Bytes        uint64 // UDP payload
}

// ukKey6 and ukValue6 are the same for IPv6 (the pen_udp_flows6 map).
type ukKey6 struct {
	Src, Dst     [16]byte
	SPort, DPort [2]byte
}

type ukValue6 struct {
	Src, Dst     [16]byte
	SPort, DPort [2]byte
	Ifindex      uint32
	Packets      uint64
	Bytes        uint64
}

// ukFlow is what an installed flow keeps (conn.uk): its keys in the IPv4
// map, or with v6 in the IPv6 one. [0]: client to VIP, [1]: server to the
// upstream socket.
type ukFlow struct {
	v6      bool
	keys    [2]ukKey
	keys6   [2]ukKey6
	counted [2]uint64 // payload bytes already added to the counts
}

// counter reads the kernel's counters of direction i.
func (f *ukFlow) counter(k *udpKernel, i int) (packets, bytes uint64, ok bool) {
	if f.v6 {
		var v ukValue6
		if k.flows6.Lookup(f.keys6[i], &v) != nil {
			return 0, 0, false
		}
		return v.Packets, v.Bytes, true
	}
	var v ukValue
	if k.flows.Lookup(f.keys[i], &v) != nil {
		return 0, 0, false
	}
	return v.Packets, v.Bytes, true
}

// install puts the flow's two entries in the map: what comes from the
// client to the VIP goes from upLocal to the server, out of toServer;
// what comes from the server to upLocal goes from the VIP to the client,
// out of toClient (0: up the stack). addrs is client, VIP, server,
// upLocal.
func (f *ukFlow) install(k *udpKernel, addrs [4]netip.AddrPort, toServer, toClient int) error {
	client, vip, server, upLocal := addrs[0], addrs[1], addrs[2], addrs[3]
	var vals [2]any
	if f.v6 {
		f.keys6 = [2]ukKey6{ukKey6Of(client, vip), ukKey6Of(server, upLocal)}
		vals = [2]any{ukValue6Of(upLocal, server, toServer), ukValue6Of(vip, client, toClient)}
	} else {
		f.keys = [2]ukKey{ukKeyOf(client, vip), ukKeyOf(server, upLocal)}
		vals = [2]any{ukValueOf(upLocal, server, toServer), ukValueOf(vip, client, toClient)}
	}
	m, keys := f.entries(k)
	if err := m.Update(keys[0], vals[0], ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("flow map: %w", err)
	}
	if err := m.Update(keys[1], vals[1], ebpf.UpdateNoExist); err != nil {
		m.Delete(keys[0])
		return fmt.Errorf("flow map: %w", err)
	}
	return nil
}

// entries is the map that holds the flow and its two keys there.
func (f *ukFlow) entries(k *udpKernel) (*ebpf.Map, [2]any) {
	if f.v6 {
		return k.flows6, [2]any{f.keys6[0], f.keys6[1]}
	}
	return k.flows, [2]any{f.keys[0], f.keys[1]}
}

// remove deletes the flow's entries.
func (f *ukFlow) remove(k *udpKernel) {
	m, keys := f.entries(k)
	for _, key := range keys {
		m.Delete(key)
	}
}

// udpKernel is the program, its flow map and where it is attached; one
// per process, shared by every loop (map updates are system calls, safe
// from any goroutine; hooks and addrs guard themselves).
type udpKernel struct {
	prog   *ebpf.Program
	flows  *ebpf.Map // ukKey -> ukValue
	flows6 *ebpf.Map // ukKey6 -> ukValue6
	hooks  *tcx.Attacher
	addrs  tcx.Addrs // this host's addresses and their interfaces
}

var (
	ukMu    sync.Mutex
	ukTried bool
	ukKern  *udpKernel // set once, then only read
	ukErr   error
)

func getUDPKernel() (*udpKernel, error) {
	ukMu.Lock()
	defer ukMu.Unlock()
	if !ukTried {
		ukTried = true
		ukKern, ukErr = loadUDPKernel()
	}
	return ukKern, ukErr
}

func loadUDPKernel() (*udpKernel, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, err
	}
	flows, err := ebpf.NewMap(&ebpf.MapSpec{Name: "pen_udp_flows", Type: ebpf.Hash, KeySize: 12, ValueSize: 32,
		MaxEntries: 2 * ukMaxFlows, Flags: unix.BPF_F_NO_PREALLOC})
	if err != nil {
		return nil, fmt.Errorf("hash map: %w", err)
	}
	flows6, err := ebpf.NewMap(&ebpf.MapSpec{Name: "pen_udp_flows6", Type: ebpf.Hash, KeySize: 36, ValueSize: 56,
		MaxEntries: 2 * ukMaxFlows, Flags: unix.BPF_F_NO_PREALLOC})
	if err != nil {
		flows.Close()
		return nil, fmt.Errorf("hash map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "pen_udp", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: ukProgram(flows.FD(), flows6.FD())})
	if err != nil {
		flows.Close()
		flows6.Close()
		return nil, fmt.Errorf("loading the program: %w", err)
	}
	return &udpKernel{prog: prog, flows: flows, flows6: flows6,
		hooks: tcx.NewAttacher(tcx.Hook{Program: prog, Attach: ebpf.AttachTCXIngress}),
		addrs: tcx.Addrs{MaxAge: 10 * time.Second}}, nil
}

// ukProgram is the TCX program. For IPv4 the Ethernet and IPv4 headers
// are copied to fp-50..fp-17 (so that the addresses are 4-byte aligned),
// the ports to fp-56..fp-53 and the key is built at fp-72. For IPv6 the
// Ethernet and IPv6 headers and the ports go to fp-66..fp-9 and the key
// is built at fp-104; the UDP checksum (which IPv6 requires) follows the
// 32 bytes of addresses by one bpf_csum_diff.
func ukProgram(flowsFD, flows6FD int) asm.Instructions {
	const (
		hdr   = -50
		ip    = hdr + ethHeaderLen
		ports = -56
		key   = -72
		pass  = "pass"
		drop  = "drop"
		up    = "up"
		// Offsets in the packet.
		ipCsum  = ethHeaderLen + 10
		ipAddrs = ethHeaderLen + 12
		udpHdr  = ethHeaderLen + ipv4MinHeader
		udpCsum = udpHdr + 6
	)
	be16 := bpfasm.BE16
	// csum calls bpf_l3_csum_replace or bpf_l4_csum_replace for the
	// field at old (stack) becoming the one at new (value in R8).
	csum := func(fn asm.BuiltinFunc, off int32, old, new int16, size asm.Size, flags int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, off),
			asm.LoadMem(asm.R3, asm.R10, old, size),
			asm.LoadMem(asm.R4, asm.R8, new, size),
			asm.Mov.Imm(asm.R5, flags),
			fn.Call(),
			asm.JNE.Imm(asm.R0, 0, drop),
		}
	}
	store := func(off int32, from int16, n int32, flags int32) asm.Instructions {
		return bpfasm.StoreBytes(asm.R6, off, asm.R8, int32(from), n, flags, drop)
	}
	xadd := func(off int16) asm.Instruction {
		ins := asm.StoreXAdd(asm.R8, asm.R2, asm.DWord)
		ins.Offset = off
		return ins
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
	}
	insns = append(insns, bpfasm.LoadBytes(asm.R6, 0, asm.R10, hdr, ethHeaderLen+ipv4MinHeader, pass)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R10, hdr+12, asm.Half),
		asm.JNE.Imm32(asm.R2, be16(etherTypeIPv4), "v6"),
		// A 20-byte header (no options), UDP, not a fragment.
		asm.LoadMem(asm.R2, asm.R10, ip, asm.Byte),
		asm.JNE.Imm(asm.R2, 0x45, pass),
		asm.LoadMem(asm.R2, asm.R10, ip+9, asm.Byte),
		asm.JNE.Imm(asm.R2, unix.IPPROTO_UDP, pass),
		asm.LoadMem(asm.R2, asm.R10, ip+6, asm.Half),
		asm.And.Imm32(asm.R2, be16(0x3fff)),
		asm.JNE.Imm(asm.R2, 0, pass),
	)
	insns = append(insns, bpfasm.LoadBytes(asm.R6, udpHdr, asm.R10, ports, 4, pass)...)
	insns = append(insns,
		// The key: addresses and ports as they are.
		asm.LoadMem(asm.R2, asm.R10, ip+12, asm.Word),
		asm.StoreMem(asm.R10, key, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R10, ip+16, asm.Word),
		asm.StoreMem(asm.R10, key+4, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R10, ports, asm.Word),
		asm.StoreMem(asm.R10, key+8, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, flowsFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, pass),
		asm.Mov.Reg(asm.R8, asm.R0),
		// Count the datagram and its payload.
		asm.Mov.Imm(asm.R2, 1),
		xadd(16),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // skb->len
		asm.Add.Imm(asm.R2, -(ethHeaderLen+ipv4MinHeader+8)),
		xadd(24),
	)
	// The checksums first (they read the old values from the stack),
	// then the new addresses and ports.
	insns = append(insns, csum(asm.FnL3CsumReplace, ipCsum, ip+12, 0, asm.Word, 4)...)
	insns = append(insns, csum(asm.FnL3CsumReplace, ipCsum, ip+16, 4, asm.Word, 4)...)
	insns = append(insns, csum(asm.FnL4CsumReplace, udpCsum, ip+12, 0, asm.Word, bpfFPseudoHdr|bpfFMarkMangled|4)...)
	insns = append(insns, csum(asm.FnL4CsumReplace, udpCsum, ip+16, 4, asm.Word, bpfFPseudoHdr|bpfFMarkMangled|4)...)
	insns = append(insns, csum(asm.FnL4CsumReplace, udpCsum, ports, 8, asm.Half, bpfFMarkMangled|2)...)
	insns = append(insns, csum(asm.FnL4CsumReplace, udpCsum, ports+2, 10, asm.Half, bpfFMarkMangled|2)...)
	insns = append(insns, store(ipAddrs, 0, 8, 0)...)
	insns = append(insns, store(udpHdr, 8, 4, 0)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R8, 12, asm.Word),
		asm.JEq.Imm(asm.R1, 0, up),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRedirectNeigh.Call(),
		asm.Return(),
	)
	insns = append(insns, ukProgram6(flows6FD, csum, store, xadd)...)
	insns = append(insns,
		asm.Mov.Imm(asm.R0, tcActOK).WithSymbol(up),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol(drop),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol(pass),
		asm.Return(),
	)
	return insns
}

// ukProgram6 is ukProgram's IPv6 half, from the label v6 (R2 holds the
// EtherType) to the redirect; it ends at ukProgram's labels.
func ukProgram6(flows6FD int,
	csum func(fn asm.BuiltinFunc, off int32, old, new int16, size asm.Size, flags int32) asm.Instructions,
	store func(off int32, from int16, n int32, flags int32) asm.Instructions,
	xadd func(off int16) asm.Instruction) asm.Instructions {
	const (
		hdr   = -66
		ip    = hdr + ethHeaderLen
		addrs = ip + 8
		ports = ip + ipv6Header
		key   = -104
		// Offsets in the packet.
		pktAddrs = ethHeaderLen + 8
		udpHdr   = ethHeaderLen + ipv6Header
		udpCsum  = udpHdr + 6
	)
	insns := asm.Instructions{
		asm.JNE.Imm32(asm.R2, bpfasm.BE16(etherTypeIPv6), "pass").WithSymbol("v6"),
	}
	insns = append(insns, bpfasm.LoadBytes(asm.R6, 0, asm.R10, hdr, ethHeaderLen+ipv6Header+4, "pass")...)
	insns = append(insns,
		// UDP right after the header: extension headers stay in pen.
		asm.LoadMem(asm.R2, asm.R10, ip+6, asm.Byte),
		asm.JNE.Imm(asm.R2, unix.IPPROTO_UDP, "pass"),
	)
	// The key: addresses and ports as they are.
	for i := int16(0); i < 36; i += 4 {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R10, addrs+i, asm.Word),
			asm.StoreMem(asm.R10, key+i, asm.R2, asm.Word),
		)
	}
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, flows6FD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R8, asm.R0),
		// Count the datagram and its payload.
		asm.Mov.Imm(asm.R2, 1),
		xadd(40),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // skb->len
		asm.Add.Imm(asm.R2, -(ethHeaderLen+ipv6Header+8)),
		xadd(48),
		// The addresses' part of the checksum, as one difference.
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, addrs),
		asm.Mov.Imm(asm.R2, 32),
		asm.Mov.Reg(asm.R3, asm.R8),
		asm.Mov.Imm(asm.R4, 32),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.JSLT.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R4, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, udpCsum),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R5, bpfFPseudoHdr),
		asm.FnL4CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
	)
	insns = append(insns, csum(asm.FnL4CsumReplace, udpCsum, ports, 32, asm.Half, 2)...)
	insns = append(insns, csum(asm.FnL4CsumReplace, udpCsum, ports+2, 34, asm.Half, 2)...)
	// With a complete checksum (CHECKSUM_COMPLETE) skb->csum must follow
	// every change of the packet. For IPv4, l4_csum_replace's pseudo-header
	// update adjusts it for the addresses, since the IPv4 header checksum
	// cancels their change within the header. IPv6 has no header checksum,
	// so that adjustment covers only the UDP checksum's change, and the
	// addresses' own change is added here (BPF_F_RECOMPUTE_CSUM). Kernels
	// from 6.16 offer BPF_F_IPV6 for this; this way works on every kernel
	// with TCX.
	insns = append(insns, store(pktAddrs, 0, 32, bpfFRecomputeCsum)...)
	insns = append(insns, store(udpHdr, 32, 4, 0)...)
	return append(insns,
		asm.LoadMem(asm.R1, asm.R8, 36, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "up"),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRedirectNeigh.Call(),
		asm.Return(),
	)
}

func ukAddrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(s.Addr).Unmap(), uint16(s.Port)), true
	}
	return netip.AddrPort{}, false
}

func ukKeyOf(src, dst netip.AddrPort) ukKey {
	var k ukKey
	k.Src, k.Dst = src.Addr().As4(), dst.Addr().As4()
	binary.BigEndian.PutUint16(k.SPort[:], src.Port())
	binary.BigEndian.PutUint16(k.DPort[:], dst.Port())
	return k
}

func ukValueOf(src, dst netip.AddrPort, ifindex int) ukValue {
	k := ukKeyOf(src, dst)
	return ukValue{Src: k.Src, Dst: k.Dst, SPort: k.SPort, DPort: k.DPort, Ifindex: uint32(ifindex)}
}

func ukKey6Of(src, dst netip.AddrPort) ukKey6 {
	var k ukKey6
	k.Src, k.Dst = src.Addr().As16(), dst.Addr().As16()
	binary.BigEndian.PutUint16(k.SPort[:], src.Port())
	binary.BigEndian.PutUint16(k.DPort[:], dst.Port())
	return k
}

func ukValue6Of(src, dst netip.AddrPort, ifindex int) ukValue6 {
	k := ukKey6Of(src, dst)
	return ukValue6{Src: k.Src, Dst: k.Dst, SPort: k.SPort, DPort: k.DPort, Ifindex: uint32(ifindex)}
}

// ukCount notes n datagrams the flow carried from the client through
// pen, and hands the flow to the kernel after ukAfter of them.
func (l *Loop) ukCount(c *conn, n int) {
	if !l.set.UDPKernel || c.uk != nil || c.fl&fNoRelay != 0 {
		return
	}
	if c.turns = uint8(min(int(c.turns)+n, ukAfter)); c.turns >= ukAfter {
		if err := l.ukInstall(c); err != nil {
			c.fl |= fNoRelay
			l.log.Debugf(2, "udp_kernel: flow %d stays in pen: %v", c.slot, err)
		}
	}
}

// ukInstall hands a flow to the kernel.
func (l *Loop) ukInstall(c *conn) error {
	if c.up < 0 || c.fl&fUnixUp != 0 || l.set.Transparent || l.set.Dump {
		return fmt.Errorf("not a plain flow")
	}
	k, err := getUDPKernel()
	if err != nil {
		if !l.ukSaid {
			l.ukSaid = true
			l.log.Printf("udp_kernel: BPF is not available (%v); pen carries every UDP flow itself", err)
		}
		return err
	}
	lsa, err := unix.Getsockname(int(c.up))
	if err != nil {
		return err
	}
	rsa, err := unix.Getpeername(int(c.up))
	if err != nil {
		return err
	}
	upLocal, ok1 := ukAddrPort(lsa)
	server, ok2 := ukAddrPort(rsa)
	client := netip.AddrPortFrom(c.peer.Addr().Unmap(), c.peer.Port())
	vip, ok3 := l.ukVIP(c)
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("not an IP flow")
	}
	v6 := client.Addr().Is6()
	for _, a := range []netip.Addr{client.Addr(), vip.Addr(), upLocal.Addr(), server.Addr()} {
		if a.Is6() != v6 {
			return fmt.Errorf("between IPv4 and IPv6")
		}
		if a.Zone() != "" || a.IsLinkLocalUnicast() {
			return fmt.Errorf("a link-local address")
		}
	}
	if client.Addr().IsLoopback() != server.Addr().IsLoopback() {
		return fmt.Errorf("between loopback and another interface")
	}
	// The host's addresses, read again when pen's own are not among them.
	ifs, err := k.addrs.Get(vip.Addr(), upLocal.Addr())
	if err != nil {
		return err
	}
	inC, inS := ifs.Index(vip.Addr()), ifs.Index(upLocal.Addr())
	if inC == 0 || inS == 0 {
		return fmt.Errorf("no interface holds %v or %v", vip.Addr(), upLocal.Addr())
	}
	toServer, toClient := inS, inC
	if ifs.Local(server.Addr()) {
		toServer = 0
	}
	if ifs.Local(client.Addr()) {
		toClient = 0
	}
	for _, ifindex := range []int{inC, inS} {
		if err := k.hooks.Attach(ifindex); err != nil {
			if !l.ukSaid {
				l.ukSaid = true
				l.log.Printf("udp_kernel: cannot attach to interface %d (%v); pen carries such flows itself", ifindex, err)
			}
			return err
		}
	}
	f := &ukFlow{v6: v6}
	if err := f.install(k, [4]netip.AddrPort{client, vip, server, upLocal}, toServer, toClient); err != nil {
		return err
	}
	c.uk = f
	l.ukFlows.Add(1)
	return nil
}

// ukVIP is the address and port the flow's client sends to.
func (l *Loop) ukVIP(c *conn) (netip.AddrPort, bool) {
	sa, err := unix.Getsockname(l.lfd)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ap, ok := ukAddrPort(sa)
	if !ok {
		return netip.AddrPort{}, false
	}
	if c.local.IsValid() {
		ap = netip.AddrPortFrom(c.local.Unmap(), ap.Port())
	}
	if ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, false
	}
	return ap, true
}

// ukCounts adds what the kernel carried since the last call to the
// flow's counts; it reports whether anything moved.
func (l *Loop) ukCounts(c *conn) bool {
	if c.uk == nil {
		return false
	}
	k := ukKern // set before c.uk was
	moved := false
	for i := range c.uk.counted {
		_, bytes, ok := c.uk.counter(k, i)
		if !ok {
			continue
		}
		if bytes > c.uk.counted[i] {
			d := bytes - c.uk.counted[i]
			if i == 0 {
				c.sess.Sent(int(d))
			} else {
				c.sess.Received(int(d))
			}
			c.uk.counted[i] = bytes
			moved = true
		}
	}
	return moved
}

// ukSweep takes back, once the balancer has changed (or always, with
// force: the settings changed), every flow whose server pen would no
// longer send it to, and every flow when udp_kernel is off, so that its
// next datagram is placed again in pen at once (pen checks flows it
// carries itself at their next datagram).
func (l *Loop) ukSweep(force bool) {
	e := l.tb.Epoch()
	if e == l.ukEpoch && !force {
		return
	}
	l.ukEpoch = e
	for _, c := range l.conns {
		if c != nil && c.uk != nil && (!c.sess.Usable() || !l.set.UDPKernel) {
			l.ukRemove(c)
		}
	}
}

// kernelCounts adds what the kernel carried for c since the last call
// (udp_kernel, kernel_relay) to the counts; a connection or flow it
// carried data for is not idle, nor half dead.
func (l *Loop) kernelCounts(c *conn) {
	moved := c.uk != nil && l.ukCounts(c)
	if c.kr != nil && l.relayCount(c) {
		moved = true
	}
	if c.sp != nil {
		over := false
		if moved, over = l.spliceCount(c); over {
			l.closeConn(c)
			return
		}
	}
	if moved {
		c.t = l.now
		if c.fl&fUDP != 0 {
			c.state &^= stateHalfDead
		}
	}
}

// ukRemove takes a flow back from the kernel: its next datagram comes
// to pen.
func (l *Loop) ukRemove(c *conn) {
	if c.uk == nil {
		return
	}
	l.ukCounts(c)
	c.uk.remove(ukKern)
	c.uk = nil
	c.turns = 0
	l.ukFlows.Add(-1)
}
