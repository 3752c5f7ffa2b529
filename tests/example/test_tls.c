/*
 * test_tls.c - the TLS pieces of the example, over real loopback sockets
 * and without the engine: the LRU, leaf minting, the TLS svc_stream layer
 * (handshake, 8 MiB echo with back-pressure, EOF) and interception
 * (ALPN mirrored, upstream verification failure ends with an alert, a
 * client that rejects the minted certificate lands in the trust cache,
 * key logging).
 */
#include <dirent.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "harness/test.h"
#include "services/peek/clienthello.h"
#include "services/tls/keylog.h"
#include "services/tls/lru.h"
#include "services/tls/mint.h"
#include "services/tls/mitm.h"
#include "services/tls/tls.h"
#include "tcp_stream.h"

/* ---- lru and minting ---------------------------------------------------- */

static int freed;
static void count_free(void *v)
{
    (void)v;
    freed++;
}

static void lru_basic(void)
{
    tls_lru_t *c = tls_lru_new(3, 1000, NULL, count_free);
    tls_lru_put(c, "a", (void *)1);
    tls_lru_put(c, "b", (void *)2);
    tls_lru_put(c, "c", (void *)3);
    CHECK(tls_lru_get(c, "a") == (void *)1); /* a is now most recent */
    tls_lru_put(c, "d", (void *)4);          /* evicts b */
    CHECK(tls_lru_get(c, "b") == NULL);
    CHECK_EQ(freed, 1);
    CHECK_EQ(tls_lru_size(c), 3);
    tls_lru_put(c, "a", (void *)5); /* replace */
    CHECK(tls_lru_get(c, "a") == (void *)5);
    CHECK_EQ(freed, 2);
    tls_lru_advance(c, 1001);
    CHECK(tls_lru_get(c, "c") == NULL);
    CHECK(!tls_lru_remove(c, "zz"));
    tls_lru_free(c);
    CHECK_EQ(freed, 5);
}

static tls_ca_t *new_ca(const char *cn, char **cert_out)
{
    char *cert, *key;
    test_make_ca(cn, &cert, &key);
    tls_ca_t *ca = NULL;
    nectar_error_t err;
    CHECK_EQ(tls_ca_from_pem(cert, key, 4, &ca, &err), 0);
    if (cert_out != NULL)
        *cert_out = cert;
    else
        free(cert);
    free(key);
    return ca;
}

static int verify_leaf(tls_ca_t *ca, X509 *leaf, const char *host)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_add_cert(st, tls_ca_cert(ca));
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, st, leaf, NULL);
    X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_purpose(p, X509_PURPOSE_SSL_SERVER);
    X509_VERIFY_PARAM_set_flags(p, X509_V_FLAG_X509_STRICT);
    if (host[0] >= '0' && host[0] <= '9')
        X509_VERIFY_PARAM_set1_ip_asc(p, host);
    else
        X509_VERIFY_PARAM_set1_host(p, host, 0);
    int ok = X509_verify_cert(ctx);
    int e = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    return ok == 1 ? 0 : e;
}

static void mint_leaves(void)
{
    tls_ca_t *ca = new_ca("test mitm ca", NULL);
    X509 *a = tls_ca_leaf(ca, "www.a.test");
    CHECK(a != NULL);
    CHECK_EQ(verify_leaf(ca, a, "www.a.test"), 0);
    CHECK_NE(verify_leaf(ca, a, "other.test"), 0);
    EVP_PKEY *pk = X509_get0_pubkey(a);
    CHECK_EQ(EVP_PKEY_get_base_id(pk), EVP_PKEY_EC);
    X509 *again = tls_ca_leaf(ca, "www.a.test");
    CHECK(again == a); /* served from the cache */
    X509 *ip = tls_ca_leaf(ca, "127.0.0.1");
    CHECK(ip != NULL);
    CHECK_EQ(verify_leaf(ca, ip, "127.0.0.1"), 0);
    CHECK(tls_ca_leaf(ca, "bad host,with=comma") == NULL);
    CHECK(tls_ca_leaf(ca, "") == NULL);
    /* The cache is bounded (4 here). */
    char name[32];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "h%d.test", i);
        X509_free(tls_ca_leaf(ca, name));
    }
    CHECK_EQ(tls_ca_cache_size(ca), 4);
    X509_free(a);
    X509_free(again);
    X509_free(ip);
    tls_ca_unref(ca);
}

