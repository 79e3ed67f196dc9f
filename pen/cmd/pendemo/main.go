// Binary pendemo runs pen on 127.0.0.1:8080 in front of two demo web
// servers on 127.0.0.1:8081 and 127.0.0.1:8082 (make run). Any arguments
// are passed on to pen.
package main

import (
	"os"

	"github.com/pen-lb/pen-appliance/pen/internal/demo"
)

func main() {
	os.Exit(demo.Run("127.0.0.1:8080", []string{"127.0.0.1:8081", "127.0.0.1:8082"}, os.Args[1:], os.Stdout))
}
