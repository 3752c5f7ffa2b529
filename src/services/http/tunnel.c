/*
 * tunnel.c - a svc_stream_t view over one stream of a relay: after a
 * CONNECT, the tunnelled bytes are handed on (to the TLS layer or a nested
 * relay) as a stream of their own, while the relay keeps owning the real
 * stream.  The view first replays the bytes the relay had already read past
 * the CONNECT, then reads the parent; writes and shutdown go to the parent.
 *
 * Lifetime: the view's memory lives until both its user closed it and the
 * relay detached it (the relay detaches before closing the parent, which
 * drops the parent's pending writes, so their small records are freed
 * here).  The final free goes through uv_close of the idle handle used to
 * deliver the replayed bytes outside read_start.
 */
#include <string.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/http_int.h"

typedef struct twrite {
    struct twrite *next;
    struct twrite *prev;
    struct view *view;
    svc_write_cb cb;
    void *data;
} twrite_t;

typedef struct view {
    svc_stream_t base;
    svc_stream_t *parent; /* NULL once detached */
    hbuf_t prefix;
    bool eof_after_prefix; /* parent already reported EOF to the relay */
    bool reading;
    bool parent_reading;
    bool ended; /* EOF or error delivered */
    bool closed;
    svc_read_cb read_cb;
    void *read_data;
    twrite_t *writes;
    uv_idle_t idle;
    void (*on_close)(void *arg);
    void *arg;
} view_t;

static void on_idle_closed(uv_handle_t *h)
{
    view_t *v = h->data;
    nectar__http_buf_free(&v->prefix);
    nectar_free(v);
}

static void maybe_free(view_t *v)
{
    if (v->closed && v->parent == NULL && v->writes == NULL)
        uv_close((uv_handle_t *)&v->idle, on_idle_closed);
}

static void on_parent_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data)
{
    (void)s;
    view_t *v = data;
    if (v->closed || v->ended)
        return;
    if (nread < 0) {
        v->ended = true;
        v->parent_reading = false;
    }
    v->read_cb(&v->base, nread, buf, v->read_data);
}

static void start_parent(view_t *v)
{
    if (v->parent == NULL || v->parent_reading || v->ended)
        return;
    if (svc_read_start(v->parent, on_parent_read, v) == 0)
        v->parent_reading = true;
}

/* Deliver the replayed bytes (and an early EOF), then read the parent. */
static void on_idle(uv_idle_t *h)
{
    view_t *v = h->data;
    uv_idle_stop(h);
    if (v->closed) {
        /* Tell the relay now, outside the caller's close(). */
        void (*cb)(void *) = v->on_close;
        v->on_close = NULL;
        if (cb != NULL)
            cb(v->arg); /* may detach: the memory stays until uv_close */
        return;
    }
    if (!v->reading)
        return;
    if (v->prefix.len > 0) {
        hbuf_t p = v->prefix;
        v->prefix = (hbuf_t){0};
        v->read_cb(&v->base, (ssize_t)p.len, p.data, v->read_data);
        nectar__http_buf_free(&p);
        if (!v->reading || v->closed)
            return;
    }
    if (v->eof_after_prefix || v->parent == NULL) {
        v->ended = true;
        v->read_cb(&v->base, v->parent ? NECTAR_EOF : NECTAR_ECLOSED, NULL,
                   v->read_data);
        return;
    }
    start_parent(v);
}

static int v_read_start(svc_stream_t *s, svc_read_cb cb, void *data)
{
    view_t *v = (view_t *)s;
    if (v->closed || v->ended)
        return NECTAR_ECLOSED;
    v->read_cb = cb;
    v->read_data = data;
    v->reading = true;
    if (v->prefix.len > 0 || v->eof_after_prefix || v->parent == NULL)
        uv_idle_start(&v->idle, on_idle);
    else
        start_parent(v);
    return 0;
}

