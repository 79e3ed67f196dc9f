package proxy

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// pipeSize is how much one splice moves, and the capacity pen asks for
// its pipes (the default is 64 KiB). Measured with make bench's 1 GiB
// download over loopback, 5 rounds alternated: 64 KiB pipes moved 1,420
// MB/s at 559 µs of pen's CPU per MB, 256 KiB 1,658 MB/s, 1 MiB 1,985 MB/s
// at 224 µs. A pipe holds page references, not copies, and only while a
// destination is slower than its source; at most one per direction of a
// connection. 1 MiB is the default /proc/sys/fs/pipe-max-size.
//
// Only a privileged pen (CAP_SYS_RESOURCE or CAP_SYS_ADMIN, as on the
// appliance) grows its pipes: for anyone else the kernel counts pipe
// capacity against the user's pipe-user-pages-soft (64 MiB by default),
// and a user over it gets pipes of two pages, in every process of theirs.
// An unprivileged pen keeps 64 KiB pipes and splices move that much.
const pipeSize = 1 << 20

// A slow destination leaves its data in pen's pipe, where the kernel does
// not count it against any socket's memory. Past heldPipes such pipes in
// a loop, a splice moves at most heldSplice bytes, as with the kernel's
// default pipes: at most heldPipes MiB plus 64 KiB per further slow
// connection, per loop, whatever the number of slow clients.
const (
	heldPipes  = 16
	heldSplice = 64 << 10
)

// growPipes reports whether pen may grow its pipes to pipeSize.
var growPipes = sync.OnceValue(func() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_SYS_RESOURCE) || has(unix.CAP_SYS_ADMIN)
})

// maxPooledPipes bounds the idle pipes kept for reuse.
const maxPooledPipes = 256

type pipe struct{ r, w int }

func (p pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

func (l *Loop) getPipe() (pipe, error) {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return pipe{}, err
	}
	if growPipes() {
		unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize)
	}
	return pipe{fds[0], fds[1]}, nil
}

// putPipe returns an empty pipe to the pool. A pipe that may still hold
// data is closed instead.
func (l *Loop) putPipe(p pipe) {
	if len(l.pipes) >= maxPooledPipes {
		p.close()
		return
	}
	l.pipes = append(l.pipes, p)
}

// queued is data a destination could not take yet: either bytes in a
// pooled buffer or bytes left in a pipe.
type queued struct {
	b     []byte
	off   int
	pipe  pipe
	inp   int // bytes in the pipe
	piped bool
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}

var queuedPool = sync.Pool{New: func() any { return new(queued) }}

func newQueuedBytes(data []byte) *queued {
	q := queuedPool.Get().(*queued)
	bp := bufPool.Get().(*[]byte)
	q.b = append((*bp)[:0], data...)
	q.off = 0
	return q
}

// add queues more bytes behind those already queued.
func (q *queued) add(p []byte) {
	q.b = append(q.b, p...)
}

func newQueuedPipe(p pipe, n int) *queued {
	q := queuedPool.Get().(*queued)
	q.pipe, q.inp, q.piped = p, n, true
	return q
}

func (q *queued) len() int {
	if q.piped {
		return q.inp
	}
	return len(q.b) - q.off
}

// flush writes as much as fd takes; done reports that nothing is left.
func (q *queued) flush(fd int) (done bool, errno syscall.Errno) {
	for q.len() > 0 {
		var n int
		if q.piped {
			n, errno = sysSplice(q.pipe.r, fd, q.inp)
		} else {
			n, errno = sysWrite(fd, q.b[q.off:])
		}
		if errno != 0 {
			return false, errno
		}
		if q.piped {
			q.inp -= n
		} else {
			q.off += n
		}
	}
	return true, 0
}

// release gives back the buffer or pipe.
func (q *queued) release(l *Loop) {
	if q.piped {
		l.held--
		if q.inp == 0 {
			l.putPipe(q.pipe)
		} else {
			q.pipe.close()
		}
	} else if q.b != nil {
		b := q.b[:0]
		if cap(b) == bufSize {
			bufPool.Put(&b)
		}
	}
	*q = queued{}
	queuedPool.Put(q)
}
