#!/bin/bash
# demo.sh - the example application in one run: an HTTPS site on loopback,
# nectar-sim in front of it running the example ("app": "example"), the
# MITM CA exported from the hijacked host nectar.localhost, then curl
# fetching the site through nectar with that CA trusted: the page comes
# back with the badge inserted and the x-nectar-observed header.
# BUILD_DIR selects the build (default: build).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${BUILD_DIR:-$top/build}" && pwd)
sim=$build/apps/nectar-sim/nectar-sim
[ -x "$sim" ] || { echo "demo: $sim not built (run make build)" >&2; exit 1; }
work=$(mktemp -d)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
cd "$work"
site=shop.demo.test

# An upstream CA and a certificate for the site, as a real site would have.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout up-ca.key -out up-ca.pem -days 2 -subj "/CN=demo upstream CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout site.key -out site.csr -subj "/CN=$site" 2>/dev/null
printf 'subjectAltName=DNS:%s\n' "$site" > ext
openssl x509 -req -in site.csr -CA up-ca.pem -CAkey up-ca.key -CAcreateserial \
    -out site.pem -days 2 -extfile ext 2>/dev/null
cat > index.html <<'EOF'
<!doctype html><html><head><title>demo shop</title></head>
<body><h1>Welcome to the demo shop</h1></body></html>
EOF
python3 - <<'EOF' > site.log 2>&1 &
import http.server, ssl, sys
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("site.pem", "site.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("port", srv.server_address[1], flush=True)
srv.serve_forever()
EOF
pids="$pids $!"
for _ in $(seq 1 100); do grep -q port site.log && break; sleep 0.05; done
site_port=$(sed -n 's/^port \([0-9]*\)/\1/p' site.log)

# The example: CA kept in a keychain in the work directory.
cat > engine.json <<EOF
{"app": "example", "keychain_dir": "$work/keychain",
 "upstream_ca_file": "$work/up-ca.pem", "html_badge_label": "proxied by nectar"}
EOF
"$sim" --listen 127.0.0.1:0 --target "127.0.0.1:$site_port" --config engine.json \
    > sim.log 2>&1 &
pids="$pids $!"
for _ in $(seq 1 100); do grep -q "listening on port" sim.log && break; sleep 0.05; done
port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' sim.log)
echo "demo: site https://$site on 127.0.0.1:$site_port, nectar-sim (example) on 127.0.0.1:$port"

curl -sS -k --resolve "nectar.localhost:$port:127.0.0.1" \
    "https://nectar.localhost:$port/data/root.ca.pem" -o ca.pem
echo "demo: exported the MITM CA: $(openssl x509 -in ca.pem -noout -subject)"

curl -sS --cacert ca.pem --resolve "$site:$port:127.0.0.1" -D headers.txt \
    "https://$site:$port/index.html" -o page.html
echo "demo: curl verified the site with the exported CA; issuer seen by curl:"
curl -sS -v --cacert ca.pem --resolve "$site:$port:127.0.0.1" -o /dev/null \
    "https://$site:$port/index.html" 2>&1 | sed -n 's/^\*  issuer: /  /p'
echo "demo: response header:"
grep -i '^x-nectar-observed' headers.txt | sed 's/^/  /'
echo "demo: page body:"
sed 's/^/  /' page.html
if [ "$(grep -o 'id="nectar-proxy-badge"' page.html | wc -l)" = 1 ]; then
    echo "demo: OK, the badge was inserted once, right after <body>"
else
    echo "demo: FAILED, no badge" >&2
    tail -20 sim.log >&2
    exit 1
fi
