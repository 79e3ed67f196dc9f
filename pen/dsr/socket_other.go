//go:build !linux

package dsr

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"golang.org/x/net/bpf"
)

const vnetHeaderLen = 10

type batchConn struct{}

func listen(*net.Interface, []bpf.RawInstruction, int, netip.Addr) (*batchConn, error) {
	return nil, fmt.Errorf("dsr: AF_PACKET sockets are not available on %s", runtime.GOOS)
}

func (c *batchConn) Close() error { return nil }

type batch struct {
	bufs  [][]byte
	lens  []int
	trunc []bool
}

func newBatch(n, size int) *batch { return &batch{} }

func (c *batchConn) recv(*batch) (int, error) { return 0, net.ErrClosed }

func (c *batchConn) send(*batch, [][]byte) (int, int, error) { return 0, 0, nil }
