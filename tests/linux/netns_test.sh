#!/bin/sh
# netns_test.sh - `nectar run` against real traffic in network namespaces.
#
#   netns_test.sh NECTAR_BIN HELPERS_DIR TEST [NECTARCTL_BIN]
#
# Topology (made here, removed on exit, names unique per run):
#
#   client ns  c0 10.77.1.2  fd77:1::2
#        |  veth
#   router ns  r0 10.77.1.1  fd77:1::1   <- nectar runs here, capturing
#              r1 10.77.2.1  fd77:2::1      traffic forwarded from r0
#        |  veth
#   server ns  s0 10.77.2.2  fd77:2::2   HTTP :8080/:8081/:8082, TCP echo
#                                        :7000, UDP echo :5353
#
# Exit 0 pass, 1 fail, 77 skip (not root / tool missing, outside CI only).
set -u
NECTAR=$1
HELP=$2
TEST=$3
NECTARCTL=${4:-} # the control tests only

fail() {
    echo "FAIL [$TEST]: $*" >&2
    if [ -n "${NPID:-}" ] && kill -USR1 "$NPID" 2>/dev/null; then
        sleep 0.5
        # NECTAR_TEST_STACKS=1: where is every thread of nectar right now?
        [ -n "${NECTAR_TEST_STACKS:-}" ] &&
            gdb -p "$NPID" -batch -ex "thread apply all bt" >&2 2>/dev/null
    fi
    if [ -n "${W:-}" ] && [ -f "$W/nectar.log" ]; then
        echo "---- nectar log (tail) ----" >&2
        tail -n 40 "$W/nectar.log" >&2
    fi
    exit 1
}

skip() {
    if [ "${CI:-}" = "true" ]; then
        echo "FAIL [$TEST]: $* (CI=true: required)" >&2
        exit 1
    fi
    echo "SKIP [$TEST]: $*" >&2
    exit 77
}

[ "$(id -u)" = 0 ] || skip "needs root"
for t in ip nft curl python3 sha256sum; do
    command -v $t >/dev/null 2>&1 || skip "needs $t"
done

ID="nc$$"
C="$ID-c"
R="$ID-r"
S="$ID-s"
W=$(mktemp -d /tmp/nectar-netns.XXXXXX)
PIDS=""

