package dsr

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"
)

// TarpitNet is an IPv4 network as Pen's access lists write it: an address
// and a netmask, which need not be contiguous.
type TarpitNet struct {
	Addr netip.Addr
	Mask [4]byte
}

// maxTarpitNets bounds the networks the filter checks; with more, it lets
// every SYN through.
const maxTarpitNets = 32

// jump is a jump whose targets are labels, resolved by assemble.
type jump struct {
	at                  int
	skipTrue, skipFalse string // labels; "" = the next instruction
	cond                bpf.JumpTest
	val                 uint32
	always              bool // an unconditional jump to skipTrue
}

// Packet types as the kernel reports them (linux/if_packet.h).
const (
	packetOtherHost = 3
	packetOutgoing  = 4
)

// filter returns the classic BPF program attached to the socket: the
// kernel hands pen only ARP frames, IPv4 frames to the VIP and, when
// tarpit is set, TCP SYNs without ACK (the only frames to a tarpitted
// address that get an answer; everything else to it is dropped anyway).
// Frames the host sends and frames for other hosts' MACs never reach user
// space. An invalid vip leaves out the VIP's rule (a tarpit alone). With
// fastPath, the kernel forwards the VIP's frames itself (fastpath_linux.go)
// and only the fragments it cannot place come here: the frames packet
// sockets see are taken before the fast path runs, so passing them all
// would send them twice.
//
// With nets, only SYNs to addresses in them pass; without, every SYN to
// IF's MAC passes (an access list with deny entries or countries cannot
// be expressed here). Either way user space decides on the SYNs that
// pass.
func filter(vip netip.Addr, tarpit bool, nets []TarpitNet, fastPath bool) ([]bpf.RawInstruction, error) {
	const (
		drop    = "drop"
		accept  = "accept"
		vipFrag = "vipfrag"
	)
	var prog []bpf.Instruction
	var jumps []jump
	labels := map[string]int{}
	emit := func(i bpf.Instruction) { prog = append(prog, i) }
	jumpIf := func(cond bpf.JumpTest, val uint32, ifTrue, ifFalse string) {
		jumps = append(jumps, jump{at: len(prog), skipTrue: ifTrue, skipFalse: ifFalse, cond: cond, val: val})
		emit(nil)
	}

	emit(bpf.LoadExtension{Num: bpf.ExtType})
	jumpIf(bpf.JumpEqual, packetOutgoing, drop, "")
	jumpIf(bpf.JumpEqual, packetOtherHost, drop, "")
	emit(bpf.LoadAbsolute{Off: 12, Size: 2})
	jumpIf(bpf.JumpEqual, etherTypeARP, accept, "")
	if vip.Is6() {
		// IPv6: neighbour solicitations and advertisements, and the
		// VIP's packets (with the fast path, only those whose
		// transport header does not follow the IPv6 header at once);
		// no tarpit.
		jumpIf(bpf.JumpEqual, etherTypeIPv6, "", drop)
		v := vip.As16()
		for i := 0; i < 16; i += 4 {
			emit(bpf.LoadAbsolute{Off: uint32(ethHeaderLen + 24 + i), Size: 4})
			jumpIf(bpf.JumpEqual, binary.BigEndian.Uint32(v[i:i+4]), "", "nd")
		}
		if fastPath {
			emit(bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 1})
			jumpIf(bpf.JumpEqual, protoTCP, drop, "")
			jumpIf(bpf.JumpEqual, protoUDP, drop, accept)
		} else {
			jumps = append(jumps, jump{at: len(prog), skipTrue: accept, always: true})
			emit(nil)
		}
		labels["nd"] = len(prog)
		emit(bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 1})
		jumpIf(bpf.JumpEqual, protoICMPv6, "", drop)
		emit(bpf.LoadAbsolute{Off: ethHeaderLen + ipv6Header, Size: 1})
		jumpIf(bpf.JumpEqual, icmpNS, accept, "")
		jumpIf(bpf.JumpEqual, icmpNA, accept, drop)
		labels[drop] = len(prog)
		emit(bpf.RetConstant{Val: 0})
		labels[accept] = len(prog)
		emit(bpf.RetConstant{Val: 0xffffffff})
		return assemble(prog, jumps, labels)
	}
	jumpIf(bpf.JumpEqual, etherTypeIPv4, "", drop)
	if vip.IsValid() {
		v := vip.As4()
		emit(bpf.LoadAbsolute{Off: ethHeaderLen + 16, Size: 4})
		to := accept
		if fastPath {
			to = vipFrag
		}
		jumpIf(bpf.JumpEqual, binary.BigEndian.Uint32(v[:]), to, "")
	}
	if tarpit {
		emit(bpf.LoadAbsolute{Off: ethHeaderLen + 9, Size: 1})
		jumpIf(bpf.JumpEqual, protoTCP, "", drop)
		emit(bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 2})
		jumpIf(bpf.JumpBitsSet, 0x1fff, drop, "")
		emit(bpf.LoadMemShift{Off: ethHeaderLen})
		emit(bpf.LoadIndirect{Off: ethHeaderLen + 13, Size: 1})
		emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: tcpSYN | tcpACK | tcpRST | tcpFIN})
		if len(nets) == 0 || len(nets) > maxTarpitNets {
			jumpIf(bpf.JumpEqual, tcpSYN, accept, drop)
		} else {
			jumpIf(bpf.JumpEqual, tcpSYN, "", drop)
			for i, n := range nets {
				a := n.Addr.As4()
				emit(bpf.LoadAbsolute{Off: ethHeaderLen + 16, Size: 4})
				emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: binary.BigEndian.Uint32(n.Mask[:])})
				next := ""
				if i == len(nets)-1 {
					next = drop
				}
				jumpIf(bpf.JumpEqual, binary.BigEndian.Uint32(a[:])&binary.BigEndian.Uint32(n.Mask[:]), accept, next)
			}
		}
	}
	if fastPath {
		jumps = append(jumps, jump{at: len(prog), skipTrue: drop, always: true})
		emit(nil)
		labels[vipFrag] = len(prog)
		emit(bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 2})
		jumpIf(bpf.JumpBitsSet, 0x1fff, accept, drop)
	}
	labels[drop] = len(prog)
	emit(bpf.RetConstant{Val: 0})
	labels[accept] = len(prog)
	emit(bpf.RetConstant{Val: 0xffffffff})
	return assemble(prog, jumps, labels)
}

// assemble resolves the labels of the jumps and assembles the program.
func assemble(prog []bpf.Instruction, jumps []jump, labels map[string]int) ([]bpf.RawInstruction, error) {
	for _, j := range jumps {
		skip := func(label string) (uint8, error) {
			if label == "" {
				return 0, nil
			}
			n := labels[label] - j.at - 1
			if n < 0 || n > 255 {
				return 0, fmt.Errorf("bpf jump of %d", n)
			}
			return uint8(n), nil
		}
		t, err := skip(j.skipTrue)
		if err != nil {
			return nil, err
		}
		f, err := skip(j.skipFalse)
		if err != nil {
			return nil, err
		}
		if j.always {
			prog[j.at] = bpf.Jump{Skip: uint32(t)}
			continue
		}
		prog[j.at] = bpf.JumpIf{Cond: j.cond, Val: j.val, SkipTrue: t, SkipFalse: f}
	}
	return bpf.Assemble(prog)
}
