package proxy

import (
	"time"

	"golang.org/x/sys/unix"
)

// Running out of descriptors. Every client costs descriptors: two for a
// TCP client (its socket and its server's), three for a TLS client (a
// duplicate of its socket during the handshake), one for a UDP flow. A loop that
// accepts until accept fails with EMFILE finds the listener still
// readable (the waiting client is still there) and tries again at once,
// forever: a core at full load doing nothing. Worse, a client accepted
// with the last descriptor cannot get a server socket, and the server
// would be blamed (blacklisted) for it.
//
// So the loop accepts only as many clients as the open files limit
// leaves room for (maxClients), keeping fdReserve descriptors for the
// rest of the process. When the process runs out anyway (other parts of
// it use descriptors too, or the system-wide table is full), the loop
// stops watching the listener for a while, longer each time it happens
// again, and uses a spare descriptor to accept and close the client at
// the head of the queue, so that it learns at once instead of waiting.

const (
	// fdReserve is what the loop leaves of the open files limit for
	// everything but clients: the runtime, the listener, the control
	// socket, the admin UI and log files. Pooled pipes are not counted:
	// a shortage closes them, and a connection that cannot get a pipe
	// copies through user space instead.
	fdReserve = 64
	// Pauses of the listener after EMFILE or ENFILE: the first, and the
	// longest, doubling in between while the shortage lasts.
	minAcceptPause = 10 * time.Millisecond
	maxAcceptPause = time.Second
	// noFDsLogEvery is the shortest time between two log lines about a
	// shortage of descriptors.
	noFDsLogEvery = 10 * time.Second
)

// fdState is the loop's accounting of descriptors. Loop goroutine only.
type fdState struct {
	maxClients int           // clients the open files limit leaves room for
	warned     [2]int        // maxClients and conn_max when the log last said maxClients was lower
	limit      int           // the open files limit when maxClients was computed
	spare      int           // a descriptor given up to refuse a client on EMFILE; -1 if none
	pause      time.Duration // the listener's current pause; 0 while accepting normally
	resumeAt   time.Time     // the listener is not watched before this
	refused    int           // clients refused for want of descriptors since the last log line
	lastFull   time.Time     // of the last log line about maxClients
	lastShort  time.Time     // of the last log line about EMFILE or ENFILE
}

// perClient is how many descriptors one client of this configuration needs.
func perClient(s Settings) int {
	switch {
	case s.UDP:
		return 1
	case s.TLS != nil:
		return 3
	}
	return 2
}

// budgetClients sets maxClients from the open files limit.
func (l *Loop) budgetClients() {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		l.fds.maxClients, l.fds.limit = 1<<30, 0
		return
	}
	l.fds.limit = int(rl.Cur)
	l.fds.maxClients = max((l.fds.limit-fdReserve)/perClient(l.set), 1)
	// Said once per change, not at every change of configuration.
	warn := [2]int{l.fds.maxClients, l.set.ConnMax}
	if l.fds.maxClients < l.set.ConnMax && warn != l.fds.warned {
		l.fds.warned = warn
		l.log.Printf("the open files limit (%d) leaves room for %d clients at a time, fewer than conn_max (%d)",
			l.fds.limit, l.fds.maxClients, l.set.ConnMax)
	}
}

// roomForClient reports whether another client can have its descriptors;
// if not it says so, at most once per noFDsLogEvery.
func (l *Loop) roomForClient() bool {
	if int(l.slots.used.Load()) < l.fds.maxClients {
		return true
	}
	l.fds.refused++
	l.logNoFDs(&l.fds.lastFull, "the open files limit (%d) leaves room for %d clients at a time: refusing clients", l.fds.limit, l.fds.maxClients)
	return false
}

// releaseSettling gives up, before their time, the spliced connections
// that wait to settle (kernel.go: two descriptors each), when the loop
// runs out of descriptors: a client is worth more than a FIN sent again
// after the close. It reports whether there were any.
func (l *Loop) releaseSettling(err error) bool {
	n := len(l.settling)
	if n == 0 {
		return false
	}
	l.runSettling(true)
	l.logNoFDs(&l.fds.lastShort, "out of descriptors (%v): %d spliced connections released before they settled", err, n)
	return true
}

// outOfDescriptors handles EMFILE or ENFILE from accept or from opening a
// client's server socket: the client at the head of the queue is refused
// with the spare descriptor, idle pipes are given back, and the listener
// pauses.
func (l *Loop) outOfDescriptors(err error) {
	if l.fds.spare >= 0 && l.lfd >= 0 && !l.set.UDP {
		unix.Close(l.fds.spare)
		l.fds.spare = -1
		if fd, _, errno := sysAccept(l.lfd); errno == 0 {
			unix.Close(fd)
			l.accepted.Add(1)
			l.refusedFull.Add(1)
			l.fds.refused++
		}
		l.fds.spare = spareFD(l.wake)
	}
	for _, p := range l.pipes {
		p.close()
	}
	l.pipes = nil
	if l.set.UDP {
		// The listener also carries the answers of existing flows:
		// it keeps running, new flows are refused as they come.
		l.logNoFDs(&l.fds.lastShort, "out of descriptors (%v): refusing new UDP clients", err)
		return
	}
	l.fds.pause = min(max(2*l.fds.pause, minAcceptPause), maxAcceptPause)
	l.fds.resumeAt = time.Now().Add(l.fds.pause)
	l.logNoFDs(&l.fds.lastShort, "out of descriptors (%v): not accepting clients for %v, then trying again", err, l.fds.pause)
}

// accepting notes that accept worked: a shortage is over.
func (l *Loop) accepting() {
	if l.fds.pause != 0 {
		l.fds.pause = 0
		l.log.Printf("accepting clients again (%d refused for want of descriptors)", l.fds.refused)
		l.fds.refused = 0
	}
}

// paused reports whether the listener waits out a shortage of descriptors,
// and for how many milliseconds more.
func (l *Loop) paused() (bool, int) {
	if l.fds.pause == 0 {
		return false, 0 // the usual case: no clock read
	}
	left := time.Until(l.fds.resumeAt)
	if left <= 0 {
		return false, 0
	}
	return true, int(left/time.Millisecond) + 1
}

// logNoFDs logs one line per noFDsLogEvery (last holds the time of the
// previous one) about a shortage of descriptors, with the number of
// clients refused since the last line.
func (l *Loop) logNoFDs(last *time.Time, format string, args ...any) {
	now := time.Now()
	if !last.IsZero() && now.Sub(*last) < noFDsLogEvery {
		return
	}
	*last = now
	if l.fds.refused > 0 {
		format += " (%d clients refused since the last report)"
		args = append(args, l.fds.refused)
		l.fds.refused = 0
	}
	l.log.Printf(format, args...)
}

// spareFD makes a descriptor to hold in reserve (a copy of fd), or
// returns -1 when there is none to be had; it is tried again at the next
// shortage.
func spareFD(fd int) int {
	s, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return s
}
