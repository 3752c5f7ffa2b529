/*
 * mitm.c - per-flow TLS interception (see mitm.h).
 *
 * Per flow:  UPSTREAM handshake --ok--> CLIENT handshake --ok--> done(0)
 *                              \--fail--> CLIENT handshake refused with an
 *                                         alert --> done(EAUTH/ECRYPTO)
 *            CLIENT handshake --fail--> done(EPEER or ECRYPTO)
 */
#include "services/tls/mitm.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "nectar/log.h"
#include "services/tls/lru.h"
#include "services/tls/tls.h"

#define TAG "tls-mitm"

struct tls_mitm {
    atomic_int refs;
    tls_ca_t *ca;
    SSL_CTX *sctx;       /* towards the app */
    SSL_CTX *cctx;       /* towards the server */
    tls_lru_t *rejected; /* hosts whose app rejected our certificate */
    tls_lru_t *sessions; /* "host@address" -> SSL_SESSION* (resumption) */
};

struct tls_mitm_flow {
    tls_mitm_t *m;
    svc_stream_t *client_raw; /* until wrapped by client_tls */
    svc_stream_t *client_tls;
    svc_stream_t *server_tls;
    char host[256];
    char addr[64];     /* the server's address (fallback_host) */
    bool refuse;       /* answer the app with an alert */
    int refuse_status; /* what done reports then */
    char alpn[64];     /* protocol the server chose, "" none */
    uint64_t flow_id;
    tls_mitm_done_cb cb;
    void *data;
};

void tls_mitm_opts_defaults(tls_mitm_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->trust_cache_size = 4096;
    o->trust_cache_ttl_ms = 300000;
}

/* ---- shared contexts ---------------------------------------------------- */

