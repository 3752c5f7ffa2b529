#!/usr/bin/python3
"""e2e.py - end-to-end tests of the example application through nectar-sim
with real clients (curl, openssl s_client, socat, python websockets).

Each test starts its own upstream servers (python http.server over TLS with
a CA generated here, nghttpd for HTTP/2, a websockets server, TCP and UDP
echo servers) and one nectar-sim per upstream, whose engine config selects
the example ("app": "example") with the MITM CA given as PEM.  Clients reach
the upstream through the sim by name (curl --resolve), so the SNI is the
upstream's name and the example mints a leaf for it.

usage: e2e.py TEST --sim PATH/nectar-sim      (exit 77: skipped)
       e2e.py pki DIR            certificates for netns_e2e.sh
       e2e.py serve DIR PORT     the HTTPS test site (for netns_e2e.sh)
       e2e.py udp-echo PORT      a UDP echo server
"""
import argparse
import asyncio
import datetime
import gzip
import hashlib
import ipaddress
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "upstream.test"
EXCLUDED = "excluded.test"
BADGE_ID = b'id="nectar-proxy-badge"'
PAGE = (b"<!doctype html><html><head><title>t</title></head>"
        b"<body class=\"main\"><p>hello from upstream</p></body></html>")


def skip(why):
    if os.environ.get("CI") == "true":
        print("FAIL (CI): " + why)
        sys.exit(1)
    print("SKIP: " + why)
    sys.exit(77)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- certificates -----------------------------------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                         "nectar e2e"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(_name(cn))
            .issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                           critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False,
                                         True, True, False, False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca_cert, ca_key, names):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(_name(names[0]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names] +
                [x509.IPAddress(ipaddress.ip_address(a))
                 for a in ("127.0.0.1", "::1")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def pem_cert(c):
    return c.public_bytes(serialization.Encoding.PEM).decode()


def pem_key(k):
    return k.private_bytes(serialization.Encoding.PEM,
                           serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()


class Pki:
    """An upstream CA with one leaf for the test names, and a MITM CA."""

    def __init__(self, tmp):
        self.tmp = tmp
        up_ca, up_key = make_ca("e2e upstream ca")
        leaf, leaf_key = make_leaf(up_ca, up_key,
                                   [HOST, EXCLUDED, "*." + EXCLUDED])
        mitm, mitm_key = make_ca("e2e mitm ca")
        self.upstream_ca = self._write("upstream-ca.pem", pem_cert(up_ca))
        self.leaf = self._write("leaf.pem", pem_cert(leaf))
        self.leaf_key = self._write("leaf.key", pem_key(leaf_key))
        self.mitm_ca = self._write("mitm-ca.pem", pem_cert(mitm))
        self.mitm_cert_pem = pem_cert(mitm)
        self.mitm_key_pem = pem_key(mitm_key)

    def _write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def server_ctx(self, alpn=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.leaf, self.leaf_key)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx


# ---- upstream servers ---------------------------------------------------------

def pattern(n):
    """n deterministic bytes (fast: a repeated 1 MiB block)."""
    block = hashlib.sha256(b"nectar").digest() * (1 << 15)
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send(self, code, ctype, body, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self):
        path = self.path.split("?")[0]
        if path == "/page.html":
            return self._send(200, "text/html; charset=utf-8", PAGE)
        if path == "/gz.html":
            return self._send(200, "text/html", gzip.compress(PAGE),
                              [("Content-Encoding", "gzip")])
        if path == "/nobody.html":
            return self._send(200, "text/html", b"<html><p>no body</p></html>")
        if path == "/plain.txt":
            return self._send(200, "text/plain", b"<body>not html</body>")
        if path == "/headers":
            seen = self.headers.get_all("x-nectar-observed") or []
            return self._send(200, "application/json",
                              json.dumps(seen).encode())
        if path == "/big":
            n = int(self.path.split("n=")[1])
            return self._send(200, "application/octet-stream", pattern(n))
        self._send(404, "text/plain", b"nope")

    def do_GET(self):
        self._route()

    def do_HEAD(self):
        self._route()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        h = hashlib.sha256()
        left = n
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        body = json.dumps({"len": n - left, "sha256": h.hexdigest()})
        self._send(200, "application/json", body.encode())


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Server6(Server):
    address_family = socket.AF_INET6


def start_https(pki, v6=False):
    srv = (Server6 if v6 else Server)(("::1" if v6 else "127.0.0.1", 0),
                                      Handler)
    ctx = pki.server_ctx(["http/1.1"])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def start_http():
    srv = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def _accept_loop(ls, fn):
    """Serves each connection of listener ls with fn(conn) on a thread."""
    def accept():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=fn, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def start_tcp_echo():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)

    def serve(c):
        with c:
            try:
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    c.sendall(d)
            except OSError:
                pass

    _accept_loop(ls, serve)
    return ls, ls.getsockname()[1]


def start_udp_echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                d, a = s.recvfrom(65536)
            except OSError:
                return
            s.sendto(d, a)

    threading.Thread(target=serve, daemon=True).start()
    return s, s.getsockname()[1]


def _pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _tunnel(c, port):
    u = socket.create_connection(("127.0.0.1", port))
    t = threading.Thread(target=_pipe, args=(u, c), daemon=True)
    t.start()
    _pipe(c, u)
    t.join(30)
    u.close()
    c.close()


def _recv_exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise OSError("eof")
        b += d
    return b


def start_proxy(kind, auth=None):
    """A tiny SOCKS5 (kind "socks5", optional user/password) or HTTP
    CONNECT (kind "connect") proxy; every tunnel goes to 127.0.0.1 on the
    requested port."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)

    def socks(c):
        ver, n = _recv_exact(c, 2)
        methods = _recv_exact(c, n)
        want = 2 if auth else 0
        c.sendall(bytes([5, want if want in methods else 0xff]))
        if auth:
            _recv_exact(c, 1)
            user = _recv_exact(c, _recv_exact(c, 1)[0])
            pw = _recv_exact(c, _recv_exact(c, 1)[0])
            ok = (user.decode(), pw.decode()) == auth
            c.sendall(bytes([1, 0 if ok else 1]))
            if not ok:
                return c.close()
        ver, cmd, rsv, atyp = _recv_exact(c, 4)
        if atyp == 1:
            _recv_exact(c, 4)
        elif atyp == 4:
            _recv_exact(c, 16)
        else:
            _recv_exact(c, _recv_exact(c, 1)[0])
        port = int.from_bytes(_recv_exact(c, 2), "big")
        c.sendall(bytes([5, 0, 0, 1, 127, 0, 0, 1]) + port.to_bytes(2, "big"))
        _tunnel(c, port)

    def connect(c):
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.recv(4096)
            if not d:
                return c.close()
            head += d
        port = int(head.split(b" ")[1].rsplit(b":", 1)[1])
        c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _tunnel(c, port)

    _accept_loop(ls, socks if kind == "socks5" else connect)
    return ls, ls.getsockname()[1]


# ---- the sim --------------------------------------------------------------------

class Sim:
    def __init__(self, sim_path, tmp, target_port, cfg, udp=False, v6=False):
        path = os.path.join(tmp, "cfg-%d.json" % target_port)
        with open(path, "w") as f:
            json.dump(cfg, f)
        lo = "[::1]" if v6 else "127.0.0.1"
        args = [sim_path, "--listen", lo + ":0", "--target",
                "%s:%d" % (lo, target_port), "--config", path]
        if udp:
            args += ["--udp"]
        env = dict(os.environ, NECTAR_LOG=os.environ.get("NECTAR_LOG",
                                                            "info"))
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env, text=True)
        line = self.p.stdout.readline()
        m = re.search(r"port (\d+)", line)
        if not m:
            err = self.p.stderr.read() if self.p.poll() is not None else ""
            raise AssertionError("nectar-sim did not start: %r %s" % (line,
                                                                      err))
        self.port = int(m.group(1))
        self.lines = []
        self.err = []
        threading.Thread(target=self._pump, args=(self.p.stdout, self.lines),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr, self.err),
                         daemon=True).start()

    @staticmethod
    def _pump(f, out):
        for line in f:
            out.append(line.rstrip("\n"))

    def flows(self, n, timeout=10):
        """Waits for n flow report lines and returns them."""
        end = time.time() + timeout
        while time.time() < end:
            got = [l for l in self.lines if l.startswith("flow ")]
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError("only %d flow lines: %s\n%s" % (
            len(got), "\n".join(self.lines), "\n".join(self.err[-30:])))

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def example_cfg(pki, **extra):
    cfg = {"app": "example", "ca_cert_pem": pki.mitm_cert_pem,
           "ca_key_pem": pki.mitm_key_pem, "upstream_ca_file": pki.upstream_ca,
           "exclude_domains": ["*." + EXCLUDED], "peek_duration_s": 1.0}
    cfg.update(extra)
    return cfg


def curl(args, timeout=120):
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout)] + args,
                       capture_output=True, timeout=timeout + 10)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def resolve(port, name=HOST):
    return ["--resolve", "%s:%d:127.0.0.1" % (name, port)]


def url(port, path, name=HOST, scheme="https"):
    return "%s://%s:%d%s" % (scheme, name, port, path)


# ---- tests ----------------------------------------------------------------------

def t_badge(env):
    pki, sim = env.pki, env.https_sim()
    ca = ["--cacert", pki.mitm_ca] + resolve(sim.port)
    rc, body, err = curl(ca + ["-D", "-", url(sim.port, "/page.html")])
    check(rc == 0, "curl failed: " + err)
    head, _, html = body.partition(b"\r\n\r\n")
    check(html.count(BADGE_ID) == 1, "badge once: %r" % html)
    check(html.index(BADGE_ID) > html.index(b"<body"), "after <body>")
    check(b"proxied by nectar" in html, "label")
    check(head.lower().count(b"x-nectar-observed: seen-by-") == 1,
          "response observed header once: %r" % head)
    check(b"etag" not in head.lower(), "validators dropped")
    # gzip: decompressed, badged, re-compressed.
    rc, html, err = curl(ca + ["--compressed", url(sim.port, "/gz.html")])
    check(rc == 0 and html.count(BADGE_ID) == 1, "gzip badge: %r" % html)
    # HEAD, non-HTML and no <body>: unchanged.
    rc, head, err = curl(ca + ["-I", url(sim.port, "/page.html")])
    check(rc == 0 and b"200" in head, "HEAD: " + err)
    rc, txt, err = curl(ca + [url(sim.port, "/plain.txt")])
    check(txt == b"<body>not html</body>", "non-HTML untouched: %r" % txt)
    rc, nob, err = curl(ca + [url(sim.port, "/nobody.html")])
    check(nob == b"<html><p>no body</p></html>", "no body: %r" % nob)
    # The request header reaches the upstream exactly once.
    rc, seen, err = curl(ca + [url(sim.port, "/headers")])
    check(len(json.loads(seen)) == 1, "request header once: %r" % seen)
    rc, seen, err = curl(ca + ["-H", "x-nectar-observed: mine",
                               url(sim.port, "/headers")])
    check(json.loads(seen) == ["mine"], "kept when present: %r" % seen)
    flows = sim.flows(7)
    check(all("intercept" in f and "promoted" not in f for f in flows),
          "intercepted, not promoted: %s" % flows)


def t_excluded(env):
    """An excluded host is not intercepted: the client sees the real
    certificate, the flow is promoted, and 8 MiB arrive byte-exact."""
    pki, sim = env.pki, env.https_sim()
    n = 8 << 20
    rc, body, err = curl(["--cacert", pki.upstream_ca] +
                         resolve(sim.port, "www." + EXCLUDED) +
                         [url(sim.port, "/big?n=%d" % n, "www." + EXCLUDED)])
    check(rc == 0, "curl to excluded host: " + err)
    check(body == pattern(n), "byte-exact through promote")
    flows = sim.flows(1)
    check("+promoted" in flows[0], "promoted: %s" % flows)
    # The same for plain HTTP with an excluded Host.
    srv, port = start_http()
    sim2 = env.sim(port, example_cfg(pki))
    rc, body, err = curl(resolve(sim2.port, EXCLUDED) +
                         [url(sim2.port, "/page.html", EXCLUDED, "http")])
    check(rc == 0 and body == PAGE, "plain excluded: %r %s" % (body, err))
    check("+promoted" in sim2.flows(1)[0], "plain promoted")
    srv.shutdown()


def t_big(env):
    """64 MiB down and up through interception, byte-exact."""
    pki, sim = env.pki, env.https_sim()
    ca = ["--cacert", pki.mitm_ca] + resolve(sim.port)
    n = 64 << 20
    rc, body, err = curl(ca + [url(sim.port, "/big?n=%d" % n)])
    check(rc == 0, "download: " + err)
    check(len(body) == n and body == pattern(n), "download byte-exact")
    path = os.path.join(env.tmp, "up.bin")
    with open(path, "wb") as f:
        f.write(pattern(n))
    rc, out, err = curl(ca + ["--data-binary", "@" + path, "-H",
                              "Content-Type: application/octet-stream",
                              url(sim.port, "/upload")])
    check(rc == 0, "upload: " + err)
    got = json.loads(out)
    check(got["len"] == n, "upload length %s" % got)
    check(got["sha256"] == hashlib.sha256(pattern(n)).hexdigest(),
          "upload byte-exact")


def t_reject(env):
    """A client that rejects the minted certificate; the next flow to that
    host is promoted (and then trusts the real certificate)."""
    pki, sim = env.pki, env.https_sim()
    args = ["--cacert", pki.upstream_ca] + resolve(sim.port)
    rc, _, err = curl(args + [url(sim.port, "/page.html")])
    check(rc != 0, "first flow must fail (minted cert not trusted)")
    rc, body, err = curl(args + [url(sim.port, "/page.html")])
    check(rc == 0 and body == PAGE, "second flow promoted: " + err)
    flows = sim.flows(2)
    check("+promoted" in flows[1], "promoted: %s" % flows)


def t_upstream_untrusted(env):
    """Without upstream_ca_file the upstream fails verification: the app
    gets a TLS alert, never a downgrade."""
    pki = env.pki
    srv, port = start_https(pki)
    cfg = example_cfg(pki)
    del cfg["upstream_ca_file"]
    sim = env.sim(port, cfg)
    rc, _, err = curl(["--cacert", pki.mitm_ca] + resolve(sim.port) +
                      [url(sim.port, "/page.html")])
    check(rc == 35, "alert expected (curl 35), got %d: %s" % (rc, err))
    check("alert" in err or "handshake failure" in err, err)
    srv.shutdown()


def t_s_client(env):
    pki, sim = env.pki, env.https_sim()
    req = "GET /page.html HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
    r = subprocess.run(["openssl", "s_client", "-connect",
                        "127.0.0.1:%d" % sim.port, "-servername", HOST,
                        "-CAfile", pki.mitm_ca, "-verify_return_error",
                        "-verify_hostname", HOST, "-ign_eof", "-quiet"],
                       input=(req % HOST).encode(), capture_output=True,
                       timeout=30)
    check(r.returncode == 0, "s_client: %s" % r.stderr.decode())
    check(r.stdout.count(BADGE_ID) == 1, "badge via s_client")


def t_raw_tcp(env):
    """Unknown bytes are relayed and the flow promoted, byte-exact."""
    ls, port = start_tcp_echo()
    sim = env.sim(port, example_cfg(env.pki))
    data = os.urandom(1 << 20)
    data = b"\x00\x01binary" + data
    s = socket.create_connection(("127.0.0.1", sim.port))
    got = bytearray()

    def reader():
        while True:
            d = s.recv(65536)
            if not d:
                return
            got.extend(d)

    t = threading.Thread(target=reader)
    t.start()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    t.join(30)
    s.close()
    check(bytes(got) == data, "echo byte-exact (%d of %d)" % (len(got),
                                                              len(data)))
    check("+promoted" in sim.flows(1)[0], "promoted")
    # A silent client: after the peek timeout the flow is promoted too.
    s = socket.create_connection(("127.0.0.1", sim.port))
    time.sleep(1.3)
    s.sendall(b"late")
    s.settimeout(10)
    check(s.recv(16) == b"late", "late bytes echoed")
    s.close()
    check("+promoted" in sim.flows(2)[1], "silent flow promoted")


def t_h2(env):
    """16 concurrent HTTP/2 streams on one intercepted connection (ALPN h2
    mirrored from an nghttpd upstream)."""
    if shutil.which("nghttpd") is None:
        skip("nghttpd not installed (package nghttp2-server)")
    pki = env.pki
    docs = os.path.join(env.tmp, "docs")
    os.makedirs(docs, exist_ok=True)
    for i in range(16):
        with open(os.path.join(docs, "f%d.bin" % i), "wb") as f:
            f.write(pattern(100000 + i))
    with open(os.path.join(docs, "index.html"), "wb") as f:
        f.write(PAGE)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = subprocess.Popen(["nghttpd", "--htdocs=" + docs, "-a", "127.0.0.1",
                          str(port), pki.leaf_key, pki.leaf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env.procs.append(d)
    time.sleep(0.3)
    sim = env.sim(port, example_cfg(pki))
    args = ["--http2", "--parallel", "--parallel-max", "16", "--cacert",
            pki.mitm_ca] + resolve(sim.port)
    outs = []
    for i in range(16):
        out = os.path.join(env.tmp, "o%d" % i)
        outs.append(out)
        args += ["-o", out, "-w", "%{http_version} %{num_connects}\\n",
                 url(sim.port, "/f%d.bin" % i)]
    rc, out, err = curl(args)
    check(rc == 0, "curl h2: " + err)
    lines = out.decode().split()
    check(lines[0::2] == ["2"] * 16, "all h2: %s" % lines)
    check(sum(int(x) for x in lines[1::2]) == 1, "one connection: %s" % lines)
    for i, o in enumerate(outs):
        with open(o, "rb") as f:
            check(f.read() == pattern(100000 + i), "stream %d exact" % i)
    rc, html, err = curl(["--http2", "--cacert", pki.mitm_ca] +
                         resolve(sim.port) + [url(sim.port, "/index.html")])
    check(rc == 0 and html.count(BADGE_ID) == 1, "h2 badge: %r" % html)
    check(len(sim.flows(2)) == 2, "two flows")


def t_websocket(env):
    import websockets

    pki = env.pki

    async def echo(ws, path=None):
        async for msg in ws:
            await ws.send(msg)

    async def run():
        server = await websockets.serve(echo, "127.0.0.1", 0,
                                        ssl=pki.server_ctx(["http/1.1"]))
        port = server.sockets[0].getsockname()[1]
        sim = env.sim(port, example_cfg(pki))
        ctx = ssl.create_default_context(cafile=pki.mitm_ca)
        async with websockets.connect("wss://%s:%d/" % (HOST, sim.port),
                                      ssl=ctx, host="127.0.0.1",
                                      port=sim.port,
                                      server_hostname=HOST) as ws:
            await ws.send("text message")
            check(await ws.recv() == "text message", "text")
            blob = os.urandom(200000)
            await ws.send(blob)
            check(await ws.recv() == blob, "binary")
            pong = await ws.ping(b"p")
            await asyncio.wait_for(pong, 5)
            await ws.close(code=1000, reason="done")
            check(ws.close_code == 1000, "close code %s" % ws.close_code)
        server.close()
        await server.wait_closed()
        flows = sim.flows(1)
        check("intercept" in flows[0] and "promoted" not in flows[0],
              "websocket intercepted: %s" % flows)

    asyncio.run(run())


def t_udp(env):
    """UDP round trips through the example's relay, many peers."""
    es, port = start_udp_echo()
    sim = env.sim(port, example_cfg(env.pki), udp=True)
    socks = []
    for i in range(32):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(5)
        socks.append(c)
    for rnd in range(5):
        for i, c in enumerate(socks):
            c.sendto(b"peer %d round %d" % (i, rnd), ("127.0.0.1", sim.port))
        for i, c in enumerate(socks):
            d, _ = c.recvfrom(2048)
            check(d == b"peer %d round %d" % (i, rnd), "udp echo %r" % d)
    # socat as a client too.
    if shutil.which("socat"):
        r = subprocess.run(["socat", "-t", "2", "-",
                            "UDP:127.0.0.1:%d" % sim.port],
                           input=b"via socat\n", capture_output=True,
                           timeout=20)
        check(r.stdout == b"via socat\n", "socat: %r" % r.stdout)
    for c in socks:
        c.close()
    # Per-endpoint block and per-port passthrough overrides.
    blocked = env.sim(port, example_cfg(env.pki, udp_blocked_endpoints=[
        "127.0.0.1:%d" % port]), udp=True)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(1.0)
    c.sendto(b"blocked?", ("127.0.0.1", blocked.port))
    try:
        c.recvfrom(2048)
        check(False, "a blocked endpoint answered")
    except socket.timeout:
        pass
    c.close()
    check("blocked" in blocked.flows(1)[0], "blocked: %s" % blocked.lines)
    passed = env.sim(port, example_cfg(env.pki, udp_passthrough_ports=[port]),
                     udp=True)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.sendto(b"pass", ("127.0.0.1", passed.port))
    c.close()
    # (whether the host then serves a passthrough datagram is its business)
    check("passthrough" in passed.flows(1)[0], "passthrough: %s" % passed.lines)


def t_admission(env):
    """Over the per app+host limit a flow is passed through, not blocked
    (the sim has no bundle id, so the global limit is what trips)."""
    ls, port = start_tcp_echo()
    sim = env.sim(port, example_cfg(env.pki, admission_global_limit=2,
                                    peek_duration_s=5.0))
    held = [socket.create_connection(("127.0.0.1", sim.port))
            for _ in range(2)]
    time.sleep(0.2)
    s = socket.create_connection(("127.0.0.1", sim.port))
    s.sendall(b"x")
    s.settimeout(5)
    check(s.recv(1) == b"x", "third flow served")
    s.close()
    flows = sim.flows(1)
    check("passthrough" in flows[0], "third flow passthrough: %s" % flows)
    for h in held:
        h.close()


def t_socks5(env):
    """An app speaking SOCKS5 to its proxy: the handshake is relayed
    message by message, then the TLS inside the tunnel is intercepted."""
    pki = env.pki
    srv, up_port = start_https(pki)
    env.servers.append(srv)
    for auth in (None, ("user", "secret")):
        ls, port = start_proxy("socks5", auth)
        sim = env.sim(port, example_cfg(pki))
        proxy = "socks5h://%s127.0.0.1:%d" % (
            "%s:%s@" % auth if auth else "", sim.port)
        rc, html, err = curl(["--cacert", pki.mitm_ca, "-x", proxy,
                              url(up_port, "/page.html")])
        check(rc == 0, "curl via socks5 (auth %s): %s" % (auth, err))
        check(html.count(BADGE_ID) == 1, "badge inside the tunnel: %r" % html)
        check("promoted" not in sim.flows(1)[0], "not promoted")
        ls.close()


def t_connect(env):
    """CONNECT through an HTTP proxy: the tunnel's TLS is intercepted one
    level deep."""
    pki = env.pki
    srv, up_port = start_https(pki)
    env.servers.append(srv)
    ls, port = start_proxy("connect")
    sim = env.sim(port, example_cfg(pki))
    rc, html, err = curl(["--cacert", pki.mitm_ca, "-p", "-x",
                          "http://127.0.0.1:%d" % sim.port,
                          url(up_port, "/page.html")])
    check(rc == 0, "curl via CONNECT: " + err)
    check(html.count(BADGE_ID) == 1, "badge inside the tunnel: %r" % html)
    ls.close()


def t_hijack(env):
    """The hijacked host is served by the example itself: status page,
    /ping and the CA for download, which then verifies intercepted
    sites."""
    pki, sim = env.pki, env.https_sim()
    hj = "nectar.localhost"
    rc, pem, err = curl(["-k"] + resolve(sim.port, hj) +
                        [url(sim.port, "/data/root.ca.pem", hj)])
    check(rc == 0, "CA download: " + err)
    check(pem.decode().strip() == pki.mitm_cert_pem.strip(), "CA PEM: %r" % pem)
    exported = os.path.join(env.tmp, "exported.pem")
    with open(exported, "wb") as f:
        f.write(pem)
    rc, body, err = curl(["--cacert", exported, "-w", "%{http_code}"] +
                         resolve(sim.port, hj) + [url(sim.port, "/ping", hj)])
    check(rc == 0 and body.endswith(b"200"), "ping: %r %s" % (body, err))
    rc, html, err = curl(["--cacert", exported] + resolve(sim.port) +
                         [url(sim.port, "/page.html")])
    check(rc == 0 and html.count(BADGE_ID) == 1, "exported CA trusted")


def t_concurrent(env):
    """48 clients at once, each on its own TLS connection through the
    interception (the flows spread over the engine's loops)."""
    pki, sim = env.pki, env.https_sim()
    args = ["curl", "-sS", "--max-time", "60", "--cacert", pki.mitm_ca] + \
        resolve(sim.port) + [url(sim.port, "/page.html")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(48)]
    for p in procs:
        out, err = p.communicate(timeout=90)
        check(p.returncode == 0, "curl: %s" % err.decode())
        check(out.count(BADGE_ID) == 1, "badge: %r" % out)
    check(len(sim.flows(48)) == 48, "48 flows")


def t_upstream_closes(env):
    """A server that accepts and closes at once, or speaks no TLS: the app
    gets a TLS failure, the sim keeps serving."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    port = ls.getsockname()[1]

    def rude():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            c.recv(1)
            c.sendall(b"HTTP/1.0 400 no tls here\r\n\r\n")
            c.close()

    threading.Thread(target=rude, daemon=True).start()
    sim = env.sim(port, example_cfg(env.pki))
    for _ in range(3):
        rc, _, err = curl(["--cacert", env.pki.mitm_ca] + resolve(sim.port) +
                          [url(sim.port, "/page.html")], timeout=20)
        check(rc in (35, 56), "TLS failure expected, got %d: %s" % (rc, err))
    check(len(sim.flows(3)) == 3, "three flows ended")
    check(sim.p.poll() is None, "nectar-sim still running")
    ls.close()


def t_no_sni(env):
    """Clients that send no SNI (IP literals, IPv4 and IPv6): the leaf is
    minted for the remote address (an IP subjectAltName) and the server is
    verified against that address."""
    pki = env.pki
    for v6 in (False, True):
        srv, port = start_https(pki, v6)
        env.servers.append(srv)
        sim = env.sim(port, example_cfg(pki), v6=v6)
        host = "[::1]" if v6 else "127.0.0.1"
        rc, html, err = curl(["-g", "--cacert", pki.mitm_ca,
                              "https://%s:%d/page.html" % (host, sim.port)])
        check(rc == 0, "curl %s: %s" % (host, err))
        check(html.count(BADGE_ID) == 1, "badge over %s" % host)


def t_server_first(env):
    """A protocol where the server speaks first (an SMTP-like banner): the
    banner reaches the app at once, not after the peek timeout, and the
    flow is promoted with both sides byte-exact."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    port = ls.getsockname()[1]

    def serve():
        c, _ = ls.accept()
        c.sendall(b"220 banner.test ESMTP ready\r\n")
        data = b""
        while not data.endswith(b"QUIT\r\n"):
            d = c.recv(65536)
            if not d:
                break
            data += d
        c.sendall(b"221 bye, got %d bytes\r\n" % len(data))
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    sim = env.sim(port, example_cfg(env.pki, peek_duration_s=5.0))
    s = socket.create_connection(("127.0.0.1", sim.port))
    s.settimeout(10)
    t0 = time.time()
    banner = s.recv(100)
    waited = time.time() - t0
    check(banner == b"220 banner.test ESMTP ready\r\n", "banner %r" % banner)
    check(waited < 2.0, "banner after %.2f s (peek is 5 s)" % waited)
    body = b"EHLO client\r\n" + os.urandom(100000) + b"QUIT\r\n"
    s.sendall(body)
    reply = b""
    while True:
        d = s.recv(1000)
        if not d:
            break
        reply += d
    s.close()
    check(reply == b"221 bye, got %d bytes\r\n" % len(body), "reply %r" % reply)
    check("+promoted" in sim.flows(1)[0], "promoted: %s" % sim.lines)
    ls.close()


def _proc_stats(pid):
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, fds


def t_soak(env):
    """Many intercepted flows one after another (label long): descriptors
    come back and memory stays flat once the caches are warm."""
    pki, sim = env.pki, env.https_sim()
    ca = ["--cacert", pki.mitm_ca] + resolve(sim.port)
    rounds = int(os.environ.get("SOAK_ROUNDS", "600"))

    def batch(n):
        for i in range(0, n, 20):
            args = []
            for _ in range(20):
                args += [url(sim.port, "/page.html"), "-o", "/dev/null"]
            rc, _, err = curl(ca + ["-H", "Connection: close"] + args)
            check(rc == 0, "curl: " + err)

    batch(100)  # warm up: leaf, sessions, allocator
    time.sleep(0.5)
    rss0, fds0 = _proc_stats(sim.p.pid)
    batch(rounds)
    time.sleep(1.0)
    rss1, fds1 = _proc_stats(sim.p.pid)
    print("soak: %d flows, rss %d -> %d KiB, fds %d -> %d" % (
        rounds, rss0, rss1, fds0, fds1))
    check(fds1 <= fds0 + 2, "descriptors leak: %d -> %d" % (fds0, fds1))
    check(rss1 <= rss0 + 8192, "memory grows: %d -> %d KiB" % (rss0, rss1))


class Env:
    def __init__(self, sim_path):
        self.sim_path = sim_path
        self.tmp = tempfile.mkdtemp(prefix="nectar-e2e-")
        self.pki = Pki(self.tmp)
        self.sims = []
        self.procs = []
        self.servers = []

    def sim(self, port, cfg, udp=False, v6=False):
        s = Sim(self.sim_path, self.tmp, port, cfg, udp, v6)
        self.sims.append(s)
        return s

    def https_sim(self):
        srv, port = start_https(self.pki)
        self.servers.append(srv)
        return self.sim(port, example_cfg(self.pki))

    def close(self):
        for s in self.sims:
            s.stop()
        for p in self.procs:
            p.terminate()
            p.wait()
        for s in self.servers:
            s.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)


TESTS = {
    "badge": t_badge, "excluded": t_excluded, "big": t_big,
    "reject": t_reject, "upstream_untrusted": t_upstream_untrusted,
    "s_client": t_s_client, "raw_tcp": t_raw_tcp, "h2": t_h2,
    "websocket": t_websocket, "udp": t_udp, "admission": t_admission,
    "socks5": t_socks5, "connect": t_connect, "hijack": t_hijack,
    "concurrent": t_concurrent, "upstream_closes": t_upstream_closes,
    "no_sni": t_no_sni, "server_first": t_server_first,
    "soak": t_soak,
}


def helper_mode(argv):
    """The pieces netns_e2e.sh runs inside namespaces."""
    if argv[0] == "pki":
        pki = Pki(argv[1])
        with open(os.path.join(argv[1], "mitm-ca.key"), "w") as f:
            f.write(pki.mitm_key_pem)
        return 0
    if argv[0] == "serve":
        pki = Pki.__new__(Pki)
        pki.leaf = os.path.join(argv[1], "leaf.pem")
        pki.leaf_key = os.path.join(argv[1], "leaf.key")
        srv = Server(("0.0.0.0", int(argv[2])), Handler)
        srv.socket = pki.server_ctx(["http/1.1"]).wrap_socket(
            srv.socket, server_side=True)
        srv.serve_forever()
    if argv[0] == "udp-echo":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", int(argv[1])))
        while True:
            d, a = s.recvfrom(65536)
            s.sendto(d, a)
    if argv[0] == "pattern":
        sys.stdout.buffer.write(pattern(int(argv[1])))
        return 0
    return 2


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("pki", "serve", "udp-echo",
                                             "pattern"):
        return helper_mode(sys.argv[1:])
    ap = argparse.ArgumentParser()
    ap.add_argument("test", choices=sorted(TESTS))
    ap.add_argument("--sim", required=True)
    a = ap.parse_args()
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            skip(tool + " not installed")
    env = Env(a.sim)
    try:
        TESTS[a.test](env)
    except AssertionError as e:
        print("FAIL %s: %s" % (a.test, e))
        for s in env.sims:
            print("--- nectar-sim stderr (tail):")
            print("\n".join(s.err[-40:]))
        return 1
    finally:
        env.close()
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
