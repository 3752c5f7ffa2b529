#!/bin/sh
# bench/ipc/run.sh - small request/reply calls over nectar IPC (plain and
# through the $selector router) against a raw SOCK_SEQPACKET ping-pong,
# all measured in this run.  Goal: nectar >= 0.7x the raw calls/s.
# Env: BUILD_DIR (default build), SECS per measurement (default 3).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$top/build}
bin=$build/bench/ipc/bench_ipc
[ -x "$bin" ] || { echo "bench/ipc: $bin not built" >&2; exit 1; }
echo "bench/ipc: $(nproc) cpus, $(uname -r), ${SECS:-3} s per mode"
exec "$bin" "${SECS:-3}"
