#!/bin/sh
# bench/sim/run.sh - nectar-sim against a direct loopback connection, socat
# and haproxy (TCP mode), all measured in this run, printed with ratios.
#   single-flow and 16-flow upload throughput, short flows per second,
#   1-byte ping-pong latency (p50/p99 added over direct), memory per idle
#   intercepted flow over 10,000 flows (nectar-sim RSS, and the engine
#   alone through the ABI).
# Env: BUILD_DIR (default build), SECS per measurement (default 4),
#      REPS runs per figure, median reported (default 3),
#      IDLE_FLOWS (default 10000), BASE_PORT (default 21000).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top/build}
nb=$build/bench/sim/nbench
sim=$build/apps/nectar-sim/nectar-sim
secs=${SECS:-3}
reps=${REPS:-3}
idle_flows=${IDLE_FLOWS:-10000}
p=${BASE_PORT:-21000}
# Skip past ports someone else (another bench run) is listening on.
busy() { ss -ltn 2>/dev/null | awk '{print $4}' | grep -Eq ":($1|$(($1 + 1))|$(($1 + 2))|$(($1 + 3)))\$"; }
tries=0
while busy "$p" && [ $tries -lt 50 ]; do p=$((p + 10)); tries=$((tries + 1)); done
srv_port=$p; socat_port=$((p + 1)); hap_port=$((p + 2)); sim_port=$((p + 3))
for b in "$nb" "$sim"; do
    [ -x "$b" ] || { echo "bench/sim: $b not built" >&2; exit 1; }
done
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
# Each intercepted flow costs nectar-sim two descriptors (client, egress);
# stay under this machine's limit when it cannot be raised.
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ $((idle_flows * 2 + 200)) -gt "$nofile" ]; then
    idle_flows=$(((nofile - 200) / 2))
    echo "bench/sim: RLIMIT_NOFILE is $nofile here; idle test uses $idle_flows flows"
fi
work=$(mktemp -d)
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

wait_port() {
    i=0
    while ! (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 100 ] && { echo "bench/sim: port $1 never opened" >&2; exit 1; }
        sleep 0.05
    done
}
# /dev/tcp needs bash; fall back to a short nbench ping.
if [ -z "${BASH_VERSION:-}" ]; then
    wait_port() {
        i=0
        while ! "$nb" pingpong "127.0.0.1:$1" 1 >/dev/null 2>&1; do
            i=$((i + 1)); [ $i -gt 100 ] && { echo "bench/sim: port $1 never answered" >&2; exit 1; }
            sleep 0.05
        done
    }
fi

"$nb" server "$srv_port" > "$work/server.log" 2>&1 &
pids="$pids $!"
wait_port "$srv_port"

targets="direct:$srv_port"
if command -v socat >/dev/null; then
    socat "TCP-LISTEN:$socat_port,fork,reuseaddr,backlog=4096" \
        "TCP:127.0.0.1:$srv_port,nodelay" 2>/dev/null &
    pids="$pids $!"
    wait_port "$socat_port"
    targets="$targets socat:$socat_port"
fi
if command -v haproxy >/dev/null; then
    cat > "$work/haproxy.cfg" <<HAP
global
    maxconn $(((nofile - 100) / 2))
    nbthread 2
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend f
    bind 127.0.0.1:$hap_port
    default_backend b
backend b
    server s1 127.0.0.1:$srv_port
HAP
    haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.log" 2>&1 &
    pids="$pids $!"
    wait_port "$hap_port"
    targets="$targets haproxy:$hap_port"
fi
printf '{}' > "$work/engine.json"
"$sim" --quiet --listen "127.0.0.1:$sim_port" --target "127.0.0.1:$srv_port" \
    --config "$work/engine.json" > "$work/sim.log" 2>&1 &