static int v_read_stop(svc_stream_t *s)
{
    view_t *v = (view_t *)s;
    v->reading = false;
    uv_idle_stop(&v->idle);
    if (v->parent != NULL && v->parent_reading)
        svc_read_stop(v->parent);
    v->parent_reading = false;
    return 0;
}

static void on_parent_written(svc_stream_t *s, int status, void *data)
{
    (void)s;
    twrite_t *w = data;
    view_t *v = w->view;
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        v->writes = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    svc_write_cb cb = v->closed ? NULL : w->cb;
    void *cbdata = w->data;
    nectar_free(w);
    if (cb != NULL)
        cb(&v->base, status, cbdata);
    else
        maybe_free(v);
}

static int v_write(svc_stream_t *s, const uint8_t *buf, size_t len,
                   svc_write_cb cb, void *data)
{
    view_t *v = (view_t *)s;
    if (v->parent == NULL || v->closed)
        return NECTAR_ECLOSED;
    twrite_t *w = nectar_calloc(1, sizeof(*w));
    if (w == NULL)
        return NECTAR_ENOMEM;
    w->view = v;
    w->cb = cb;
    w->data = data;
    int rc = svc_write(v->parent, buf, len, on_parent_written, w);
    if (rc < 0) {
        nectar_free(w);
        return rc;
    }
    w->next = v->writes;
    if (v->writes != NULL)
        v->writes->prev = w;
    v->writes = w;
    return 0;
}

static int v_shutdown(svc_stream_t *s)
{
    view_t *v = (view_t *)s;
    if (v->parent == NULL)
        return NECTAR_ECLOSED;
    return svc_shutdown(v->parent);
}

static size_t v_wqs(const svc_stream_t *s)
{
    const view_t *v = (const view_t *)s;
    return v->parent ? svc_write_queue_size(v->parent) : 0;
}

static void v_close(svc_stream_t *s)
{
    view_t *v = (view_t *)s;
    if (v->closed)
        return;
    v_read_stop(s);
    v->closed = true;
    if (v->parent == NULL) {
        v->on_close = NULL;
        maybe_free(v);
        return;
    }
    /* The relay hears of it on the next loop turn, so closing a view never
     * re-enters the caller (e.g. through the relay's done_cb). */
    if (v->on_close != NULL)
        uv_idle_start(&v->idle, on_idle);
}

static const svc_stream_ops_t view_ops = {
    .name = "http-tunnel",
    .read_start = v_read_start,
    .read_stop = v_read_stop,
    .write = v_write,
    .shutdown = v_shutdown,
    .write_queue_size = v_wqs,
    .close = v_close,
};

svc_stream_t *nectar__http_tunnel_new(svc_stream_t *parent,
                                      const uint8_t *prefix, size_t plen,
                                      bool eof, void (*on_close)(void *arg),
                                      void *arg)
{
    view_t *v = nectar_calloc(1, sizeof(*v));
    if (v == NULL)
        return NULL;
    if (nectar__http_buf_add(&v->prefix, prefix, plen) != 0) {
        nectar_free(v);
        return NULL;
    }
    v->base.ops = &view_ops;
    v->base.loop = parent->loop;
    v->parent = parent;
    v->eof_after_prefix = eof;
    v->on_close = on_close;
    v->arg = arg;
    uv_idle_init(parent->loop, &v->idle);
    v->idle.data = v;
    return &v->base;
}

void nectar__http_tunnel_detach(svc_stream_t *s)
{
    view_t *v = (view_t *)s;
    if (v->parent == NULL)
        return;
    if (v->parent_reading)
        svc_read_stop(v->parent);
    v->parent_reading = false;
    v->parent = NULL;
    v->on_close = NULL; /* the relay is going away */
    /* The parent is about to close and drop these writes unanswered. */
    while (v->writes != NULL) {
        twrite_t *w = v->writes;
        v->writes = w->next;
        nectar_free(w);
    }
    if (v->closed)
        maybe_free(v);
    else if (v->reading && !v->ended)
        uv_idle_start(&v->idle, on_idle); /* reports ECLOSED */
}
