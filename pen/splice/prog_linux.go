//go:build linux

package splice

import (
	"encoding/binary"

	"github.com/cilium/ebpf/asm"
)

// The program, written with cilium/ebpf's asm package (no C compiler at
// build or test time), runs on TCX ingress. For a TCP segment over IPv4
// whose address and ports are a key of flows it either drops the segment
// (fDrop: one of pen's own sockets, which must stay silent) or rewrites
// it into the other connection of its pair: addresses and ports,
// sequence and acknowledgment numbers, window (rescaled), timestamps and
// SACK blocks, with the checksums brought along (bpf_csum_diff over the
// old and new headers, then bpf_l3/l4_csum_replace, which leave a
// partial checksum partial). It counts the payload, notes the time, FIN
// and RST, and lets the segment go on up the stack, where it reaches the
// peer's socket.
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

// Offsets in a flow value (flowValue).
const (
	vAddrs    = 0  // new source and destination address
	vPorts    = 8  // new ports
	vFlags    = 12 //
	vSeqAdd   = 16 //
	vAckAdd   = 20 //
	vTsvalAdd = 24 //
	vTsecrAdd = 28 //
	vTsBase   = 32 // the first rewritten TSval
	vLShift   = 36 //
	vRShift   = 37 //
	vWin      = 38 // last window field, as sent
	vAcked    = 40 // last acknowledgment number carried, as sent
	vNxt      = 44 // the furthest end of a segment's data, rewritten
	vFins     = 48 //
	vRsts     = 52 //
	vFinEnd   = 56 // rewritten sequence number after the FIN
	vTsval    = 60 // last TSval, rewritten
	vPeer     = 64 // the other direction's key
	vIfindex  = 76 // 0: on up the stack; else out of this interface
)

const (
	tcxNext = -1
	tcxPass = 0
	tcxDrop = 2

	injectMark = 0x70656e01 // SO_MARK of pen's raw socket: its segments pass

	bpfFPseudoHdr = 0x10
)

// Stack layout.
const (
	sKey  = -16  // 12 bytes
	sNew  = -104 // IPv4 header (20), TCP header (20), options (40)
	sOld  = -184 // a copy of the same before rewriting
	sD1   = -192 // checksum difference of the addresses
	sD2   = -200 // checksum difference of the TCP header
	ipOff = 14   // after the Ethernet header
)

func be16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

func be32(v uint32) int32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return int32(binary.NativeEndian.Uint32(b[:]))
}

