// Package splice joins a client's connection to pen and pen's connection
// to the server into one, in the kernel: a TC program rewrites the
// segments of each into the other (addresses, ports, sequence and
// acknowledgment numbers, windows, timestamps, SACK blocks), so that the
// bytes of a plain TCP connection pass from one peer to the other
// without reaching pen's sockets at all. pen's own sockets fall silent
// (the program drops what they send) and end in repair mode, so that
// closing them sends nothing; pen sends on itself, from a raw socket,
// whatever it had read or sent and the peers had not yet acknowledged.
//
// It serves kernel_relay over IPv4 and IPv6 where both peers are on this host or
// both elsewhere; docs/SPLICE.md says when, how, and what it measures.
package splice

// ErrNotEligible says why a pair stays with pen; nothing has changed.
type ErrNotEligible struct{ Why string }

func (e *ErrNotEligible) Error() string { return e.Why }