static int on_client_hello(SSL *ssl, int *al, void *arg)
{
    (void)arg;
    struct tls_mitm_flow *f = SSL_get_app_data(ssl);
    if (f != NULL && f->refuse) {
        *al = SSL_AD_HANDSHAKE_FAILURE;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Mirrors the server's ALPN choice to the app. */
static int on_alpn_select(SSL *ssl, const unsigned char **out,
                          unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg)
{
    (void)arg;
    struct tls_mitm_flow *f = SSL_get_app_data(ssl);
    if (f == NULL || f->alpn[0] == '\0')
        return SSL_TLSEXT_ERR_NOACK;
    size_t want = strlen(f->alpn);
    unsigned int i = 0;
    while (i < inlen) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == want && memcmp(in + i + 1, f->alpn, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* ---- resumption towards servers ---------------------------------------- */

static int ex_index_ctx = -1, ex_index_key = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void free_key(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                     long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    nectar_free(ptr);
}

static void make_indexes(void)
{
    ex_index_ctx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ex_index_key = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_key);
}

static void *session_dup(void *v)
{
    SSL_SESSION_up_ref(v);
    return v;
}

static void session_free(void *v)
{
    SSL_SESSION_free(v);
}

/* A server sent a session (or a TLS 1.3 ticket, maybe after the
 * handshake): keep the latest per server.  Returns 1: we took the
 * reference. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    tls_mitm_t *m = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index_ctx);
    const char *key = SSL_get_ex_data(ssl, ex_index_key);
    if (m == NULL || key == NULL)
        return 0;
    tls_lru_put(m->sessions, key, sess);
    return 1;
}

static int make_server_ctx(tls_mitm_t *m, tls_keylog_t *keylog,
                           nectar_error_t *err)
{
    m->sctx = SSL_CTX_new(TLS_server_method());
    if (m->sctx == NULL)
        return nectar_error_set(err, NECTAR_ECRYPTO, "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(m->sctx, TLS1_2_VERSION);
    /* A renegotiation would run our hello callbacks long after the flow
     * state they read is gone, and nothing here needs one. */
    SSL_CTX_set_options(m->sctx, SSL_OP_NO_RENEGOTIATION);
    /* Idle flows keep no 34 KiB read/write buffers around. */
    SSL_CTX_set_mode(m->sctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_client_hello_cb(m->sctx, on_client_hello, NULL);
    SSL_CTX_set_alpn_select_cb(m->sctx, on_alpn_select, NULL);
    if (keylog != NULL)
        tls_keylog_attach(keylog, m->sctx);
    return 0;
}

int tls_trust_store_new(const char *ca_file, X509_STORE **out,
                        nectar_error_t *err)
{
    X509_STORE *st = X509_STORE_new();
    if (st == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    if (X509_STORE_set_default_paths(st) != 1)
        ERR_clear_error(); /* no system store: only ca_file */
    if (ca_file != NULL && ca_file[0] != '\0' &&
        X509_STORE_load_file(st, ca_file) != 1) {
        ERR_clear_error();
        X509_STORE_free(st);
        return nectar_error_set(err, NECTAR_ECONFIG,
                                "upstream_ca_file %s: cannot load PEM",
                                ca_file);
    }
    *out = st;
    return 0;
}

static int make_client_ctx(tls_mitm_t *m, tls_keylog_t *keylog,
                           const tls_mitm_opts_t *o, nectar_error_t *err)
{
    m->cctx = SSL_CTX_new(TLS_client_method());
    if (m->cctx == NULL)
        return nectar_error_set(err, NECTAR_ECRYPTO, "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(m->cctx, TLS1_2_VERSION);
    SSL_CTX_set_options(m->cctx, SSL_OP_NO_RENEGOTIATION);
    /* Sessions for resumption towards servers live in m->sessions, keyed
     * per server (host and address), not in OpenSSL's own cache. */
    SSL_CTX_set_session_cache_mode(m->cctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(m->cctx, on_new_session);
    SSL_CTX_set_mode(m->cctx, SSL_MODE_RELEASE_BUFFERS);
    if (o->trust != NULL) {
        SSL_CTX_set1_cert_store(m->cctx, o->trust);
    } else {
        X509_STORE *st = NULL;
        int rc = tls_trust_store_new(o->upstream_ca_file, &st, err);
        if (rc != 0)
            return rc;
        SSL_CTX_set_cert_store(m->cctx, st); /* takes st */
    }
    SSL_CTX_set_verify(m->cctx,
                       o->upstream_insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
                       NULL);
    if (keylog != NULL)
        tls_keylog_attach(keylog, m->cctx);
    return 0;
}

static void mitm_free(tls_mitm_t *m)
{
    if (m->cctx != NULL)
        SSL_CTX_set_ex_data(m->cctx, ex_index_ctx, NULL);
    SSL_CTX_free(m->sctx);
    SSL_CTX_free(m->cctx);
    tls_lru_free(m->sessions);
    tls_lru_free(m->rejected);
    tls_ca_unref(m->ca);
    nectar_free(m);
}

int tls_mitm_new(tls_ca_t *ca, tls_keylog_t *keylog, const tls_mitm_opts_t *o,
                 tls_mitm_t **out, nectar_error_t *err)
{
    tls_mitm_opts_t defaults;
    if (o == NULL) {
        tls_mitm_opts_defaults(&defaults);
        o = &defaults;
    }
    if (ca == NULL || out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "no CA");
    tls_mitm_t *m = nectar_calloc(1, sizeof(*m));
    if (m == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    atomic_init(&m->refs, 1);
    m->ca = tls_ca_ref(ca);
    pthread_once(&ex_once, make_indexes);
    int rc = make_server_ctx(m, keylog, err);
    if (rc == 0)
        rc = make_client_ctx(m, keylog, o, err);
    if (rc == 0) {
        m->rejected =
            tls_lru_new(o->trust_cache_size ? o->trust_cache_size : 4096,
                        o->trust_cache_ttl_ms, NULL, NULL);
        m->sessions = tls_lru_new(1024, 3600 * 1000, session_dup, session_free);
        if (m->rejected == NULL || m->sessions == NULL)
            rc = nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
        else
            SSL_CTX_set_ex_data(m->cctx, ex_index_ctx, m);
    }
    if (rc != 0) {
        mitm_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

tls_mitm_t *tls_mitm_ref(tls_mitm_t *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void tls_mitm_unref(tls_mitm_t *m)
{
    if (m != NULL && atomic_fetch_sub(&m->refs, 1) == 1)
        mitm_free(m);
}

tls_ca_t *tls_mitm_ca(tls_mitm_t *m)
{
    return m->ca;
}

bool tls_mitm_bypassed(tls_mitm_t *m, const char *host)
{
    return host != NULL && host[0] != '\0' &&
           tls_lru_get(m->rejected, host) != NULL;
}

void tls_mitm_mark_rejected(tls_mitm_t *m, const char *host)
{
    if (host != NULL && host[0] != '\0')
        tls_lru_put(m->rejected, host, (void *)1);
}

void tls_mitm_forget(tls_mitm_t *m, const char *host)
{
    tls_lru_remove(m->rejected, host);
}

/* ---- one flow ----------------------------------------------------------- */

static bool is_ip(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

static void flow_free(struct tls_mitm_flow *f)
{
    if (f->client_raw != NULL)
        svc_close(f->client_raw);
    if (f->client_tls != NULL)
        svc_close(f->client_tls);
    if (f->server_tls != NULL)
        svc_close(f->server_tls);
    tls_mitm_unref(f->m);
    nectar_free(f);
}

static void flow_fail(struct tls_mitm_flow *f, int status)
{
    tls_mitm_done_cb cb = f->cb;
    void *data = f->data;
    flow_free(f);
    cb(status, NULL, NULL, NULL, data);
}

static void on_client_handshake(svc_stream_t *tls, int status, void *data)
{
    struct tls_mitm_flow *f = data;
    /* The SSL lives on in the relays after f is freed. */
    SSL_set_app_data(svc_tls_ssl(tls), NULL);
    if (status == 0 && !f->refuse) {
        svc_stream_t *c = f->client_tls, *s = f->server_tls;
        char alpn[sizeof(f->alpn)];
        memcpy(alpn, f->alpn, sizeof(alpn));
        tls_mitm_done_cb cb = f->cb;
        void *cb_data = f->data;
        f->client_tls = f->server_tls = NULL;
        flow_free(f);
        cb(0, c, s, alpn, cb_data);
        return;
    }
    if (f->refuse) {
        flow_fail(f, f->refuse_status);
        return;
    }
    svc_tls_fail_t why = svc_tls_failure(tls);
    if (why == SVC_TLS_PEER_REJECTED_CERT || why == SVC_TLS_EOF_AFTER_FLIGHT) {
        tls_mitm_mark_rejected(f->m, f->host);
        nectar_log(NECTAR_LOG_INFO, TAG,
                   "flow=%llu app rejected the minted certificate for %s "
                   "(%s); later flows to it are not intercepted",
                   (unsigned long long)f->flow_id, f->host,
                   svc_tls_failure_text(tls));
        flow_fail(f, NECTAR_EPEER);
        return;
    }
    nectar_log(NECTAR_LOG_DEBUG, TAG, "flow=%llu app handshake for %s: %s",
               (unsigned long long)f->flow_id, f->host,
               svc_tls_failure_text(tls));
    flow_fail(f, NECTAR_ECRYPTO);
}

static int start_client_side(struct tls_mitm_flow *f)
{
    SSL *ssl = SSL_new(f->m->sctx);
    if (ssl == NULL)
        return NECTAR_ENOMEM;
    if (!f->refuse) {
        X509 *leaf = tls_ca_leaf(f->m->ca, f->host);
        int ok = leaf != NULL && SSL_use_certificate(ssl, leaf) == 1 &&
                 SSL_use_PrivateKey(ssl, tls_ca_leaf_key(f->m->ca)) == 1;
        X509_free(leaf);
        if (!ok) {
            ERR_clear_error();
            SSL_free(ssl);
            return NECTAR_ECRYPTO;
        }
    }
    SSL_set_app_data(ssl, f);
    SSL_set_accept_state(ssl);
    f->client_tls = svc_tls_new(f->client_raw, ssl);
    f->client_raw = NULL;
    if (f->client_tls == NULL)
        return NECTAR_ENOMEM;
    return svc_tls_handshake(f->client_tls, on_client_handshake, f);
}

static void on_upstream_handshake(svc_stream_t *tls, int status, void *data)
{
    struct tls_mitm_flow *f = data;
    if (status == 0) {
        const unsigned char *p;
        unsigned int n;
        SSL_get0_alpn_selected(svc_tls_ssl(tls), &p, &n);
        if (n > 0 && n < sizeof(f->alpn)) {
            memcpy(f->alpn, p, n);
            f->alpn[n] = '\0';
        }
    } else {
        svc_tls_fail_t why = svc_tls_failure(tls);
        if (why == SVC_TLS_VERIFY_FAILED) {
            nectar_log(NECTAR_LOG_WARN, TAG,
                       "flow=%llu server %s failed verification (%s); "
                       "refusing the app's handshake",
                       (unsigned long long)f->flow_id, f->host,
                       svc_tls_failure_text(tls));
            f->refuse_status = NECTAR_EAUTH;
        } else {
            nectar_log(NECTAR_LOG_INFO, TAG,
                       "flow=%llu TLS to server %s failed (%s); refusing "
                       "the app's handshake",
                       (unsigned long long)f->flow_id, f->host,
                       svc_tls_failure_text(tls));
            f->refuse_status = NECTAR_ECRYPTO;
        }
        f->refuse = true;
        svc_close(f->server_tls);
        f->server_tls = NULL;
    }
    int rc = start_client_side(f);
    if (rc != 0)
        flow_fail(f, rc);
}

/* Offers the last session of this server, and labels the SSL so the
 * server's new session is kept under the same key. */
static void resume(struct tls_mitm_flow *f, SSL *ssl)
{
    size_t n = strlen(f->host) + strlen(f->addr) + 2;
    char *key = nectar_malloc(n);
    if (key == NULL)
        return;
    snprintf(key, n, "%s@%s", f->host, f->addr);
    SSL_SESSION *sess = tls_lru_get(f->m->sessions, key);
    if (sess != NULL) {
        SSL_set_session(ssl, sess);
        SSL_SESSION_free(sess);
    }
    if (SSL_set_ex_data(ssl, ex_index_key, key) != 1)
        nectar_free(key);
}

static int start_upstream(struct tls_mitm_flow *f, svc_stream_t *server,
                          const peek_tls_hello_t *hello)
{
    SSL *ssl = SSL_new(f->m->cctx);
    if (ssl == NULL) {
        svc_close(server);
        return NECTAR_ENOMEM;
    }
    bool ip = is_ip(f->host);
    if (!ip && hello->has_sni)
        SSL_set_tlsext_host_name(ssl, f->host);
    if (ip)
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), f->host);
    else
        SSL_set1_host(ssl, f->host);
    if (hello->alpn_len > 0)
        SSL_set_alpn_protos(ssl, hello->alpn, (unsigned)hello->alpn_len);
    resume(f, ssl);
    SSL_set_connect_state(ssl);
    f->server_tls = svc_tls_new(server, ssl);
    if (f->server_tls == NULL)
        return NECTAR_ENOMEM;
    return svc_tls_handshake(f->server_tls, on_upstream_handshake, f);
}

tls_mitm_flow_t *
tls_mitm_flow_start(tls_mitm_t *m, svc_stream_t *client, svc_stream_t *server,
                    const peek_tls_hello_t *hello, const char *fallback_host,
                    uint64_t flow_id, tls_mitm_done_cb cb, void *data)
{
    struct tls_mitm_flow *f = nectar_calloc(1, sizeof(*f));
    if (f == NULL) {
        svc_close(client);
        svc_close(server);
        return NULL;
    }
    f->m = tls_mitm_ref(m);
    f->client_raw = client;
    f->flow_id = flow_id;
    f->cb = cb;
    f->data = data;
    const char *host = hello->has_sni ? hello->sni : fallback_host;
    snprintf(f->host, sizeof(f->host), "%s", host ? host : "");
    snprintf(f->addr, sizeof(f->addr), "%s",
             fallback_host ? fallback_host : "");
    if (server == NULL) {
        /* Served locally: HTTP/1.1 if the app offers it, else nothing. */
        if (hello->offers_http11)
            snprintf(f->alpn, sizeof(f->alpn), "http/1.1");
        if (start_client_side(f) != 0) {
            flow_free(f);
            return NULL;
        }
        return f;
    }
    if (start_upstream(f, server, hello) != 0) {
        flow_free(f);
        return NULL;
    }
    return f;
}

void tls_mitm_flow_cancel(tls_mitm_flow_t *f)
{
    if (f == NULL)
        return;
    /* Torn down (the host saw the app reset the connection) right after
     * our certificate went out: what many clients do to reject it. */
    if (f->client_tls != NULL && !f->refuse &&
        svc_tls_awaiting_peer_verdict(f->client_tls)) {
        tls_mitm_mark_rejected(f->m, f->host);
        nectar_log(NECTAR_LOG_INFO, TAG,
                   "flow=%llu app left right after the minted certificate "
                   "for %s; later flows to it are not intercepted",
                   (unsigned long long)f->flow_id, f->host);
    }
    flow_free(f);
}
