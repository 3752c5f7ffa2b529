#!/usr/bin/env python3
"""tcp_load.py - TCP load against an echo server.

  tcp_load.py concurrent HOST PORT N   hold N connections open at once, then
                                      echo 1 KiB on every one
  tcp_load.py short HOST PORT N [PAR] N connect/echo/close flows, PAR at a
                                      time (default 32)
Prints "ok ..." or exits 1."""
import asyncio
import sys

PAYLOAD = bytes(range(256)) * 4


async def echo_once(reader, writer):
    writer.write(PAYLOAD)
    await writer.drain()
    got = await reader.readexactly(len(PAYLOAD))
    if got != PAYLOAD:
        raise RuntimeError("echo mismatch")


async def concurrent(host, port, n):
    conns = []
    for _ in range(n):
        conns.append(await asyncio.open_connection(host, port))
    await asyncio.gather(*(echo_once(r, w) for r, w in conns))
    for _, w in conns:
        w.close()
    print("ok %d concurrent" % n)


async def short(host, port, n, par):
    done = 0

    async def worker(count):
        nonlocal done
        for _ in range(count):
            r, w = await asyncio.open_connection(host, port)
            await echo_once(r, w)
            w.close()
            await w.wait_closed()
            done += 1

    per = [n // par + (1 if i < n % par else 0) for i in range(par)]
    await asyncio.gather(*(worker(c) for c in per))
    print("ok %d short" % done)


def main():
    mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "concurrent":
        asyncio.run(concurrent(host, port, n))
    else:
        par = int(sys.argv[5]) if len(sys.argv) > 5 else 32
        asyncio.run(short(host, port, n, par))


if __name__ == "__main__":
    main()
