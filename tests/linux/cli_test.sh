#!/bin/sh
# cli_test.sh - `nectar run` without root: --dry-run prints the ruleset and
# routing and changes nothing; bad configs fail with the path and reason.
#   cli_test.sh NECTAR_BIN
set -u
NECTAR=$1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# expect_error CONFIG_TEXT PATTERN
expect_error() {
    printf '%s' "$1" >"$W/bad.json"
    if "$NECTAR" run --config "$W/bad.json" --dry-run >"$W/out" 2>"$W/err"; then
        fail "config '$1' was accepted"
    fi
    grep -q -- "$2" "$W/err" || fail "error for '$1' lacks '$2': $(cat "$W/err")"
    grep -q -- "$W/bad.json" "$W/err" || fail "error lacks the path: $(cat "$W/err")"
}

cat >"$W/ok.json" <<'JSON'
{"rules": [{"remote_port": 22, "exclude": true}, {}],
 "host": {"tcp_port": 16001, "capture_local": true, "interfaces": ["eth9"]}}
JSON
"$NECTAR" run --config "$W/ok.json" --dry-run >"$W/out" 2>"$W/err" ||
    fail "dry run failed: $(cat "$W/err")"
for want in "table inet nectar {" "tproxy ip to :16001" "tproxy ip6 to :16001" \
    "th dport 22 return" 'iifname != { "eth9" } return' "chain output {" \
    "ip -4 rule add fwmark 0x6e63 lookup 28259" \
    "ip -6 route add local ::/0 dev lo table 28259"; do
    grep -qF -- "$want" "$W/out" || fail "dry run lacks '$want'"
done
# A dry run installs nothing (only checkable where nft can list as root).
if [ "$(id -u)" = 0 ] && command -v nft >/dev/null 2>&1; then
    nft list table inet nectar >/dev/null 2>&1 &&
        echo "note: a table inet nectar exists in this namespace (not ours)"
fi

expect_error '{"host": {"tcp_port": 0}}' "host.tcp_port"
expect_error '{"host": {"colour": 1}}' "host.colour: unknown key"
expect_error '{"host": ' "bad.json:1:"
expect_error '{"default_action": "explode"}' "engine"
"$NECTAR" run --config "$W/missing.json" 2>"$W/err" && fail "missing file accepted"
grep -q "missing.json" "$W/err" || fail "missing-file error lacks the path"
"$NECTAR" run --dry-run >/dev/null 2>&1 && fail "no --config accepted"
"$NECTAR" run --help | grep -q -- "--dry-run" || fail "--help"
echo "PASS"