static void mint_bad_pem(void)
{
    char *c1, *k1, *c2, *k2;
    test_make_ca("one", &c1, &k1);
    test_make_ca("two", &c2, &k2);
    tls_ca_t *ca = NULL;
    nectar_error_t err;
    CHECK_EQ(tls_ca_from_pem("junk", k1, 0, &ca, &err), NECTAR_EPARSE);
    CHECK_EQ(tls_ca_from_pem(c1, "junk", 0, &ca, &err), NECTAR_EPARSE);
    CHECK_EQ(tls_ca_from_pem(c1, k2, 0, &ca, &err), NECTAR_EINVAL);
    CHECK(strstr(err.message, "does not match") != NULL);
    CHECK(ca == NULL);
    free(c1), free(k1), free(c2), free(k2);
}

/* ---- a loop fixture ----------------------------------------------------- */

#define ECHO_TOTAL (8u << 20)
#define ECHO_CHUNK (64u << 10)

struct fx {
    uv_loop_t loop;
    uv_tcp_t listener, upstream_listener;
    uv_timer_t deadline;
    tls_ca_t *ca, *up_ca;
    char *up_ca_pem;
    tls_mitm_t *mitm;
    SSL_CTX *up_sctx, *cli_ctx;
    /* client */
    svc_stream_t *cli;
    int cli_hs;
    svc_tls_fail_t cli_fail;
    char cli_err[160];
    char cli_alpn[32];
    size_t sent, received;
    bool cli_eof;
    uint8_t *pattern;
    /* middle */
    svc_stream_t *mid_in;
    uint8_t peek[16384];
    size_t peek_len;
    int mitm_status;
    bool mitm_done;
    svc_relay_t *relay;
    svc_stream_t *mid_c, *mid_s;
    /* upstream */
    svc_stream_t *up;
    size_t up_pending;
    bool up_eof;
    bool up_resumed;
    int upstream_port;
    int mid_port;
    bool done;
};

static struct fx F;

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    NECTAR_FAIL_AT("test timed out (sent %zu received %zu hs %d)", F.sent,
                   F.received, F.cli_hs);
}

static void fx_init(void)
{
    memset(&F, 0, sizeof(F));
    uv_loop_init(&F.loop);
    uv_timer_init(&F.loop, &F.deadline);
    uv_timer_start(&F.deadline, on_deadline, 20000, 0);
    uv_unref((uv_handle_t *)&F.deadline);
    F.cli_hs = 1;
    F.mitm_status = 1;
    F.pattern = malloc(ECHO_TOTAL);
    for (size_t i = 0; i < ECHO_TOTAL; i++)
        F.pattern[i] = (uint8_t)(i * 7 + (i >> 13));
}

static void run_until_done(void)
{
    while (!F.done && uv_run(&F.loop, UV_RUN_ONCE) != 0) {
    }
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void fx_close(void)
{
    if (F.cli != NULL)
        svc_close(F.cli);
    if (F.up != NULL)
        svc_close(F.up);
    if (F.relay != NULL)
        svc_relay_free(F.relay);
    if (F.mid_c != NULL)
        svc_close(F.mid_c);
    if (F.mid_s != NULL)
        svc_close(F.mid_s);
    uv_run(&F.loop, UV_RUN_NOWAIT);
    /* Listeners free their accept context in their close callback. */
    if (F.listener.data != NULL)
        test_listen_close(&F.listener);
    if (F.upstream_listener.data != NULL)
        test_listen_close(&F.upstream_listener);
    uv_walk(&F.loop, walk_close, NULL);
    uv_run(&F.loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&F.loop), 0);
    free(F.pattern);
}

