// Package testenv holds what tests of several packages share: whether
// tests that need privileges or programs from outside Go may run, and
// small real servers to put behind pen.
//
// A test that needs something missing skips with a clear message, except
// under CI (CI=true or PEN_REQUIRE_PRIV=1), where a skip would hide a
// broken set-up and therefore fails the test instead.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing privileges or programs fail tests rather
// than skip them.
func Strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("PEN_REQUIRE_PRIV") == "1"
}

// Skip skips the test with the given reason, or fails it under CI.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if Strict() {
		t.Fatalf("required under CI but unavailable: %s", reason)
	}
	t.Skip(reason)
}

// NeedProgram returns the path of the named program, skipping (or under CI
// failing) the test when it is not installed. The hint names the Debian
// package that provides it.
func NeedProgram(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, name+" not found; install the Debian package "+debianPackage+" (scripts/deps.sh does)")
	}
	return p
}

// NeedFile skips (or under CI fails) the test unless path exists.
func NeedFile(t testing.TB, path, debianPackage string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Skip(t, path+" not found; install the Debian package "+debianPackage+" (scripts/deps.sh does)")
	}
}
