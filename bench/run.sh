#!/bin/sh
# bench/run.sh - `make bench`: run every benchmark suite that exists
# (bench/sim, and bench/linux, bench/ipc, bench/example when present).
set -u
here=$(cd "$(dirname "$0")" && pwd)
rc=0
for suite in sim linux ipc example; do
    if [ -x "$here/$suite/run.sh" ]; then
        echo "=== bench/$suite"
        "$here/$suite/run.sh" || rc=1
        echo
    fi
done
exit $rc
