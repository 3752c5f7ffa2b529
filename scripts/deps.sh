#!/bin/sh
# deps.sh - install the Debian packages nectar builds and tests with.
# Idempotent: installs only what is missing.  Needs root (CI runs as root).
set -eu
PKGS="build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev llvm
libuv1-dev libssl-dev openssl libjansson-dev libcbor-dev libnftables-dev nftables
libtss2-dev swtpm swtpm-tools tpm2-tools libnghttp2-dev libhttp-parser-dev
zlib1g-dev iproute2 curl socat iperf3 haproxy valgrind python3
python3-cryptography python3-websockets nghttp2-client nghttp2-server procps psmisc kmod"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: missing packages:$missing (run as root to install)" >&2
        exit 1
    fi
    echo "deps.sh: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || true
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
