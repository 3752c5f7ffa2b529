#!/bin/sh
# bench/linux/run.sh - `nectar run` on real forwarded traffic, against the
# same traffic forwarded directly and through haproxy (transparent mode,
# splice), all in one run, printed with ratios.  Needs root.
#
#   client ns ── router ns (nothing | nectar | haproxy) ── server ns
#   (topology: tests/linux/netns_lib.sh)
#
# Figures (each the median of REPS runs of SECS seconds):
#   1 stream and 4 streams of upload throughput (iperf3), short connections
#   per second (nbench short: connect, 1-byte echo, close), and the router
#   process's memory per idle intercepted flow (nbench idle).
# Variants: direct (kernel forwarding), nectar intercept (every byte
#   through the engine), nectar passthrough (the engine says passthrough;
#   sticky passthrough off so every flow still reaches nectar), nectar
#   passthrough with the sticky set (later flows bypass it in the kernel),
#   haproxy
#   (TPROXY frontend, original-destination backend, splice-auto).
# Env: BUILD_DIR (default build), SECS (default 4), REPS (default 3),
#      IDLE_FLOWS (default 3000), SHORT_THREADS (default 16).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top/build}
nectar=$build/apps/nectar/nectar
nb=$build/bench/sim/nbench
secs=${SECS:-4}
reps=${REPS:-3}
idle_flows=${IDLE_FLOWS:-3000}
short_threads=${SHORT_THREADS:-16}

[ "$(id -u)" = 0 ] || { echo "bench/linux: needs root" >&2; exit 1; }
for b in "$nectar" "$nb"; do
    [ -x "$b" ] || { echo "bench/linux: $b not built" >&2; exit 1; }
done
for t in ip nft iperf3 haproxy; do
    command -v $t >/dev/null || { echo "bench/linux: needs $t" >&2; exit 1; }
done

ID="nb$$"
C="$ID-c"
R="$ID-r"
S="$ID-s"
W=$(mktemp -d /tmp/nectar-bench.XXXXXX)
NPID=""
RPID=""
cleanup() {
    for n in "$C" "$R" "$S"; do
        pids=$(ip netns pids "$n" 2>/dev/null)
        [ -n "$pids" ] && kill $pids 2>/dev/null
    done
    wait 2>/dev/null
    for n in "$C" "$R" "$S"; do
        ip netns del "$n" 2>/dev/null
    done
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() {
    echo "bench/linux: $*" >&2
    [ -f "$W/router.log" ] && tail -n 20 "$W/router.log" >&2
    exit 1
}
. "$top/tests/linux/netns_lib.sh"

topology
# nbench's server listens on loopback only: DNAT the benchmark port to it
# inside the server namespace (the same cost for every variant).
ins sysctl -qw net.ipv4.conf.all.route_localnet=1
ins nft -f - <<'EOF' || fail "server DNAT"
table ip nbench {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        tcp dport 9000 dnat to 127.0.0.1:9000
    }
}
EOF
ins sh -c "ulimit -n \$(ulimit -Hn); exec '$nb' server 9000" \
    >"$W/nbench.log" 2>&1 &
ins iperf3 -s -D -p 5201 >/dev/null 2>&1
wait_for 100 inc bash -c "exec 3<>/dev/tcp/10.77.2.2/9000" ||
    fail "nbench server did not start"
wait_for 100 inc bash -c "exec 3<>/dev/tcp/10.77.2.2/5201" ||
    fail "iperf3 server did not start"

median() {
    sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# Upload throughput in Mbit/s over $1 parallel streams.
stream() {
    for _i in $(seq "$reps"); do
        inc iperf3 -c 10.77.2.2 -p 5201 -t "$secs" -P "$1" -J 2>/dev/null |
            python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))'
    done | median
}

short() {
    for _i in $(seq "$reps"); do
        inc sh -c "ulimit -n \$(ulimit -Hn); exec '$nb' short 10.77.2.2:9000 $secs $short_threads" |
            sed -n 's/.*flows_s=\([0-9]*\).*/\1/p'
    done | median
}

idle() {
    inc sh -c "ulimit -n \$(ulimit -Hn); exec '$nb' idle 10.77.2.2:9000 $idle_flows $1" |
        sed -n 's/.*ok=\([0-9]*\).*bytes_per_flow=\([0-9.]*\).*/\1 \2/p'
}

# ---- router variants ----------------------------------------------------------

# write_nectar_config ENGINE_MEMBERS [STICKY]
write_nectar_config() {
    cat >"$W/cfg.json" <<EOF
{$1 "proxy": {"tcp_start_in_flight_hard_cap": 0, "flow_pressure_soft_cap": 0},
 "host": {"interfaces": ["r0"], "log_flows": false, "sticky_passthrough": ${2:-false}}}
EOF
}

