// Package bpfasm holds the instruction sequences that pen's TC programs
// (pen/splice, udp_kernel in pen/proxy, the DSR fast path in pen/dsr),
// built with cilium/ebpf's asm package, have in common: moving bytes
// between the packet and the stack, and constants in network byte order.
// Each sequence clobbers R0 to R5, as a helper call does.
package bpfasm

import (
	"encoding/binary"

	"github.com/cilium/ebpf/asm"
)

// LoadBytes copies n bytes at offset off of the packet whose context is
// in skb to base+at (the stack: base asm.RFP), by bpf_skb_load_bytes,
// and jumps to fail when the packet is shorter.
func LoadBytes(skb asm.Register, off int32, base asm.Register, at, n int32, fail string) asm.Instructions {
	return append(bytesArgs(skb, off, base, at, n),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, fail),
	)
}

// StoreBytes writes n bytes from base+at into the packet at offset off
// by bpf_skb_store_bytes with flags (such as BPF_F_RECOMPUTE_CSUM), and
// jumps to fail when the kernel refuses.
func StoreBytes(skb asm.Register, off int32, base asm.Register, at, n, flags int32, fail string) asm.Instructions {
	return append(bytesArgs(skb, off, base, at, n),
		asm.Mov.Imm(asm.R5, flags),
		asm.FnSkbStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, fail),
	)
}

// bytesArgs puts the arguments bpf_skb_load_bytes and
// bpf_skb_store_bytes share in R1 to R4: the packet, its offset, the
// address of the other side and the length.
func bytesArgs(skb asm.Register, off int32, base asm.Register, at, n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, skb),
		asm.Mov.Imm(asm.R2, off),
		asm.Mov.Reg(asm.R3, base),
		asm.Add.Imm(asm.R3, at),
		asm.Mov.Imm(asm.R4, n),
	}
}

// Labelled puts the label name on the first of insns, for jumps to it.
func Labelled(name string, insns asm.Instructions) asm.Instructions {
	insns[0] = insns[0].WithSymbol(name)
	return insns
}

// BE16 is the immediate that compares equal to a 16-bit field holding v
// in network byte order, once loaded into a register as it lies in
// memory.
func BE16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}
