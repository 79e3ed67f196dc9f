//go:build linux

package splice

import (
	"encoding/binary"

	"github.com/cilium/ebpf/asm"

	"github.com/pen-lb/pen-appliance/pen/internal/bpfasm"
)

// The program, written with cilium/ebpf's asm package (no C compiler at
// build or test time), runs on TCX ingress. For a TCP segment over IPv4
// (without IP options) or IPv6 (without extension headers) whose
// addresses and ports are a key of flows (flows6) it either drops the
// segment (fDrop: one of pen's own sockets, which must stay silent) or
// rewrites it into the other connection of its pair: addresses and
// ports, sequence and acknowledgment numbers, window (rescaled),
// timestamps and SACK blocks, with the checksums brought along
// (bpf_csum_diff over the old and new headers, then
// bpf_l3/l4_csum_replace, which leave a partial checksum partial). It
// notes the last acknowledgment and window, where the data ends, FIN and
// RST (a FIN or RST also puts the pair's tag in the ends ring buffer, so
// that pen looks at the pair at once), and sends the segment on: up the
// stack to a peer on this host, or out of the interface toward the peer
// (bpf_redirect_neigh).
//
// Segments with options in a layout other than Linux's (NOP NOP TS
// [NOP NOP SACK], or NOP NOP SACK without timestamps) keep their options
// as they are; SYNs pass untouched.

// Flow flags.
const (
	fDrop    = 1 << 0 // pen's own socket: drop what it sends
	fTS      = 1 << 1 // rewrite timestamps
	fLearned = 1 << 2 // tsvalAdd is set
	fEcr     = 1 << 3 // tsecrAdd is set (by the other direction)
	fWin     = 1 << 4 // rescale the window
)

// Offsets in a flow value (flowValue, flowValue6): the fields both
// families share, then the new addresses and the other direction's key,
// whose lengths depend on the family.
const (
	vPorts    = 0  // new ports
	vFlags    = 4  //
	vSeqAdd   = 8  //
	vAckAdd   = 12 //
	vTsvalAdd = 16 //
	vTsecrAdd = 20 //
	vTsBase   = 24 // the first rewritten TSval
	vLShift   = 28 //
	vRShift   = 29 //
	vWin      = 30 // last window field, as sent
	vAcked    = 32 // last acknowledgment number carried, as sent
	vNxt      = 36 // the furthest end of a segment's data, rewritten
	vFins     = 40 //
	vRsts     = 44 //
	vFinEnd   = 48 // rewritten sequence number after the FIN
	vTsval    = 52 // last TSval, rewritten
	vIfindex  = 56 // 0: on up the stack; else out of this interface
	vTag      = 60 // the pair's tag, 8 bytes, sent to ends on a FIN or RST
	vAddrs    = 68 // new source and destination address, then the peer key
)

const (
	tcxNext = -1
	tcxPass = 0
	tcxDrop = 2

	injectMark = 0x70656e01 // SO_MARK of pen's raw sockets: their segments pass

	bpfFPseudoHdr = 0x10

	ipOff = 14 // after the Ethernet header
)

// family is what the program's code for one IP version depends on.
type family struct {
	p       string // label prefix
	ethType uint16
	ipLen   int16 // IP header
	addrOff int16 // addresses in the IP header
	addrLen int16 // both addresses
	keyLen  int16 // addresses and ports
	// Stack layout: the key, the headers as loaded and rewritten (IP,
	// TCP, 40 bytes of options), a copy of them as they came, and the
	// checksum differences of the addresses and of the TCP header.
	sKey, sNew, sOld, sD1, sD2 int16
}

var (
	fam4 = family{p: "4", ethType: 0x0800, ipLen: 20, addrOff: 12, addrLen: 8, keyLen: 12,
		sKey: -16, sNew: -104, sOld: -184, sD1: -192, sD2: -200}
	fam6 = family{p: "6", ethType: 0x86dd, ipLen: 40, addrOff: 8, addrLen: 32, keyLen: 36,
		sKey: -40, sNew: -144, sOld: -248, sD1: -256, sD2: -264}
)

func be32(v uint32) int32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return int32(binary.NativeEndian.Uint32(b[:]))
}

