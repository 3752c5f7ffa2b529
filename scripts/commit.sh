#!/bin/sh
# commit.sh MESSAGE PATH... - commit only the given paths, retrying while
# another process holds the git index lock (several people share one tree).
set -u
msg=$1; shift
cd "$(git rev-parse --show-toplevel)"
i=0
while [ $i -lt 30 ]; do
    if git add -A -- "$@" && git commit -q -m "$msg" -- "$@"; then
        git log --oneline -1
        exit 0
    fi
    [ -e .git/index.lock ] || exit 1
    i=$((i + 1)); sleep 1
done
echo "commit.sh: index stayed locked" >&2
exit 1