cleanup() {
    [ -n "${NPID:-}" ] && kill -9 "$NPID" 2>/dev/null
    # Everything still running inside our namespaces is ours.
    for n in "$C" "$R" "$S"; do
        pids=$(ip netns pids "$n" 2>/dev/null)
        [ -n "$pids" ] && kill $pids 2>/dev/null
    done
    for p in $PIDS; do
        kill "$p" 2>/dev/null
    done
    wait 2>/dev/null
    for n in "$C" "$R" "$S"; do
        ip netns del "$n" 2>/dev/null
    done
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

. "$(dirname "$0")/netns_lib.sh"

# Run a server in the server namespace; its output goes to a file so no
# pipe of the caller is held open.
bgs() {
    ip netns exec "$S" "$@" >>"$W/servers.log" 2>&1 &
    PIDS="$PIDS $!"
}

servers() {
    mkdir -p "$W/www"
    bgs python3 "$HELP/http_server.py" 8080 "$W/www"
    bgs python3 "$HELP/http_server.py" 8081 "$W/www"
    bgs python3 "$HELP/http_server.py" 8082 "$W/www"
    bgs python3 "$HELP/tcp_echo.py" 7000
    bgs python3 "$HELP/udp_echo.py" 5353
    wait_for 100 inc curl -sf -o /dev/null http://10.77.2.2:8080/bytes/1 ||
        fail "servers did not start"
    wait_for 100 inc curl -sf -o /dev/null http://10.77.2.2:8081/bytes/1 ||
        fail "servers did not start"
}

# write_config [ENGINE_JSON_MEMBERS] [HOST_JSON_MEMBERS]
write_config() {
    eng=${1:-}
    host=${2:-}
    [ -n "$eng" ] && eng="$eng,"
    [ -n "$host" ] && host=",$host"
    cat >"$W/cfg.json" <<EOF
{$eng "host": {"interfaces": ["r0"], "tcp_port": 15001, "udp_port": 15001$host}}
EOF
}

start_nectar() {
    : >"$W/nectar.log"
    # shellcheck disable=SC2016
    ip netns exec "$R" sh -c 'ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
        env NECTAR_LOG="${NECTAR_LOG:-info}" ${NECTAR_TEST_WRAP:-} "$NECTAR" run \
        --config "$W/cfg.json" >>"$W/nectar.log" 2>&1 &
    NPID=$!
    wait_for 100 grep -q "running:" "$W/nectar.log" ||
        fail "nectar did not start"
}

stop_nectar() {
    kill -TERM "$NPID" 2>/dev/null
    _s=100
    while kill -0 "$NPID" 2>/dev/null && [ $_s -gt 0 ]; do
        sleep 0.1
        _s=$((_s - 1))
    done
    kill -0 "$NPID" 2>/dev/null && fail "nectar did not stop on SIGTERM"
    wait "$NPID"
    rc=$?
    NPID=""
    [ $rc = 0 ] || fail "nectar exited with $rc"
}

# No table, rule or route of ours is left in the router namespace.
assert_clean() {
    inr nft list table inet nectar >/dev/null 2>&1 &&
        fail "table inet nectar left behind ($1)"
    inr ip -4 rule show | grep -q "fwmark 0x6e63" &&
        fail "IPv4 fwmark rule left behind ($1)"
    inr ip -6 rule show | grep -q "fwmark 0x6e63" &&
        fail "IPv6 fwmark rule left behind ($1)"
    [ -n "$(inr ip -4 route show table 28259 2>/dev/null)" ] &&
        fail "IPv4 route table 28259 not empty ($1)"
    [ -n "$(inr ip -6 route show table 28259 2>/dev/null)" ] &&
        fail "IPv6 route table 28259 not empty ($1)"
    return 0
}

count_log() {
    grep -c -- "$1" "$W/nectar.log"
}

sha_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# ---- tests ------------------------------------------------------------------

t_tcp_download() {
    head -c 100M /dev/urandom >"$W/www/big" || fail "make file"
    write_config
    start_nectar
    inc curl -sf -o "$W/got" http://10.77.2.2:8080/big || fail "curl download"
    [ "$(sha_of "$W/got")" = "$(sha_of "$W/www/big")" ] ||
        fail "downloaded bytes differ"
    stop_nectar
    grep -q "tcp intercept.*dst=10.77.2.2:8080.*down=10[0-9]\{7\}" \
        "$W/nectar.log" || fail "no intercepted download in the flow log"
}

t_tcp_upload() {
    head -c 100M /dev/urandom >"$W/up" || fail "make file"
    write_config
    start_nectar
    got=$(inc curl -sf -H "Expect:" --data-binary @"$W/up" \
        http://10.77.2.2:8080/up) || fail "curl upload"
    [ "$got" = "$(sha_of "$W/up")" ] || fail "uploaded bytes differ"
    stop_nectar
    grep -q "tcp intercept.*dst=10.77.2.2:8080.*up=10[0-9]\{7\}" \
        "$W/nectar.log" || fail "no intercepted upload in the flow log"
}

t_tcp_ipv6() {
    head -c 3M /dev/urandom >"$W/www/mid" || fail "make file"
    write_config
    start_nectar
    inc curl -sf -o "$W/got" "http://[fd77:2::2]:8080/mid" ||
        fail "curl over IPv6"
    [ "$(sha_of "$W/got")" = "$(sha_of "$W/www/mid")" ] ||
        fail "IPv6 bytes differ"
    stop_nectar
    grep -q "tcp intercept.*dst=\[fd77:2::2\]:8080" "$W/nectar.log" ||
        fail "no intercepted IPv6 flow in the log"
}

t_udp() {
    # A short idle limit, so the test also sees every flow end on its own
    # and take its sockets with it.
    write_config '' '"udp_idle_timeout_ms": 1500'
    start_nectar
    fd0=$(fd_count)
    inc python3 "$HELP/udp_peers.py" 10.77.2.2 5353 64 3 ||
        fail "UDP IPv4 peers"
    inc python3 "$HELP/udp_peers.py" fd77:2::2 5353 64 3 ||
        fail "UDP IPv6 peers"
    [ "$(fd_count)" -gt $((fd0 + 64)) ] || fail "expected a reply socket per flow"
    wait_for 100 sh -c "[ \$(ls /proc/$NPID/fd | wc -l) -le $fd0 ]" ||
        fail "UDP sockets outlive their flows: $fd0 -> $(fd_count) fds"
    stop_nectar
    n4=$(count_log "udp intercept.*dst=10.77.2.2:5353")
    n6=$(count_log "udp intercept.*dst=\[fd77:2::2\]:5353")
    [ "$n4" -ge 64 ] || fail "expected 64 intercepted IPv4 UDP flows, saw $n4"
    [ "$n6" -ge 64 ] || fail "expected 64 intercepted IPv6 UDP flows, saw $n6"
}

t_passthrough_sticky() {
    write_config '"actions": [{"match": {"protocol": "tcp", "remote_port": 8081}, "action": "passthrough"}, {"match": {"protocol": "udp", "remote_port": 5353}, "action": "passthrough"}]'
    start_nectar
    inc curl -sf -o "$W/a" http://10.77.2.2:8081/bytes/100000 ||
        fail "first passthrough curl"
    [ "$(stat -c %s "$W/a")" = 100000 ] || fail "passthrough size"
    inr nft list set inet nectar sticky4 | grep -q "10.77.2.2 . tcp . 8081" ||
        fail "destination not in the sticky set"
    inc curl -sf -o "$W/b" http://10.77.2.2:8081/bytes/100000 ||
        fail "second passthrough curl"
    [ "$(stat -c %s "$W/b")" = 100000 ] || fail "sticky size"
    # Interception still works for other ports.
    inc curl -sf -o /dev/null http://10.77.2.2:8080/bytes/1000 ||
        fail "intercepted curl next to passthrough"
    # UDP passthrough: relayed by nectar, then sticky in the kernel.
    inc python3 "$HELP/udp_peers.py" 10.77.2.2 5353 8 2 || fail "UDP passthrough"
    inr nft list set inet nectar sticky4 | grep -q "10.77.2.2 . udp . 5353" ||
        fail "UDP destination not in the sticky set"
    inc python3 "$HELP/udp_peers.py" 10.77.2.2 5353 8 2 || fail "UDP sticky"
    # IPv6 goes sticky in its own set.
    inc curl -sf -o /dev/null "http://[fd77:2::2]:8081/bytes/1000" ||
        fail "IPv6 passthrough curl"
    inr nft list set inet nectar sticky6 | grep -q "fd77:2::2 . tcp . 8081" ||
        fail "IPv6 destination not in the sticky set"
    inc curl -sf -o /dev/null "http://[fd77:2::2]:8081/bytes/1000" ||
        fail "IPv6 sticky curl"
    stop_nectar
    # Relayed flows are logged by the daemon with their bytes at the end.
    n=$(count_log "flow udp passthrough app=.* dst=10.77.2.2:5353")
    [ "$n" -ge 1 ] && [ "$n" -le 8 ] ||
        fail "expected 1..8 relayed UDP passthrough flows, saw $n"
    n=$(count_log "tcp passthrough.*dst=10.77.2.2:8081")
    [ "$n" = 1 ] || fail "expected 1 passthrough flow (the 2nd is sticky), saw $n"
    [ "$(count_log "tcp intercept.*dst=10.77.2.2:8080")" -ge 1 ] ||
        fail "intercepted flow missing"
}

t_passthrough_nosticky() {
    write_config '"actions": [{"match": {"protocol": "tcp", "remote_port": 8081}, "action": "passthrough"}]' \
        '"sticky_passthrough": false'
    start_nectar
    for i in 1 2 3; do
        inc curl -sf -o "$W/a" http://10.77.2.2:8081/bytes/1000000 ||
            fail "passthrough curl $i"
        [ "$(stat -c %s "$W/a")" = 1000000 ] || fail "passthrough size $i"
    done
    stop_nectar
    n=$(count_log "tcp passthrough.*dst=10.77.2.2:8081")
    [ "$n" = 3 ] || fail "expected 3 passthrough flows, saw $n"
}

t_block() {
    write_config '"actions": [{"match": {"protocol": "tcp", "remote_port": 8082}, "action": "block"}, {"match": {"protocol": "udp", "remote_port": 5353}, "action": "block"}]'
    start_nectar
    inc curl -s -m 5 -o /dev/null http://10.77.2.2:8082/bytes/10 &&
        fail "blocked curl succeeded"
    inc python3 "$HELP/udp_peers.py" 10.77.2.2 5353 2 1 2 >/dev/null 2>&1 &&
        fail "blocked UDP got echoes"
    inc curl -sf -o /dev/null http://10.77.2.2:8080/bytes/10 ||
        fail "unblocked port failed"
    stop_nectar
    [ "$(count_log "tcp blocked.*dst=10.77.2.2:8082")" -ge 1 ] ||
        fail "no blocked TCP flow in the log"
    [ "$(count_log "udp blocked.*dst=10.77.2.2:5353")" -ge 1 ] ||
        fail "no blocked UDP flow in the log"
}

# Engine network rules become the nft match lines: excluded destinations
# never reach nectar, everything else is captured.
t_exclude_rules() {
    write_config '"rules": [{"remote_port": 8081, "protocol": "tcp", "exclude": true}, {"remote_network": "fd77:2::2", "remote_port": 8082, "exclude": true}, {}]'
    start_nectar
    inr nft list chain inet nectar prerouting | grep -q "dport 8081 return" ||
        fail "exclude rule not in the ruleset"
    inc curl -sf -o /dev/null http://10.77.2.2:8081/bytes/1000 || fail "excluded curl"
    inc curl -sf -o /dev/null "http://[fd77:2::2]:8082/bytes/1000" ||
        fail "excluded IPv6 curl"
    inc curl -sf -o /dev/null http://10.77.2.2:8082/bytes/1000 || fail "IPv4 8082"
    inc curl -sf -o /dev/null http://10.77.2.2:8080/bytes/1000 || fail "captured curl"
    stop_nectar
    [ "$(count_log "dst=10.77.2.2:8081")" = 0 ] || fail "excluded flow reached nectar"
    [ "$(count_log "dst=\[fd77:2::2\]:8082")" = 0 ] ||
        fail "excluded IPv6 flow reached nectar"
    [ "$(count_log "tcp intercept.*dst=10.77.2.2:8082")" = 1 ] ||
        fail "the IPv6-only exclude rule also excluded IPv4"
    [ "$(count_log "tcp intercept.*dst=10.77.2.2:8080")" = 1 ] ||
        fail "captured flow missing"
}

# Local capture in the router namespace: a curl there is intercepted, with
# its process identity, and nectar's own egress is never captured again
# (that would loop: one client flow would become endless flows).
t_local_self() {
    write_config "" '"capture_local": true'
    NECTAR_LOG=debug start_nectar
    inr curl -sf -o "$W/got" http://10.77.2.2:8080/bytes/200000 ||
        fail "local curl"
    [ "$(stat -c %s "$W/got")" = 200000 ] || fail "local size"
    inr curl -sf -o "$W/got6" "http://[fd77:2::2]:8080/bytes/300000" ||
        fail "local curl over IPv6"
    [ "$(stat -c %s "$W/got6")" = 300000 ] || fail "local IPv6 size"
    inc curl -sf -o /dev/null http://10.77.2.2:8080/bytes/1000 ||
        fail "forwarded curl with local capture on"
    # UDP from the router itself: the engine's own UDP egress (opened by
    # its relay, not by the host) must not be captured again either.
    inr python3 "$HELP/udp_peers.py" 10.77.2.2 5353 4 2 || fail "local UDP"
    stop_nectar
    n=$(count_log "tcp intercept.*dst=10.77.2.2:8080")
    [ "$n" = 2 ] || fail "expected exactly 2 intercepted flows, saw $n"
    n=$(count_log "tcp intercept.*dst=\[fd77:2::2\]:8080")
    [ "$n" = 1 ] || fail "expected exactly 1 intercepted IPv6 flow, saw $n"
    n=$(count_log "udp intercept.*dst=10.77.2.2:5353")
    [ "$n" = 4 ] || fail "expected exactly 4 intercepted UDP flows, saw $n"
    grep -q "flow open tcp dst=10.77.2.2:8080 app=$(command -v curl)" \
        "$W/nectar.log" || fail "process identity of the local curl missing"
}

t_cleanup() {
    write_config
    start_nectar
    inr nft list table inet nectar >/dev/null || fail "table not installed"
    inr ip rule show | grep -q "fwmark 0x6e63" || fail "rule not installed"
    # A second run in the same namespace must not take the first one's
    # table for a crashed run's leftovers.
    if inr "$NECTAR" run --config "$W/cfg.json" >"$W/err" 2>&1; then
        fail "a second run started"
    fi
    grep -q "another nectar run is active" "$W/err" ||
        fail "no second-run error: $(cat "$W/err")"
    inr nft list table inet nectar >/dev/null ||
        fail "the second run removed the first run's table"
    inc curl -sf -o /dev/null http://10.77.2.2:8080/bytes/1000 ||
        fail "first run broken by the second"
    stop_nectar
    assert_clean "after SIGTERM"
    start_nectar
    kill -9 "$NPID"
    wait "$NPID" 2>/dev/null
    NPID=""
    inr nft list table inet nectar >/dev/null ||
        fail "kill -9 should leave the table (the test is wrong)"
    start_nectar
    grep -q "removed a stale table" "$W/nectar.log" ||
        fail "stale table not reported"
    inc curl -sf -o /dev/null http://10.77.2.2:8080/bytes/1000 ||
        fail "curl after restart"
    stop_nectar
    assert_clean "after kill -9 and restart"
}

t_concurrent() {
    # The default start caps (128 connects in flight) would refuse most of
    # a 1000-connection burst, as designed; lift them for this test.
    write_config '"proxy": {"tcp_start_in_flight_hard_cap": 4000, "tcp_start_in_flight_soft_cap": 4000, "flow_pressure_soft_cap": 0}'
    start_nectar
    inc sh -c "ulimit -n \$(ulimit -Hn); python3 '$HELP/tcp_load.py' concurrent 10.77.2.2 7000 1000" ||
        fail "1000 concurrent connections"
    stop_nectar
    n=$(count_log "tcp intercept.*dst=10.77.2.2:7000")
    [ "$n" -ge 1000 ] || fail "expected 1000 intercepted flows, saw $n"
}

# Start-up errors are clear and leave nothing behind.
t_errors() {
    write_config
    # The TCP port already taken in the router namespace.
    ip netns exec "$R" python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 15001)); s.listen(1); time.sleep(60)' &
    PIDS="$PIDS $!"
    wait_for 50 inr sh -c "ss -ltn | grep -q ':15001 '" || fail "port holder"
    if inr "$NECTAR" run --config "$W/cfg.json" >"$W/err" 2>&1; then
        fail "started although the port is in use"
    fi
    grep -q "port 15001 is in use" "$W/err" || fail "no port-in-use error: $(cat "$W/err")"
    assert_clean "after the port-in-use failure"
    # A cgroup that does not exist.
    write_config '' '"capture_local": true, "cgroups": ["nectar-no-such-cgroup"]'
    if inr "$NECTAR" run --config "$W/cfg.json" >"$W/err" 2>&1; then
        fail "started with a missing cgroup"
    fi
    grep -q "host.cgroups\[0\]" "$W/err" || fail "no cgroup error: $(cat "$W/err")"
    assert_clean "after the cgroup failure"
    write_config
    # Not root.
    if command -v setpriv >/dev/null 2>&1; then
        chmod a+rx "$W"
        chmod a+r "$W/cfg.json"
        if inr setpriv --reuid=65534 --regid=65534 --clear-groups \
            "$NECTAR" run --config "$W/cfg.json" >"$W/err" 2>&1; then
            fail "started without root"
        fi
        grep -q "must run as root" "$W/err" || fail "no root error: $(cat "$W/err")"
    fi
}