start_nectar() {
    : >"$W/router.log"
    ip netns exec "$R" sh -c 'ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
        "$nectar" run --config "$W/cfg.json" >>"$W/router.log" 2>&1 &
    NPID=$!
    RPID=$NPID
    wait_for 100 grep -q "running:" "$W/router.log" || fail "nectar did not start"
}

stop_router() {
    [ -n "$RPID" ] && kill -TERM "$RPID" 2>/dev/null
    [ -n "$RPID" ] && wait "$RPID" 2>/dev/null
    NPID=""
    RPID=""
}

# haproxy needs the same diversion nectar installs: take nectar's own
# ruleset from --dry-run, and the policy routing it prints.
start_haproxy() {
    write_nectar_config ""
    "$nectar" run --config "$W/cfg.json" --dry-run 2>/dev/null >"$W/dry"
    sed -n '/^table inet nectar/,/^}/p' "$W/dry" >"$W/rules.nft"
    inr nft -f "$W/rules.nft" || fail "haproxy: nft rules"
    grep '^ip ' "$W/dry" | while read -r line; do
        # shellcheck disable=SC2086
        inr $line || exit 1
    done || fail "haproxy: policy routing"
    cat >"$W/haproxy.cfg" <<'EOF'
global
    maxconn 4500
    nbthread 2
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option splice-auto
frontend tproxy
    bind 0.0.0.0:15001 transparent
    default_backend origdst
backend origdst
    server orig 0.0.0.0
EOF
    : >"$W/router.log"
    ip netns exec "$R" sh -c 'ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
        haproxy -db -f "$W/haproxy.cfg" >>"$W/router.log" 2>&1 &
    RPID=$!
    wait_for 100 inr sh -c "ss -ltn | grep -q ':15001 '" ||
        fail "haproxy did not start"
}

stop_haproxy() {
    stop_router
    inr nft delete table inet nectar 2>/dev/null
    grep '^ip ' "$W/dry" | sed 's/ add / del /' | while read -r line; do
        # shellcheck disable=SC2086
        inr $line 2>/dev/null
    done
}

measure() {
    name=$1
    s1=$(stream 1)
    s4=$(stream 4)
    cps=$(short)
    echo "$name $s1 $s4 $cps" >>"$W/results"
    printf '%-22s %10s %10s %10s\n' "$name" "$s1" "$s4" "$cps"
}

printf '%-22s %10s %10s %10s\n' variant "1 stream" "4 streams" "conn/s"
printf '%-22s %10s %10s %10s\n' "" "Mbit/s" "Mbit/s" ""
: >"$W/results"
measure direct

write_nectar_config ""
start_nectar
measure "nectar intercept"
idle_line=$(idle "$NPID")
stop_router

write_nectar_config '"default_action": "passthrough",'
start_nectar
measure "nectar passthrough"
stop_router

# The same with sticky passthrough: after the first flow to a destination
# the kernel forwards its flows itself.
write_nectar_config '"default_action": "passthrough",' true
start_nectar
measure "nectar pass sticky"
stop_router

start_haproxy
measure "haproxy splice"
hap_idle=$(idle "$RPID")
stop_haproxy

get() { awk -v n="$1" -v c="$2" '$0 ~ "^"n" " {print $(NF - 3 + c)}' "$W/results"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "ratios (goal in brackets):"
echo "  intercept / direct, 1 stream:        $(ratio "$(get "nectar intercept" 1)" "$(get direct 1)")  [>= 0.5]"
echo "  intercept / direct, 4 streams:       $(ratio "$(get "nectar intercept" 2)" "$(get direct 2)")  [>= 0.5]"
echo "  passthrough / haproxy, 1 stream:     $(ratio "$(get "nectar passthrough" 1)" "$(get "haproxy splice" 1)")  [>= 1.0]"
echo "  passthrough / haproxy, 4 streams:    $(ratio "$(get "nectar passthrough" 2)" "$(get "haproxy splice" 2)")  [>= 1.0]"
echo "  intercept conn/s / haproxy conn/s:   $(ratio "$(get "nectar intercept" 3)" "$(get "haproxy splice" 3)")  [>= 1.0]"
echo "  passthrough conn/s / haproxy conn/s: $(ratio "$(get "nectar passthrough" 3)" "$(get "haproxy splice" 3)")"
echo "  sticky passthrough / haproxy, 1 stream:  $(ratio "$(get "nectar pass sticky" 1)" "$(get "haproxy splice" 1)")"
echo "  sticky passthrough / haproxy, 4 streams: $(ratio "$(get "nectar pass sticky" 2)" "$(get "haproxy splice" 2)")"
echo "  sticky passthrough conn/s / haproxy:     $(ratio "$(get "nectar pass sticky" 3)" "$(get "haproxy splice" 3)")"
set -- $idle_line
echo "  nectar memory per idle intercepted flow: ${2:-?} bytes over ${1:-?} flows  [<= 4096]"
set -- $hap_idle
echo "  (haproxy, same test: ${2:-?} bytes per idle flow over ${1:-?} flows)"
