/*
 * h2.c - the HTTP/2 relay: an nghttp2 server session speaks to the client,
 * an nghttp2 client session to the server, and each client stream maps to
 * exactly one server stream.  Requests get the observed header on their
 * way out, responses too, and text/html responses the badge (rewritten
 * bodies lose content-length and validators).
 *
 * Flow control is end to end: automatic WINDOW_UPDATEs are off, and the
 * bytes of a DATA frame received on one session are "consumed" (window
 * reopened) only when the copy buffered for the other session drops below
 * H2_LOW_WATER.  A slow reader on one side therefore closes the other
 * side's window instead of growing buffers.  Output is produced with
 * nghttp2_session_mem_send while the destination's write queue is below
 * H2_HIGH_WATER and resumed from write completions.
 *
 * Map: 1. per-stream state  2. I/O pump  3. data providers  4. client
 * (server-session) callbacks  5. server (client-session) callbacks
 * 6. stream callbacks, start, teardown.
 */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/http_int.h"

#define H2_HIGH_WATER    (256 * 1024)
#define H2_LOW_WATER     (64 * 1024)
#define H2_STREAM_WINDOW (256 * 1024)
#define H2_CONN_WINDOW   (4 * 1024 * 1024)
#define H2_MAX_HEAD      (64 * 1024)

/* ---- 1. per-stream state ------------------------------------------------- */

typedef struct hfields {
    hbuf_t raw; /* name\0value\0 pairs */
    size_t n;
    size_t bytes;
} hfields_t;

/* A body queue: bytes are appended at the end and taken from `off`, so
 * taking a frame's worth does not move the rest (compacted lazily). */
typedef struct bodyq {
    hbuf_t b;
    size_t off;
} bodyq_t;

static size_t bodyq_len(const bodyq_t *q)
{
    return q->b.len - q->off;
}

/* Copy up to len bytes out; returns the count. */
static size_t bodyq_take(bodyq_t *q, uint8_t *out, size_t len)
{
    size_t n = bodyq_len(q) < len ? bodyq_len(q) : len;
    if (n > 0)
        memcpy(out, q->b.data + q->off, n);
    q->off += n;
    if (q->off == q->b.len) {
        q->b.len = 0;
        q->off = 0;
    } else if (q->off > q->b.len / 2) {
        nectar__http_buf_consume(&q->b, q->off);
        q->off = 0;
    }
    return n;
}

typedef struct h2s {
    struct h2s *next;
    struct h2s *prev;
    int32_t cid;            /* stream on the client session */
    int32_t sid;            /* stream on the server session; 0 before submit */
    hfields_t req;          /* request headers while collected */
    hfields_t res;          /* response headers, then trailers */
    bodyq_t up;             /* request body waiting for the server session */
    bodyq_t down;           /* response body waiting for the client session */
    size_t up_unconsumed;   /* client DATA bytes not yet consumed */
    size_t down_unconsumed; /* server DATA bytes not yet consumed */
    bool up_eof, down_eof;
    bool up_deferred, down_deferred;
    bool responded;   /* response HEADERS submitted to the client */
    bool trailers;    /* res holds trailers to send after the body */
    bool up_trailers; /* req holds trailers to send after the body */
    bool head;
    bool badge_ok;
    badge_t *badge;
    bool c_closed, s_closed;
} h2s_t;

typedef struct h2 {
    http_base_t base;
    nghttp2_session *cs; /* server role, towards the client */
    nghttp2_session *ss; /* client role, towards the server */
    h2s_t *streams;
    hbuf_t to_client;
    hbuf_t to_server;
    char observed[64]; /* lower-case observed header name */
    bool c_eof, s_eof;
    bool s_gone; /* server connection over (server_gone ran) */
    bool c_reading, s_reading;
    bool in_pump;
    int err;
} h2_t;

static void on_client_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data);
static void on_server_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data);

