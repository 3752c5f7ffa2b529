#!/bin/bash
# netns_e2e.sh - the example application under the Linux host (`nectar
# run`, nftables TPROXY) in network namespaces, with real clients:
#
#   client ns  198.18.1.2 --- router ns 198.18.1.1 | 198.18.2.1 --- server ns 198.18.2.2
#                             (nectar captures what r0 forwards)      HTTPS :443, UDP echo :5300
#
# 198.18.0.0/15 (RFC 2544) is used because the example passes private
# (RFC 1918) destinations through by design.
#   netns_e2e.sh NECTAR_BIN E2E_PY TEST      TEST: badge | excluded | reject | udp
# Exit 0 pass, 1 fail, 77 skip (not root / tool missing, outside CI).
set -u
NECTAR=$1
E2E=$2
TEST=$3
PY=/usr/bin/python3

skip() {
    if [ "${CI:-}" = "true" ]; then echo "FAIL [$TEST]: $* (CI=true)"; exit 1; fi
    echo "SKIP [$TEST]: $*"; exit 77
}
[ "$(id -u)" = 0 ] || skip "needs root"
for t in ip nft curl; do command -v $t >/dev/null || skip "needs $t"; done

ID="nx$$"
C=$ID-c R=$ID-r S=$ID-s
W=$(mktemp -d /tmp/nectar-example-netns.XXXXXX)
NPID=""
cleanup() {
    [ -n "$NPID" ] && kill "$NPID" 2>/dev/null && wait "$NPID" 2>/dev/null
    for n in $C $R $S; do
        pids=$(ip netns pids "$n" 2>/dev/null)
        [ -n "$pids" ] && kill $pids 2>/dev/null
        ip netns del "$n" 2>/dev/null
    done
    rm -rf "$W"
}
trap cleanup EXIT
fail() {
    echo "FAIL [$TEST]: $*"
    echo "---- nectar log (tail)"; tail -n 30 "$W/nectar.log" 2>/dev/null
    exit 1
}
in_c() { ip netns exec "$C" "$@"; }
in_r() { ip netns exec "$R" "$@"; }
in_s() { ip netns exec "$S" "$@"; }
wait_for() { # tenths, command...
    local n=$1; shift
    while [ "$n" -gt 0 ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; n=$((n - 1)); done
    return 1
}

ip netns add $C && ip netns add $R && ip netns add $S || fail "netns"
ip link add c0 netns $C type veth peer name r0 netns $R || fail "veth"
ip link add s0 netns $S type veth peer name r1 netns $R || fail "veth"
in_c ip addr add 198.18.1.2/24 dev c0
in_r ip addr add 198.18.1.1/24 dev r0
in_r ip addr add 198.18.2.1/24 dev r1
in_s ip addr add 198.18.2.2/24 dev s0
for n in $C $R $S; do ip -n $n link set lo up; done
in_c ip link set c0 up; in_r ip link set r0 up; in_r ip link set r1 up; in_s ip link set s0 up
in_c ip route add default via 198.18.1.1
in_s ip route add default via 198.18.2.1
in_r sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0

$PY "$E2E" pki "$W" || fail "pki"
in_s $PY "$E2E" serve "$W" 443 >"$W/site.log" 2>&1 &
in_s $PY "$E2E" udp-echo 5300 >/dev/null 2>&1 &
$PY - "$W" <<'PYEOF' || fail "config"
import json, sys
w = sys.argv[1]
cfg = {"app": "example", "ca_cert_pem": open(w + "/mitm-ca.pem").read(),
       "ca_key_pem": open(w + "/mitm-ca.key").read(),
       "upstream_ca_file": w + "/upstream-ca.pem",
       "exclude_domains": ["*.excluded.test"], "peek_duration_s": 1.0,
       "host": {"interfaces": ["r0"], "tcp_port": 15001, "udp_port": 15001}}
json.dump(cfg, open(w + "/cfg.json", "w"))
PYEOF
wait_for 100 in_c curl -sk -o /dev/null --resolve upstream.test:443:198.18.2.2 \
    https://upstream.test/page.html || fail "site did not start"
# Not through in_r: a backgrounded function is a subshell, and $! must be
# nectar itself (ip netns exec execs its command).
ip netns exec "$R" env NECTAR_LOG=info "$NECTAR" run --config "$W/cfg.json" \
    >"$W/nectar.log" 2>&1 &
NPID=$!
wait_for 100 grep -q "running:" "$W/nectar.log" || fail "nectar did not start"

ccurl() { in_c curl -sS --max-time 30 "$@"; }
res() { echo "--resolve $1:443:198.18.2.2"; }

case $TEST in
badge)
    out=$(ccurl --cacert "$W/mitm-ca.pem" $(res upstream.test) \
        https://upstream.test/page.html) || fail "curl through nectar"
    [ "$(grep -o 'id="nectar-proxy-badge"' <<<"$out" | wc -l)" = 1 ] ||
        fail "badge missing: $out"
    wait_for 50 grep -q "flow id=.* tcp intercept app=.* dst=198.18.2.2:443" "$W/nectar.log" ||
        fail "no intercepted flow logged"
    ;;
excluded)
    n=$((8 << 20))
    ccurl --cacert "$W/upstream-ca.pem" $(res www.excluded.test) \
        "https://www.excluded.test/big?n=$n" -o "$W/got" || fail "curl excluded"
    want=$($PY "$E2E" pattern $n | sha256sum)
    got=$(sha256sum <"$W/got")
    [ "$want" = "$got" ] || fail "excluded download not byte-exact"
    wait_for 50 grep -q "tcp intercept promoted app=.* dst=198.18.2.2:443 .*forward=splice" "$W/nectar.log" ||
        fail "excluded flow not promoted"
    ;;
reject)
    ccurl --cacert "$W/upstream-ca.pem" $(res upstream.test) \
        https://upstream.test/page.html -o /dev/null 2>/dev/null &&
        fail "the minted certificate must be rejected"
    ccurl --cacert "$W/upstream-ca.pem" $(res upstream.test) \
        https://upstream.test/page.html -o /dev/null || fail "second flow not promoted"
    wait_for 50 grep -q "tcp intercept promoted" "$W/nectar.log" || fail "no promote logged"
    ;;
udp)
    for i in $(seq 1 8); do
        got=$(echo "udp $i" | in_c timeout 5 socat -t 2 - UDP:198.18.2.2:5300)
        [ "$got" = "udp $i" ] || fail "udp round trip $i: '$got'"
    done
    wait_for 50 grep -q "flow udp" "$W/nectar.log" || true
    ;;
*)
    fail "unknown test"
    ;;
esac
kill -TERM "$NPID"; wait "$NPID"; rc=$?; NPID=""
[ $rc = 0 ] || fail "nectar exited with $rc"
echo "1 passed, 0 failed"
