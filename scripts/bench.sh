#!/usr/bin/env bash
# bench.sh compares pen with a direct connection and with HAProxy on
# loopback, in one run, and prints medians and ratios (`make bench`):
#
#   keepalive  HTTP requests/s with wrk against nginx, keep-alive
#   close      the same with a new connection per request
#   rss        resident memory per idle proxied connection (pen, HAProxy)
#   dns        DNS queries/s with dnsperf against dnsmasq, through pen -U
#
# Contenders alternate over rounds with identical settings (the order
# rotates each round), and the report gives the median per contender, so a
# slow spell of the (shared, noisy, two-core) machine hits every contender
# alike. Read the ratios, not the absolute figures. Everything listens on
# 127.0.0.1 only, on free ports picked at start, and every process started
# here is stopped on exit.
#
# Reading the report (penbench report; the raw records are tab-separated):
#   table       median per contender, ratio to direct, every round's value,
#               CPU during the runs in % of one core (wrk or dnsperf /
#               nginx or dnsmasq / the proxy / interrupts, mostly the
#               loopback traffic itself and partly counted in the
#               processes' figures too / other processes and time the
#               hypervisor stole: noise),
#               the proxy's CPU time per request or query in
#               microseconds, and whether the contender worked.
#   quiet runs  the same ratios over only the runs during which the rest
#               of the machine used at most 15% of a core, when there were
#               such runs: less noisy than the plain medians.
#   proxy CPU   per operation, pen against HAProxy: disturbed far less by
#               other load than throughput is; lower is cheaper.
#   noise       how many runs other work disturbed (more than 15% of a
#               core); above a third the report says BUSY and the plain
#               medians are not to be trusted.
#   targets     pen/haproxy >= 1.10 with and without keep-alive; pen's
#               idle connections <= 4096 B each.
#   bench: ...  the same, one machine-readable line per test.
# A pen that does not start or does not proxy is reported as "not working"
# with the reason, never as a figure.
#
# Settings (environment):
#   BENCH_ROUNDS=4          rounds over the contenders (HTTP and DNS)
#   BENCH_DURATION=3        seconds per wrk run
#   BENCH_THREADS=1         wrk -t
#   BENCH_CONNS=50          wrk -c
#   BENCH_HAPROXY_HTTP=1    also measure HAProxy in mode http (0: skip)
#   BENCH_RSS_CONNS=10000   idle connections held for the rss test; lowered
#                           to fit the open-files limit (see the log line)
#   BENCH_DNS_DURATION=3    seconds per dnsperf run
#   BENCH_DNS_BACKEND=dnsmasq  or penbench: penbench's own DNS server (used
#                           anyway when dnsmasq is missing)
#   BENCH_PIN=0             1: run wrk and dnsperf on CPU 0 and nginx,
#                           dnsmasq and the proxies on CPU 1 (taskset)
#   BENCH_RESULTS=FILE      also keep the raw results file there
#   PEN=bin/pen             the pen binary
#   PEN_FLAGS="-x 20000 -c 20000"  extra pen options (pen always gets -f -r)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${BENCH_ROUNDS:-4}
duration=${BENCH_DURATION:-3}
threads=${BENCH_THREADS:-1}
conns=${BENCH_CONNS:-50}
haproxy_http=${BENCH_HAPROXY_HTTP:-1}
rss_conns=${BENCH_RSS_CONNS:-10000}
dns_duration=${BENCH_DNS_DURATION:-3}
pin=${BENCH_PIN:-0}
pen=${PEN:-bin/pen}
read -r -a pen_flags <<<"${PEN_FLAGS:--x 20000 -c 20000}"
penbench=bin/penbench

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for prog in wrk nginx haproxy dnsperf; do
	command -v "$prog" >/dev/null || die "$prog not found; run scripts/deps.sh (make deps)"
done
dnsmasq_bin=$(command -v dnsmasq || true)
if [ "${BENCH_DNS_BACKEND:-dnsmasq}" = penbench ]; then dnsmasq_bin=; fi
[ -x "$pen" ] || die "$pen not found; run make build"

log "building $penbench"
go build -o "$penbench" ./pen/internal/bench/cmd/penbench

# 10,000 proxied connections take 20,000 descriptors in the proxy. Raise
# the soft limit as far as the hard limit allows (raising the hard limit
# needs CAP_SYS_RESOURCE, which containers often lack).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
if [ "$nofile" = unlimited ]; then nofile=1048576; fi
max_rss_conns=$(((nofile - 100) / 2 / 100 * 100))
if [ "$rss_conns" -gt "$max_rss_conns" ]; then
	log "open-files limit is $nofile: holding $max_rss_conns connections instead of $rss_conns (a proxy needs two descriptors per connection)"
	rss_conns=$max_rss_conns
