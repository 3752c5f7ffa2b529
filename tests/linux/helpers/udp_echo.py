#!/usr/bin/env python3
"""udp_echo.py - UDP echo on every IPv4/IPv6 address: each datagram goes
back to its sender prefixed with b"echo:".  usage: udp_echo.py PORT"""
import socket
import sys

s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(b"echo:" + data, peer)
