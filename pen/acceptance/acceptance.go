// Package acceptance runs Pen's acceptance scenarios against the pen and penctl binaries over real sockets.
//
// The tests are black-box: TestMain builds ./pen/cmd/pen and ./pen/cmd/penctl
// with `go build`, and every test starts pen as a subprocess with Pen's own
// command line, talks to it only through sockets, signals, files and penctl,
// and compares what it sees with PEN-REFERENCE (the behaviour of Pen 0.35.0,
// with the bugs listed there fixed). All traffic stays on loopback
// (127.0.0.1, 127.0.0.2 and ::1) and every port is chosen at run time.
//
// With PEN_ACCEPTANCE_BINDIR set, the tests use the pen and penctl found
// in that directory (for example bin/ after `make build`) instead.
//
// Pen refuses to open a control port when it runs as root without -u, so
// when the tests run as root, pen instances that need one get `-u nobody`
// and a world-writable working directory for the pidfile, the unix control
// socket and the files pen writes.
package acceptance