static int fields_add(hfields_t *f, const uint8_t *name, size_t nl,
                      const uint8_t *value, size_t vl)
{
    f->bytes += nl + vl + 32;
    if (f->bytes > H2_MAX_HEAD)
        return NECTAR_ELIMIT;
    static const uint8_t nul = 0;
    int rc = nectar__http_buf_add(&f->raw, name, nl);
    if (rc == 0)
        rc = nectar__http_buf_add(&f->raw, &nul, 1);
    if (rc == 0)
        rc = nectar__http_buf_add(&f->raw, value, vl);
    if (rc == 0)
        rc = nectar__http_buf_add(&f->raw, &nul, 1);
    if (rc == 0)
        f->n++;
    return rc;
}

static void fields_clear(hfields_t *f)
{
    f->raw.len = 0;
    f->n = 0;
    f->bytes = 0;
}

/* Value of the first field named name (lower case), or NULL. */
static const char *fields_get(const hfields_t *f, const char *name, size_t *len)
{
    const char *p = (const char *)f->raw.data;
    for (size_t i = 0; i < f->n; i++) {
        const char *v = p + strlen(p) + 1;
        if (strcmp(p, name) == 0) {
            *len = strlen(v);
            return v;
        }
        p = v + strlen(v) + 1;
    }
    *len = 0;
    return NULL;
}

typedef bool (*field_filter)(const char *name);

/* An nghttp2_nv array over f (plus the observed header when absent);
 * the caller frees it.  NULL on ENOMEM. */
static nghttp2_nv *fields_nv(h2_t *h, const hfields_t *f, field_filter drop,
                             bool observed, size_t *count)
{
    nghttp2_nv *nv = nectar_calloc(f->n + 1, sizeof(*nv));
    if (nv == NULL)
        return NULL;
    size_t k = 0;
    bool seen = false;
    const char *p = (const char *)f->raw.data;
    for (size_t i = 0; i < f->n; i++) {
        const char *v = p + strlen(p) + 1;
        if (strcmp(p, h->observed) == 0)
            seen = true;
        if (drop == NULL || !drop(p)) {
            nv[k].name = (uint8_t *)p;
            nv[k].namelen = strlen(p);
            nv[k].value = (uint8_t *)v;
            nv[k].valuelen = strlen(v);
            k++;
        }
        p = v + strlen(v) + 1;
    }
    if (observed && !seen) {
        nv[k].name = (uint8_t *)h->observed;
        nv[k].namelen = strlen(h->observed);
        nv[k].value = (uint8_t *)h->base.opts.observed_value;
        nv[k].valuelen = strlen(h->base.opts.observed_value);
        k++;
    }
    *count = k;
    return nv;
}

static h2s_t *stream_new(h2_t *h, int32_t cid)
{
    h2s_t *st = nectar_calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->cid = cid;
    st->next = h->streams;
    if (h->streams != NULL)
        h->streams->prev = st;
    h->streams = st;
    return st;
}

static void stream_free(h2_t *h, h2s_t *st)
{
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    nectar__http_buf_free(&st->req.raw);
    nectar__http_buf_free(&st->res.raw);
    nectar__http_buf_free(&st->up.b);
    nectar__http_buf_free(&st->down.b);
    nectar__http_badge_free(st->badge);
    nectar_free(st);
}

/* Free once neither session can call back about it any more. */
static void stream_maybe_free(h2_t *h, h2s_t *st)
{
    if (st->c_closed && (st->s_closed || st->sid == 0))
        stream_free(h, st);
}

/* ---- 2. I/O pump --------------------------------------------------------- */

static void update_reading(h2_t *h)
{
    http_base_t *b = &h->base;
    bool live = !b->finishing;
    bool want_c =
        live && !h->c_eof && svc_write_queue_size(b->client) < H2_HIGH_WATER;
    bool want_s =
        live && !h->s_eof && svc_write_queue_size(b->server) < H2_HIGH_WATER;
    nectar__http_set_reading(b->client, want_c, &h->c_reading, on_client_read,
                             h);
    nectar__http_set_reading(b->server, want_s, &h->s_reading, on_server_read,
                             h);
}

