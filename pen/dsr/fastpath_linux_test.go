//go:build linux

package dsr

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/pen-lb/pen-appliance/internal/testenv"
)

const tcActRedirect = 7

// The kernel's program places every flow on the server user space would
// pick (same key, same hash, same table), rewrites only the Ethernet
// addresses, and leaves every other frame alone. It is run on frames with
// BPF_PROG_TEST_RUN, without attaching it anywhere.
func TestFastPathAgreesWithUserSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "loading BPF programs needs root")
	}
	for _, c := range []struct {
		v6, hashPort, peer bool
	}{{false, false, false}, {false, true, true}, {true, false, true}, {true, true, false}} {
		hashPort := c.hashPort
		cfg := Config{VIP: vip, Port: 80, HashPort: hashPort}
		if c.v6 {
			cfg.VIP = vip6
		}
		fp, err := loadFastPath(1, cfg, penMAC, c.peer)
		if errors.Is(err, os.ErrPermission) {
			testenv.Skip(t, "loading BPF programs: "+err.Error())
		}
		if err != nil {
			t.Fatal(err)
		}
		defer fp.Close()
		var cands []candidate
		for i := range 3 {
			a := netip.AddrFrom4([4]byte{198, 18, 1, byte(i + 1)})
			mac := [6]byte{0x02, 0, 0, 0, 0, byte(i + 1)}
			cands = append(cands, candidate{id: serverID(a), weight: i + 1, target: &target{index: i, addr: a, mac: mac, ctr: &serverCounters{slot: uint8(i)}}})
		}
		l := buildLookup(cands)
		if err := fp.load(l); err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 2000 {
			var src netip.Addr
			var f []byte
			sport := uint16(rng.Uint32())
			if c.v6 {
				var a [16]byte
				binary.BigEndian.PutUint64(a[:8], rng.Uint64())
				binary.BigEndian.PutUint64(a[8:], rng.Uint64())
				src = netip.AddrFrom16(a)
				f = tcp6Frame(penMAC, clientMAC, src, vip6, sport, 80, tcpACK, nil, []byte("x"))
			} else {
				var a [4]byte
				binary.BigEndian.PutUint32(a[:], rng.Uint32())
				src = netip.AddrFrom4(a)
				f = tcpFrame(penMAC, clientMAC, src, vip, sport, 80, tcpACK, nil, []byte("x"))
			}
			ret, out := runFast(t, fp, f)
			want := l.pick(flowKey(src, sport, hashPort)).mac
			if ret != tcActRedirect || [6]byte(out[0:6]) != want || [6]byte(out[6:12]) != penMAC || string(out[12:len(f)]) != string(f[12:]) {
				t.Fatalf("-r %v, client %v:%d: returned %d, MACs %x -> %x, want -> %x", hashPort, src, sport, ret, out[6:12], out[0:6], want)
			}
		}
		frag := tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpACK, nil, []byte("12345678"))
		binary.BigEndian.PutUint16(frag[20:22], 3)
		plain := tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpACK, nil, nil)
		others := map[string][]byte{
			"other port":    tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 81, tcpSYN, nil, nil),
			"other address": tcpFrame(penMAC, clientMAC, clientIP, b1IP, 1, 80, tcpSYN, nil, nil),
			"udp":           udpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, nil),
			"fragment":      frag,
			"arp":           arpRequest(make([]byte, 60), clientMAC, clientIP, vip),
		}
		if c.v6 {
			plain = tcp6Frame(penMAC, clientMAC, client6, vip6, 1, 80, tcpACK, nil, nil)
			others = map[string][]byte{
				"other port":        tcp6Frame(penMAC, clientMAC, client6, vip6, 1, 81, tcpSYN, nil, nil),
				"other address":     tcp6Frame(penMAC, clientMAC, client6, b1IP6, 1, 80, tcpSYN, nil, nil),
				"extension headers": tcp6Frame(penMAC, clientMAC, client6, vip6, 1, 80, tcpSYN, [][]byte{{0, 0, 1, 4, 0, 0, 0, 0}}, nil),
				"ipv4 to the vip":   tcpFrame(penMAC, clientMAC, clientIP, vip, 1, 80, tcpSYN, nil, nil),
				"ns":                nsRequest(make([]byte, ndFrameLen), clientMAC, client6, vip6),
			}
		}
		withOpts := plain
		for name, f := range others {
			if ret, _ := runFast(t, fp, f); ret == tcActRedirect {
				t.Errorf("%s: redirected", name)
			}
		}
		if ret, _ := runFast(t, fp, withOpts); ret != tcActRedirect {
			t.Errorf("plain ACK not redirected: %d", ret)
		}
		if c := fp.counters(); c[0].Frames+c[1].Frames+c[2].Frames != 2001 {
			t.Errorf("counted %d frames, want 2001", c[0].Frames+c[1].Frames+c[2].Frames)
		}
		// An empty table forwards nothing.
		if err := fp.load(&lookup{}); err != nil {
			t.Fatal(err)
		}
		if ret, _ := runFast(t, fp, withOpts); ret == tcActRedirect {
			t.Error("redirected with no server")
		}
	}
}

func runFast(t *testing.T, fp *fastPath, f []byte) (uint32, []byte) {
	t.Helper()
	in := append([]byte(nil), f...)
	for len(in) < 60 {
		in = append(in, 0)
	}
	out := make([]byte, len(in)+64)
	ret, err := fp.prog.Run(&ebpf.RunOptions{Data: in, DataOut: out})
	if err != nil {
		t.Fatal(err)
	}
	return ret, out
}
