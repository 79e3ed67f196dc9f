#!/usr/bin/env bash
# bench.sh compares pen with a direct connection and with HAProxy on
# loopback, in one run, and prints medians and ratios (`make bench`):
#
#   keepalive  HTTP requests/s with wrk against nginx, keep-alive
#   close      the same with a new connection per request
#              contenders: direct; pen with its default loops (one per
#              core) and HAProxy with as many threads; pen with loops 1
#              and HAProxy with one thread (pen-1loop, haproxy-1thread)
#              and pen-loop: pen with no kernel_relay. pen's default
#              (kernel_relay splice) splices a keep-alive connection's
#              segments in the kernel after its first requests, on
#              loopback as both peers are on this host (package splice);
#              pen-loop carries every byte through its own loop
#   rss        resident memory per idle proxied connection (pen, HAProxy)
#   rss-spliced  the same for pen after three exchanges per connection,
#              which pen splices in the kernel
#   bulk       one 1 GiB download through pen (and pen-loop) and
#              HAProxy, against direct
#   tls-keepalive  HTTPS keep-alive with wrk, ECDSA P-256 certificate, pen
#              and HAProxy terminating TLS with the same certificate
#   tls-ecdsa  full TLS handshakes, one request each (penbench handshake;
#              wrk would resume sessions), ECDSA P-256; the client offers
#              X25519 and P-256 as wrk does, so that pen and HAProxy (with
#              OpenSSL 3.0, which has no post-quantum key exchange) do the
#              same work
#   tls-rsa    the same with an RSA 2048 certificate
#   dns        DNS queries/s with dnsperf against dnsmasq, through pen -U
#              (pen: udp_kernel, the default, carries the flow in the
#              kernel once placed; pen-user: no udp_kernel)
#   dns6       the same over IPv6 (::1)
#
# Contenders alternate over rounds with identical settings (the order
# rotates each round), and the report gives the median per contender, so a
# slow spell of the (shared, noisy, two-core) machine hits every contender
# alike. Read the ratios, not the absolute figures. Everything listens on
# 127.0.0.1 only (and ::1 for dns6), on free ports picked at start, and every process started
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
#   targets     pen/haproxy >= 1.10 with and without keep-alive, and
#               >= 1.30 with keep-alive (the in-kernel relay); pen's
#               idle connections <= 4096 B each, spliced or not; bulk
#               >= 0.90 of direct; DNS >= 0.85 of direct; HTTPS
#               keep-alive and ECDSA handshakes >= 1.00 of HAProxy.
#   machine     the number of cores, pen's loops, HAProxy's threads and
#               the load average before and after, printed above the
#               table.
#   bench: ...  the same, one machine-readable line per test.
# A pen that does not start or does not proxy is reported as "not working"
# with the reason, never as a figure.
#
# Settings (environment):
#   BENCH_ROUNDS=4          rounds over the contenders (HTTP and DNS)
#   BENCH_DURATION=3        seconds per wrk run
#   BENCH_THREADS=1         wrk -t
#   BENCH_CONNS=50          wrk -c
#   BENCH_HAPROXY_HTTP=0    1: also measure HAProxy in mode http
#   BENCH_LOOPS=$(nproc)    pen's loops and HAProxy's nbthread
#   BENCH_ONE=1             0: skip pen-1loop and haproxy-1thread
#   BENCH_BULK_BYTES=1073741824  bytes per bulk download
#   BENCH_BULK_ROUNDS=5     rounds of the bulk test (a 1 GiB download takes
#                           a second or two, and one slow spell of the machine
#                           decided the median of three)
#   BENCH_TLS=1             0: skip the HTTPS tests
#   BENCH_HANDSHAKE_CONNS=16  handshakes in progress at a time
#   BENCH_LOOP=1            0: skip pen-loop (pen with no kernel_relay;
#                           pen's splicing needs root for BPF, else it
#                           logs why and pen is pen-loop)
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
haproxy_http=${BENCH_HAPROXY_HTTP:-0}
cores=$(nproc)
loops=${BENCH_LOOPS:-$cores}
one=${BENCH_ONE:-1}
bulk_bytes=${BENCH_BULK_BYTES:-1073741824}
bulk_rounds=${BENCH_BULK_ROUNDS:-5}
tls=${BENCH_TLS:-1}
handshake_conns=${BENCH_HANDSHAKE_CONNS:-16}
penloop=${BENCH_LOOP:-1}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rss_conns=${BENCH_RSS_CONNS:-10000}
dns_duration=${BENCH_DNS_DURATION:-3}
pin=${BENCH_PIN:-0}
pen=${PEN:-bin/pen}
read -r -a pen_flags <<<"${PEN_FLAGS:--x 20000 -c 20000}"
penbench=bin/penbench

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for prog in wrk nginx haproxy dnsperf openssl; do
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
	p_pen1 p_hap1 p_bulk p_pen_bulk p_hap_bulk p_pen_tls p_pen_rsa p_hap_tls p_hap_rsa \
	p_pen_loop p_pen_bulk_loop p_pen_dns_user p_pen_dns6 p_pen_dns6_user p_pen_rss2 <<<"$("$penbench" ports -n 24)"