/* Serialise what a session wants to send while the stream has room. */
static int drain(h2_t *h, nghttp2_session *sess, svc_stream_t *dst, hbuf_t *out)
{
    while (svc_write_queue_size(dst) + out->len < H2_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(sess, &data);
        if (n < 0) {
            nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "h2 send: %s",
                             nghttp2_strerror((int)n));
            return NECTAR_EIO;
        }
        if (n == 0)
            break;
        if (nectar__http_buf_add(out, data, (size_t)n) != 0)
            return NECTAR_ENOMEM;
    }
    return nectar__http_write(&h->base, dst, out);
}

/* The server connection ended (EOF or its session finished): streams
 * still waiting for it are reset, finished responses drain, and the
 * client is told to open no new streams. */
static void server_gone(h2_t *h)
{
    h->s_gone = true;
    for (h2s_t *st = h->streams, *next; st != NULL; st = next) {
        next = st->next;
        if (st->s_closed)
            continue;
        st->s_closed = true;
        if (!st->down_eof && !st->c_closed)
            nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid,
                                      NGHTTP2_INTERNAL_ERROR);
        stream_maybe_free(h, st);
    }
    nghttp2_submit_goaway(h->cs, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->cs),
                          NGHTTP2_NO_ERROR, NULL, 0);
}

static void pump(h2_t *h)
{
    http_base_t *b = &h->base;
    if (b->finishing || h->in_pump)
        return;
    h->in_pump = true;
    int rc = h->err;
    for (int round = 0; rc == 0 && round < 2; round++) {
        rc = drain(h, h->cs, b->client, &h->to_client);
        if (rc == 0)
            rc = drain(h, h->ss, b->server, &h->to_server);
        bool s_idle = !nghttp2_session_want_read(h->ss) &&
                      !nghttp2_session_want_write(h->ss);
        if (rc != 0 || !s_idle || h->s_gone)
            break;
        server_gone(h); /* then drain again: the GOAWAY to the client */
    }
    h->in_pump = false;
    if (rc != 0) {
        nectar__http_finish(b, rc);
        return;
    }
    bool c_idle =
        !nghttp2_session_want_read(h->cs) && !nghttp2_session_want_write(h->cs);
    /* Done when the client session has nothing left to do (GOAWAY
     * exchanged and every stream closed), when the client went away and
     * the server heard so, or when the server went away and every stream
     * towards the client has ended. */
    if (c_idle || (h->c_eof && !nghttp2_session_want_write(h->ss)) ||
        (h->s_gone && h->streams == NULL &&
         !nghttp2_session_want_write(h->cs))) {
        nectar__http_finish(b, 0);
        return;
    }
    update_reading(h);
}

/* Reopen the window for bytes whose copy has (mostly) moved on. */
static void consume(nghttp2_session *sess, int32_t id, const bodyq_t *q,
                    size_t *unconsumed)
{
    if (*unconsumed > 0 && bodyq_len(q) < H2_LOW_WATER) {
        nghttp2_session_consume(sess, id, *unconsumed);
        *unconsumed = 0;
    }
}

/* A DATA chunk that arrived on sess goes to q (through the badge when
 * given) for the other session; its bytes stay unconsumed, so the window
 * stays shut, until the copy has (mostly) moved on.  Returns 0 or
 * NECTAR_ENOMEM. */
static int queue_data(nghttp2_session *sess, int32_t id, bodyq_t *q,
                      size_t *unconsumed, badge_t *badge, const uint8_t *data,
                      size_t len)
{
    int rc = badge != NULL ? nectar__http_badge_feed(badge, data, len, &q->b)
                           : nectar__http_buf_add(&q->b, data, len);
    if (rc != 0)
        return rc;
    *unconsumed += len;
    consume(sess, id, q, unconsumed);
    return 0;
}

