//go:build linux

package bpfasm

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// BE16 gives the value a 16-bit load of v's two network-order bytes
// yields on this machine.
func TestBE16(t *testing.T) {
	for _, v := range []uint16{0x0800, 0x86dd, 0x3fff, 1, 0xff00} {
		b := []byte{byte(v >> 8), byte(v)}
		if got, want := BE16(v), int32(binary.NativeEndian.Uint16(b)); got != want {
			t.Errorf("BE16(%#x) = %#x, want %#x", v, got, want)
		}
	}
}

// LoadBytes and StoreBytes, run by the kernel on a frame: four bytes
// go from offset 2 to the stack and from there to offset 20, and a
// load beyond the frame's end takes the failure label.
func TestLoadStoreBytes(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "running a BPF program needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	build := func(loadAt int32) *ebpf.Program {
		insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
		insns = append(insns, LoadBytes(asm.R6, loadAt, asm.RFP, -8, 4, "fail")...)
		insns = append(insns, StoreBytes(asm.R6, 20, asm.RFP, -8, 4, 0, "fail")...)
		insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
		insns = append(insns, Labelled("fail", asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()})...)
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
		if err != nil {
			testenv.Skip(t, "BPF programs are not available: "+err.Error())
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	frame := make([]byte, 64)
	for i := range frame {
		frame[i] = byte(i)
	}
	out := make([]byte, len(frame))
	ret, err := build(2).Run(&ebpf.RunOptions{Data: frame, DataOut: out})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), frame...)
	copy(want[20:24], frame[2:6])
	if ret != 0 || !bytes.Equal(out, want) {
		t.Errorf("returned %d, frame % x; want 0, % x", ret, out, want)
	}
	if ret, err := build(62).Run(&ebpf.RunOptions{Data: frame, DataOut: out}); err != nil || ret != 1 {
		t.Errorf("a load past the end returned %d, %v; want the failure label (1)", ret, err)
	}
}