/* ---- upstream: TLS echo server ------------------------------------------ */

static void up_read(svc_stream_t *s, ssize_t n, const uint8_t *buf, void *d);

static void up_written(svc_stream_t *s, int status, void *data)
{
    free(data);
    CHECK_EQ(status, 0);
    F.up_pending--;
    if (F.up_pending == 0 && !F.up_eof)
        svc_read_start(s, up_read, NULL);
    if (F.up_pending == 0 && F.up_eof)
        svc_shutdown(s);
}

static void up_read(svc_stream_t *s, ssize_t n, const uint8_t *buf, void *d)
{
    (void)d;
    if (n < 0) {
        F.up_eof = true;
        if (F.up_pending == 0)
            svc_shutdown(s);
        return;
    }
    uint8_t *copy = malloc((size_t)n);
    memcpy(copy, buf, (size_t)n);
    F.up_pending++;
    CHECK_EQ(svc_write(s, copy, (size_t)n, up_written, copy), 0);
    if (F.up_pending > 16)
        svc_read_stop(s); /* back-pressure towards the relay */
}

static void up_handshake(svc_stream_t *s, int status, void *d)
{
    (void)d;
    if (status != 0)
        return; /* the client side reports what matters */
    F.up_resumed = SSL_session_reused(svc_tls_ssl(s)) == 1;
    svc_read_start(s, up_read, NULL);
}

