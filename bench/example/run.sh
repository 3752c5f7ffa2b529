#!/bin/bash
# bench/example/run.sh - the example application's TLS interception
# against a direct connection, same client, same upstream, same run:
#   1. HTTPS requests per second (h2load, keep-alive: HTTP/1.1 and HTTP/2)
#      against haproxy answering a small response;
#   2. MiB/s of one large HTTP/2 download (curl) from nghttpd;
#   3. added latency of a fresh TLS connection: curl's time to first byte
#      over new connections (median of N), direct and through the MITM
#      (leaf already minted: the cache is warm after the first flow).
# Env: BUILD_DIR (default build), REQS (default 20000), CONNS (default 8),
#      BIG_MIB (default 256), HANDSHAKES (default 50), ROUNDS (default 3).
# Throughput figures are the best of ROUNDS runs, direct and MITM runs
# alternating, so a busy machine hurts both sides alike.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${BUILD_DIR:-$top/build}" 2>/dev/null && pwd || echo "${BUILD_DIR:-$top/build}")
sim=$build/apps/nectar-sim/nectar-sim
reqs=${REQS:-20000}
conns=${CONNS:-8}
big_mib=${BIG_MIB:-256}
handshakes=${HANDSHAKES:-50}
rounds=${ROUNDS:-3}
host=bench.localhost
[ -x "$sim" ] || { echo "bench/example: $sim not built" >&2; exit 1; }
for t in h2load haproxy nghttpd curl openssl; do
    command -v $t >/dev/null || { echo "bench/example: $t missing (scripts/deps.sh)" >&2; exit 1; }
done
work=$(mktemp -d)
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench/example: port $1 never opened" >&2
    exit 1
}

# ---- certificates: an upstream CA with a leaf, and the MITM CA ------------
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout up-ca.key -out up-ca.pem -days 2 -subj "/CN=bench upstream ca" \
    2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout leaf.key -out leaf.csr -subj "/CN=$host" 2>/dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$host" > ext
openssl x509 -req -in leaf.csr -CA up-ca.pem -CAkey up-ca.key \
    -CAcreateserial -out leaf.pem -days 2 -extfile ext 2>/dev/null
cat leaf.pem leaf.key > leaf-combined.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout mitm.key -out mitm.pem -days 2 -subj "/CN=bench mitm ca" \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null

# ---- upstreams --------------------------------------------------------------
hap_port=$(free_port)
cat > haproxy.cfg <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$hap_port ssl crt $work/leaf-combined.pem alpn h2,http/1.1
    http-request return status 200 content-type text/plain string "hello from haproxy"
EOF
haproxy -f haproxy.cfg -db >/dev/null 2>&1 &
pids="$pids $!"
mkdir docs
head -c $((big_mib << 20)) /dev/zero | tr '\0' 'x' > docs/big.bin
ngh_port=$(free_port)
nghttpd --htdocs=docs -a 127.0.0.1 "$ngh_port" leaf.key leaf.pem >/dev/null 2>&1 &
pids="$pids $!"
wwww_port=$(free_port)
(cd docs && exec openssl s_server -quiet -WWW -accept "127.0.0.1:$wwww_port" \
    -cert ../leaf.pem -key ../leaf.key) >/dev/null 2>&1 &
pids="$pids $!"
wait_port "$hap_port"
wait_port "$ngh_port"
wait_port "$wwww_port"

start_sim() { # target_port -> prints the listen port
    python3 - "$work" "$1" <<'EOF' > "$work/cfg-$1.json"
import json, sys
w, port = sys.argv[1], sys.argv[2]
print(json.dumps({"app": "example", "ca_cert_pem": open(w + "/mitm.pem").read(),
                  "ca_key_pem": open(w + "/mitm.key").read(),
                  "upstream_ca_file": w + "/up-ca.pem"}))
EOF
    "$sim" --listen 127.0.0.1:0 --target "127.0.0.1:$1" --quiet \
        --config "$work/cfg-$1.json" > "$work/sim-$1.out" 2>"$work/sim-$1.err" &
    pids="$pids $!"
    for _ in $(seq 1 200); do
        p=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$work/sim-$1.out")
        [ -n "$p" ] && { echo "$p"; return; }
        sleep 0.05
    done
    echo "bench/example: nectar-sim did not start" >&2
    cat "$work/sim-$1.err" >&2
    exit 1
}
sim_hap=$(start_sim "$hap_port")
sim_ngh=$(start_sim "$ngh_port")
sim_www=$(start_sim "$wwww_port")

