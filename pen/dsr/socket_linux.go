//go:build linux

package dsr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// vnetHeaderLen is the size of struct virtio_net_hdr, which the kernel
// puts before every frame read from, and expects before every frame
// written to, a socket with PACKET_VNET_HDR set.
//
// Why PACKET_VNET_HDR rather than completing checksums: frames that veth,
// virtio or a bridge hand over often still carry a partial checksum
// (offload) and, with TSO or GRO, can be one super-frame of up to 64 KiB
// instead of many MTU-sized ones. The header tells the reader both (where
// the checksum is to be filled in, how to segment), and the same header on
// the write hands that state back to the kernel, which then checksums and
// segments the frame as late as it can (or lets the next device do it).
// Pen thus forwards a 64 KiB super-frame with one copy and no checksum
// work, where completing checksums in user space (PACKET_AUXDATA and
// TP_STATUS_CSUMNOTREADY) costs a pass over every byte and still cannot
// send a frame beyond the MTU. completeChecksum remains for sockets where
// the header cannot be had.
const vnetHeaderLen = 10

// batchConn is an AF_PACKET socket bound to one interface, read and
// written in batches with recvmmsg and sendmmsg through the Go runtime's
// poller (mdlayher/packet opens it and attaches the filter before it is
// bound, so no unwanted frame is ever queued).
type batchConn struct {
	pc *packet.Conn
	rc syscall.RawConn
}

// listen opens a socket for frames of type proto (ETH_P_ALL: every type)
// on ifi.
func listen(ifi *net.Interface, prog []bpf.RawInstruction, proto int, vip netip.Addr) (*batchConn, error) {
	pc, err := packet.Listen(ifi, packet.Raw, proto, &packet.Config{Filter: prog})
	if err != nil {
		return nil, fmt.Errorf("opening AF_PACKET socket on %s: %w", ifi.Name, err)
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		pc.Close()
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); serr != nil {
			serr = os.NewSyscallError("setsockopt PACKET_VNET_HDR", serr)
			return
		}
		// Frames the host itself sends on the interface are not ours
		// (the filter drops them too, on kernels without this option).
		unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		if vip.Is6() && proto != etherTypeARP {
			// Solicitations for the VIP go to its solicited-node
			// multicast address: the interface must let them in.
			_, mac := solicitedNode(vip)
			mr := unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
			copy(mr.Address[:], mac[:])
			if err := unix.SetsockoptPacketMreq(int(fd), unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mr); err != nil {
				serr = os.NewSyscallError("setsockopt PACKET_ADD_MEMBERSHIP", err)
				return
			}
		}
		// Room for bursts: frames wait here while a batch is handled.
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("setting up AF_PACKET socket on %s: %w", ifi.Name, err)
	}
	return &batchConn{pc: pc, rc: rc}, nil
}

func (c *batchConn) Close() error { return c.pc.Close() }

// batch is a set of buffers for one recvmmsg or sendmmsg call. Each
// buffer starts with the virtio header; frames follow it.
type batch struct {
	bufs  [][]byte
	lens  []int // bytes received into each buffer (header included)
	trunc []bool
	ptype []uint8 // packet type of each frame received
	iovs  []unix.Iovec
	msgs  []unix.Mmsghdr
	names []unix.RawSockaddrLinklayer
}

func newBatch(n, size int) *batch {
	b := &batch{
		bufs:  make([][]byte, n),
		lens:  make([]int, n),
		trunc: make([]bool, n),
		ptype: make([]uint8, n),
		iovs:  make([]unix.Iovec, n),
		msgs:  make([]unix.Mmsghdr, n),
		names: make([]unix.RawSockaddrLinklayer, n),
	}
	mem := make([]byte, n*size)
	for i := range b.bufs {
		b.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	return b
}

// recv reads up to len(b.bufs) frames, waiting until at least one is
// there. It returns how many it read.
func (c *batchConn) recv(b *batch) (int, error) {
	for i := range b.bufs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(len(b.bufs[i]))
		b.msgs[i] = unix.Mmsghdr{}
		h := &b.msgs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = unix.SizeofSockaddrLinklayer
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)), unix.MSG_TRUNC, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false
		}
		n, errno = int(r), e
		return true
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", errno)
	}
	for i := range n {
		l := int(b.msgs[i].Len)
		b.trunc[i] = b.msgs[i].Hdr.Flags&unix.MSG_TRUNC != 0 || l > len(b.bufs[i])
		b.lens[i] = min(l, len(b.bufs[i]))
		b.ptype[i] = b.names[i].Pkttype
	}
	return n, nil
}

// send writes frames (each starting with its virtio header) with as few
// sendmmsg calls as it takes. It returns how many went out; a frame the
// kernel refuses is skipped and counted by the caller through the error.
func (c *batchConn) send(b *batch, frames [][]byte) (sent int, failed int, err error) {
	if len(frames) > len(b.msgs) {
		return 0, 0, errors.New("batch too large")
	}
	for i, f := range frames {
		b.iovs[i].Base = &f[0]
		b.iovs[i].SetLen(len(f))
		b.msgs[i] = unix.Mmsghdr{}
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.SetIovlen(1)
	}
	off := 0
	for off < len(frames) {
		var n int
		var errno syscall.Errno
		werr := c.rc.Write(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[off])), uintptr(len(frames)-off), 0, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false
			}
			n, errno = int(r), e
			return true
		})
		if werr != nil {
			return sent, failed, werr
		}
		if errno != 0 {
			// The frame at off was refused (e.g. ENETDOWN, EMSGSIZE):
			// skip it and go on with the rest.
			err = os.NewSyscallError("sendmmsg", errno)
			failed++
			off++
			continue
		}
		sent += n
		off += n
	}
	return sent, failed, err
}
