/*
 * mitm.h - TLS interception of one flow: terminate the app's TLS with a
 * leaf minted from the MITM CA, originate TLS to the real server, and hand
 * both plaintext streams to the caller (the HTTP relays).
 *
 * Order of events for a flow whose ClientHello was peeked:
 *  1. TLS to the server first, offering the ALPN list the app offered and
 *     its SNI; the server certificate is verified against the system trust
 *     store (plus `upstream_ca_file`) and the host name, unless
 *     `upstream_insecure`.
 *  2. Then the app's handshake, answered with a leaf for the SNI (or the
 *     remote address when there is none) and with the ALPN protocol the
 *     server chose (mirrored, so h2 on one side means h2 on the other).
 *  A failed server verification ends the app's handshake with a
 *  handshake_failure alert and a log line: never a silent downgrade.  An
 *  app that rejects the minted certificate (alert unknown_ca,
 *  bad_certificate, ... or EOF right after our first flight) puts the host
 *  into the trust-failure cache of the tls_mitm_t, shared by all flows:
 *  later flows to that host are not intercepted (tls_mitm_bypassed).
 *
 * Threading: a tls_mitm_t is shared, reference counted and immutable except
 * for its caches (which lock); any thread.  A tls_mitm_flow_t lives on one
 * flow loop.
 */
#ifndef NECTAR_SERVICES_TLS_MITM_H
#define NECTAR_SERVICES_TLS_MITM_H

#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/error.h"
#include "services/peek/clienthello.h"
#include "services/stream.h"
#include "services/tls/keylog.h"
#include "services/tls/mint.h"

typedef struct tls_mitm tls_mitm_t;
typedef struct tls_mitm_flow tls_mitm_flow_t;

typedef struct tls_mitm_opts {
    /* Trust for server verification: `trust` when set (borrowed, a
     * reference is taken; build it once with tls_trust_store_new and share
     * it across rotations), else the system store plus upstream_ca_file. */
    X509_STORE *trust;
    const char *upstream_ca_file; /* extra trust anchors (PEM); NULL none */
    bool upstream_insecure;       /* no verification of the server (tests) */
    size_t trust_cache_size;      /* 4096 */
    uint64_t trust_cache_ttl_ms;  /* 300000 (5 minutes) */
} tls_mitm_opts_t;

void tls_mitm_opts_defaults(tls_mitm_opts_t *o);

/* The system trust store plus ca_file (may be NULL).  Returns 0 and *out
 * (free with X509_STORE_free), or NECTAR_ECONFIG / NECTAR_ENOMEM.  Reads
 * the store's files: call it once, not per flow.  Any thread. */
int tls_trust_store_new(const char *ca_file, X509_STORE **out,
                        nectar_error_t *err);

/* Builds the shared state over ca (a reference is taken) and keylog
 * (borrowed, may be NULL; must outlive the tls_mitm_t).  Returns 0 or
 * NECTAR_ECONFIG (unreadable upstream_ca_file) / NECTAR_ECRYPTO /
 * NECTAR_ENOMEM with *err filled. */
int tls_mitm_new(tls_ca_t *ca, tls_keylog_t *keylog, const tls_mitm_opts_t *o,
                 tls_mitm_t **out, nectar_error_t *err);
tls_mitm_t *tls_mitm_ref(tls_mitm_t *m);
void tls_mitm_unref(tls_mitm_t *m);
tls_ca_t *tls_mitm_ca(tls_mitm_t *m);

/* True when host is in the trust-failure cache (the app rejected our
 * certificate for it recently). */
bool tls_mitm_bypassed(tls_mitm_t *m, const char *host);
/* Put host into / drop it from the trust-failure cache. */
void tls_mitm_mark_rejected(tls_mitm_t *m, const char *host);
void tls_mitm_forget(tls_mitm_t *m, const char *host);

/*
 * Result of one interception.  status 0: `client` and `server` are the
 * established plaintext streams (ownership passes to the callee) and alpn
 * is the negotiated protocol ("h2", "http/1.1", or "" for none; borrowed
 * for the call).  Otherwise both are NULL, the original streams are
 * closed, and status is NECTAR_EPEER (the app rejected our certificate),
 * NECTAR_EAUTH (the server failed verification; the app got an alert), or
 * another NECTAR_* code.  Runs once on the loop, never inside start.
 */
typedef void (*tls_mitm_done_cb)(int status, svc_stream_t *client,
                                 svc_stream_t *server, const char *alpn,
                                 void *data);

/*
 * Start intercepting.  `client` must replay the peeked ClientHello (an
 * svc_stream_prefix); both streams are owned from here on, also on error.
 * `fallback_host` names the server when the hello has no SNI (the remote
 * address).  server == NULL terminates the app's TLS only (a host served
 * locally): no upstream handshake, ALPN http/1.1 when offered, and the
 * callback's server is NULL.  Returns NULL on ENOMEM (streams closed, cb
 * never runs).
 */
tls_mitm_flow_t *
tls_mitm_flow_start(tls_mitm_t *m, svc_stream_t *client, svc_stream_t *server,
                    const peek_tls_hello_t *hello, const char *fallback_host,
                    uint64_t flow_id, tls_mitm_done_cb cb, void *data);

/* Abort: closes everything; cb does not run.  A cancel while the app's
 * handshake waits for its verdict on our certificate counts as a
 * rejection (the host tears a flow down when the app resets it). */
void tls_mitm_flow_cancel(tls_mitm_flow_t *f);

#endif
