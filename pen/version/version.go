// Package version holds the version string of this build, set by the linker
// (see the Makefile) and reported by pen -d, /metrics and the admin UI.
package version

// Version is the version of this build; "dev" when built without the Makefile.
var Version = "dev"

// Pen is the version of Pen whose behaviour this build reproduces.
const Pen = "0.35.0"