static int up_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen; i += 1 + in[i]) {
        if (in[i] == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static void up_accept(svc_stream_t *s, void *data)
{
    (void)data;
    SSL *ssl = SSL_new(F.up_sctx);
    SSL_set_accept_state(ssl);
    F.up = svc_tls_new(s, ssl);
    svc_tls_handshake(F.up, up_handshake, NULL);
}

static void start_upstream(void)
{
    F.up_ca = new_ca("upstream ca", &F.up_ca_pem);
    X509 *leaf = tls_ca_leaf(F.up_ca, "upstream.test");
    F.up_sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(F.up_sctx, leaf);
    SSL_CTX_use_PrivateKey(F.up_sctx, tls_ca_leaf_key(F.up_ca));
    SSL_CTX_set_alpn_select_cb(F.up_sctx, up_alpn, NULL);
    X509_free(leaf);
    F.upstream_port =
        test_listen(&F.loop, &F.upstream_listener, up_accept, NULL);
}

/* ---- middle: peek, then interception ------------------------------------ */

static void mid_relay_done(svc_relay_t *r, int status, void *data)
{
    (void)r;
    (void)status;
    (void)data;
}

static void mid_done(int status, svc_stream_t *c, svc_stream_t *s,
                     const char *alpn, void *data)
{
    (void)data;
    (void)alpn;
    F.mitm_status = status;
    F.mitm_done = true;
    if (status != 0)
        return;
    F.mid_c = c;
    F.mid_s = s;
    F.relay = svc_relay_start(c, s, 256 * 1024, mid_relay_done, NULL);
}

static void mid_connected(svc_stream_t *up, int status, void *data)
{
    (void)data;
    CHECK_EQ(status, 0);
    peek_tls_hello_t hello;
    CHECK_EQ(peek_tls_parse(F.peek, F.peek_len, &hello), PEEK_YES);
    svc_stream_t *pre = svc_stream_prefix(F.mid_in, F.peek, F.peek_len);
    F.mid_in = NULL;
    CHECK(tls_mitm_flow_start(F.mitm, pre, up, &hello, "127.0.0.1", 1, mid_done,
                              NULL) != NULL);
}

static void mid_read(svc_stream_t *s, ssize_t n, const uint8_t *buf, void *d)
{
    (void)d;
    CHECK_GT(n, 0);
    memcpy(F.peek + F.peek_len, buf, (size_t)n);
    F.peek_len += (size_t)n;
    peek_tls_hello_t hello;
    peek_verdict_t v = peek_tls_parse(F.peek, F.peek_len, &hello);
    CHECK_NE(v, PEEK_NO);
    if (v == PEEK_YES) {
        svc_read_stop(s);
        test_connect(&F.loop, F.upstream_port, mid_connected, NULL);
    }
}

static void mid_accept(svc_stream_t *s, void *data)
{
    (void)data;
    F.mid_in = s;
    svc_read_start(s, mid_read, NULL);
}

static void make_mitm(bool trust_upstream, bool insecure, tls_keylog_t *kl)
{
    char path[] = "/tmp/nectar-upca-XXXXXX";
    int fd = mkstemp(path);
    CHECK(write(fd, F.up_ca_pem, strlen(F.up_ca_pem)) > 0);
    close(fd);
    F.ca = new_ca("mitm ca", NULL);
    tls_mitm_opts_t o;
    tls_mitm_opts_defaults(&o);
    o.upstream_ca_file = trust_upstream ? path : NULL;
    o.upstream_insecure = insecure;
    nectar_error_t err;
    CHECK_EQ(tls_mitm_new(F.ca, kl, &o, &F.mitm, &err), 0);
    unlink(path);
}

/* ---- client -------------------------------------------------------------- */

static void cli_send_next(void);

static void cli_written(svc_stream_t *s, int status, void *d)
{
    (void)s;
    (void)d;
    CHECK_EQ(status, 0);
    cli_send_next();
}

static void cli_send_next(void)
{
    if (F.sent == ECHO_TOTAL) {
        return;
    }
    size_t n =
        ECHO_TOTAL - F.sent < ECHO_CHUNK ? ECHO_TOTAL - F.sent : ECHO_CHUNK;
    const uint8_t *p = F.pattern + F.sent;
    F.sent += n;
    CHECK_EQ(svc_write(F.cli, p, n, cli_written, NULL), 0);
}

static void cli_read(svc_stream_t *s, ssize_t n, const uint8_t *buf, void *d)
{
    (void)d;
    if (n < 0) {
        CHECK_EQ(n, NECTAR_EOF);
        F.cli_eof = true;
        F.done = true;
        return;
    }
    CHECK_LE(F.received + (size_t)n, ECHO_TOTAL);
    CHECK_MEM_EQ(buf, F.pattern + F.received, (size_t)n);
    F.received += (size_t)n;
    if (F.received == ECHO_TOTAL)
        svc_shutdown(s);
}

static void cli_handshake(svc_stream_t *s, int status, void *d)
{
    (void)d;
    F.cli_hs = status;
    if (status != 0) {
        F.cli_fail = svc_tls_failure(s);
        snprintf(F.cli_err, sizeof(F.cli_err), "%s", svc_tls_failure_text(s));
        F.done = true;
        return;
    }
    const unsigned char *p;
    unsigned n;
    SSL_get0_alpn_selected(svc_tls_ssl(s), &p, &n);
    memcpy(F.cli_alpn, p, n);
    F.cli_alpn[n] = '\0';
    svc_read_start(s, cli_read, NULL);
    cli_send_next();
}

static X509_STORE *store_of(tls_ca_t *ca)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_add_cert(st, tls_ca_cert(ca));
    return st;
}

static void cli_connected(svc_stream_t *s, int status, void *data)
{
    const char *host = data;
    CHECK_EQ(status, 0);
    SSL *ssl = SSL_new(F.cli_ctx);
    SSL_set_tlsext_host_name(ssl, host);
    SSL_set1_host(ssl, host);
    static const uint8_t alpn[] = {2,   'h', '2', 8,   'h', 't',
                                   't', 'p', '/', '1', '.', '1'};
    SSL_set_alpn_protos(ssl, alpn, sizeof(alpn));
    SSL_set_connect_state(ssl);
    F.cli = svc_tls_new(s, ssl);
    svc_tls_handshake(F.cli, cli_handshake, NULL);
}

static void start_client(int port, tls_ca_t *trust, const char *host)
{
    F.cli_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_cert_store(F.cli_ctx, store_of(trust));
    SSL_CTX_set_verify(F.cli_ctx, SSL_VERIFY_PEER, NULL);
    test_connect(&F.loop, port, cli_connected, (void *)host);
}

static void fx_free_tls(void)
{
    SSL_CTX_free(F.cli_ctx);
    SSL_CTX_free(F.up_sctx);
    tls_mitm_unref(F.mitm);
    tls_ca_unref(F.ca);
    tls_ca_unref(F.up_ca);
    free(F.up_ca_pem);
}

/* ---- tests -------------------------------------------------------------- */

static void tls_direct_echo(void)
{
    fx_init();
    start_upstream();
    start_client(F.upstream_port, F.up_ca, "upstream.test");
    run_until_done();
    CHECK_EQ(F.cli_hs, 0);
    CHECK_STR_EQ(F.cli_alpn, "h2");
    CHECK_EQ(F.received, ECHO_TOTAL);
    CHECK(F.cli_eof);
    fx_close();
    fx_free_tls();
}

/* One flow: app -> interception -> upstream echo, run to its end.  The
 * app trusts the MITM CA, or the upstream's CA when trust_upstream_ca. */
static void run_through_mitm(bool trust_upstream, bool insecure,
                             tls_keylog_t *kl, bool trust_upstream_ca)
{
    fx_init();
    start_upstream();
    make_mitm(trust_upstream, insecure, kl);
    F.mid_port = test_listen(&F.loop, &F.listener, mid_accept, NULL);
    start_client(F.mid_port, trust_upstream_ca ? F.up_ca : F.ca,
                 "upstream.test");
    run_until_done();
}

static void wait_mitm_done(void)
{
    while (!F.mitm_done)
        uv_run(&F.loop, UV_RUN_ONCE);
}

static void mitm_echo_alpn(void)
{
    run_through_mitm(true, false, NULL, false);
    CHECK_EQ(F.mitm_status, 0);
    CHECK_EQ(F.cli_hs, 0);
    CHECK_STR_EQ(F.cli_alpn, "h2"); /* mirrored from the upstream */
    CHECK_EQ(F.received, ECHO_TOTAL);
    CHECK(F.cli_eof);
    CHECK(!tls_mitm_bypassed(F.mitm, "upstream.test"));
    fx_close();
    fx_free_tls();
}

static void mitm_upstream_untrusted(void)
{
    /* The upstream CA is not trusted. */
    run_through_mitm(false, false, NULL, false);
    CHECK_NE(F.cli_hs, 0);
    /* The app got a handshake_failure alert, not a silent close. */
    CHECK_EQ(F.cli_fail, SVC_TLS_PROTOCOL);
    CHECK(strstr(F.cli_err, "handshake failure") != NULL);
    wait_mitm_done();
    CHECK_EQ(F.mitm_status, NECTAR_EAUTH);
    fx_close();
    fx_free_tls();
}

static void mitm_insecure_upstream(void)
{
    run_through_mitm(false, true, NULL, false);
    CHECK_EQ(F.cli_hs, 0);
    CHECK_EQ(F.received, ECHO_TOTAL);
    fx_close();
    fx_free_tls();
}

static void mitm_client_rejects(void)
{
    run_through_mitm(true, false, NULL, true); /* trusts the wrong CA */
    CHECK_NE(F.cli_hs, 0);
    CHECK_EQ(F.cli_fail, SVC_TLS_VERIFY_FAILED);
    wait_mitm_done();
    CHECK_EQ(F.mitm_status, NECTAR_EPEER);
    CHECK(tls_mitm_bypassed(F.mitm, "upstream.test"));
    CHECK(!tls_mitm_bypassed(F.mitm, "other.test"));
    fx_close();
    fx_free_tls();
}

static void mitm_keylog(void)
{
    char path[] = "/tmp/nectar-keylog-XXXXXX";
    close(mkstemp(path));
    tls_keylog_t *kl = tls_keylog_new(path, true);
    run_through_mitm(true, false, kl, false);
    CHECK_EQ(F.received, ECHO_TOTAL);
    fx_close();
    fx_free_tls();
    FILE *f = fopen(path, "r");
    char line[512];
    int secrets = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        secrets += strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0;
    fclose(f);
    /* One for the app side, one for the server side. */
    CHECK_EQ(secrets, 2);
    struct stat st;
    CHECK_EQ(stat(path, &st), 0);
    tls_keylog_set_enabled(kl, false);
    CHECK(!tls_keylog_enabled(kl));
    tls_keylog_free(kl);
    unlink(path);
}

/* A second flow to the same server resumes the TLS session the first one
 * got (no full handshake upstream). */
static void mitm_resumes_upstream(void)
{
    run_through_mitm(true, false, NULL, false);
    CHECK_EQ(F.received, ECHO_TOTAL);
    CHECK(!F.up_resumed);
    svc_close(F.cli);
    svc_close(F.up);
    svc_relay_free(F.relay);
    svc_close(F.mid_c);
    svc_close(F.mid_s);
    F.cli = F.up = F.mid_c = F.mid_s = NULL;
    F.relay = NULL;
    F.sent = F.received = F.peek_len = F.up_pending = 0;
    F.cli_eof = F.done = F.up_eof = F.mitm_done = false;
    SSL_CTX_free(F.cli_ctx);
    start_client(F.mid_port, F.ca, "upstream.test");
    run_until_done();
    CHECK_EQ(F.received, ECHO_TOTAL);
    CHECK(F.up_resumed);
    fx_close();
    fx_free_tls();
}

static long long fake_now;
static long long fake_clock(void)
{
    return fake_now;
}

static int count_files(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, "sslkeylog-", 10) == 0;
    closedir(d);
    return n;
}