fd_count() {
    ls "/proc/$NPID/fd" 2>/dev/null | wc -l
}

rss_kb() {
    awk '/VmRSS/ {print $2}' "/proc/$NPID/status"
}

# Find the nectar process itself (NPID is the `ip netns exec` parent until
# it execs; with exec chains it is the same pid).
t_short_flows() {
    flows=${SHORT_FLOWS:-20000}
    write_config '' '"log_flows": false'
    start_nectar
    inc python3 "$HELP/tcp_load.py" short 10.77.2.2 7000 2000 32 ||
        fail "warm-up flows"
    sleep 1
    fd0=$(fd_count)
    rss0=$(rss_kb)
    inc python3 "$HELP/tcp_load.py" short 10.77.2.2 7000 "$flows" 32 ||
        fail "$flows short flows"
    sleep 2
    fd1=$(fd_count)
    rss1=$(rss_kb)
    echo "short flows: $flows; fds $fd0 -> $fd1; rss ${rss0} KiB -> ${rss1} KiB"
    [ "$fd1" -le $((fd0 + 2)) ] || fail "fd growth: $fd0 -> $fd1"
    [ "$rss1" -le $((rss0 + 8192)) ] || fail "memory growth: $rss0 -> $rss1 KiB"
    kill -USR1 "$NPID"
    wait_for 50 grep -q "counters" "$W/nectar.log" || fail "no counters on SIGUSR1"
    stop_nectar
}

