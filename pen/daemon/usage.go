package daemon

import (
	"fmt"
	"io"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// Usage writes pen's usage text: Pen's, without the options pen does not
// have, with those it adds and the commands it adds.
func Usage(w io.Writer) {
	fmt.Fprintf(w, `usage:
  pen [-C addr:port] [-X] [-b sec] [-c N] [-e host[:port]] \
	  [-t sec] [-x N] [-w file] [-UHWadfhrs] \
          [-o option] \
	  [-E certfile] [-K keyfile] \
	  [-G cacertfile] [-A cacertdir] \
	  [-Z] [-R] [-L protocol] \
	  [host:]port h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2[:p2[:maxc2[:hard2[:weight2[:prio2]]]]]] ...
  pen --help | --version

  -B host:port abuse server for naughty clients
  -C port   control port (addr:port, or a path for a unix socket)
  -T sec    tracking time in seconds (0 = forever) [%d]
  -H	add X-Forwarded-For header in http requests
  -U	use udp protocol support
  -O option	use option in penctl format
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
  -F file   name of configuration file (must exist)
  -l file   logging on (file, or host:port for penlogd)
  -m N      accept up to N connections per wake-up [%d]
  -q N      listen queue length [%d]
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
  -Z	    accepted for Pen's command lines; changes nothing
  -R	    require valid peer certificate
  -L protocol   tls1 also accepts TLS 1.0 and 1.1; ssl23 (default), ssl2
                and ssl3 accept TLS 1.2 and up
  --help    print this text
  --version print pen's version

Accepted and ignored, as in Pen: -D, -n, -P, -Q, -S (obsolete) and -i
(Windows only); -N prints this text.

Commands pen adds to Pen's (for -O, -F files and penctl; see
docs/COMPATIBILITY.md and docs/ADMIN.md):
  udp, no udp                  UDP mode (-U)
  emergency_server SPEC        the emergency server (-e); no emergency_server
  abuse_server SPEC            the abuse server (-B); no abuse_server
  no server N                  remove server slot N
  control ADDR, no control     open, move or close the control port
  no listen, no source, no dsr_if
  multi_accept N, listen_queue N
  ssl_cert FILE, ssl_key FILE, ssl_ca_file FILE, ssl_ca_dir DIR,
  ssl_protocol P, ssl_compat, ssl_require_client_cert   (-E -K -G -A -L -Z -R)
  admin_listen, admin_redirect, admin_tls, admin_acl, admin_password_file
                               the admin web UI and /metrics
  autowrite                    write every change back to the -F file
  transparent_table N, transparent_priority N
                               where transparent mode's policy routing goes
  loops N                      event loops (0: one per CPU, the default)
  kernel_relay [splice], no kernel_relay
                               hand plain TCP connections to the kernel:
                               splice (the default) or also the sockmap relay
  udp_kernel, no udp_kernel    let the kernel carry UDP flows once placed (on)
  server N drain 1|0           no new clients for server N; open ones finish
  check N tcp|http ...         active health check of server N; no check N
  name server|acl N TEXT       a note shown by the admin UI; no name ...
  state                        the running state as JSON (admin UI, services)

example:
  pen smtp mailhost1:smtp mailhost2:25 mailhost3

`, 0, config.DefaultBlacklist, config.DefaultClientsMax, config.DefaultMultiAccept, config.DefaultListenQueue, config.DefaultTimeout, config.DefaultConnMax)
}
