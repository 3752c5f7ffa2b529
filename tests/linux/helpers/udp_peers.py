#!/usr/bin/env python3
"""udp_peers.py - N client sockets (distinct source ports) each send M
datagrams to HOST:PORT and check every echo.  Prints "ok N" or exits 1.
usage: udp_peers.py HOST PORT N M [WAIT_SECONDS]"""
import select
import socket
import sys
import time

host, port, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
socks = []
for i in range(n):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.connect((host, port))
    socks.append(s)
want = {}
for r in range(m):
    for i, s in enumerate(socks):
        msg = ("peer%d-round%d" % (i, r)).encode()
        want.setdefault(s.fileno(), set()).add(b"echo:" + msg)
        s.send(msg)
    time.sleep(0.01)
deadline = time.time() + (float(sys.argv[5]) if len(sys.argv) > 5 else 10)
left = sum(len(v) for v in want.values())
byfd = {s.fileno(): s for s in socks}
while left > 0 and time.time() < deadline:
    r, _, _ = select.select(list(byfd.values()), [], [], 0.5)
    for s in r:
        try:
            data = s.recv(65535)
        except OSError:
            continue
        got = want[s.fileno()]
        if data in got:
            got.discard(data)
            left -= 1
if left:
    print("missing %d echoes" % left)
    sys.exit(1)
print("ok %d" % n)