// program builds the ingress program for the flows map fd.
func program(flows int) asm.Instructions {
	const (
		tcp  = sNew + 20
		opts = sNew + 40
		oTCP = sOld + 20
	)
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
				asm.JLT.Imm(asm.R5, int32(2+8*(j+1)), "optsdone"),
				asm.JLT.Imm(asm.R4, end, "optsdone"),
			)
			out = append(out, addWord(kind+2+int16(8*j), vAckAdd)...)
			out = append(out, addWord(kind+6+int16(8*j), vAckAdd)...)
		}
		return append(out, asm.Ja.Label("optsdone"))
	}

	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.Word), // skb->protocol
		asm.JNE.Imm(asm.R2, be16(0x0800), "pass"),
	}
	insns = append(insns, asm.Mov.Imm(asm.R2, 0))
	for off := int16(sD2); off < 0; off += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, off, asm.R2, asm.DWord))
	}
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipOff),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, sNew),
		asm.Mov.Imm(asm.R4, 40),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R2, asm.RFP, sNew, asm.Byte),
		asm.JNE.Imm(asm.R2, 0x45, "pass"), // IPv4 without options
		asm.LoadMem(asm.R2, asm.RFP, sNew+9, asm.Byte),
		asm.JNE.Imm(asm.R2, 6, "pass"),
		asm.LoadMem(asm.R2, asm.RFP, sNew+6, asm.Half),
		asm.And.Imm(asm.R2, be16(0x3fff)), // MF or a fragment offset
		asm.JNE.Imm(asm.R2, 0, "pass"),
		// key: addresses and ports as in the packet
		asm.LoadMem(asm.R2, asm.RFP, sNew+12, asm.Word),
		asm.StoreMem(asm.RFP, sKey, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, sNew+16, asm.Word),
		asm.StoreMem(asm.RFP, sKey+4, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, tcp, asm.Word),
		asm.StoreMem(asm.RFP, sKey+8, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, flows),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, sKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.LoadMem(asm.R2, asm.R8, vFlags, asm.Word),
		asm.JSet.Imm(asm.R2, fDrop, "own"),
		asm.LoadMem(asm.R2, asm.RFP, tcp+13, asm.Byte),
		asm.JSet.Imm(asm.R2, 0x02, "pass"), // SYN
		// R7 = TCP header length
		asm.LoadMem(asm.R7, asm.RFP, tcp+12, asm.Byte),
		asm.RSh.Imm(asm.R7, 4),
		asm.LSh.Imm(asm.R7, 2),
		asm.JLT.Imm(asm.R7, 20, "pass"),
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.Add.Imm(asm.R4, -20),
		asm.JEq.Imm(asm.R4, 0, "loaded"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipOff+40),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, opts),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		// R9 = payload length
		asm.LoadMem(asm.R9, asm.R6, 0, asm.Word).WithSymbol("loaded"), // skb->len
		asm.Add.Imm(asm.R9, -(ipOff+20)),
		asm.Sub.Reg(asm.R9, asm.R7),
		asm.JSLT.Imm(asm.R9, 0, "pass"),
	)
	// The old headers, for the checksum differences.
	for i := int16(0); i < 80; i += 8 {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.RFP, sNew+i, asm.DWord),
			asm.StoreMem(asm.RFP, sOld+i, asm.R2, asm.DWord),
		)
	}
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R8, vAddrs, asm.Word),
		asm.StoreMem(asm.RFP, sNew+12, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, vAddrs+4, asm.Word),
		asm.StoreMem(asm.RFP, sNew+16, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, vPorts, asm.Word),
		asm.StoreMem(asm.RFP, tcp, asm.R2, asm.Word),
	)
	insns = append(insns, addWord(tcp+4, vSeqAdd)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, tcp+13, asm.Byte),
		asm.JSet.Imm(asm.R2, 0x10, "ack"),
		asm.Ja.Label("win"),
		asm.LoadMem(asm.R2, asm.RFP, tcp+8, asm.Word).WithSymbol("ack"),
		sw32(asm.R2),
		asm.StoreMem(asm.R8, vAcked, asm.R2, asm.Word),
	)
	insns = append(insns, addWord(tcp+8, vAckAdd)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, tcp+14, asm.Half).WithSymbol("win"),
		sw16(asm.R2),
		asm.StoreMem(asm.R8, vWin, asm.R2, asm.Half),
		asm.LoadMem(asm.R2, asm.R8, vFlags, asm.Word),
		asm.JSet.Imm(asm.R2, fWin, "rescale"),
		asm.Ja.Label("options"),
		asm.LoadMem(asm.R2, asm.RFP, tcp+14, asm.Half).WithSymbol("rescale"),
		sw16(asm.R2),
		asm.JEq.Imm(asm.R2, 0, "options"),
		asm.LoadMem(asm.R3, asm.R8, vLShift, asm.Byte),
		asm.LSh.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, asm.R8, vRShift, asm.Byte),
		asm.RSh.Reg(asm.R2, asm.R3),
		asm.JLE.Imm(asm.R2, 0xffff, "small"),
		asm.Mov.Imm(asm.R2, 0xffff),
		asm.JNE.Imm(asm.R2, 0, "nonzero").WithSymbol("small"),
		asm.Mov.Imm(asm.R2, 1),
		sw16(asm.R2).WithSymbol("nonzero"),
		asm.StoreMem(asm.RFP, tcp+14, asm.R2, asm.Half),
		// Options: R4 = their length.
		asm.Mov.Reg(asm.R4, asm.R7).WithSymbol("options"),
		asm.Add.Imm(asm.R4, -20),
		asm.JLT.Imm(asm.R4, 4, "optsdone"),
		asm.LoadMem(asm.R2, asm.RFP, opts, asm.Word),
		asm.Mov.Reg(asm.R3, asm.R2),
		asm.And.Imm(asm.R3, be32(0xffffff00)),
		asm.JEq.Imm(asm.R3, be32(0x01010500), "sack0"),
		asm.JNE.Imm(asm.R2, be32(0x0101080a), "optsdone"),
		asm.JLT.Imm(asm.R4, 12, "optsdone"),
		asm.LoadMem(asm.R2, asm.R8, vFlags, asm.Word),
		asm.JSet.Imm(asm.R2, fTS, "ts"),
		asm.Ja.Label("optsdone"),
		// TSval: learn the offset on the first segment.
		asm.JSet.Imm(asm.R2, fLearned, "tsval").WithSymbol("ts"),
		asm.LoadMem(asm.R2, asm.RFP, opts+4, asm.Word),
		sw32(asm.R2),
		asm.LoadMem(asm.R3, asm.R8, vTsBase, asm.Word),
		asm.Sub.Reg32(asm.R3, asm.R2),
		asm.StoreMem(asm.R8, vTsvalAdd, asm.R3, asm.Word),
		asm.Mov.Imm(asm.R2, fLearned),
		asm.OrAtomic.Mem(asm.R8, asm.R2, asm.Word, vFlags),
		// The other direction echoes it: tsecrAdd = -tsvalAdd there.
		asm.LoadMem(asm.R2, asm.R8, vPeer, asm.DWord),
		asm.StoreMem(asm.RFP, sKey, asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.R8, vPeer+8, asm.Word),
		asm.StoreMem(asm.RFP, sKey+8, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, flows),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, sKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "tsval"),
		asm.LoadMem(asm.R2, asm.R8, vTsvalAdd, asm.Word),
		asm.Neg.Imm(asm.R2, 0),
		asm.StoreMem(asm.R0, vTsecrAdd, asm.R2, asm.Word),
		asm.Mov.Imm(asm.R2, fEcr),
		asm.OrAtomic.Mem(asm.R0, asm.R2, asm.Word, vFlags),
		// R4 (options length) was lost to the calls.
		asm.Mov.Reg(asm.R4, asm.R7).WithSymbol("tsval"),
		asm.Add.Imm(asm.R4, -20),
	)
	insns = append(insns, addWord(opts+4, vTsvalAdd)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, opts+4, asm.Word),
		sw32(asm.R2),
		asm.StoreMem(asm.R8, vTsval, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R8, vFlags, asm.Word),
		asm.JSet.Imm(asm.R2, fEcr, "ecr"),
		asm.StoreImm(asm.RFP, opts+8, 0, asm.Word), // nothing to echo yet
		asm.Ja.Label("sack12"),
	)
	insns = append(insns, labelled("ecr", addWord(opts+8, vTsecrAdd))...)
	insns = append(insns,
		asm.JLT.Imm(asm.R4, 16, "optsdone").WithSymbol("sack12"),
		asm.LoadMem(asm.R2, asm.RFP, opts+12, asm.Word),
		asm.And.Imm(asm.R2, be32(0xffffff00)),
		asm.JEq.Imm(asm.R2, be32(0x01010500), "sack1"),
		asm.Ja.Label("optsdone"),
	)
	insns = append(insns, sack("sack1", opts+14, 3)...)
	insns = append(insns, sack("sack0", opts+2, 4)...)

	// Checksums and stores.
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol("optsdone"),
		asm.Add.Imm(asm.R1, sOld+12),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, sNew+12),
		asm.Mov.Imm(asm.R4, 8),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.StoreMem(asm.RFP, sD1, asm.R0, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, oTCP),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.And.Imm(asm.R2, 0x3c), // 20..60, for the verifier
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, tcp),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.StoreMem(asm.RFP, sD2, asm.R0, asm.DWord),
	)
	store := func(off int32, stack int16, n int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, off),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, int32(stack)),
			asm.Mov.Imm(asm.R4, n),
			asm.Mov.Imm(asm.R5, 0),
			asm.FnSkbStoreBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "drop"),
		}
	}
	insns = append(insns, store(ipOff+12, sNew+12, 8)...)
	insns = append(insns, store(ipOff+20, tcp, 16)...)
	insns = append(insns,
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.Add.Imm(asm.R4, -20),
		asm.JEq.Imm(asm.R4, 0, "csum"),
		asm.And.Imm(asm.R4, 0x3c),
		asm.JEq.Imm(asm.R4, 0, "csum"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipOff+40),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, opts),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("csum"),
		asm.Mov.Imm(asm.R2, ipOff+10),
		asm.Mov.Imm(asm.R3, 0),
		asm.LoadMem(asm.R4, asm.RFP, sD1, asm.DWord),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnL3CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipOff+20+16),
		asm.Mov.Imm(asm.R3, 0),
		asm.LoadMem(asm.R4, asm.RFP, sD1, asm.DWord),
		asm.Mov.Imm(asm.R5, bpfFPseudoHdr),
		asm.FnL4CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, ipOff+20+16),
		asm.Mov.Imm(asm.R3, 0),
		asm.LoadMem(asm.R4, asm.RFP, sD2, asm.DWord),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnL4CsumReplace.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		// Where the data ends, FIN and RST.
		asm.LoadMem(asm.R2, asm.RFP, tcp+4, asm.Word),
		sw32(asm.R2),
		asm.Add.Reg32(asm.R2, asm.R9),
		asm.LoadMem(asm.R3, asm.R8, vNxt, asm.Word),
		asm.JEq.Imm(asm.R3, 0, "nxt"), // the first
		asm.Mov.Reg32(asm.R4, asm.R2),
		asm.Sub.Reg32(asm.R4, asm.R3),
		asm.JSLE.Imm32(asm.R4, 0, "flags"),
		asm.StoreMem(asm.R8, vNxt, asm.R2, asm.Word).WithSymbol("nxt"),
		asm.LoadMem(asm.R3, asm.RFP, tcp+13, asm.Byte).WithSymbol("flags"),
		asm.JSet.Imm(asm.R3, 0x01, "fin"),
		asm.JSet.Imm(asm.R3, 0x04, "rst"),
		asm.Ja.Label("out"),
		asm.Add.Imm32(asm.R2, 1).WithSymbol("fin"),
		asm.StoreMem(asm.R8, vFinEnd, asm.R2, asm.Word),
		asm.Mov.Imm(asm.R2, 1),
		asm.AddAtomic.Mem(asm.R8, asm.R2, asm.Word, vFins),
		asm.Ja.Label("out"),
		asm.Mov.Imm(asm.R2, 1).WithSymbol("rst"),
		asm.AddAtomic.Mem(asm.R8, asm.R2, asm.Word, vRsts),
		// On up the stack to a peer on this host, or out of the
		// interface toward the peer (the kernel finds the next hop's
		// address).
		asm.LoadMem(asm.R1, asm.R8, vIfindex, asm.Word).WithSymbol("out"),
		asm.JEq.Imm(asm.R1, 0, "up"),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRedirectNeigh.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxPass).WithSymbol("up"),
		asm.Return(),
		// One of pen's own sockets: what pen injects passes.
		asm.LoadMem(asm.R2, asm.R6, 8, asm.Word).WithSymbol("own"), // skb->mark
		asm.JEq.Imm(asm.R2, injectMark, "pass"),
		asm.Mov.Imm(asm.R0, tcxDrop).WithSymbol("drop"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcxNext).WithSymbol("pass"),
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

// labelled gives the first instruction of insns the symbol name.
func labelled(name string, insns asm.Instructions) asm.Instructions {
	insns[0] = insns[0].WithSymbol(name)
	return insns
}
