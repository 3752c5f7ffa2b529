/*
 * socks5.h - SOCKS5 message framing (RFC 1928, RFC 1929) for relaying a
 * SOCKS5 handshake message by message between an app and its proxy, so
 * the tunnelled bytes after it can be inspected.
 *
 * Each function looks at the start of buf and returns the length of one
 * complete message, 0 when more bytes are needed, or -1 when the bytes
 * are not that message.  Pure; any thread.
 */
#ifndef NECTAR_EXAMPLE_SOCKS5_H
#define NECTAR_EXAMPLE_SOCKS5_H

#include <stddef.h>
#include <stdint.h>

#define SOCKS5_CMD_CONNECT 1

/* Method selection (server): VER=5 METHOD. */
long socks5_method_reply(const uint8_t *buf, size_t n);
/* Username/password request (client): VER=1 ULEN UNAME PLEN PASSWD. */
long socks5_auth_request(const uint8_t *buf, size_t n);
/* Username/password reply (server): VER=1 STATUS. */
long socks5_auth_reply(const uint8_t *buf, size_t n);
/* Request (client): VER=5 CMD RSV ATYP DST.ADDR DST.PORT; host (IP text
 * or domain, NUL-terminated) and port and cmd are written on success. */
long socks5_request(const uint8_t *buf, size_t n, uint8_t *cmd, char *host,
                    size_t host_cap, uint16_t *port);
/* Reply (server): VER=5 REP RSV ATYP BND.ADDR BND.PORT; *rep on success. */
long socks5_reply(const uint8_t *buf, size_t n, uint8_t *rep);

#endif