/* Hourly files, the old ones pruned, through a real handshake each hour. */
static void keylog_rotation(void)
{
    char dir[] = "/tmp/nectar-keylogdir-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    tls_keylog_t *kl = tls_keylog_new_rotating(dir, 3, true);
    tls_keylog_set_clock(kl, fake_clock);
    fake_now = 1700000000; /* 2023-11-14 22:13 UTC */
    for (int hour = 0; hour < 5; hour++) {
        run_through_mitm(true, false, kl, false);
        CHECK_EQ(F.received, ECHO_TOTAL);
        fx_close();
        fx_free_tls();
        fake_now += 3600;
    }
    /* 5 hours written, 3 kept: the current one and the two before. */
    CHECK_EQ(count_files(dir), 3);
    char path[512];
    snprintf(path, sizeof(path), "%s/sslkeylog-2023111502.txt", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    char line[512];
    int secrets = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        secrets += strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0;
    fclose(f);
    CHECK_EQ(secrets, 2);
    tls_keylog_free(kl);
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
    rmdir(dir);
}

static const nectar_test_t tests[] = {
    {"lru_basic", lru_basic},
    {"mint_leaves", mint_leaves},
    {"mint_bad_pem", mint_bad_pem},
    {"tls_direct_echo", tls_direct_echo},
    {"mitm_echo_alpn", mitm_echo_alpn},
    {"mitm_upstream_untrusted", mitm_upstream_untrusted},
    {"mitm_insecure_upstream", mitm_insecure_upstream},
    {"mitm_client_rejects", mitm_client_rejects},
    {"mitm_keylog", mitm_keylog},
    {"mitm_resumes_upstream", mitm_resumes_upstream},
    {"keylog_rotation", keylog_rotation},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