log "machine: $cores cores, load average $load_before; pen with loops $loops, HAProxy with nbthread $loops"
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

haproxy_conf() { # haproxy_conf FILE THREADS PORT-TCP BACKEND [PORT-HTTP]
	{
		printf 'global\n\tnbthread %s\n\tmaxconn %s\n' "$2" "$haproxy_maxconn"
		printf 'defaults\n\ttimeout connect 5s\n\ttimeout client 120s\n\ttimeout server 120s\n'
		printf 'listen tcp\n\tmode tcp\n\tbind %s:%s\n\tserver s1 %s\n' "$host" "$3" "$4"
		if [ -n "${5:-}" ]; then
			printf 'listen http\n\tmode http\n\tbind %s:%s\n\tserver s1 %s\n' "$host" "$5" "$4"
		fi
	} >"$1"
}

# haproxy_tls_conf FILE THREADS BACKEND NAME=PORT:PEM...: HAProxy
# terminating TLS in mode tcp, as pen does.
haproxy_tls_conf() {
	local f=$1 threads=$2 backend=$3 spec
	shift 3
	{
		printf 'global\n\tnbthread %s\n\tmaxconn %s\n' "$threads" "$haproxy_maxconn"
		printf 'defaults\n\ttimeout connect 5s\n\ttimeout client 120s\n\ttimeout server 120s\n'
		for spec in "$@"; do
			printf 'listen %s\n\tmode tcp\n\tbind %s:%s ssl crt %s\n\tserver s1 %s\n' \
				"${spec%%=*}" "$host" "$(echo "${spec#*=}" | cut -d: -f1)" "$(echo "${spec#*=}" | cut -d: -f2)" "$backend"
		done
	} >"$f"
}

http_pids=()
#### HTTP: keep-alive and a new connection per request
log "http: nginx on $host:$p_nginx, pen on :$p_pen, haproxy on :$p_hap (tcp) and :$p_haphttp (http)"
start nginx nginx -p "$tmp" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf"
nginx_pid=$started_pid
http_pids+=("$nginx_pid")
await nginx "$nginx_pid" "$host:$p_nginx"

haproxy_conf "$tmp/haproxy.cfg" "$loops" "$p_hap" "$host:$p_nginx" "$p_haphttp"
start haproxy haproxy -db -f "$tmp/haproxy.cfg"
hap_pid=$started_pid
http_pids+=("$hap_pid")
await haproxy "$hap_pid" "$host:$p_hap"

targets=(-target "direct=http://$host:$p_nginx/")
pid_args=(-pid "haproxy=$hap_pid" -pid "haproxy-http=$hap_pid")
# pen_contender NAME PORT PEN-ARGS...: start a pen in front of nginx and
# make it a contender, or record why it is not one.
pen_contender() {
	local name=$1 port=$2
	shift 2
	if pen_start "$name" "$host:$port" "$@" "$host:$port" "$host:$p_nginx"; then
		targets+=(-target "$name=http://$host:$port/")
		pid_args+=(-pid "$name=$started_pid")
		http_pids+=("$started_pid")
	else
		for t in keepalive close; do
			"$penbench" fail -out "$results" -test "$t" -contender "$name" -unit req/s -why "$pen_why"
		done
	fi
}
pen_contender pen "$p_pen" -O "loops $loops"
if [ "$penloop" = 1 ]; then
	pen_contender pen-loop "$p_pen_loop" -O "loops $loops" -O "no kernel_relay"
fi
targets+=(-target "haproxy=http://$host:$p_hap/")
if [ "$one" = 1 ]; then
	pen_contender pen-1loop "$p_pen1" -O "loops 1"
	haproxy_conf "$tmp/haproxy-1.cfg" 1 "$p_hap1" "$host:$p_nginx"
	start haproxy-1thread haproxy -db -f "$tmp/haproxy-1.cfg"
	http_pids+=("$started_pid")
	pid_args+=(-pid "haproxy-1thread=$started_pid")
	await haproxy-1thread "$started_pid" "$host:$p_hap1"
	targets+=(-target "haproxy-1thread=http://$host:$p_hap1/")
fi
if [ "$haproxy_http" = 1 ]; then
	targets+=(-target "haproxy-http=http://$host:$p_haphttp/")
fi

http_args=(-rounds "$rounds" -duration "${duration}s" -threads "$threads" -conns "$conns"
	-want "$body" -backend-pid "$nginx_pid" -out "$results" "${targets[@]}" "${pid_args[@]}")
if [ "$pin" = 1 ]; then http_args+=(-wrk-prefix "taskset -c 0"); fi
log "http: wrk -t$threads -c$conns -d${duration}s, $rounds rounds"
"$penbench" http -test keepalive "${http_args[@]}"
"$penbench" http -test close -close "${http_args[@]}"

#### HTTPS: pen and HAProxy terminate TLS with the same certificates in
#### front of the same nginx (still running)
if [ "$tls" = 1 ]; then
	subj=/CN=pen.bench.test
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "$subj" \
		-keyout "$tmp/ecdsa.key" -out "$tmp/ecdsa.crt" 2>/dev/null
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "$subj" \
		-keyout "$tmp/rsa.key" -out "$tmp/rsa.crt" 2>/dev/null
	cat "$tmp/ecdsa.crt" "$tmp/ecdsa.key" >"$tmp/ecdsa.pem"
	cat "$tmp/rsa.crt" "$tmp/rsa.key" >"$tmp/rsa.pem"
	haproxy_tls_conf "$tmp/haproxy-tls.cfg" "$loops" "$host:$p_nginx" \
		"ecdsa=$p_hap_tls:$tmp/ecdsa.pem" "rsa=$p_hap_rsa:$tmp/rsa.pem"
	start haproxy-tls haproxy -db -f "$tmp/haproxy-tls.cfg"
	hap_tls_pid=$started_pid
	tls_pids=("$hap_tls_pid")
	await haproxy-tls "$hap_tls_pid" "$host:$p_hap_tls"
	tls_ok=()
	for kind in ecdsa rsa; do
		port=$p_pen_tls
		if [ "$kind" = rsa ]; then port=$p_pen_rsa; fi
		if pen_start "pen-$kind" "$host:$port" -O "loops $loops" -E "$tmp/$kind.crt" -K "$tmp/$kind.key" \
			"$host:$port" "$host:$p_nginx"; then
			tls_pids+=("$started_pid")
			tls_ok+=("$kind=$started_pid")
		else
			tests=(tls-rsa)
			if [ "$kind" = ecdsa ]; then tests=(tls-keepalive tls-ecdsa); fi
			for t in "${tests[@]}"; do
				"$penbench" fail -out "$results" -test "$t" -contender pen -unit req/s -why "$pen_why"
			done
		fi
	done
	pen_pid_of() { # pen_pid_of KIND: the pid of that TLS pen, or nothing
		local e
		for e in "${tls_ok[@]}"; do
			if [ "${e%%=*}" = "$1" ]; then echo "${e#*=}"; fi
		done
	}
	ecdsa_pid=$(pen_pid_of ecdsa)
	rsa_pid=$(pen_pid_of rsa)
	tls_targets=(-target "haproxy=https://$host:$p_hap_tls/" -pid "haproxy=$hap_tls_pid")
	if [ -n "$ecdsa_pid" ]; then tls_targets+=(-target "pen=https://$host:$p_pen_tls/" -pid "pen=$ecdsa_pid"); fi
	log "https: wrk -t$threads -c$conns -d${duration}s keep-alive; penbench handshake -conns $handshake_conns"
	tls_wrk=(-rounds "$rounds" -duration "${duration}s" -threads "$threads" -conns "$conns"
		-want "$body" -backend-pid "$nginx_pid" -out "$results")
	if [ "$pin" = 1 ]; then tls_wrk+=(-wrk-prefix "taskset -c 0"); fi
	"$penbench" http -test tls-keepalive "${tls_wrk[@]}" "${tls_targets[@]}"
	hs=(-rounds "$rounds" -duration "${duration}s" -conns "$handshake_conns" -want "$body"
		-backend-pid "$nginx_pid" -out "$results")
	"${load_cpu[@]}" "$penbench" handshake -test tls-ecdsa "${hs[@]}" \
		-target "haproxy=$host:$p_hap_tls" -pid "haproxy=$hap_tls_pid" \
		${ecdsa_pid:+-target "pen=$host:$p_pen_tls" -pid "pen=$ecdsa_pid"}
	"${load_cpu[@]}" "$penbench" handshake -test tls-rsa "${hs[@]}" \
		-target "haproxy=$host:$p_hap_rsa" -pid "haproxy=$hap_tls_pid" \
		${rsa_pid:+-target "pen=$host:$p_pen_rsa" -pid "pen=$rsa_pid"}
	stop "${tls_pids[@]}"
fi
stop "${http_pids[@]}"

#### Bulk transfer: one large download through each contender
log "bulk: $bulk_bytes bytes per download from penbench bulkserver on :$p_bulk, $bulk_rounds rounds"
start bulk "$penbench" bulkserver -listen "$host:$p_bulk" -bytes "$bulk_bytes"
bulk_pid=$started_pid
bulk_pids=("$bulk_pid")
await bulk "$bulk_pid" "$host:$p_bulk"
bulk_targets=(-target "direct=$host:$p_bulk")
if pen_start pen-bulk "$host:$p_pen_bulk" -O "loops $loops" "$host:$p_pen_bulk" "$host:$p_bulk"; then
	bulk_targets+=(-target "pen=$host:$p_pen_bulk" -pid "pen=$started_pid")
	bulk_pids+=("$started_pid")
else
	"$penbench" fail -out "$results" -test bulk -contender pen -unit MB/s -why "$pen_why"
fi
if [ "$penloop" = 1 ]; then
	if pen_start pen-bulk-loop "$host:$p_pen_bulk_loop" -O "loops $loops" -O "no kernel_relay" \
		"$host:$p_pen_bulk_loop" "$host:$p_bulk"; then
		bulk_targets+=(-target "pen-loop=$host:$p_pen_bulk_loop" -pid "pen-loop=$started_pid")
		bulk_pids+=("$started_pid")
	else
		"$penbench" fail -out "$results" -test bulk -contender pen-loop -unit MB/s -why "$pen_why"
	fi
fi
haproxy_conf "$tmp/haproxy-bulk.cfg" "$loops" "$p_hap_bulk" "$host:$p_bulk"
start haproxy-bulk haproxy -db -f "$tmp/haproxy-bulk.cfg"
bulk_pids+=("$started_pid")
await haproxy-bulk "$started_pid" "$host:$p_hap_bulk"
bulk_targets+=(-target "haproxy=$host:$p_hap_bulk" -pid "haproxy=$started_pid")
"${load_cpu[@]}" "$penbench" bulk -rounds "$bulk_rounds" -bytes "$bulk_bytes" -backend-pid "$bulk_pid" \
	-out "$results" "${bulk_targets[@]}"
stop "${bulk_pids[@]}"

#### RSS per idle proxied connection
log "rss: $rss_conns idle connections through each proxy to an echo backend on :$p_echo"
start echo "$penbench" echo -listen "$host:$p_echo"
echo_pid=$started_pid
await echo "$echo_pid" "$host:$p_echo"
rss_args=(-n "$rss_conns" -sources 4 -settle 2s -out "$results")
if pen_start pen-rss "$host:$p_pen_rss" -O "loops $loops" "$host:$p_pen_rss" "$host:$p_echo"; then
	"$penbench" rss -name pen -pid "$started_pid" -target "$host:$p_pen_rss" "${rss_args[@]}"
	stop "$started_pid"
else
	"$penbench" fail -out "$results" -test rss -contender pen -unit B/conn -why "$pen_why"
fi
# The same after three exchanges each: pen splices such connections.
if pen_start pen-rss-spliced "$host:$p_pen_rss2" -O "loops $loops" "$host:$p_pen_rss2" "$host:$p_echo"; then
	"$penbench" rss -test rss-spliced -exchanges 3 -name pen -pid "$started_pid" -target "$host:$p_pen_rss2" "${rss_args[@]}"
	stop "$started_pid"
else
	"$penbench" fail -out "$results" -test rss-spliced -contender pen -unit B/conn -why "$pen_why"
fi
haproxy_conf "$tmp/haproxy-rss.cfg" "$loops" "$p_hap_rss" "$host:$p_echo"
start haproxy-rss haproxy -db -f "$tmp/haproxy-rss.cfg"
await haproxy-rss "$started_pid" "$host:$p_hap_rss"
"$penbench" rss -name haproxy -pid "$started_pid" -target "$host:$p_hap_rss" "${rss_args[@]}"
stop "$started_pid" "$echo_pid"

#### DNS over UDP
if [ -n "$dnsmasq_bin" ]; then
	log "dns: dnsmasq on $host:$p_dns, pen -U on :$p_pen_dns"
	start dnsmasq "$dnsmasq_bin" -k -C /dev/null --port="$p_dns" --listen-address="$host" --listen-address=::1 \
		--bind-interfaces --no-resolv --no-hosts --address=/bench.test/127.0.0.1 \
		--pid-file="$tmp/dnsmasq.pid" --log-facility="$tmp/dnsmasq-messages.log" --user=root
else
	log "dns: dnsmasq not found; penbench dnsserver on $host:$p_dns, pen -U on :$p_pen_dns"
	start dnsserver "$penbench" dnsserver -listen "$host:$p_dns"
fi
dns_pid=$started_pid
dns6_pid=
if [ -z "$dnsmasq_bin" ]; then
	start dnsserver6 "$penbench" dnsserver -listen "[::1]:$p_dns"
	dns6_pid=$started_pid
fi
await dns "$dns_pid" "$host:$p_dns" -dns
await dns6 "${dns6_pid:-$dns_pid}" "[::1]:$p_dns" -dns
dns_targets=(-target "direct=$host:$p_dns")
dns_pids=()
# dns_contender TEST HOST NAME PORT PEN-ARGS...: start a pen -U on HOST in
# front of the DNS server and make it a contender, or record why it is not
# one.
dns_contender() {
	local test=$1 h=$2 name=$3 port=$4
	shift 4
	if pen_start "$name-$test" "$h:$port" -O "loops $loops" "$@" -U "$h:$port" "$h:$p_dns"; then
		dns_targets+=(-target "$name=$h:$port" -pid "$name=$started_pid")
		dns_pids+=("$started_pid")
	else
		"$penbench" fail -out "$results" -test "$test" -contender "$name" -unit q/s -why "$pen_why"
	fi
}
dns_contender dns "$host" pen "$p_pen_dns"
# pen-user: every datagram through pen (no udp_kernel), for comparison.
dns_contender dns "$host" pen-user "$p_pen_dns_user" -O "no udp_kernel"
log "dns: dnsperf -l $dns_duration, $rounds rounds"
"${load_cpu[@]}" "$penbench" dns -rounds "$rounds" -duration "${dns_duration}s" -backend-pid "$dns_pid" \
	-out "$results" "${dns_targets[@]}"
stop "${dns_pids[@]}"
# The same over IPv6 (::1), to the same DNS server.
dns_targets=(-target "direct=[::1]:$p_dns")
dns_pids=()
dns_contender dns6 "[::1]" pen "$p_pen_dns6"
dns_contender dns6 "[::1]" pen-user "$p_pen_dns6_user" -O "no udp_kernel"
log "dns6: dnsperf -l $dns_duration over ::1, $rounds rounds"
"${load_cpu[@]}" "$penbench" dns -test dns6 -rounds "$rounds" -duration "${dns_duration}s" \
	-backend-pid "${dns6_pid:-$dns_pid}" -out "$results" "${dns_targets[@]}"
stop "$dns_pid" ${dns6_pid:+"$dns6_pid"} "${dns_pids[@]}"

#### Report
echo
echo "== pen benchmark: medians of $rounds rounds; wrk -t$threads -c$conns -d${duration}s; rss with $rss_conns connections =="
echo "== machine: $cores cores; load average $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after; pen loops $loops, HAProxy nbthread $loops =="
"$penbench" report "$results"

#### DSR: wrk through pen's direct server return against wrk straight to the
#### backend, in network namespaces (client, pen, backend on a bridge, offloads
#### on), with the in-kernel fast path and with user-space forwarding. Needs
#### root; BENCH_DSR=0 skips it.
if [ "${BENCH_DSR:-1}" = 1 ]; then
	echo
	if [ "$(id -u)" = 0 ]; then
		echo "== DSR: $rounds rounds of ${duration}s, keep-alive and a new connection per request; ratio = dsr/direct =="
		PEN_DSR_BENCH=1 PEN_DSR_BENCH_ROUNDS="$rounds" PEN_DSR_BENCH_SECONDS="$duration" \
			go test -count=1 -run '^TestNetnsBenchWrk$' -v ./pen/dsr 2>&1 |
			grep -E 'bench: |^(--- |ok|FAIL)' | sed 's/^ *//' || echo "dsr: the benchmark did not run"
	else
		echo "== DSR: not measured (needs root for network namespaces) =="
	fi
fi
