/*
 * stream.c - svc_stream_t implementations that need no protocol: the
 * wrapper over an engine flow stream (svc_stream_wrap) and the replay of
 * peeked bytes in front of another stream (svc_stream_prefix).
 *
 * Why the wrapper copies each write: svc_close() promises that pending
 * writes are dropped, so a writer may free its buffer right after closing.
 * The engine, though, keeps a queued write until the host accepts it (or
 * the flow ends), so it must never point into the writer's memory.  The
 * copy lives in the write request, which the engine's completion frees
 * even after the wrapper was closed.
 */
#include "services/stream.h"

#include <string.h>

#include "common/alloc.h"

/* ---- wrap: svc_stream_t over nectar_stream_t ---------------------------- */

struct wrap {
    svc_stream_t base;
    nectar_stream_t *s;
    svc_read_cb read_cb;
    void *read_data;
    unsigned refs; /* 1 while open + 1 per write the engine still holds */
    bool closed;
};

struct wrap_write {
    struct wrap *w;
    svc_write_cb cb;
    void *data;
    uint8_t bytes[]; /* the copy the engine reads from */
};

static void wrap_unref(struct wrap *w)
{
    if (--w->refs == 0)
        nectar_free(w);
}

static void wrap_on_read(nectar_stream_t *s, ssize_t nread, const uint8_t *buf,
                         void *data)
{
    struct wrap *w = data;

    (void)s;
    if (!w->closed && w->read_cb != NULL)
        w->read_cb(&w->base, nread, buf, w->read_data);
}

static int wrap_read_start(svc_stream_t *base, svc_read_cb cb, void *data)
{
    struct wrap *w = (struct wrap *)base;

    w->read_cb = cb;
    w->read_data = data;
    return nectar_stream_read_start(w->s, wrap_on_read, w);
}

static int wrap_read_stop(svc_stream_t *base)
{
    return nectar_stream_read_stop(((struct wrap *)base)->s);
}

static void wrap_on_write(nectar_stream_t *s, int status, void *data)
{
    struct wrap_write *req = data;
    struct wrap *w = req->w;

    (void)s;
    /* A closed wrapper drops completions, as svc_close promises. */
    if (!w->closed && req->cb != NULL)
        req->cb(&w->base, status, req->data);
    nectar_free(req);
    wrap_unref(w);
}

static int wrap_write(svc_stream_t *base, const uint8_t *buf, size_t len,
                      svc_write_cb cb, void *data)
{
    struct wrap *w = (struct wrap *)base;
    struct wrap_write *req;
    int rc;

    if (w->closed)
        return NECTAR_ECLOSED;
    req = nectar_malloc(sizeof(*req) + len);
    if (req == NULL)
        return NECTAR_ENOMEM;
    req->w = w;
    req->cb = cb;
    req->data = data;
    if (len > 0)
        memcpy(req->bytes, buf, len);
    /* The request's reference is taken first, so even a completion that
     * arrived early would find the wrapper alive. */
    w->refs++;
    rc = nectar_stream_write(w->s, req->bytes, len, wrap_on_write, req);
    if (rc != 0) {
        w->refs--;
        nectar_free(req);
    }
    return rc;
}

static int wrap_shutdown(svc_stream_t *base)
{
    return nectar_stream_shutdown(((struct wrap *)base)->s);
}

static size_t wrap_queue_size(const svc_stream_t *base)
{
    return nectar_stream_write_queue_size(((const struct wrap *)base)->s);
}

static void wrap_close(svc_stream_t *base)
{
    struct wrap *w = (struct wrap *)base;

    if (w->closed)
        return;
    w->closed = true;
    nectar_stream_read_stop(w->s);
    wrap_unref(w);
}

static const svc_stream_ops_t wrap_ops = {
    .name = "wrap",
    .read_start = wrap_read_start,
    .read_stop = wrap_read_stop,
    .write = wrap_write,
    .shutdown = wrap_shutdown,
    .write_queue_size = wrap_queue_size,
    .close = wrap_close,
};

svc_stream_t *svc_stream_wrap(nectar_stream_t *s)
{
    struct wrap *w;

    if (s == NULL)
        return NULL;
    w = nectar_calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->base.ops = &wrap_ops;
    w->base.loop = nectar_tcp_flow_loop(nectar_stream_flow(s));
    w->s = s;
    w->refs = 1;
    return &w->base;
}

/* ---- prefix: replay peeked bytes, then read the inner stream ------------ */

/* Each write through the prefix is tracked so close can free requests
 * whose completion the inner stream drops. */
struct prefix_write {
    struct prefix_write *prev, *next;
    struct prefix *p;
    svc_write_cb cb;
    void *data;
};

struct prefix {
    svc_stream_t base;
    svc_stream_t *inner;
    uint8_t *bytes; /* the replay; NULL once delivered */
    size_t len;
    svc_read_cb read_cb;
    void *read_data;
    bool reading;
    bool closed;
    uv_idle_t idle; /* delivers the replay from the loop, never inline */
    struct prefix_write *writes;
};