/* ---- 3. data providers --------------------------------------------------- */

/* Trailers after the last DATA (the caller then sets NO_END_STREAM). */
static int submit_trailers(h2_t *h, nghttp2_session *sess, int32_t id,
                           const hfields_t *f)
{
    size_t count;
    nghttp2_nv *nv = fields_nv(h, f, NULL, false, &count);
    if (nv == NULL)
        return NECTAR_ENOMEM;
    int rc = nghttp2_submit_trailer(sess, id, nv, count);
    nectar_free(nv);
    return rc == 0 ? 0 : NECTAR_EIO;
}

/* What a data provider returns after taking n bytes from q: at the end
 * of the body EOF (and the trailers, when given), an empty queue defers
 * (resumed when bytes or the end arrive), else the n bytes. */
static ssize_t provided(h2_t *h, nghttp2_session *sess, int32_t id, size_t n,
                        const bodyq_t *q, bool eof, const hfields_t *trailers,
                        bool *deferred, uint32_t *flags)
{
    if (bodyq_len(q) == 0 && eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (trailers != NULL && submit_trailers(h, sess, id, trailers) == 0)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        return (ssize_t)n;
    }
    if (n == 0) {
        *deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static ssize_t read_up(nghttp2_session *sess, int32_t id, uint8_t *buf,
                       size_t len, uint32_t *flags, nghttp2_data_source *src,
                       void *user)
{
    h2_t *h = user;
    h2s_t *st = src->ptr;
    size_t n = bodyq_take(&st->up, buf, len);
    consume(h->cs, st->cid, &st->up, &st->up_unconsumed);
    return provided(h, sess, id, n, &st->up, st->up_eof,
                    st->up_trailers ? &st->req : NULL, &st->up_deferred, flags);
}

static ssize_t read_down(nghttp2_session *sess, int32_t id, uint8_t *buf,
                         size_t len, uint32_t *flags, nghttp2_data_source *src,
                         void *user)
{
    h2_t *h = user;
    h2s_t *st = src->ptr;
    size_t n = bodyq_take(&st->down, buf, len);
    /* The server stream may be gone (reset, or a local answer). */
    if (st->sid > 0 && !st->s_closed)
        consume(h->ss, st->sid, &st->down, &st->down_unconsumed);
    return provided(h, sess, id, n, &st->down, st->down_eof,
                    st->trailers ? &st->res : NULL, &st->down_deferred, flags);
}

static void resume_up(h2_t *h, h2s_t *st)
{
    if (st->up_deferred && st->sid > 0) {
        st->up_deferred = false;
        nghttp2_session_resume_data(h->ss, st->sid);
    }
}

static void resume_down(h2_t *h, h2s_t *st)
{
    if (st->down_deferred) {
        st->down_deferred = false;
        nghttp2_session_resume_data(h->cs, st->cid);
    }
}

/* ---- 4. client side: requests -------------------------------------------- */

static int c_begin_headers(nghttp2_session *sess, const nghttp2_frame *fr,
                           void *user)
{
    h2_t *h = user;
    if (fr->hd.type != NGHTTP2_HEADERS ||
        fr->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2s_t *st = stream_new(h, fr->hd.stream_id);
    if (st == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    nghttp2_session_set_stream_user_data(sess, fr->hd.stream_id, st);
    return 0;
}

static int c_header(nghttp2_session *sess, const nghttp2_frame *fr,
                    const uint8_t *name, size_t nl, const uint8_t *value,
                    size_t vl, uint8_t flags, void *user)
{
    (void)flags;
    (void)user;
    h2s_t *st = nghttp2_session_get_stream_user_data(sess, fr->hd.stream_id);
    /* Before submission: the request head; after: its trailers (req is
     * emptied at submission).  A local answer needs neither. */
    if (st == NULL || (st->sid == 0 && st->responded))
        return 0;
    if (fields_add(&st->req, name, nl, value, vl) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    return 0;
}

static void request_host(const h2s_t *st, char *host, size_t n)
{
    size_t len;
    const char *v = fields_get(&st->req, ":authority", &len);
    if (v == NULL)
        v = fields_get(&st->req, "host", &len);
    host[0] = '\0';
    if (v != NULL)
        nectar__http_host_norm(v, len, host, n);
}

/* Answer a request for the hijack host locally. */
static int answer_local(h2_t *h, h2s_t *st, const char *method)
{
    size_t plen;
    const char *path = fields_get(&st->req, ":path", &plen);
    hijack_resp_t r;
    int rc = nectar__http_hijack_answer(&h->base.opts, method,
                                        path ? path : "/", plen, &r);
    if (rc != 0)
        return rc;
    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "h2 hijack %s %.*s -> %d",
                     method, (int)plen, path ? path : "/", r.status);
    char status[8], clen[24];
    snprintf(status, sizeof(status), "%d", r.status);
    snprintf(clen, sizeof(clen), "%zu", r.body.len);
    fields_clear(&st->res);
    rc = fields_add(&st->res, (const uint8_t *)":status", 7,
                    (const uint8_t *)status, strlen(status));
    if (rc == 0)
        rc = fields_add(&st->res, (const uint8_t *)"content-type", 12,
                        (const uint8_t *)r.ctype, strlen(r.ctype));
    if (rc == 0)
        rc = fields_add(&st->res, (const uint8_t *)"content-length", 14,
                        (const uint8_t *)clen, strlen(clen));
    if (rc == 0)
        rc = fields_add(&st->res, (const uint8_t *)"cache-control", 13,
                        (const uint8_t *)"no-store", 8);
    if (rc == 0 && !st->head)
        rc = nectar__http_buf_add(&st->down.b, r.body.data, r.body.len);
    nectar__http_buf_free(&r.body);
    if (rc != 0)
        return rc;
    st->down_eof = true;
    st->responded = true;
    size_t count;
    nghttp2_nv *nv = fields_nv(h, &st->res, NULL, true, &count);
    if (nv == NULL)
        return NECTAR_ENOMEM;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_down};
    rc = nghttp2_submit_response(h->cs, st->cid, nv, count,
                                 bodyq_len(&st->down) > 0 ? &prd : NULL);
    nectar_free(nv);
    fields_clear(&st->res);
    return rc == 0 ? 0 : NECTAR_EIO;
}

static int submit_request(h2_t *h, h2s_t *st, bool end_stream)
{
    size_t mlen;
    const char *method = fields_get(&st->req, ":method", &mlen);
    char host[256];
    request_host(st, host, sizeof(host));
    st->head = method != NULL && strcmp(method, "HEAD") == 0;
    const svc_http_opts_t *o = &h->base.opts;
    st->badge_ok = nectar__http_badge_allowed(o, host);
    st->up_eof = end_stream;
    size_t plen;
    const char *path = fields_get(&st->req, ":path", &plen);
    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "h2 request %s %s%s",
                     method ? method : "?", host, path ? path : "");
    if (nectar__http_hijack_match(o, host))
        return answer_local(h, st, method ? method : "GET");
    size_t count;
    nghttp2_nv *nv = fields_nv(h, &st->req, NULL, true, &count);
    if (nv == NULL)
        return NECTAR_ENOMEM;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_up};
    int32_t sid = nghttp2_submit_request(h->ss, NULL, nv, count,
                                         end_stream ? NULL : &prd, st);
    nectar_free(nv);
    fields_clear(&st->req);
    if (sid < 0) {
        nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "h2 submit request: %s",
                         nghttp2_strerror(sid));
        nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    st->sid = sid;
    return 0;
}

static int c_frame_recv(nghttp2_session *sess, const nghttp2_frame *fr,
                        void *user)
{
    h2_t *h = user;
    h2s_t *st = nghttp2_session_get_stream_user_data(sess, fr->hd.stream_id);
    if (st == NULL)
        return 0;
    bool end = (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (fr->hd.type == NGHTTP2_HEADERS &&
        fr->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (submit_request(h, st, end) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return 0;
    }
    if ((fr->hd.type == NGHTTP2_DATA || fr->hd.type == NGHTTP2_HEADERS) &&
        end) {
        st->up_trailers = fr->hd.type == NGHTTP2_HEADERS && st->req.n > 0;
        st->up_eof = true;
        resume_up(h, st);
    }
    return 0;
}

static int c_data(nghttp2_session *sess, uint8_t flags, int32_t id,
                  const uint8_t *data, size_t len, void *user)
{
    (void)flags;
    h2_t *h = user;
    h2s_t *st = nghttp2_session_get_stream_user_data(sess, id);
    if (st == NULL || st->sid == 0) {
        nghttp2_session_consume(sess, id, len); /* local answer: drop */
        return 0;
    }
    if (queue_data(sess, id, &st->up, &st->up_unconsumed, NULL, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    resume_up(h, st);
    return 0;
}

static int c_stream_close(nghttp2_session *sess, int32_t id, uint32_t code,
                          void *user)
{
    h2_t *h = user;
    h2s_t *st = nghttp2_session_get_stream_user_data(sess, id);
    if (st == NULL)
        return 0;
    st->c_closed = true;
    /* The server stream outlives it only when the client reset it, or the
     * server answered in full before reading the whole request (then
     * NO_ERROR tells it to stop sending, RFC 9113 §8.1). */
    if (st->sid > 0 && !st->s_closed) {
        uint32_t why = code           ? code
                       : st->down_eof ? NGHTTP2_NO_ERROR
                                      : NGHTTP2_CANCEL;
        nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, st->sid, why);
    }
    stream_maybe_free(h, st);
    return 0;
}

/* ---- 5. server side: responses ------------------------------------------- */

static int s_header(nghttp2_session *sess, const nghttp2_frame *fr,
                    const uint8_t *name, size_t nl, const uint8_t *value,
                    size_t vl, uint8_t flags, void *user)
{
    (void)flags;
    (void)user;
    h2s_t *st = nghttp2_session_get_stream_user_data(sess, fr->hd.stream_id);
    if (st == NULL || fr->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (fields_add(&st->res, name, nl, value, vl) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* Headers a rewritten body makes wrong (names arrive in lower case). */
static bool drop_for_badge(const char *name)
{
    return nectar__http_badge_drops(name, strlen(name));
}

static int submit_response(h2_t *h, h2s_t *st, bool end)
{
    size_t sl, ctl, cel;
    const char *status = fields_get(&st->res, ":status", &sl);
    int code = status ? (int)strtol(status, NULL, 10) : 0;
    if (code >= 100 && code < 200) {
        /* Interim answer (100 Continue, 103 Early Hints): relayed as a
         * non-final HEADERS frame; the final response comes later. */
        size_t count;
        nghttp2_nv *nv = fields_nv(h, &st->res, NULL, false, &count);
        int rc = nv == NULL
                     ? NECTAR_ENOMEM
                     : nghttp2_submit_headers(h->cs, NGHTTP2_FLAG_NONE, st->cid,
                                              NULL, nv, count, NULL);
        nectar_free(nv);
        fields_clear(&st->res);
        return rc < 0 ? NECTAR_EIO : 0;
    }
    const char *ct = fields_get(&st->res, "content-type", &ctl);
    const char *ce = fields_get(&st->res, "content-encoding", &cel);
    int enc = BADGE_ENC_IDENTITY;
    bool badge = st->badge_ok && !st->head && !end &&
                 nectar__http_badge_status(code) &&
                 nectar__http_badge_candidate(ct, ctl, ce, cel, &enc);
    if (badge) {
        st->badge = nectar__http_badge_new(enc, h->base.opts.badge_label);
        if (st->badge == NULL)
            return NECTAR_ENOMEM;
    }
    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "h2 response %d%s", code,
                     badge ? " (badge candidate)" : "");
    size_t count;
    nghttp2_nv *nv =
        fields_nv(h, &st->res, badge ? drop_for_badge : NULL, true, &count);
    if (nv == NULL)
        return NECTAR_ENOMEM;
    st->down_eof = end;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_down};
    int rc =
        nghttp2_submit_response(h->cs, st->cid, nv, count, end ? NULL : &prd);
    nectar_free(nv);
    fields_clear(&st->res);
    st->responded = true;
    return rc == 0 ? 0 : NECTAR_EIO;
}

static int finish_down(h2_t *h, h2s_t *st)
{
    if (st->badge != NULL) {
        if (nectar__http_badge_finish(st->badge, &st->down.b) != 0)
            return NECTAR_ENOMEM;
        nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "h2 badge %s",
                         nectar__http_badge_inserted(st->badge)
                             ? "inserted"
                             : "not inserted");
    }
    st->down_eof = true;
    resume_down(h, st);
    return 0;
}

static int s_frame_recv(nghttp2_session *sess, const nghttp2_frame *fr,
                        void *user)
{
    h2_t *h = user;
    h2s_t *st = nghttp2_session_get_stream_user_data(sess, fr->hd.stream_id);
    if (st == NULL)
        return 0;
    bool end = (fr->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    int rc = 0;
    if (fr->hd.type == NGHTTP2_HEADERS && !st->responded) {
        rc = submit_response(h, st, end);
    } else if (fr->hd.type == NGHTTP2_HEADERS && end) {
        st->trailers = st->res.n > 0;
        rc = finish_down(h, st);
    } else if (fr->hd.type == NGHTTP2_DATA && end) {
        rc = finish_down(h, st);
    }
    return rc == 0 ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int s_data(nghttp2_session *sess, uint8_t flags, int32_t id,
                  const uint8_t *data, size_t len, void *user)
{
    (void)flags;
    h2_t *h = user;
    h2s_t *st = nghttp2_session_get_stream_user_data(sess, id);
    if (st == NULL || st->c_closed) {
        nghttp2_session_consume(sess, id, len);
        return 0;
    }
    if (queue_data(sess, id, &st->down, &st->down_unconsumed, st->badge, data,
                   len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    resume_down(h, st);
    return 0;
}

static int s_stream_close(nghttp2_session *sess, int32_t id, uint32_t code,
                          void *user)
{
    h2_t *h = user;
    h2s_t *st = nghttp2_session_get_stream_user_data(sess, id);
    if (st == NULL)
        return 0;
    st->s_closed = true;
    if (!st->c_closed && (code != NGHTTP2_NO_ERROR || !st->responded))
        nghttp2_submit_rst_stream(h->cs, NGHTTP2_FLAG_NONE, st->cid,
                                  code ? code : NGHTTP2_INTERNAL_ERROR);
    stream_maybe_free(h, st);
    return 0;
}

/* ---- 6. stream callbacks, start, teardown -------------------------------- */

static void on_read(h2_t *h, bool client, ssize_t nread, const uint8_t *buf)
{
    http_base_t *b = &h->base;
    nectar__http_enter(b);
    if (b->finishing) {
        nectar__http_leave(b);
        return;
    }
    if (nread < 0) {
        if (client)
            h->c_eof = true;
        else
            h->s_eof = true;
        if (nread != NECTAR_EOF)
            nectar__http_log(b, NECTAR_LOG_DEBUG, "h2 %s read: %s",
                             client ? "client" : "server",
                             nectar_strerror((int)nread));
        if (client) /* nobody to answer: tell the server and go */
            nghttp2_session_terminate_session(h->ss, NGHTTP2_NO_ERROR);
        else if (!h->s_gone)
            server_gone(h);
    } else {
        ssize_t rc = nghttp2_session_mem_recv(client ? h->cs : h->ss, buf,
                                              (size_t)nread);
        if (rc < 0) {
            nectar__http_log(b, NECTAR_LOG_DEBUG, "h2 %s protocol error: %s",
                             client ? "client" : "server",
                             nghttp2_strerror((int)rc));
            h->err = NECTAR_EPARSE;
        }
    }
    pump(h);
    nectar__http_leave(b);
}

static void on_client_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data)
{
    (void)s;
    on_read(data, true, nread, buf);
}

static void on_server_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data)
{
    (void)s;
    on_read(data, false, nread, buf);
}

static void h2_write_done(http_base_t *b, int status)
{
    (void)status;
    pump((h2_t *)b);
}

static void h2_destroy(http_base_t *b)
{
    h2_t *h = (h2_t *)b;
    nghttp2_session_del(h->cs);
    nghttp2_session_del(h->ss);
    while (h->streams != NULL)
        stream_free(h, h->streams);
    nectar__http_buf_free(&h->to_client);
    nectar__http_buf_free(&h->to_server);
    nectar_free(h);
}

static const http_base_ops_t h2_ops = {
    .write_done = h2_write_done,
    .detach = NULL,
    .destroy = h2_destroy,
};

static int make_sessions(h2_t *h)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NECTAR_ENOMEM;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return NECTAR_ENOMEM;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
                                                            c_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_stream_close);
    int rc = nghttp2_session_server_new2(&h->cs, cb, h, opt);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, NULL);
    nghttp2_session_callbacks_set_on_header_callback(cb, s_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, s_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, s_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, s_stream_close);
    if (rc == 0)
        rc = nghttp2_session_client_new2(&h->ss, cb, h, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return NECTAR_ENOMEM;
    nghttp2_settings_entry cset[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 128},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
    };
    nghttp2_settings_entry sset[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
    };
    if (nghttp2_submit_settings(h->cs, NGHTTP2_FLAG_NONE, cset, 2) != 0 ||
        nghttp2_submit_settings(h->ss, NGHTTP2_FLAG_NONE, sset, 2) != 0 ||
        nghttp2_session_set_local_window_size(h->cs, NGHTTP2_FLAG_NONE, 0,
                                              H2_CONN_WINDOW) != 0 ||
        nghttp2_session_set_local_window_size(h->ss, NGHTTP2_FLAG_NONE, 0,
                                              H2_CONN_WINDOW) != 0)
        return NECTAR_ENOMEM;
    return 0;
}

int svc_h2_start(svc_stream_t *client, svc_stream_t *server,
                 const svc_http_opts_t *opts, svc_http_done_cb done_cb,
                 void *data, svc_http_t **out)
{
    if (client == NULL || server == NULL || opts == NULL || done_cb == NULL)
        return NECTAR_EINVAL;
    h2_t *h = nectar_calloc(1, sizeof(*h));
    if (h == NULL)
        return NECTAR_ENOMEM;
    nectar__http_base_init(&h->base, &h2_ops, client, server, opts, done_cb,
                           data);
    /* HTTP/2 field names are lower case on the wire. */
    size_t i = 0;
    for (const char *p = h->base.opts.observed_name;
         *p != '\0' && i + 1 < sizeof(h->observed); p++)
        h->observed[i++] = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : *p;
    int rc = make_sessions(h);
    if (rc == 0)
        rc = svc_read_start(client, on_client_read, h);
    if (rc == 0)
        rc = svc_read_start(server, on_server_read, h);
    if (rc != 0) {
        svc_read_stop(client);
        nghttp2_session_del(h->cs);
        nghttp2_session_del(h->ss);
        nectar_free(h);
        return rc;
    }
    h->c_reading = h->s_reading = true;
    /* Settings (and the client preface) go out with the first writes. */
    nectar__http_enter(&h->base);
    pump(h);
    nectar__http_leave(&h->base);
    if (out != NULL)
        *out = (svc_http_t *)h;
    return 0;
}
