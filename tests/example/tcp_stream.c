/*
 * tcp_stream.c - svc_stream_t over uv_tcp_t for the example tests, and a
 * throwaway CA generator.
 */
#include "tcp_stream.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "nectar/error.h"

struct tcp_stream {
    svc_stream_t base;
    uv_tcp_t *tcp;
    svc_read_cb read_cb;
    void *read_data;
    bool closed;
    bool shut;
    int pending; /* write/shutdown requests in flight */
};

struct tcp_write {
    uv_write_t req;
    struct tcp_stream *ts;
    svc_write_cb cb;
    void *data;
};

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    static char slab[65536]; /* one loop thread per test process */
    *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct tcp_stream *ts = s->data;
    if (n == 0 || ts->closed)
        return;
    if (n < 0) {
        uv_read_stop(s);
        ts->read_cb(&ts->base, n == UV_EOF ? NECTAR_EOF : n, NULL,
                    ts->read_data);
        return;
    }
    ts->read_cb(&ts->base, n, (const uint8_t *)buf->base, ts->read_data);
}

static int t_read_start(svc_stream_t *b, svc_read_cb cb, void *data)
{
    struct tcp_stream *ts = (struct tcp_stream *)b;
    ts->read_cb = cb;
    ts->read_data = data;
    return uv_read_start((uv_stream_t *)ts->tcp, on_alloc, on_read);
}

static int t_read_stop(svc_stream_t *b)
{
    return uv_read_stop((uv_stream_t *)((struct tcp_stream *)b)->tcp);
}

static void maybe_free(struct tcp_stream *ts);

static void on_write(uv_write_t *req, int status)
{
    struct tcp_write *w = req->data;
    struct tcp_stream *ts = w->ts;
    ts->pending--;
    if (!ts->closed && w->cb != NULL)
        w->cb(&ts->base, status, w->data);
    free(w);
    maybe_free(ts);
}

static int t_write(svc_stream_t *b, const uint8_t *buf, size_t len,
                   svc_write_cb cb, void *data)
{
    struct tcp_stream *ts = (struct tcp_stream *)b;
    struct tcp_write *w = calloc(1, sizeof(*w));
    w->ts = ts;
    w->cb = cb;
    w->data = data;
    w->req.data = w;
    uv_buf_t ub = uv_buf_init((char *)buf, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)ts->tcp, &ub, 1, on_write);
    if (rc != 0) {
        free(w);
        return rc;
    }
    ts->pending++;
    return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    struct tcp_stream *ts = req->data;
    ts->pending--;
    free(req);
    maybe_free(ts);
}

static int t_shutdown(svc_stream_t *b)
{
    struct tcp_stream *ts = (struct tcp_stream *)b;
    if (ts->shut)
        return 0;
    ts->shut = true;
    uv_shutdown_t *req = calloc(1, sizeof(*req));
    req->data = ts;
    int rc = uv_shutdown(req, (uv_stream_t *)ts->tcp, on_shutdown);
    if (rc != 0) {
        free(req);
        return rc;
    }
    ts->pending++;
    return 0;
}

static size_t t_queue(const svc_stream_t *b)
{
    return ((const struct tcp_stream *)b)->tcp->write_queue_size;
}

static void on_closed(uv_handle_t *h)
{
    struct tcp_stream *ts = h->data;
    free(h);
    ts->tcp = NULL;
    maybe_free(ts);
}

static void maybe_free(struct tcp_stream *ts)
{
    if (ts->closed && ts->tcp == NULL && ts->pending == 0)
        free(ts);
}

static void t_close(svc_stream_t *b)
{
    struct tcp_stream *ts = (struct tcp_stream *)b;
    ts->closed = true;
    uv_close((uv_handle_t *)ts->tcp, on_closed);
}

static const svc_stream_ops_t tcp_ops = {
    .name = "test-tcp",
    .read_start = t_read_start,
    .read_stop = t_read_stop,
    .write = t_write,
    .shutdown = t_shutdown,
    .write_queue_size = t_queue,
    .close = t_close,
};

svc_stream_t *test_tcp_stream(uv_tcp_t *tcp)
{
    struct tcp_stream *ts = calloc(1, sizeof(*ts));
    ts->base.ops = &tcp_ops;
    ts->base.loop = tcp->loop;
    ts->tcp = tcp;
    tcp->data = ts;
    return &ts->base;
}

struct listener {
    test_accept_cb cb;
    void *data;
};

static void on_conn(uv_stream_t *srv, int status)
{
    struct listener *l = srv->data;
    if (status != 0)
        return;
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(srv->loop, c);
    if (uv_accept(srv, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, (uv_close_cb)free);
        return;
    }
    l->cb(test_tcp_stream(c), l->data);
}

int test_listen(uv_loop_t *loop, uv_tcp_t *srv, test_accept_cb cb, void *data)
{
    struct sockaddr_in a;
    struct listener *l = malloc(sizeof(*l));
    l->cb = cb;
    l->data = data;
    uv_tcp_init(loop, srv);
    srv->data = l;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_bind(srv, (struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)srv, 128, on_conn);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(srv, (struct sockaddr *)&ss, &len);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void on_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

void test_listen_close(uv_tcp_t *srv)
{
    uv_close((uv_handle_t *)srv, on_listener_closed);
}

struct connector {
    uv_connect_t req;
    uv_tcp_t *tcp;
    test_connect_cb cb;
    void *data;
};

static void on_connected(uv_connect_t *req, int status)
{
    struct connector *c = req->data;
    if (status != 0) {
        uv_close((uv_handle_t *)c->tcp, (uv_close_cb)free);
        c->cb(NULL, status, c->data);
    } else {
        c->cb(test_tcp_stream(c->tcp), 0, c->data);
    }
    free(c);
}

void test_connect(uv_loop_t *loop, int port, test_connect_cb cb, void *data)
{
    struct connector *c = calloc(1, sizeof(*c));
    struct sockaddr_in a;
    c->tcp = malloc(sizeof(*c->tcp));
    c->cb = cb;
    c->data = data;
    c->req.data = c;
    uv_tcp_init(loop, c->tcp);
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_connect(&c->req, c->tcp, (struct sockaddr *)&a, on_connected);
}

static char *bio_string(BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    BIO_free(b);
    return out;
}

void test_make_ca(const char *cn, char **cert_pem, char **key_pem)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(
        n, "O", MBSTRING_ASC, (const unsigned char *)"nectar tests", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn,
                               -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_set_pubkey(x, key);
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    const char *exts[][2] = {{"basicConstraints", "critical,CA:TRUE"},
                             {"keyUsage", "critical,keyCertSign,cRLSign"},
                             {"subjectKeyIdentifier", "hash"}};
    for (size_t i = 0; i < 3; i++) {
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, &ctx, exts[i][0], exts[i][1]);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, key, EVP_sha256());
    BIO *cb = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(cb, x);
    BIO *kb = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL);
    *cert_pem = bio_string(cb);
    *key_pem = bio_string(kb);
    X509_free(x);
    EVP_PKEY_free(key);
}