static void prefix_on_inner_read(svc_stream_t *inner, ssize_t nread,
                                 const uint8_t *buf, void *data)
{
    struct prefix *p = data;

    (void)inner;
    if (!p->closed && p->read_cb != NULL)
        p->read_cb(&p->base, nread, buf, p->read_data);
}

static void prefix_on_idle(uv_idle_t *idle)
{
    struct prefix *p = idle->data;
    uint8_t *bytes = p->bytes;
    size_t len = p->len;

    uv_idle_stop(&p->idle);
    if (p->closed || !p->reading || bytes == NULL)
        return;
    p->bytes = NULL;
    p->len = 0;
    p->read_cb(&p->base, (ssize_t)len, bytes, p->read_data);
    nectar_free(bytes);
    /* The callback may have stopped reading or closed the stream; the
     * struct itself lives until the idle handle's close callback. */
    if (!p->closed && p->reading &&
        svc_read_start(p->inner, prefix_on_inner_read, p) != 0)
        p->read_cb(&p->base, NECTAR_ECLOSED, NULL, p->read_data);
}

static int prefix_read_start(svc_stream_t *base, svc_read_cb cb, void *data)
{
    struct prefix *p = (struct prefix *)base;

    if (p->closed)
        return NECTAR_ECLOSED;
    p->read_cb = cb;
    p->read_data = data;
    p->reading = true;
    if (p->bytes != NULL)
        return uv_idle_start(&p->idle, prefix_on_idle) == 0 ? 0 : NECTAR_EIO;
    return svc_read_start(p->inner, prefix_on_inner_read, p);
}

static int prefix_read_stop(svc_stream_t *base)
{
    struct prefix *p = (struct prefix *)base;

    p->reading = false;
    if (p->bytes != NULL) {
        uv_idle_stop(&p->idle);
        return 0;
    }
    return svc_read_stop(p->inner);
}

static void prefix_unlink(struct prefix *p, struct prefix_write *req)
{
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        p->writes = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
}

static void prefix_on_write(svc_stream_t *inner, int status, void *data)
{
    struct prefix_write *req = data;
    struct prefix *p = req->p;

    (void)inner;
    prefix_unlink(p, req);
    if (req->cb != NULL)
        req->cb(&p->base, status, req->data);
    nectar_free(req);
}

static int prefix_write(svc_stream_t *base, const uint8_t *buf, size_t len,
                        svc_write_cb cb, void *data)
{
    struct prefix *p = (struct prefix *)base;
    struct prefix_write *req;
    int rc;

    if (p->closed)
        return NECTAR_ECLOSED;
    req = nectar_calloc(1, sizeof(*req));
    if (req == NULL)
        return NECTAR_ENOMEM;
    req->p = p;
    req->cb = cb;
    req->data = data;
    rc = svc_write(p->inner, buf, len, prefix_on_write, req);
    if (rc != 0) {
        nectar_free(req);
        return rc;
    }
    req->next = p->writes;
    if (p->writes != NULL)
        p->writes->prev = req;
    p->writes = req;
    return 0;
}

static int prefix_shutdown(svc_stream_t *base)
{
    return svc_shutdown(((struct prefix *)base)->inner);
}

static size_t prefix_queue_size(const svc_stream_t *base)
{
    return svc_write_queue_size(((const struct prefix *)base)->inner);
}

static void prefix_on_closed(uv_handle_t *h)
{
    nectar_free(h->data);
}

static void prefix_close(svc_stream_t *base)
{
    struct prefix *p = (struct prefix *)base;

    if (p->closed)
        return;
    p->closed = true;
    svc_close(p->inner);
    /* The inner stream dropped these completions; free their requests. */
    while (p->writes != NULL) {
        struct prefix_write *req = p->writes;
        p->writes = req->next;
        nectar_free(req);
    }
    nectar_free(p->bytes);
    p->bytes = NULL;
    uv_close((uv_handle_t *)&p->idle, prefix_on_closed);
}

static const svc_stream_ops_t prefix_ops = {
    .name = "prefix",
    .read_start = prefix_read_start,
    .read_stop = prefix_read_stop,
    .write = prefix_write,
    .shutdown = prefix_shutdown,
    .write_queue_size = prefix_queue_size,
    .close = prefix_close,
};

svc_stream_t *svc_stream_prefix(svc_stream_t *inner, const uint8_t *bytes,
                                size_t len)
{
    struct prefix *p;

    if (inner == NULL)
        return NULL;
    p = nectar_calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    if (len > 0) {
        p->bytes = nectar_memdup(bytes, len);
        if (p->bytes == NULL) {
            nectar_free(p);
            return NULL;
        }
        p->len = len;
    }
    if (uv_idle_init(inner->loop, &p->idle) != 0) {
        nectar_free(p->bytes);
        nectar_free(p);
        return NULL;
    }
    p->idle.data = p;
    p->base.ops = &prefix_ops;
    p->base.loop = inner->loop;
    p->inner = inner;
    return &p->base;
}

bool svc_stream_copies_writes(const svc_stream_t *s)
{
    while (s != NULL && s->ops == &prefix_ops)
        s = ((const struct prefix *)s)->inner;
    return s != NULL && s->ops == &wrap_ops;
}
