//go:build !linux

package dsr

import (
	"errors"
	"log/slog"
	"net"
)

type fastPath struct{}

const fastCounters = 256

type fastCounter struct{ Frames, Bytes uint64 }

func newFastPath(*net.Interface, Config, [6]byte, *slog.Logger) (*fastPath, error) {
	return nil, errors.New("no fast path on this system")
}

func (fp *fastPath) Close() error                            { return nil }
func (fp *fastPath) load(*lookup) error                      { return nil }
func (fp *fastPath) counters() (c [fastCounters]fastCounter) { return c }
