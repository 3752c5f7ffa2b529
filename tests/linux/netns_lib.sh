# netns_lib.sh - the three-namespace topology shared by the Linux host
# tests (netns_test.sh) and benchmarks (bench/linux/run.sh).  Source it
# after setting C, R and S (namespace names); it defines:
#   topology      create the namespaces, veths, addresses and routes
#   inc/inr/ins   run a command in the client/router/server namespace
#   wait_for N CMD  retry CMD every 0.1 s, N times (stops early when NPID
#                   is set and that process has died)
#
#   client ns  c0 10.77.1.2  fd77:1::2
#        |  veth
#   router ns  r0 10.77.1.1  fd77:1::1   nectar (or haproxy) runs here
#              r1 10.77.2.1  fd77:2::1
#        |  veth
#   server ns  s0 10.77.2.2  fd77:2::2

inc() { ip netns exec "$C" "$@"; }
inr() { ip netns exec "$R" "$@"; }
ins() { ip netns exec "$S" "$@"; }

topology() {
    ip netns add "$C" && ip netns add "$R" && ip netns add "$S" ||
        netns_fail "ip netns add"
    ip link add c0 netns "$C" type veth peer name r0 netns "$R" ||
        netns_fail "veth c0/r0"
    ip link add s0 netns "$S" type veth peer name r1 netns "$R" ||
        netns_fail "veth s0/r1"
    inc ip addr add 10.77.1.2/24 dev c0
    inc ip -6 addr add fd77:1::2/64 dev c0 nodad
    inr ip addr add 10.77.1.1/24 dev r0
    inr ip -6 addr add fd77:1::1/64 dev r0 nodad
    inr ip addr add 10.77.2.1/24 dev r1
    inr ip -6 addr add fd77:2::1/64 dev r1 nodad
    ins ip addr add 10.77.2.2/24 dev s0
    ins ip -6 addr add fd77:2::2/64 dev s0 nodad
    for n in "$C" "$R" "$S"; do
        ip -n "$n" link set lo up
    done
    inc ip link set c0 up
    inr ip link set r0 up
    inr ip link set r1 up
    ins ip link set s0 up
    inc ip route add default via 10.77.1.1
    inc ip -6 route add default via fd77:1::1
    ins ip route add default via 10.77.2.1
    ins ip -6 route add default via fd77:2::1
    inr sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    # Many short flows: every proxied connection also costs the router an
    # ephemeral port (its egress), held in TIME_WAIT for 60 s.
    for n in "$C" "$R"; do
        ip netns exec "$n" sysctl -qw net.ipv4.tcp_tw_reuse=1 \
            net.ipv4.ip_local_port_range="1024 65535"
    done
}


# Wait until `cmd` succeeds (up to $1 tenths of a second).
wait_for() {
    _w=$1
    shift
    while [ "$_w" -gt 0 ]; do
        [ -n "${NPID:-}" ] && ! kill -0 "$NPID" 2>/dev/null && return 1
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
        _w=$((_w - 1))
    done
    return 1
}

netns_fail() {
    if command -v fail >/dev/null 2>&1; then
        fail "$@"
    fi
    echo "netns: $*" >&2
    exit 1
}
