#!/bin/sh
# demo-linux.sh - `make demo`: nectar intercepting real traffic.
#
# Creates three private network namespaces (client, router, server; see
# tests/linux/netns_lib.sh), runs `nectar run` in the router with the config
# embedded below, sends real curl and UDP traffic from the client to servers
# in the server namespace, shows nectar's flow log, and removes everything
# it created (namespaces, processes, temporary files).  Needs root.
# Env: BUILD_DIR (default build; the nectar binary is built if missing).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$top/build}
nectar=$build/apps/nectar/nectar
helpers=$top/tests/linux/helpers

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() {
    echo "demo: $*" >&2
    [ -n "${W:-}" ] && [ -f "$W/nectar.log" ] && tail -n 20 "$W/nectar.log" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (network namespaces and nftables)"
for t in ip nft curl python3 sha256sum; do
    command -v $t >/dev/null 2>&1 || die "needs $t (scripts/deps.sh installs it)"
done
if [ ! -x "$nectar" ]; then
    say "building nectar"
    cmake -S "$top" -B "$build" -G Ninja >/dev/null &&
        cmake --build "$build" --target nectar_bin -j2 || die "build failed"
fi

ID="demo$$"
C="$ID-c"
R="$ID-r"
S="$ID-s"
W=$(mktemp -d /tmp/nectar-demo.XXXXXX)
NPID=""
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
fail() { die "$@"; }
. "$top/tests/linux/netns_lib.sh"

say "namespaces: client $C -> router $R (nectar) -> server $S"
topology

say "servers in $S: HTTP on 8080/8081/8082, UDP echo on 5353"
mkdir -p "$W/www"
cat >"$W/www/index.html" <<'EOF'
<!doctype html><html><head><title>nectar demo</title></head>
<body><h1>Hello from the server namespace</h1></body></html>
EOF
head -c 5M /dev/urandom >"$W/www/big.bin"
for port in 8080 8081 8082; do
    ip netns exec "$S" python3 "$helpers/http_server.py" $port "$W/www" \
        >>"$W/servers.log" 2>&1 &
done
ip netns exec "$S" python3 "$helpers/udp_echo.py" 5353 >>"$W/servers.log" 2>&1 &
wait_for 100 inc curl -sf -o /dev/null http://10.77.2.2:8080/index.html ||
    die "servers did not start"

# The embedded default config: intercept everything, except port 8081
# (passed through, and made sticky in the kernel) and port 8082 (blocked);
# traffic forwarded from the client and traffic of the router itself.
cat >"$W/nectar.json" <<'EOF'
{
  "default_action": "intercept",
  "actions": [
    {"match": {"protocol": "tcp", "remote_port": 8081}, "action": "passthrough"},
    {"match": {"protocol": "tcp", "remote_port": 8082}, "action": "block"}
  ],
  "host": {"interfaces": ["r0"], "capture_local": true, "sticky_passthrough": true}
}
EOF
say "config (engine JSON + host object)"
cat "$W/nectar.json"

say "nectar run --dry-run: the ruleset and routing it installs"
"$nectar" run --config "$W/nectar.json" --dry-run 2>/dev/null

say "starting nectar run in $R"
ip netns exec "$R" env NECTAR_LOG=info "$nectar" run --config "$W/nectar.json" \
    >"$W/nectar.log" 2>&1 &
NPID=$!
wait_for 100 grep -q "running:" "$W/nectar.log" || die "nectar did not start"
grep "running:" "$W/nectar.log"

say "curl http://10.77.2.2:8080/index.html (intercepted)"
inc curl -sS http://10.77.2.2:8080/index.html
say "curl 5 MiB over IPv4 and IPv6 (intercepted), sha256 checked"
want=$(sha256sum "$W/www/big.bin" | cut -d' ' -f1)
for url in http://10.77.2.2:8080/big.bin "http://[fd77:2::2]:8080/big.bin"; do
    inc curl -sSf -o "$W/got" "$url" || die "curl $url"
    got=$(sha256sum "$W/got" | cut -d' ' -f1)
    [ "$got" = "$want" ] && echo "$url: 5 MiB, sha256 matches" ||
        die "$url: bytes differ"
done
say "curl port 8081 twice (passthrough; the second is sticky, in the kernel)"
inc curl -sSf -o /dev/null -w "first:  HTTP %{http_code}, %{size_download} bytes\n" \
    http://10.77.2.2:8081/bytes/100000
inc curl -sSf -o /dev/null -w "second: HTTP %{http_code}, %{size_download} bytes\n" \
    http://10.77.2.2:8081/bytes/100000
echo "sticky set:"
inr nft list set inet nectar sticky4 | grep -E "elements|tcp"
say "curl port 8082 (blocked: reset)"
inc curl -sS -m 5 -o /dev/null http://10.77.2.2:8082/ 2>&1 || true
say "curl from the router namespace itself (local capture, with its process)"
inr curl -sSf -o /dev/null -w "HTTP %{http_code}, %{size_download} bytes\n" \
    http://10.77.2.2:8080/index.html || die "local curl"
say "UDP echo from 8 client ports, IPv4 and IPv6 (intercepted)"
inc python3 "$helpers/udp_peers.py" 10.77.2.2 5353 8 2
inc python3 "$helpers/udp_peers.py" fd77:2::2 5353 8 2

say "stopping nectar (SIGTERM)"
kill -TERM "$NPID"
wait "$NPID" || die "nectar exited with an error"
NPID=""

say "flow log (one line per flow at close: decision, destination, bytes, duration; local flows also name their application when they open)"
grep "linux-host: flow" "$W/nectar.log" | sed 's/^INFO linux-host: //'
grep "linux-host: counters" "$W/nectar.log" | sed 's/^INFO linux-host: //'

say "after exit: no table, rule or route left in $R"
if inr nft list table inet nectar >/dev/null 2>&1 ||
    inr ip rule show | grep -q "fwmark 0x6e63"; then
    die "residue left behind"
fi
echo "nft: no table inet nectar; ip rule: no fwmark rule; table 28259 empty"
say "demo done; removing namespaces and files"
