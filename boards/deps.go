//go:build for_go_mod_tidy_only

// This file is never compiled. It names the modules the image builder
// reads or compiles but no Go code imports, so that `go mod tidy` keeps
// them in go.mod and go.sum.

package boards

import (
	_ "github.com/gokrazy/firmware"
	_ "github.com/gokrazy/gokrazy/cmd/dhcp"
	_ "github.com/gokrazy/gokrazy/cmd/heartbeat"
	_ "github.com/gokrazy/gokrazy/cmd/ntp"
	_ "github.com/gokrazy/gokrazy/cmd/randomd"
	_ "github.com/gokrazy/kernel.amd64"
	_ "github.com/gokrazy/kernel.arm64"
	_ "github.com/gokrazy/kernel.rpi"
)