fi
haproxy_maxconn=$((rss_conns + 50))

tmp=$(mktemp -d /tmp/penbench.XXXXXX)
results=$tmp/results.tsv
: >"$results"
pids=()

# stop PID... stops processes this script started and forgets them.
stop() {
	local pid p keep
	for pid in "$@"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		keep=()
		for p in "${pids[@]}"; do
			[ "$p" = "$pid" ] || keep+=("$p")
		done
		pids=("${keep[@]}")
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ ${#pids[@]} -gt 0 ]; then stop "${pids[@]}"; fi
	if [ -n "${BENCH_RESULTS:-}" ] && [ -f "$results" ]; then cp "$results" "$BENCH_RESULTS"; fi
	if [ "$rc" != 0 ] && [ -d "$tmp" ]; then
		log "failed; logs of the servers:"
		tail -n 5 "$tmp"/*.log 2>/dev/null >&2 || true
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

server_cpu=()
load_cpu=()
if [ "$pin" = 1 ]; then
	server_cpu=(taskset -c 1)
	load_cpu=(taskset -c 0)
	log "pinned: load generators on CPU 0, servers and proxies on CPU 1"
fi

# start NAME CMD... starts a server in the background, its output in
# $tmp/NAME.log, and sets started_pid.
started_pid=
start() {
	local name=$1
	shift
	"${server_cpu[@]}" "$@" >"$tmp/$name.log" 2>&1 &
	started_pid=$!
	pids+=("$started_pid")
}

# await NAME PID ADDR [-dns]: wait until the server answers; fail loudly.
await() {
	if ! "$penbench" wait -addr "$3" -pid "$2" -timeout 10s "${@:4}"; then
		tail -n 5 "$tmp/$1.log" >&2 || true
		die "$1 did not start"
	fi
}

# pen_start NAME ADDR PEN-ARGS...: start pen and wait for it; on failure
# print why and return 1 with pen_why set.
pen_why=
pen_start() {
	local name=$1 addr=$2
	shift 2
	start "$name" "$pen" -f -r "${pen_flags[@]}" "$@"
	local wait_args=(-addr "$addr" -pid "$started_pid" -timeout 5s) out rc
	if [[ " $* " == *" -U "* ]]; then wait_args+=(-dns); fi
	if "$penbench" wait "${wait_args[@]}" 2>"$tmp/$name.wait"; then return 0; fi
	out=$(head -c 300 "$tmp/$name.log" | tr '\n' ' ')
	if kill -0 "$started_pid" 2>/dev/null; then
		pen_why="not working: running but $(sed 's/^penbench: //' "$tmp/$name.wait" | tr '\n' ' ')${out:+; it printed: $out}"
	else
		wait "$started_pid" && rc=0 || rc=$?
		pen_why="not working: exited at start (status $rc)${out:+: $out}"
	fi
	log "pen: $pen_why"
	stop "$started_pid"
	return 1
}

read -r p_nginx p_pen p_hap p_haphttp p_echo p_pen_rss p_hap_rss p_dns p_pen_dns \
	<<<"$("$penbench" ports -n 9)"
host=127.0.0.1
body="pen benchmark backend"

cat >"$tmp/nginx.conf" <<EOF
# One process that is its own worker: simple to measure.
worker_processes 1;
master_process off;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $tmp/nginx-body;
	proxy_temp_path $tmp/nginx-proxy;
	fastcgi_temp_path $tmp/nginx-fastcgi;
	uwsgi_temp_path $tmp/nginx-uwsgi;
	scgi_temp_path $tmp/nginx-scgi;
	keepalive_requests 1000000;
	server {
		listen $host:$p_nginx backlog=4096;
		location / {
			default_type text/plain;
			return 200 "hello from the $body\n";
		}
	}
}
EOF

haproxy_conf() { # haproxy_conf FILE PORT-TCP BACKEND [PORT-HTTP]
	{
		printf 'global\n\tnbthread 1\n\tmaxconn %s\n' "$haproxy_maxconn"
		printf 'defaults\n\ttimeout connect 5s\n\ttimeout client 120s\n\ttimeout server 120s\n'
		printf 'listen tcp\n\tmode tcp\n\tbind %s:%s\n\tserver s1 %s\n' "$host" "$2" "$3"
		if [ -n "${4:-}" ]; then
			printf 'listen http\n\tmode http\n\tbind %s:%s\n\tserver s1 %s\n' "$host" "$4" "$3"
		fi
	} >"$1"
}

http_pids=()
#### HTTP: keep-alive and a new connection per request
log "http: nginx on $host:$p_nginx, pen on :$p_pen, haproxy on :$p_hap (tcp) and :$p_haphttp (http)"
start nginx nginx -p "$tmp" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf"
nginx_pid=$started_pid
http_pids+=("$nginx_pid")
await nginx "$nginx_pid" "$host:$p_nginx"

haproxy_conf "$tmp/haproxy.cfg" "$p_hap" "$host:$p_nginx" "$p_haphttp"
start haproxy haproxy -db -f "$tmp/haproxy.cfg"
hap_pid=$started_pid
http_pids+=("$hap_pid")
await haproxy "$hap_pid" "$host:$p_hap"

targets=(-target "direct=http://$host:$p_nginx/")
pid_args=(-pid "haproxy=$hap_pid" -pid "haproxy-http=$hap_pid")
if pen_start pen "$host:$p_pen" "$host:$p_pen" "$host:$p_nginx"; then
	targets+=(-target "pen=http://$host:$p_pen/")
	pid_args+=(-pid "pen=$started_pid")
	http_pids+=("$started_pid")
else
	for t in keepalive close; do
		"$penbench" fail -out "$results" -test "$t" -contender pen -unit req/s -why "$pen_why"
	done
fi
targets+=(-target "haproxy=http://$host:$p_hap/")
if [ "$haproxy_http" = 1 ]; then
	targets+=(-target "haproxy-http=http://$host:$p_haphttp/")
fi

http_args=(-rounds "$rounds" -duration "${duration}s" -threads "$threads" -conns "$conns"
	-want "$body" -backend-pid "$nginx_pid" -out "$results" "${targets[@]}" "${pid_args[@]}")
if [ "$pin" = 1 ]; then http_args+=(-wrk-prefix "taskset -c 0"); fi
log "http: wrk -t$threads -c$conns -d${duration}s, $rounds rounds"
"$penbench" http -test keepalive "${http_args[@]}"
"$penbench" http -test close -close "${http_args[@]}"
stop "${http_pids[@]}"

#### RSS per idle proxied connection
log "rss: $rss_conns idle connections through each proxy to an echo backend on :$p_echo"
start echo "$penbench" echo -listen "$host:$p_echo"
echo_pid=$started_pid
await echo "$echo_pid" "$host:$p_echo"
rss_args=(-n "$rss_conns" -sources 4 -settle 2s -out "$results")
if pen_start pen-rss "$host:$p_pen_rss" "$host:$p_pen_rss" "$host:$p_echo"; then
	"$penbench" rss -name pen -pid "$started_pid" -target "$host:$p_pen_rss" "${rss_args[@]}"
	stop "$started_pid"
else
	"$penbench" fail -out "$results" -test rss -contender pen -unit B/conn -why "$pen_why"
fi
haproxy_conf "$tmp/haproxy-rss.cfg" "$p_hap_rss" "$host:$p_echo"
start haproxy-rss haproxy -db -f "$tmp/haproxy-rss.cfg"
await haproxy-rss "$started_pid" "$host:$p_hap_rss"
"$penbench" rss -name haproxy -pid "$started_pid" -target "$host:$p_hap_rss" "${rss_args[@]}"
stop "$started_pid" "$echo_pid"

#### DNS over UDP
if [ -n "$dnsmasq_bin" ]; then
	log "dns: dnsmasq on $host:$p_dns, pen -U on :$p_pen_dns"
	start dnsmasq "$dnsmasq_bin" -k -C /dev/null --port="$p_dns" --listen-address="$host" \
		--bind-interfaces --no-resolv --no-hosts --address=/bench.test/127.0.0.1 \
		--pid-file="$tmp/dnsmasq.pid" --log-facility="$tmp/dnsmasq-messages.log" --user=root
else
	log "dns: dnsmasq not found; penbench dnsserver on $host:$p_dns, pen -U on :$p_pen_dns"
	start dnsserver "$penbench" dnsserver -listen "$host:$p_dns"
fi
dns_pid=$started_pid
await dns "$dns_pid" "$host:$p_dns" -dns
dns_targets=(-target "direct=$host:$p_dns")
if pen_start pen-dns "$host:$p_pen_dns" -U "$host:$p_pen_dns" "$host:$p_dns"; then
	dns_targets+=(-target "pen=$host:$p_pen_dns" -pid "pen=$started_pid")
	pen_dns_pid=$started_pid
else
	"$penbench" fail -out "$results" -test dns -contender pen -unit q/s -why "$pen_why"
	pen_dns_pid=
fi
log "dns: dnsperf -l $dns_duration, $rounds rounds"
"${load_cpu[@]}" "$penbench" dns -rounds "$rounds" -duration "${dns_duration}s" -backend-pid "$dns_pid" \
	-out "$results" "${dns_targets[@]}"
stop "$dns_pid" ${pen_dns_pid:+"$pen_dns_pid"}

#### Report
echo
echo "== pen benchmark: medians of $rounds rounds; wrk -t$threads -c$conns -d${duration}s; rss with $rss_conns connections =="
"$penbench" report "$results"
