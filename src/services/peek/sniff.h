/*
 * sniff.h - pure recognisers for the other protocols the peek service
 * tells apart: a SOCKS5 greeting and an HTTP/1.x request head.
 *
 * Threading: pure functions, callable from any thread.
 */
#ifndef NECTAR_SERVICES_PEEK_SNIFF_H
#define NECTAR_SERVICES_PEEK_SNIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/peek/clienthello.h"

/*
 * A SOCKS5 client greeting is VER=5, NMETHODS>=1, then NMETHODS bytes, and
 * nothing after it (the client waits for the method selection).  PEEK_YES
 * when buf is exactly one greeting; *greeting_len (if not NULL) = 2+n.
 */
peek_verdict_t peek_socks5_greeting(const uint8_t *buf, size_t len,
                                    size_t *greeting_len);

/* The request head is read up to this many bytes; a longer head is judged
 * on its request line alone. */
#define PEEK_HTTP_MAX_HEAD (16 * 1024)

typedef struct peek_http_req {
    char method[17];
    char host[256];     /* lower-case, no port; "" when unknown */
    int version_minor;  /* 0 or 1 */
    bool head_complete; /* the blank line ending the head was seen */
    size_t line_len;    /* bytes of the request line incl. its newline */
} peek_http_req_t;

/*
 * Recognise an HTTP/1.0 or 1.1 request: `METHOD SP target SP HTTP/1.x`
 * then CRLF (a bare LF is accepted).  The host comes from the Host header,
 * or from an absolute-form target.  While `final` is false the verdict is
 * PEEK_YES only once the head is complete (or PEEK_HTTP_MAX_HEAD bytes
 * arrived); with `final` (the peek timed out) a complete request line is
 * enough.  HTTP/2 prior knowledge ("PRI * HTTP/2.0") is PEEK_NO.  *out is
 * written only on PEEK_YES.
 */
peek_verdict_t peek_http_parse(const uint8_t *buf, size_t len, bool final,
                               peek_http_req_t *out);

/* Lower-cases host[0..n), drops a ":port" suffix and brackets of an IPv6
 * literal, writes it NUL-terminated to out.  False when it does not fit or
 * has characters a host name cannot have. */
bool peek_host_normalize(const char *host, size_t n, char *out, size_t cap);

#endif