# ---- control service (nectarctl; NECTARCTL is the 4th argument) ----------

# nectarctl in the router namespace (abstract names are per namespace).
ctl() {
    inr "$NECTARCTL" --service "$CTL_SVC" "$@"
}

CTL_SVC="org.nectar.test.$ID"

# A JSON field of the first flow going to $1 in `flows --json` (python3
# does the JSON; prints nothing when there is no such flow).
flow_field() {
    ctl flows --json | python3 -c '
import json, sys
for f in json.load(sys.stdin):
    if f["destination"] == sys.argv[1]:
        print(f[sys.argv[2]]); break
' "$1" "$2"
}

has_flow() {
    [ -n "$(flow_field "$1" bytes_in)" ]
}

t_control_builtin() {
    [ -x "${NECTARCTL:-}" ] || fail "no nectarctl binary given"
    # Socket buffers hold a few MiB, so the file is much larger than what
    # the rate limit lets through while the test looks.
    head -c 48M /dev/urandom >"$W/www/slow" || fail "make file"
    write_config '' "\"control_service\": \"$CTL_SVC\""
    start_nectar
    grep -q "control service on $CTL_SVC (handler builtin)" "$W/nectar.log" ||
        fail "no control service line in the log"
    out=$(ctl status) || fail "status failed: $out"
    echo "$out" | grep -q "^nectar daemon 0\." || fail "status: $out"
    echo "$out" | grep -q "^handler: *builtin" || fail "status: $out"
    [ "$(ctl flows --json)" = "[]" ] || fail "flows while idle not empty"

    # A slow download through the daemon shows up with growing bytes.
    inc curl -sf --limit-rate 1M -o /dev/null http://10.77.2.2:8080/slow &
    CURL=$!
    PIDS="$PIDS $CURL"
    wait_for 50 has_flow 10.77.2.2:8080 ||
        fail "the download is not in flows --json: $(ctl flows --json)"
    [ "$(flow_field 10.77.2.2:8080 protocol)" = tcp ] || fail "protocol"
    # Buffers along the path refill in bursts (socket buffers, the engine
    # queue, the write pumps), so growth is looked for over up to 10 s.
    b1=$(flow_field 10.77.2.2:8080 bytes_in)
    b2=$b1
    i=0
    while [ "$b2" -le "$b1" ] && [ $i -lt 20 ]; do
        sleep 0.5
        b2=$(flow_field 10.77.2.2:8080 bytes_in)
        i=$((i + 1))
    done
    [ "$b2" -gt "$b1" ] || fail "bytes_in did not grow in 10 s: $b1 -> $b2"
    [ "$(flow_field 10.77.2.2:8080 age_ms)" -ge 1000 ] || fail "age_ms"
    ctl flows | grep -q "10.77.2.2:8080" || fail "table output lacks flow"
    out=$(ctl status)
    echo "$out" | grep -q "^flows: *1 tcp" || fail "status flows: $out"
    kill "$CURL" 2>/dev/null

    out=$(ctl message '{"op":"ping","source":"t"}') || fail "ping: $out"
    echo "$out" | grep -q '"op": *"pong"' || fail "no pong: $out"
    out=$(ctl message '{"op":"stats"}') || fail "stats: $out"
    echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["op"] == "stats" and r["tcp"]["opened"] >= 1, r
assert r["decisions"]["intercept"] >= 1, r
' || fail "stats reply does not count the download: $out"

    # Application routes need the example app.
    out=$(ctl ca rotate 2>&1)
    [ $? = 1 ] || fail "ca rotate on builtin: want exit 1: $out"
    echo "$out" | grep -q "not supported by the built-in handler" ||
        fail "ca rotate message: $out"
    out=$(ctl settings set html_badge_label=x 2>&1)
    [ $? = 1 ] || fail "settings on builtin: want exit 1: $out"
    echo "$out" | grep -q "not supported by the built-in handler" ||
        fail "settings message: $out"

    # Not root and not in group nectar: refused (exit 4).
    out=$(inr setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$NECTARCTL" --service "$CTL_SVC" status 2>&1)
    [ $? = 4 ] || fail "non-root caller: want exit 4: $out"
    echo "$out" | grep -q "refused this caller" || fail "refusal text: $out"
    stop_nectar

    # No daemon: absent (exit 3).
    out=$(ctl status 2>&1)
    [ $? = 3 ] || fail "no daemon: want exit 3: $out"
    echo "$out" | grep -q "cannot reach the nectar daemon" ||
        fail "absent text: $out"
}

t_control_example() {
    [ -x "${NECTARCTL:-}" ] || fail "no nectarctl binary given"
    mkdir -p "$W/kc"
    write_config "\"app\": \"example\", \"keychain_dir\": \"$W/kc\"" \
        "\"control_service\": \"$CTL_SVC\""
    start_nectar
    grep -q "control service on $CTL_SVC (handler example)" "$W/nectar.log" ||
        fail "no control service line in the log"
    ctl status | grep -q "^handler: *example" || fail "status handler"
    out=$(ctl ca install) || fail "ca install: $out"
    old=$(echo "$out" | sed -n 's/^certificate (DER, base64): //p')
    [ -n "$old" ] || fail "ca install printed no certificate: $out"
    out=$(ctl ca rotate) || fail "ca rotate: $out"
    prev=$(echo "$out" | sed -n 's/^previous (DER, base64): //p')
    new=$(echo "$out" | sed -n 's/^new (DER, base64): //p')
    [ "$prev" = "$old" ] || fail "rotate: previous is not the installed CA"
    [ -n "$new" ] && [ "$new" != "$old" ] || fail "rotate: no new CA"
    out=$(ctl settings set html_badge_label=x) || fail "settings: $out"
    [ "$out" = "settings updated" ] || fail "settings output: $out"
    ctl keylog on | grep -q "tls keylog: on" || fail "keylog on"
    ctl status | grep -q "^tls keylog: on" || fail "status keylog"
    ctl keylog off | grep -q "tls keylog: off" || fail "keylog off"
    out=$(ctl message '{"op":"ping"}') || fail "ping: $out"
    echo "$out" | grep -q '"op": *"pong"' || fail "no pong: $out"
    stop_nectar
}

t_control_config() {
    [ -x "${NECTARCTL:-}" ] || fail "no nectarctl binary given"
    # control: false binds nothing.
    write_config '' "\"control\": false, \"control_service\": \"$CTL_SVC\""
    start_nectar
    grep -q "control service on" "$W/nectar.log" && fail "bound with false"
    out=$(ctl status 2>&1)
    [ $? = 3 ] || fail "control false: want exit 3: $out"
    # A second listener on the same name makes the run fail cleanly.
    stop_nectar
    write_config '' "\"control_service\": \"$CTL_SVC\""
    inr python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind("\0" + sys.argv[1]); s.listen(1); time.sleep(30)
' "$CTL_SVC" &
    HOLD=$!
    PIDS="$PIDS $HOLD"
    sleep 0.3
    inr "$NECTAR" run --config "$W/cfg.json" >"$W/second.log" 2>&1
    [ $? != 0 ] || fail "run with the control name taken succeeded"
    grep -q "control service $CTL_SVC" "$W/second.log" ||
        fail "error does not name the control service: $(cat "$W/second.log")"
    kill "$HOLD"
    assert_clean "control name taken"
}

# Passthrough goes through the splicer: 40 MB each way, sha256-exact, and
# the close line says forward=splice (and the counters count it).
t_splice_passthrough() {
    head -c 40M /dev/urandom >"$W/www/big" || fail "make file"
    head -c 40M /dev/urandom >"$W/up" || fail "make file"
    write_config '"actions": [{"match": {"protocol": "tcp", "remote_port": 8081}, "action": "passthrough"}]' \
        '"sticky_passthrough": false'
    start_nectar
    inc curl -sf -o "$W/got" http://10.77.2.2:8081/big ||
        fail "passthrough download"
    [ "$(sha_of "$W/got")" = "$(sha_of "$W/www/big")" ] ||
        fail "passthrough download bytes differ"
    got=$(inc curl -sf -H "Expect:" --data-binary @"$W/up" \
        http://10.77.2.2:8081/up) || fail "passthrough upload"
    [ "$got" = "$(sha_of "$W/up")" ] || fail "passthrough upload bytes differ"
    kill -USR1 "$NPID"
    wait_for 50 grep -q "splice_flows=2 " "$W/nectar.log" ||
        fail "SIGUSR1 counters do not show 2 spliced flows"
    stop_nectar
    n=$(count_log "tcp passthrough app=.*dst=10.77.2.2:8081 up=[0-9]* down=4[0-9]\{7\} .*forward=splice")
    [ "$n" = 1 ] || fail "expected 1 spliced passthrough download, saw $n"
    n=$(count_log "tcp passthrough app=.*dst=10.77.2.2:8081 up=4[0-9]\{7\} down=[0-9]* .*forward=splice")
    [ "$n" = 1 ] || fail "expected 1 spliced passthrough upload, saw $n"
    grep -q "splice_live=0" "$W/nectar.log" || fail "a spliced flow outlived stop"
}

# The example app promotes a plain-HTTP request to an excluded host: the
# flow is cut over to the splicer with no byte lost or duplicated; a
# locally started curl shows up with its executable in the close line.
# The example passes private destinations through at decision time, so the
# server also gets a documentation address (TEST-NET-2) for this test.
t_splice_promote() {
    head -c 32M /dev/urandom >"$W/www/big" || fail "make file"
    head -c 20M /dev/urandom >"$W/up" || fail "make file"
    ins ip addr add 198.51.100.2/32 dev s0 || fail "server address"
    inr ip route add 198.51.100.2/32 via 10.77.2.2 || fail "router route"
    mkdir -m 700 "$W/kc"
    write_config "\"app\": \"example\", \"keychain_dir\": \"$W/kc\", \"exclude_domains\": [\"bank.test\"]" \
        '"capture_local": true'
    start_nectar
    inc curl -sf -H "Host: bank.test" -o "$W/got" http://198.51.100.2:8080/big ||
        fail "promoted download"
    [ "$(sha_of "$W/got")" = "$(sha_of "$W/www/big")" ] ||
        fail "promoted download bytes differ"
    got=$(inc curl -sf -H "Host: bank.test" -H "Expect:" \
        --data-binary @"$W/up" http://198.51.100.2:8080/up) ||
        fail "promoted upload"
    [ "$got" = "$(sha_of "$W/up")" ] || fail "promoted upload bytes differ"
    inr curl -sf -H "Host: bank.test" -o "$W/got2" \
        http://198.51.100.2:8080/big || fail "local promoted download"
    [ "$(sha_of "$W/got2")" = "$(sha_of "$W/www/big")" ] ||
        fail "local promoted download bytes differ"
    stop_nectar
    n=$(count_log "tcp intercept promoted app=.*dst=198.51.100.2:8080 .*reason=closed forward=splice")
    [ "$n" = 3 ] || fail "expected 3 promoted flows cut over to splice, saw $n"
    grep -q "tcp intercept promoted app=$(command -v curl) .*pid=[0-9]* dst=198.51.100.2:8080 .*forward=splice" \
        "$W/nectar.log" || fail "the close line does not name the local curl"
}

topology
servers
case "$TEST" in
tcp_download) t_tcp_download ;;
tcp_upload) t_tcp_upload ;;
tcp_ipv6) t_tcp_ipv6 ;;
udp) t_udp ;;
passthrough_sticky) t_passthrough_sticky ;;
passthrough_nosticky) t_passthrough_nosticky ;;
block) t_block ;;
local_self) t_local_self ;;
cleanup) t_cleanup ;;
concurrent) t_concurrent ;;
short_flows) t_short_flows ;;
errors) t_errors ;;
exclude_rules) t_exclude_rules ;;
splice_passthrough) t_splice_passthrough ;;
splice_promote) t_splice_promote ;;
short_flows_long) SHORT_FLOWS=100000 t_short_flows ;;
control_builtin) t_control_builtin ;;
control_example) t_control_example ;;
control_config) t_control_config ;;
*) fail "unknown test $TEST" ;;
esac
echo "PASS [$TEST]"
