/*
 * clienthello.h - a pure parser for the first TLS ClientHello of a flow.
 *
 * The peek service feeds it whatever bytes the app has sent so far; the
 * parser reassembles the handshake message across TLS records (a
 * ClientHello may be split over several records, and records over several
 * reads) and reports the server name (SNI) and the offered ALPN protocols.
 * It never reads past `len`, never allocates more than the capped message
 * size, and answers garbage with PEEK_NO.
 *
 * Threading: pure functions, callable from any thread.
 */
#ifndef NECTAR_SERVICES_PEEK_CLIENTHELLO_H
#define NECTAR_SERVICES_PEEK_CLIENTHELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Verdict of an incremental parser. */
typedef enum peek_verdict {
    PEEK_MORE = 0, /* could still match: feed more bytes */
    PEEK_YES = 1,  /* matched; the result struct is filled */
    PEEK_NO = 2,   /* cannot match, whatever follows */
} peek_verdict_t;

/* Largest ClientHello message accepted (bytes of the handshake body). */
#define PEEK_TLS_MAX_HELLO (64 * 1024)
/* ALPN wire bytes kept (the rest of a longer list is ignored). */
#define PEEK_TLS_MAX_ALPN 256

typedef struct peek_tls_hello {
    bool has_sni;
    char sni[256]; /* lower-case, no trailing dot, NUL-terminated */
    uint16_t legacy_version;
    size_t alpn_len;                 /* bytes in alpn (0: no ALPN extension) */
    uint8_t alpn[PEEK_TLS_MAX_ALPN]; /* wire format: len byte + name, ... */
    bool offers_h2;
    bool offers_http11;
    size_t consumed; /* bytes of records up to the end of the hello */
} peek_tls_hello_t;

/*
 * Parse buf[0..len) as the start of a TLS stream.  Returns PEEK_YES with
 * *out filled once the whole ClientHello has arrived, PEEK_MORE while it
 * may still be a ClientHello, PEEK_NO otherwise (including a hello larger
 * than PEEK_TLS_MAX_HELLO or a malformed one).  *out is written only on
 * PEEK_YES.
 */
peek_verdict_t peek_tls_parse(const uint8_t *buf, size_t len,
                              peek_tls_hello_t *out);

/* True when the ALPN wire list `alpn` (alpn_len bytes) names proto. */
bool peek_alpn_contains(const uint8_t *alpn, size_t alpn_len,
                        const char *proto);

#endif