sim_pid=$!
pids="$pids $sim_pid"
wait_port "$sim_port"
targets="$targets nectar-sim:$sim_port"

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
# median FIELD CMD...: run CMD $reps times, print the median of FIELD (this
# VM is noisy; single runs vary by 2x).
median() {
    f=$1; shift
    i=0; vals=""
    while [ $i -lt "$reps" ]; do
        vals="$vals $("$@" | field "$f")"
        i=$((i + 1))
    done
    echo $vals | tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

echo "bench/sim: $(nproc) cores, $(uname -r), ${secs}s per run, median of $reps runs"
printf '%-11s %12s %12s %10s %9s %9s\n' target "1flow Mbit/s" "16flow Mbit/s" "short/s" "p50 us" "p99 us"
for t in $targets; do
    name=${t%%:*}; port=${t##*:}
    s1=$(median mbit_s "$nb" stream "127.0.0.1:$port" "$secs" 1)
    s16=$(median mbit_s "$nb" stream "127.0.0.1:$port" "$secs" 16)
    sh=$(median flows_s "$nb" short "127.0.0.1:$port" "$secs" 4)
    p50=$(median p50_us "$nb" pingpong "127.0.0.1:$port" 20000)
    p99=$(median p99_us "$nb" pingpong "127.0.0.1:$port" 20000)
    printf '%-11s %12s %12s %10s %9s %9s\n' "$name" "$s1" "$s16" "$sh" "$p50" "$p99"
    eval "r_${name%%-*}_s1=$s1 r_${name%%-*}_s16=$s16 r_${name%%-*}_sh=$sh r_${name%%-*}_p50=$p50 r_${name%%-*}_p99=$p99"
done

echo
echo "ratios (nectar-sim / baseline):"
for base in direct socat haproxy; do
    eval "b1=\${r_${base}_s1:-}; b16=\${r_${base}_s16:-}; bsh=\${r_${base}_sh:-}"
    [ -n "$b1" ] || continue
    printf '  vs %-8s 1flow %s  16flow %s  short/s %s\n' "$base" \
        "$(ratio "$r_nectar_s1" "$b1")" "$(ratio "$r_nectar_s16" "$b16")" \
        "$(ratio "$r_nectar_sh" "$bsh")"
done
echo "added latency over direct: p50 $(minus "$r_nectar_p50" "$r_direct_p50") us, p99 $(minus "$r_nectar_p99" "$r_direct_p99") us (goal p99 <= 100 us)"
echo "goals: 1flow >= 0.5x direct -> $(ratio "$r_nectar_s1" "$r_direct_s1")x; >= 1.0x haproxy -> $(ratio "$r_nectar_s1" "${r_haproxy_s1:-0}")x"

# On a VM an idle vCPU halts and each cross-thread wake-up can cost a VM
# exit; the relay has more wake-ups per round trip than a direct
# connection.  Measure again with every vCPU kept busy by idle-priority
# spinners, which separates that hypervisor cost from the relay's own.
spin=""
for _ in $(seq "$(nproc)"); do
    nice -n 19 sh -c 'while :; do :; done' &
    spin="$spin $!"
done
pids="$pids $spin"
d50=$(median p50_us "$nb" pingpong "127.0.0.1:$srv_port" 20000)
d99=$(median p99_us "$nb" pingpong "127.0.0.1:$srv_port" 20000)
n50=$(median p50_us "$nb" pingpong "127.0.0.1:$sim_port" 20000)
n99=$(median p99_us "$nb" pingpong "127.0.0.1:$sim_port" 20000)
for s in $spin; do kill "$s" 2>/dev/null; done
echo "with vCPUs kept awake: direct p50 $d50 p99 $d99 us; nectar-sim p50 $n50 p99 $n99 us; added p50 $(minus "$n50" "$d50") us, p99 $(minus "$n99" "$d99") us"

echo
echo "memory per idle intercepted flow:"
"$nb" idle "127.0.0.1:$sim_port" "$idle_flows" "$sim_pid" | sed 's/^/  nectar-sim process: /'
"$nb" engine-idle "${IDLE_FLOWS:-10000}" 2>/dev/null | sed 's/^/  engine alone (ABI): /'
echo "  (goal: <= 2048 bytes of engine memory per idle flow)"
