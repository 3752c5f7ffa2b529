#!/usr/bin/env python3
"""tcp_echo.py - asyncio TCP echo server on every IPv4/IPv6 address.
usage: tcp_echo.py PORT"""
import asyncio
import socket
import sys


async def handle(reader, writer):
    try:
        while True:
            b = await reader.read(65536)
            if not b:
                break
            writer.write(b)
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def main():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(sys.argv[1])))
    s.listen(4096)
    srv = await asyncio.start_server(handle, sock=s, backlog=4096)
    async with srv:
        await srv.serve_forever()


asyncio.run(main())
