/*
 * socks5.c - SOCKS5 message framing (see socks5.h).
 */
#include "example/socks5.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

long socks5_method_reply(const uint8_t *buf, size_t n)
{
    if (n >= 1 && buf[0] != 5)
        return -1;
    return n < 2 ? 0 : 2;
}

long socks5_auth_request(const uint8_t *buf, size_t n)
{
    if (n >= 1 && buf[0] != 1)
        return -1;
    if (n < 2)
        return 0;
    size_t ulen = buf[1];
    if (n < 2 + ulen + 1)
        return 0;
    size_t total = 2 + ulen + 1 + buf[2 + ulen];
    return n < total ? 0 : (long)total;
}

long socks5_auth_reply(const uint8_t *buf, size_t n)
{
    if (n >= 1 && buf[0] != 1)
        return -1;
    return n < 2 ? 0 : 2;
}

/* Length of ATYP + address + port at p, 0 for more, -1 for bad. */
static long addr_len(const uint8_t *p, size_t n)
{
    if (n < 1)
        return 0;
    switch (p[0]) {
    case 1:
        return n < 7 ? 0 : 7;
    case 4:
        return n < 19 ? 0 : 19;
    case 3:
        if (n < 2)
            return 0;
        if (p[1] == 0)
            return -1;
        return n < (size_t)(2 + p[1] + 2) ? 0 : 2 + p[1] + 2;
    default:
        return -1;
    }
}

/* The four-byte header (VER, CMD/REP, RSV, ATYP) then the address. */
static long message(const uint8_t *buf, size_t n)
{
    if (n >= 1 && buf[0] != 5)
        return -1;
    if (n >= 3 && buf[2] != 0)
        return -1;
    if (n < 4)
        return 0;
    long a = addr_len(buf + 3, n - 3);
    return a <= 0 ? a : 3 + a;
}

long socks5_request(const uint8_t *buf, size_t n, uint8_t *cmd, char *host,
                    size_t host_cap, uint16_t *port)
{
    long len = message(buf, n);
    if (len <= 0)
        return len;
    const uint8_t *a = buf + 4;
    if (buf[3] == 1) {
        inet_ntop(AF_INET, a, host, (socklen_t)host_cap);
    } else if (buf[3] == 4) {
        inet_ntop(AF_INET6, a, host, (socklen_t)host_cap);
    } else {
        size_t dl = a[0] < host_cap ? a[0] : host_cap - 1;
        memcpy(host, a + 1, dl);
        host[dl] = '\0';
    }
    *cmd = buf[1];
    *port = (uint16_t)((buf[len - 2] << 8) | buf[len - 1]);
    return len;
}

long socks5_reply(const uint8_t *buf, size_t n, uint8_t *rep)
{
    long len = message(buf, n);
    if (len > 0)
        *rep = buf[1];
    return len;
}
