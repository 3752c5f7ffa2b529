#!/bin/sh
# demo.sh - `make demo-sim`: run nectar-sim in front of a local HTTP
# server, download a file through it with curl (one intercepted flow per
# request, relayed by the engine's built-in handler), check it byte for
# byte, print each flow's decision and byte counts, clean up.
# BUILD_DIR selects the build (default: build, as `make demo-sim` builds it).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${BUILD_DIR:-$top/build}/apps/nectar-sim/nectar-sim
[ -x "$bin" ] || { echo "demo: $bin not built (run make build)" >&2; exit 1; }
work=$(mktemp -d)
http_pid=""; sim_pid=""
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    [ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Wait until file $1 has a line matching $2 (5 s at most).
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 100 ] && { echo "demo: timeout on $1" >&2; cat "$1" >&2; exit 1; }
        sleep 0.05
    done
}

head -c 20000000 /dev/urandom > "$work/download.bin"
(cd "$work" && exec python3 -u -m http.server 0 --bind 127.0.0.1 > "$work/http.log" 2>&1) &
http_pid=$!
wait_for "$work/http.log" "port"
http_port=$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$work/http.log" | head -1)

printf '{}' > "$work/engine.json"
"$bin" --listen 127.0.0.1:0 --target "127.0.0.1:$http_port" \
    --config "$work/engine.json" > "$work/sim.log" 2>&1 &
sim_pid=$!
wait_for "$work/sim.log" "listening on port"
sim_port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$work/sim.log")

echo "demo: http server on 127.0.0.1:$http_port, nectar-sim on 127.0.0.1:$sim_port"
curl -sS -o "$work/got.bin" -w 'demo: curl %{size_download} bytes at %{speed_download} B/s\n' \
    "http://127.0.0.1:$sim_port/download.bin"
curl -sS -o /dev/null "http://127.0.0.1:$sim_port/"
want=$(sha256sum < "$work/download.bin" | cut -d' ' -f1)
got=$(sha256sum < "$work/got.bin" | cut -d' ' -f1)
kill -INT "$sim_pid"; wait "$sim_pid" || true; sim_pid=""
echo "demo: flows seen by nectar-sim:"
grep -E '^(flow|nectar-sim:)' "$work/sim.log" | sed 's/^/  /'
if [ "$want" = "$got" ]; then
    echo "demo: OK, sha256 $got matches"
else
    echo "demo: FAILED, sha256 $got != $want" >&2
    exit 1
fi
