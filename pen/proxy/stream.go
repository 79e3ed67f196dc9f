package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/balance"
	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/httpstream"
)

// handshakeTimeout bounds a TLS handshake.
const handshakeTimeout = 10 * time.Second

// fileConn is a net.Conn on the client socket the loop accepted, without
// duplicating the descriptor.
type fileConn struct {
	*os.File
	local, remote net.Addr
}

func (c *fileConn) LocalAddr() net.Addr  { return c.local }
func (c *fileConn) RemoteAddr() net.Addr { return c.remote }

func (c *fileConn) CloseWrite() error {
	rc, err := c.File.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) })
	return serr
}

// serveTLS terminates TLS on a client connection and relays it to a
// server chosen and failed over as for any other connection.
func (l *Loop) serveTLS(h *handoff, s Settings) {
	f := os.NewFile(uintptr(h.fd), "client")
	raw := &fileConn{File: f, remote: net.TCPAddrFromAddrPort(h.peer), local: &net.TCPAddr{}}
	tc := tls.Server(raw, s.TLS)
	var mu sync.Mutex
	var up net.Conn
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		tc.Close()
		if up != nil {
			up.Close()
		}
	}
	h.onClose(closeAll)
	defer func() {
		h.done()
		closeAll()
	}()

	tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		l.log.Debugf(1, "TLS handshake with %s: %v", config.ClientName(h.peer.Addr()), err)
		return
	}
	tc.SetDeadline(time.Time{})

	tg, ok := h.sess.First()
	for ok {
		u, err := dialServer(tg, s, h.peer, l)
		if err == nil {
			mu.Lock()
			up = u
			mu.Unlock()
			break
		}
		l.log.Printf("blacklisting server %d because connect error %v", tg.Index, err)
		h.sess.Failed()
		tg, ok = h.sess.Next()
	}
	if !ok {
		if h.sess.Reason() == balance.ReasonACL {
			l.refusedACL.Add(1)
		} else {
			l.refusedNone.Add(1)
		}
		return
	}
	h.sess.Connected()
	if sc, ok := up.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { h.setUpstream(int(fd)) })
		}
	}
	l.relay(h, tc, up, s)
}

// dialServer connects to a server from a goroutine, with the source
// address, transparency, keepalive and Nagle settings the loop uses.
func dialServer(tg balance.Target, s Settings, peer netip.AddrPort, l *Loop) (net.Conn, error) {
	cfg := tg.Server.Cfg
	if cfg.Host.IsUnix() {
		return net.DialTimeout("unix", cfg.Host.Path, s.Timeout)
	}
	d := net.Dialer{Timeout: s.Timeout, KeepAlive: -1}
	if s.Keepalive {
		d.KeepAlive = 0
	}
	fam := family(cfg.Host.IP)
	switch {
	case s.Source.IsValid() && family(s.Source) == fam:
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(s.Source, 0))
	case s.Transparent && peer.Addr().IsValid() && family(peer.Addr()) == fam:
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(peer.Addr(), 0))
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				if fam == unix.AF_INET {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
				}
			})
			if serr != nil {
				l.log.Printf("setsockopt: %v", serr)
			}
			return nil
		}
	}
	c, err := d.Dial("tcp", cfg.Addr().String())
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetNoDelay(s.NoDelay)
	return c, nil
}

type closeWriter interface{ CloseWrite() error }

// relay copies both ways until both sides are done, with half-close,
// X-Forwarded-For (https), the request log, byte counters and the idle
// timeout.
func (l *Loop) relay(h *handoff, client, up net.Conn, s Settings) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(2)
	fail := func() {
		client.Close()
		up.Close()
	}
	server := "0.0.0.0"
	if t := h.sess.Target(); t != nil {
		server = t.Cfg.Host.String()
	}
	copyDir := func(src, dst net.Conn, toServer bool) {
		defer wg.Done()
		var rw *httpstream.Rewriter
		logged := false
		if toServer && s.HTTP {
			rw = &httpstream.Rewriter{}
			rw.Reset(config.ClientName(h.peer.Addr()), "https")
			if s.Log != nil {
				rw.OnRequest = func(line []byte) {
					logged = true
					s.Log.Request(h.peer.Addr(), time.Now(), server, line)
				}
			}
		}
		buf := make([]byte, bufSize)
		var out []byte
		for {
			if s.IdleTimeout > 0 {
				src.SetReadDeadline(time.Now().Add(s.IdleTimeout))
			}
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				data := buf[:n]
				if rw != nil {
					out = rw.Write(out[:0], data)
					data = out
				}
				if toServer && s.Log != nil && !logged && (rw == nil || rw.Passthrough() == httpstream.NotHTTP) {
					logged = true
					s.Log.Request(h.peer.Addr(), time.Now(), server, firstLine(buf[:n]))
				}
				if toServer {
					h.sess.Sent(len(data))
				} else {
					h.sess.Received(len(data))
				}
				if _, werr := dst.Write(data); werr != nil {
					fail()
					return
				}
			}
			if err == nil {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && s.IdleTimeout > 0 {
				if time.Since(time.Unix(0, last.Load())) < s.IdleTimeout {
					continue // the other direction was busy
				}
				fail()
				return
			}
			if err != io.EOF {
				fail()
				return
			}
			if rw != nil && rw.Buffered() > 0 {
				held := rw.Flush(out[:0])
				h.sess.Sent(len(held))
				dst.Write(held)
			}
			if cw, ok := dst.(closeWriter); ok {
				cw.CloseWrite()
			}
			return
		}
	}
	go copyDir(client, up, true)
	go copyDir(up, client, false)
	wg.Wait()
}
