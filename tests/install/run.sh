#!/bin/sh
# run.sh BUILD_DIR - install nectar from BUILD_DIR into a temporary prefix,
# build consumer.c with `pkg-config --cflags --libs nectar` only, run it.
set -eu
build=$1
here=$(cd "$(dirname "$0")" && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/nectar/ne_abi.h lib/libnectar.so lib/libnectar.a \
         lib/pkgconfig/nectar.pc bin/nectar; do
    [ -e "$prefix/$f" ] || { echo "install is missing $f" >&2; exit 1; }
done
# The engine must not export the Swift package's own symbol.
if nm -D --defined-only "$prefix/lib/libnectar.so" |
        grep -q rama_apple_audit_token_to_pid; then
    echo "libnectar.so exports rama_apple_audit_token_to_pid" >&2; exit 1
fi
n=$(nm -D --defined-only "$prefix/lib/libnectar.so" |
    grep -cE ' T (rama_transparent_proxy_|rama_owned_bytes_free)')
[ "$n" -eq 32 ] || { echo "expected 32 rama_* symbols, found $n" >&2; exit 1; }
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046
cc -std=c17 -Wall -Wextra -Werror -o "$prefix/consumer" "$here/consumer.c" \
    $(pkg-config --cflags --libs nectar) -lpthread -Wl,-rpath,"$prefix/lib"
"$prefix/consumer"