best() { # values... -> the largest
    printf '%s\n' "$@" | sort -g | tail -1
}
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (a/b if b else 0))" "$1" "$2"; }

# ---- 1. requests per second --------------------------------------------------
rps() { # port proto-flag -> req/s
    h2load -n "$reqs" -c "$conns" -m 1 $2 --connect-to="127.0.0.1:$1" \
        "https://$host:$1/" 2>/dev/null |
        sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p'
}
h2load_ok() { # sanity: all requests 2xx through the MITM
    h2load -n 100 -c 1 $2 --connect-to="127.0.0.1:$1" "https://$host:$1/" \
        2>/dev/null | grep -q "100 succeeded"
}
echo "HTTPS requests/s (h2load -n $reqs -c $conns, keep-alive, small response; best of $rounds)"
printf '  %-10s %12s %12s %8s\n' proto direct mitm ratio
for proto in h1 h2; do
    flag=""; [ $proto = h1 ] && flag="--h1"
    h2load_ok "$sim_hap" "$flag" || echo "  warning: $proto through the MITM did not answer 100/100"
    ds=""; ms=""
    for _ in $(seq 1 "$rounds"); do
        ds="$ds $(rps "$hap_port" "$flag")"; ms="$ms $(rps "$sim_hap" "$flag")"
    done
    d=$(best $ds); m=$(best $ms)
    printf '  %-10s %12s %12s %8s\n' "$proto" "$d" "$m" "$(ratio "$m" "$d")"
done

# ---- 2. throughput ------------------------------------------------------------
mibs() { # port proto-flag -> MiB/s of one download
    curl -s -o /dev/null $2 -k --resolve "$host:$1:127.0.0.1" \
        -w '%{speed_download}\n' "https://$host:$1/big.bin" |
        python3 -c 'import sys; print("%.1f" % (float(sys.stdin.read())/1048576))'
}
echo "Download MiB/s (one $big_mib MiB body, curl; h2 from nghttpd, h1 from openssl s_server -WWW; best of $rounds)"
for pair in "h2 $ngh_port $sim_ngh --http2" "h1 $wwww_port $sim_www --http1.1"; do
    set -- $pair
    ds=""; ms=""
    for _ in $(seq 1 "$rounds"); do
        ds="$ds $(mibs "$2" "$4")"; ms="$ms $(mibs "$3" "$4")"
    done
    d=$(best $ds); m=$(best $ms)
    printf '  %-10s %12s %12s %8s\n' "$1" "$d" "$m" "$(ratio "$m" "$d")"
done

# ---- 3. handshake latency ----------------------------------------------------------
# Direct and MITM runs alternate so load on the machine hits both alike.
one_ttfb() { # port cafile -> seconds to the first byte on a new connection
    curl -s -o /dev/null --cacert "$2" --resolve "$host:$1:127.0.0.1" \
        -w '%{time_starttransfer}\n' "https://$host:$1/"
}
for _ in $(seq 1 "$handshakes"); do
    one_ttfb "$hap_port" up-ca.pem >> ttfb-direct
    one_ttfb "$sim_hap" mitm.pem >> ttfb-mitm
done
stats() {
    python3 -c 'import sys, statistics; v=sorted(float(x)*1000 for x in open(sys.argv[1]).read().split()); print("%.2f %.2f" % (statistics.median(v), v[int(len(v)*0.9)-1]))' "$1"
}
echo "Time to first byte over a new TLS connection (curl, $handshakes runs, ms)"
read -r dm d90 <<< "$(stats ttfb-direct)"
read -r mm m90 <<< "$(stats ttfb-mitm)"
printf '  %-10s %12s %12s %12s\n' "" direct mitm added
printf '  %-10s %12s %12s %12s\n' median "$dm" "$mm" "$(python3 -c "print('%.2f' % ($mm-$dm))")"
printf '  %-10s %12s %12s %12s\n' p90 "$d90" "$m90" "$(python3 -c "print('%.2f' % ($m90-$d90))")"
