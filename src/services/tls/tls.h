/*
 * tls.h - TLS as an svc_stream_t layered over another svc_stream_t.
 *
 * OpenSSL runs over two memory BIOs: ciphertext read from the inner stream
 * is written into the read BIO, and whatever OpenSSL puts into the write
 * BIO is written to the inner stream.  Nothing blocks, and back-pressure is
 * kept in both directions:
 *  - the inner stream is read only while the handshake runs or while the
 *    user of this stream is reading (read_stop stops the inner reads once
 *    OpenSSL's buffered plaintext is handed over);
 *  - a plaintext write completes when the inner stream has accepted the
 *    ciphertext it produced, so a relay above waits for the layer below.
 *
 * The same code serves both roles: the server side towards the app (with a
 * minted leaf certificate) and the client side towards the remote.
 *
 * Threading: everything on the loop of the inner stream, as stream.h.
 */
#ifndef NECTAR_SERVICES_TLS_TLS_H
#define NECTAR_SERVICES_TLS_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>

#include "services/stream.h"

/* Why a handshake failed (svc_tls_failure). */
typedef enum svc_tls_fail {
    SVC_TLS_OK = 0,
    /* The peer sent an alert saying it does not trust our certificate
     * (unknown_ca, bad_certificate, certificate_unknown, ...). */
    SVC_TLS_PEER_REJECTED_CERT,
    /* The peer closed right after our first flight (server hello and
     * certificate): how many clients reject a certificate silently. */
    SVC_TLS_EOF_AFTER_FLIGHT,
    /* We did not trust the peer's certificate (client role). */
    SVC_TLS_VERIFY_FAILED,
    /* The inner stream ended or failed before the handshake finished. */
    SVC_TLS_IO,
    /* Any other TLS protocol error. */
    SVC_TLS_PROTOCOL,
} svc_tls_fail_t;

/* status 0: established; otherwise a NECTAR_* code and svc_tls_failure()
 * tells why.  The stream stays valid until the caller closes it. */
typedef void (*svc_tls_handshake_cb)(svc_stream_t *tls, int status, void *data);

/*
 * Layer TLS over inner.  `ssl` must be fresh and already set to connect
 * or accept state (SSL_set_connect_state / SSL_set_accept_state), with
 * SNI, ALPN, verification and certificates configured.  Takes ownership
 * of both inner and ssl, also on failure (NULL = out of memory; both are
 * freed).  Nothing happens until svc_tls_handshake.
 */
svc_stream_t *svc_tls_new(svc_stream_t *inner, SSL *ssl);

/*
 * Run the handshake; cb runs once on the loop, never inside this call.
 * Plaintext reads and writes are allowed only after cb reported 0 (before
 * that they return NECTAR_ESTATE).  Returns 0 or NECTAR_ESTATE when called
 * twice.
 */
int svc_tls_handshake(svc_stream_t *tls, svc_tls_handshake_cb cb, void *data);

/* The SSL object (borrowed; valid until the stream is closed). */
SSL *svc_tls_ssl(svc_stream_t *tls);

/* After a failed handshake: the class and a short description (borrowed,
 * valid until close; "" when none). */
svc_tls_fail_t svc_tls_failure(const svc_stream_t *tls);
const char *svc_tls_failure_text(const svc_stream_t *tls);

/* True while the handshake runs and our first flight has gone out (a
 * peer vanishing now most likely rejected our certificate). */
bool svc_tls_awaiting_peer_verdict(const svc_stream_t *tls);

/* Ciphertext bytes read from / written to the inner stream so far. */
uint64_t svc_tls_bytes_in(const svc_stream_t *tls);
uint64_t svc_tls_bytes_out(const svc_stream_t *tls);

#endif
