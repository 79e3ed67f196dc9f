// Binary failpen stands in for pen in the image of the rollback test
// (image/rollback_test.go): it fails at start, as a broken build of pen
// would, so that the appliance's trial boot rolls back. It is never part
// of a shipped image.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "pen: failing at start (the rollback test's broken build)")
	os.Exit(1)
}
