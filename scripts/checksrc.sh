#!/bin/sh
# checksrc.sh [ROOT] - nectar's small style checker (after curl's checksrc).
#   1. banned calls anywhere in C sources: strcpy strcat sprintf vsprintf
#      gets strtok atoi atol (use snprintf, strtok_r, strtol ...);
#   2. raw malloc/calloc/realloc/free/strdup under src/ outside
#      src/common/alloc.c: use nectar_malloc & co so tests can inject
#      failures.  A buffer a library allocated may be freed with its own
#      free() on a line marked `checksrc: allow`;
#   3. __APPLE__ / __linux__ only in platform backend files (names with
#      apple, xpc, linux, or backend_) and in a module's front (src/M/M.c,
#      src/M/M_int.h), which may pick the backend with one #if chain;
#      callers use capability bits.
# Prints each offence as file:line: reason; exits 1 if there was any.
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
bad=0
files=$(git ls-files '*.c' '*.h' 2>/dev/null)
for f in $files; do
    out=$(grep -nE '(^|[^_a-zA-Z0-9.>])(strcpy|strcat|sprintf|vsprintf|gets|strtok|atoi|atol)[[:space:]]*\(' "$f" |
          grep -v 'checksrc: allow')
    if [ -n "$out" ]; then
        echo "$out" | sed "s|^|$f:|; s|$| <- banned call|"
        bad=1
    fi
    case "$f" in
    src/common/alloc.c) ;;
    src/*)
        out=$(grep -nE '(^|[^_a-zA-Z0-9.>])(malloc|calloc|realloc|free|strdup|strndup)[[:space:]]*\(' "$f" |
              grep -v 'checksrc: allow')
        if [ -n "$out" ]; then
            echo "$out" | sed "s|^|$f:|; s|$| <- raw allocation (use nectar_*)|"
            bad=1
        fi
        ;;
    esac
    dir=$(basename "$(dirname "$f")")
    case "$(basename "$f")" in
    *apple* | *xpc* | *linux* | backend_* | "$dir.c" | "${dir}_int.h") ;;
    *)
        out=$(grep -nE '__APPLE__|__linux__' "$f" | grep -v 'checksrc: allow')
        if [ -n "$out" ]; then
            echo "$out" | sed "s|^|$f:|; s|$| <- platform #ifdef outside a backend file|"
            bad=1
        fi
        ;;
    esac
done
exit $bad