// program builds the ingress program for the flows maps' fds (IPv4 and
// IPv6 keys) and the ends ring buffer's.
func program(flows, flows6, ends int) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // skb->protocol
		asm.JEq.Imm(asm.R2, bpfasm.BE16(fam4.ethType), fam4.p+"start"),
		asm.JEq.Imm(asm.R2, bpfasm.BE16(fam6.ethType), fam6.p+"start"),
		asm.Mov.Imm(asm.R0, tcxNext),
		asm.Return(),
	}
	insns = append(insns, body(fam4, flows, ends)...)
	return append(insns, body(fam6, flows6, ends)...)
}

// body is the program's code for one IP version; its labels begin with
// f.p.
func body(f family, flows, ends int) asm.Instructions {
	L := func(name string) string { return f.p + name }
	var (
		sKey, sNew, sOld, sD1, sD2 = f.sKey, f.sNew, f.sOld, f.sD1, f.sD2
		tcp                        = sNew + f.ipLen
		opts                       = tcp + 20
		oTCP                       = sOld + f.ipLen
		vPeer                      = vAddrs + f.addrLen
	)
	// lookupKey looks the key at sKey up in flows: R0 points at its
	// value, or the program goes on at miss.
	lookupKey := func(miss string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, flows),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(sKey)),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, miss),
		}
	}
	// copyWords copies n bytes, a word at a time.
	copyWords := func(dst asm.Register, doff int16, src asm.Register, soff int16, n int16) asm.Instructions {
		var out asm.Instructions
		for i := int16(0); i < n; i += 4 {
			out = append(out,
				asm.LoadMem(asm.R2, src, soff+i, asm.Word),
				asm.StoreMem(dst, doff+i, asm.R2, asm.Word),
			)
		}
		return out
	}

	// bswap32 / bswap16 on a register holding a value loaded from the
	// packet (big-endian) or to be stored into it.
	sw32 := func(r asm.Register) asm.Instruction { return asm.HostTo(asm.BE, r, asm.Word) }
	sw16 := func(r asm.Register) asm.Instruction { return asm.HostTo(asm.BE, r, asm.Half) }
	// addWord adds the u32 at R8+voff to the big-endian word at stack
	// offset off.
	addWord := func(off int16, voff int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.RFP, off, asm.Word),
			sw32(asm.R2),
			asm.LoadMem(asm.R3, asm.R8, voff, asm.Word),
			asm.Add.Reg32(asm.R2, asm.R3),
			sw32(asm.R2),
			asm.StoreMem(asm.RFP, off, asm.R2, asm.Word),
		}
	}
	// sack rewrites the SACK option whose kind byte is at stack offset
	// kind (its blocks follow its length byte), up to max blocks, within
	// the options loaded (R4 holds their length).
	sack := func(label string, kind int16, max int) asm.Instructions {
		out := asm.Instructions{
			asm.LoadMem(asm.R5, asm.RFP, kind+1, asm.Byte).WithSymbol(label), // option length
		}
		for j := 0; j < max; j++ {
			end := int32(kind-opts) + 2 + int32(8*(j+1)) // options bytes needed
			out = append(out,
				asm.JLT.Imm(asm.R5, int32(2+8*(j+1)), L("optsdone")),
				asm.JLT.Imm(asm.R4, end, L("optsdone")),
			)
			out = append(out, addWord(kind+2+int16(8*j), vAckAdd)...)
			out = append(out, addWord(kind+6+int16(8*j), vAckAdd)...)
		}
		return append(out, asm.Ja.Label(L("optsdone")))
	}

	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1).WithSymbol(L("start"))}
	insns = append(insns, asm.Mov.Imm(asm.R2, 0))
	for off := sD2; off < 0; off += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, off, asm.R2, asm.DWord))
	}
	insns = append(insns, bpfasm.LoadBytes(asm.R6, ipOff, asm.RFP, int32(sNew), int32(f.ipLen)+20, L("pass"))...)
	if f.ipLen == 20 {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.RFP, sNew, asm.Byte),
			asm.JNE.Imm(asm.R2, 0x45, L("pass")), // IPv4 without options
			asm.LoadMem(asm.R2, asm.RFP, sNew+9, asm.Byte),
			asm.JNE.Imm(asm.R2, 6, L("pass")),
			asm.LoadMem(asm.R2, asm.RFP, sNew+6, asm.Half),
			asm.And.Imm(asm.R2, bpfasm.BE16(0x3fff)), // MF or a fragment offset
			asm.JNE.Imm(asm.R2, 0, L("pass")),
		)
	} else {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.RFP, sNew, asm.Byte),
			asm.RSh.Imm(asm.R2, 4),
			asm.JNE.Imm(asm.R2, 6, L("pass")),
			asm.LoadMem(asm.R2, asm.RFP, sNew+6, asm.Byte),
			asm.JNE.Imm(asm.R2, 6, L("pass")), // TCP right after the header: no extension headers
		)
	}
	// key: addresses and ports as in the packet
	insns = append(insns, copyWords(asm.RFP, sKey, asm.RFP, sNew+f.addrOff, f.addrLen)...)
	insns = append(insns, copyWords(asm.RFP, sKey+f.addrLen, asm.RFP, tcp, 4)...)
	insns = append(insns, lookupKey(L("pass"))...)
	insns = append(insns,
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.LoadMem(asm.R2, asm.R8, vFlags, asm.Word),
		asm.JSet.Imm(asm.R2, fDrop, L("own")),
		asm.LoadMem(asm.R2, asm.RFP, tcp+13, asm.Byte),
		asm.JSet.Imm(asm.R2, 0x02, L("pass")), // SYN
		// R7 = TCP header length
		asm.LoadMem(asm.R7, asm.RFP, tcp+12, asm.Byte),
		asm.RSh.Imm(asm.R7, 4),
		asm.LSh.Imm(asm.R7, 2),
		asm.JLT.Imm(asm.R7, 20, L("pass")),
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.Add.Imm(asm.R4, -20),
		asm.JEq.Imm(asm.R4, 0, L("loaded")),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipOff+int32(f.ipLen)+20),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(opts)),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, L("pass")),
		// R9 = payload length
		asm.LoadMem(asm.R9, asm.R6, 0, asm.Word).WithSymbol(L("loaded")), // skb->len
		asm.Add.Imm(asm.R9, -(ipOff+int32(f.ipLen))),
		asm.Sub.Reg(asm.R9, asm.R7),
		asm.JSLT.Imm(asm.R9, 0, L("pass")),
	)
	// The old headers, for the checksum differences.
	for i := int16(0); i < f.ipLen+60; i += 8 {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.RFP, sNew+i, asm.DWord),
			asm.StoreMem(asm.RFP, sOld+i, asm.R2, asm.DWord),
		)
	}
	insns = append(insns, copyWords(asm.RFP, sNew+f.addrOff, asm.R8, vAddrs, f.addrLen)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R8, vPorts, asm.Word),
		asm.StoreMem(asm.RFP, tcp, asm.R2, asm.Word),
	)
	insns = append(insns, addWord(tcp+4, vSeqAdd)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, tcp+13, asm.Byte),
		asm.JSet.Imm(asm.R2, 0x10, L("ack")),
		asm.Ja.Label(L("win")),
		asm.LoadMem(asm.R2, asm.RFP, tcp+8, asm.Word).WithSymbol(L("ack")),
		sw32(asm.R2),
		asm.StoreMem(asm.R8, vAcked, asm.R2, asm.Word),
	)
	insns = append(insns, addWord(tcp+8, vAckAdd)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, tcp+14, asm.Half).WithSymbol(L("win")),
		sw16(asm.R2),
		asm.StoreMem(asm.R8, vWin, asm.R2, asm.Half),
		asm.LoadMem(asm.R2, asm.R8, vFlags, asm.Word),
		asm.JSet.Imm(asm.R2, fWin, L("rescale")),
		asm.Ja.Label(L("options")),
		asm.LoadMem(asm.R2, asm.RFP, tcp+14, asm.Half).WithSymbol(L("rescale")),
		sw16(asm.R2),
		asm.JEq.Imm(asm.R2, 0, L("options")),
		asm.LoadMem(asm.R3, asm.R8, vLShift, asm.Byte),
		asm.LSh.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, asm.R8, vRShift, asm.Byte),
		asm.RSh.Reg(asm.R2, asm.R3),
		asm.JLE.Imm(asm.R2, 0xffff, L("small")),
		asm.Mov.Imm(asm.R2, 0xffff),
		asm.JNE.Imm(asm.R2, 0, L("nonzero")).WithSymbol(L("small")),
		asm.Mov.Imm(asm.R2, 1),
		sw16(asm.R2).WithSymbol(L("nonzero")),
		asm.StoreMem(asm.RFP, tcp+14, asm.R2, asm.Half),
		// Options: R4 = their length.
		asm.Mov.Reg(asm.R4, asm.R7).WithSymbol(L("options")),
		asm.Add.Imm(asm.R4, -20),
		asm.JLT.Imm(asm.R4, 4, L("optsdone")),
		asm.LoadMem(asm.R2, asm.RFP, opts, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.And.Imm(asm.R3, be32(0xffffff00)),
		asm.JEq.Imm(asm.R3, be32(0x01010500), L("sack0")),
		asm.JNE.Imm(asm.R2, be32(0x0101080a), L("optsdone")),
		asm.JLT.Imm(asm.R4, 12, L("optsdone")),
		asm.LoadMem(asm.R2, asm.R8, vFlags, asm.Word),
		asm.JSet.Imm(asm.R2, fTS, L("ts")),
		asm.Ja.Label(L("optsdone")),
		// TSval: learn the offset on the first segment.
		asm.JSet.Imm(asm.R2, fLearned, L("tsval")).WithSymbol(L("ts")),
		asm.LoadMem(asm.R2, asm.RFP, opts+4, asm.Word),
		sw32(asm.R2),
		asm.LoadMem(asm.R3, asm.R8, vTsBase, asm.Word),
		asm.Sub.Reg32(asm.R3, asm.R2),
		asm.StoreMem(asm.R8, vTsvalAdd, asm.R3, asm.Word),
		asm.Mov.Imm(asm.R2, fLearned),
		asm.OrAtomic.Mem(asm.R8, asm.R2, asm.Word, vFlags),
	)
	// The other direction echoes it: tsecrAdd = -tsvalAdd there.
	insns = append(insns, copyWords(asm.RFP, sKey, asm.R8, vPeer, f.keyLen)...)
	insns = append(insns, lookupKey(L("tsval"))...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R8, vTsvalAdd, asm.Word),
		asm.Neg.Imm(asm.R2, 0),
		asm.StoreMem(asm.R0, vTsecrAdd, asm.R2, asm.Word),
		asm.Mov.Imm(asm.R2, fEcr),
		asm.OrAtomic.Mem(asm.R0, asm.R2, asm.Word, vFlags),
		// R4 (options length) was lost to the calls.
		asm.Mov.Reg(asm.R4, asm.R7).WithSymbol(L("tsval")),
		asm.Add.Imm(asm.R4, -20),
	)
	insns = append(insns, addWord(opts+4, vTsvalAdd)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, opts+4, asm.Word),
		sw32(asm.R2),
		asm.StoreMem(asm.R8, vTsval, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, vFlags, asm.Word),
		asm.JSet.Imm(asm.R2, fEcr, L("ecr")),
		asm.StoreImm(asm.RFP, opts+8, 0, asm.Word), // nothing to echo yet
		asm.Ja.Label(L("sack12")),
	)
	insns = append(insns, bpfasm.Labelled(L("ecr"), addWord(opts+8, vTsecrAdd))...)
	insns = append(insns,
		asm.JLT.Imm(asm.R4, 16, L("optsdone")).WithSymbol(L("sack12")),
		asm.LoadMem(asm.R2, asm.RFP, opts+12, asm.Word),
		asm.And.Imm(asm.R2, be32(0xffffff00)),
		asm.JEq.Imm(asm.R2, be32(0x01010500), L("sack1")),
		asm.Ja.Label(L("optsdone")),
	)
	insns = append(insns, sack(L("sack1"), opts+14, 3)...)
	insns = append(insns, sack(L("sack0"), opts+2, 4)...)

	// Checksums and stores.
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol(L("optsdone")),
		asm.Add.Imm(asm.R1, int32(sOld+f.addrOff)),
		asm.Mov.Imm(asm.R2, int32(f.addrLen)),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(sNew+f.addrOff)),
		asm.Mov.Imm(asm.R4, int32(f.addrLen)),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.StoreMem(asm.RFP, sD1, asm.R0, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, int32(oTCP)),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.And.Imm(asm.R2, 0x3c), // 20..60, for the verifier
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(tcp)),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.StoreMem(asm.RFP, sD2, asm.R0, asm.DWord),
	)
	store := func(off int32, stack int16, n int32) asm.Instructions {
		return bpfasm.StoreBytes(asm.R6, off, asm.RFP, int32(stack), n, 0, L("drop"))
	}
	insns = append(insns, store(ipOff+int32(f.addrOff), sNew+f.addrOff, int32(f.addrLen))...)
	insns = append(insns, store(ipOff+int32(f.ipLen), tcp, 16)...)
	insns = append(insns,
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.Add.Imm(asm.R4, -20),
		asm.JEq.Imm(asm.R4, 0, L("csum")),
		asm.And.Imm(asm.R4, 0x3c),
		asm.JEq.Imm(asm.R4, 0, L("csum")),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipOff+int32(f.ipLen)+20),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(opts)),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, L("drop")),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol(L("csum")),
	)
	if f.ipLen == 20 { // IPv6 has no header checksum
		insns = append(insns,
			asm.Mov.Imm(asm.R2, ipOff+10),
			asm.Mov.Imm(asm.R3, 0),
			asm.LoadMem(asm.R4, asm.RFP, sD1, asm.DWord),
			asm.Mov.Imm(asm.R5, 0),
			asm.FnL3CsumReplace.Call(),
			asm.JNE.Imm(asm.R0, 0, L("drop")),
			asm.Mov.Reg(asm.R1, asm.R6),
		)
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R2, ipOff+int32(f.ipLen)+16),
		asm.Mov.Imm(asm.R3, 0),
		asm.LoadMem(asm.R4, asm.RFP, sD1, asm.DWord),
		asm.Mov.Imm(asm.R5, bpfFPseudoHdr),
		asm.FnL4CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, L("drop")),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipOff+int32(f.ipLen)+16),
		asm.Mov.Imm(asm.R3, 0),
		asm.LoadMem(asm.R4, asm.RFP, sD2, asm.DWord),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnL4CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, L("drop")),
		// Where the data ends, FIN and RST.
		asm.LoadMem(asm.R2, asm.RFP, tcp+4, asm.Word),
		sw32(asm.R2),
		asm.Add.Reg32(asm.R2, asm.R9),
		asm.LoadMem(asm.R3, asm.R8, vNxt, asm.Word),
		asm.JEq.Imm(asm.R3, 0, L("nxt")), // the first
		asm.Mov.Reg32(asm.R4, asm.R2),
		asm.Sub.Reg32(asm.R4, asm.R3),
		asm.JSLE.Imm32(asm.R4, 0, L("flags")),
		asm.StoreMem(asm.R8, vNxt, asm.R2, asm.Word).WithSymbol(L("nxt")),
		asm.LoadMem(asm.R3, asm.RFP, tcp+13, asm.Byte).WithSymbol(L("flags")),
		asm.JSet.Imm(asm.R3, 0x01, L("fin")),
		asm.JSet.Imm(asm.R3, 0x04, L("rst")),
		asm.Ja.Label(L("out")),
		asm.Add.Imm32(asm.R2, 1).WithSymbol(L("fin")),
		asm.StoreMem(asm.R8, vFinEnd, asm.R2, asm.Word),
		asm.Mov.Imm(asm.R2, 1),
		asm.AddAtomic.Mem(asm.R8, asm.R2, asm.Word, vFins),
		asm.Ja.Label(L("ended")),
		asm.Mov.Imm(asm.R2, 1).WithSymbol(L("rst")),
		asm.AddAtomic.Mem(asm.R8, asm.R2, asm.Word, vRsts),
		// Tell pen (OnEnd). Should the ring be full, the record is
		// lost and pen's next regular look at the pair finds its end.
		asm.LoadMapPtr(asm.R1, ends).WithSymbol(L("ended")),
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.Add.Imm(asm.R2, vTag),
		asm.Mov.Imm(asm.R3, 8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		// On up the stack to a peer on this host, or out of the
		// interface toward the peer (the kernel finds the next hop's
		// address).
		asm.LoadMem(asm.R1, asm.R8, vIfindex, asm.Word).WithSymbol(L("out")),
		asm.JEq.Imm(asm.R1, 0, L("up")),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRedirectNeigh.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxPass).WithSymbol(L("up")),
		asm.Return(),
		// One of pen's own sockets: what pen injects passes.
		asm.LoadMem(asm.R2, asm.R6, 8, asm.Word).WithSymbol(L("own")), // skb->mark
		asm.JEq.Imm(asm.R2, injectMark, L("pass")),
		asm.Mov.Imm(asm.R0, tcxDrop).WithSymbol(L("drop")),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol(L("pass")),
		asm.Return(),
	)
	return insns
}

// ownProgram builds the egress program for the own map fd: it drops
// what one of pen's spliced sockets sends (its socket cookie is a key of
// own), so that the peers hear nothing from them.
func ownProgram(own int) asm.Instructions {
	return asm.Instructions{
		asm.FnGetSocketCookie.Call(), // R1 is the skb
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, own),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Imm(asm.R0, tcxDrop),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol("pass"),
		asm.Return(),
	}
}
