package daemon

import (
	"fmt"
	"io"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// Usage writes Pen's usage text.
func Usage(w io.Writer) {
	fmt.Fprintf(w, `usage:
  pen [-C addr:port] [-X] [-b sec] [-c N] [-e host[:port]] \
	  [-t sec] [-x N] [-w dir] [-UHPWadfhrs] \
          [-o option] \
	  [-E certfile] [-K keyfile] \
	  [-G cacertfile] [-A cacertdir] \
	  [-Z] [-R] [-L protocol] \
	  [host:]port h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2[:p2[:maxc2[:hard2[:weight2[:prio2]]]]]] ...

  -B host:port abuse server for naughty clients
  -C port   control port
  -T sec    tracking time in seconds (0 = forever) [%d]
  -H	add X-Forwarded-For header in http requests
  -U	use udp protocol support
  -N	use hash for initial server selection without save server
  -O option	use option in penctl format
  -P	use poll() rather than select()
  -Q    use kqueue to manage events (BSD)
  -W    use weight for server selection
  -X	enable 'exit' command for control port
  -a	debugging dumps in ascii format
  -b sec    blacklist time in seconds [%d]
  -c N      max number of clients [%d]
  -d	debugging on (repeat -d for more)
  -e host:port emergency server of last resort
  -f	stay in foregound
  -h	use hash for initial server selection
  -j dir    run in chroot
  -F file   name of configuration file
  -l file   logging on
  -r	bypass client tracking in server selection
  -s	stubborn selection, i.e. don't fail over
  -t sec    connect timeout in seconds [%d]
  -u user   run as alternative user
  -p file   write pid to file
  -x N      max number of simultaneous connections [%d]
  -w file   save statistics in HTML format in a file
  -o option use option in penctl format
  -E certfile   use the given certificate in PEM format
  -K keyfile    use the given key in PEM format (may be contained in cert)
  -G cacertfile file containing the CA's certificate
  -A cacertdir  directory containing CA certificates in hashed format
  -Z	    use SSL compatibility mode
  -R	    require valid peer certificate
  -L protocol   ssl23 (default), ssl2, ssl3 or tls1

example:
  pen smtp mailhost1:smtp mailhost2:25 mailhost3

`, 0, config.DefaultBlacklist, config.DefaultClientsMax, config.DefaultTimeout, config.DefaultConnMax)
}
