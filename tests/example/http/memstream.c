/*
 * memstream.c - the in-memory svc_stream_t pair used by the HTTP tests.
 *
 * Each end keeps an inbound queue of the chunks its peer wrote (pointers
 * to the writer's borrowed buffers).  An idle handle delivers them to the
 * reader while it reads, in slices when asked, and completes the writer's
 * write when a chunk is fully read, so write_queue_size falls only as the
 * reader consumes: a reader that stops reading back-pressures the writer.
 */
#include "memstream.h"

#include <stdlib.h>
#include <string.h>

#include "nectar/error.h"

typedef struct chunk {
    struct chunk *next;
    const uint8_t *buf;
    size_t len;
    size_t off;
    struct mend *writer;
    svc_write_cb cb;
    void *data;
    int status; /* completions list: the status to report */
} chunk_t;

typedef struct mend {
    svc_stream_t base;
    struct mend *peer;
    chunk_t *in_head, *in_tail;     /* written by peer, not yet read */
    chunk_t *done_head, *done_tail; /* my writes to complete with error */
    bool peer_shut;                 /* EOF after the inbound queue */
    bool ended;                     /* EOF delivered */
    bool shut;                      /* my write half is shut */
    bool reading;
    bool closed;
    size_t slice;
    svc_read_cb cb;
    void *cbdata;
    uv_idle_t idle;
} mend_t;

static void sent(svc_stream_t *s, int status, void *data);

/* A dropped write: mem_send's copies are freed, others are the caller's. */
static void drop(chunk_t *c)
{
    if (c->cb == sent)
        free(c->data);
    free(c);
}

static void kick(mend_t *e)
{
    if (e != NULL && !e->closed)
        uv_idle_start(&e->idle, (uv_idle_cb)e->idle.data);
}

static void push(chunk_t **head, chunk_t **tail, chunk_t *c)
{
    c->next = NULL;
    if (*tail != NULL)
        (*tail)->next = c;
    else
        *head = c;
    *tail = c;
}

static void on_idle(uv_idle_t *h);

static void run_completions(mend_t *e)
{
    while (e->done_head != NULL && !e->closed) {
        chunk_t *c = e->done_head;
        e->done_head = c->next;
        if (e->done_head == NULL)
            e->done_tail = NULL;
        if (c->cb != NULL)
            c->cb(&e->base, c->status, c->data);
        free(c);
    }
}

static void on_idle(uv_idle_t *h)
{
    mend_t *e = (mend_t *)((char *)h - offsetof(mend_t, idle));
    run_completions(e);
    for (int i = 0; i < 64 && !e->closed; i++) {
        if (!e->reading || e->ended)
            break;
        chunk_t *c = e->in_head;
        if (c == NULL) {
            if (e->peer_shut || e->peer == NULL) {
                e->ended = true;
                e->cb(&e->base, NECTAR_EOF, NULL, e->cbdata);
            }
            break;
        }
        size_t n = c->len - c->off;
        if (e->slice != 0 && n > e->slice)
            n = e->slice;
        const uint8_t *p = c->buf + c->off;
        c->off += n;
        bool whole = c->off == c->len;
        if (whole) {
            e->in_head = c->next;
            if (e->in_head == NULL)
                e->in_tail = NULL;
        }
        if (n > 0)
            e->cb(&e->base, (ssize_t)n, p, e->cbdata);
        if (whole) {
            mend_t *w = c->writer;
            if (w != NULL && !w->closed) {
                c->status = 0;
                push(&w->done_head, &w->done_tail, c);
                kick(w);
            } else {
                drop(c);
            }
        }
    }
    if (e->closed)
        return;
    bool more = e->done_head != NULL ||
                (e->reading && !e->ended &&
                 (e->in_head != NULL || e->peer_shut || e->peer == NULL));
    if (!more)
        uv_idle_stop(&e->idle);
}

static int m_read_start(svc_stream_t *s, svc_read_cb cb, void *data)
{
    mend_t *e = (mend_t *)s;
    if (e->ended || e->closed)
        return NECTAR_ECLOSED;
    e->cb = cb;
    e->cbdata = data;
    e->reading = true;
    kick(e);
    return 0;
}

static int m_read_stop(svc_stream_t *s)
{
    ((mend_t *)s)->reading = false;
    return 0;
}

static int m_write(svc_stream_t *s, const uint8_t *buf, size_t len,
                   svc_write_cb cb, void *data)
{
    mend_t *e = (mend_t *)s;
    if (e->shut || e->closed)
        return NECTAR_ECLOSED;
    chunk_t *c = calloc(1, sizeof(*c));
    c->buf = buf;
    c->len = len;
    c->writer = e;
    c->cb = cb;
    c->data = data;
    if (e->peer == NULL || len == 0) {
        c->status = e->peer == NULL ? NECTAR_EPIPE : 0;
        push(&e->done_head, &e->done_tail, c);
        kick(e);
        return 0;
    }
    push(&e->peer->in_head, &e->peer->in_tail, c);
    kick(e->peer);
    return 0;
}

static int m_shutdown(svc_stream_t *s)
{
    mend_t *e = (mend_t *)s;
    if (e->shut)
        return 0;
    e->shut = true;
    if (e->peer != NULL) {
        e->peer->peer_shut = true;
        kick(e->peer);
    }
    return 0;
}

static size_t m_wqs(const svc_stream_t *s)
{
    const mend_t *e = (const mend_t *)s;
    size_t n = 0;
    if (e->peer == NULL)
        return 0;
    for (chunk_t *c = e->peer->in_head; c != NULL; c = c->next) {
        if (c->writer == e)
            n += c->len - c->off;
    }
    return n;
}

static void on_closed(uv_handle_t *h)
{
    free((char *)h - offsetof(mend_t, idle));
}

static void m_close(svc_stream_t *s)
{
    mend_t *e = (mend_t *)s;
    e->closed = true;
    mend_t *p = e->peer;
    /* My pending writes are dropped (no callbacks), the peer's writes to
     * me fail with EPIPE, and the peer reads EOF. */
    if (p != NULL) {
        chunk_t **pp = &p->in_head;
        p->in_tail = NULL;
        while (*pp != NULL) {
            chunk_t *c = *pp;
            if (c->writer == e) {
                *pp = c->next;
                drop(c);
            } else {
                p->in_tail = c;
                pp = &c->next;
            }
        }
        while (e->in_head != NULL) {
            chunk_t *c = e->in_head;
            e->in_head = c->next;
            c->status = NECTAR_EPIPE;
            push(&p->done_head, &p->done_tail, c);
        }
        p->peer = NULL;
        kick(p);
    }
    while (e->in_head != NULL) {
        chunk_t *c = e->in_head;
        e->in_head = c->next;
        drop(c);
    }
    while (e->done_head != NULL) {
        chunk_t *c = e->done_head;
        e->done_head = c->next;
        drop(c);
    }
    e->peer = NULL;
    uv_close((uv_handle_t *)&e->idle, on_closed);
}

static const svc_stream_ops_t mem_ops = {
    .name = "mem",
    .read_start = m_read_start,
    .read_stop = m_read_stop,
    .write = m_write,
    .shutdown = m_shutdown,
    .write_queue_size = m_wqs,
    .close = m_close,
};

static mend_t *mend_new(uv_loop_t *loop)
{
    mend_t *e = calloc(1, sizeof(*e));
    e->base.ops = &mem_ops;
    e->base.loop = loop;
    uv_idle_init(loop, &e->idle);
    e->idle.data = (void *)on_idle;
    return e;
}

void mem_pair(uv_loop_t *loop, svc_stream_t **a, svc_stream_t **b)
{
    mend_t *x = mend_new(loop);
    mend_t *y = mend_new(loop);
    x->peer = y;
    y->peer = x;
    *a = &x->base;
    *b = &y->base;
}

void mem_set_slice(svc_stream_t *s, size_t n)
{
    ((mend_t *)s)->slice = n;
}

/* ---- helpers ------------------------------------------------------------- */

static void sink_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                      void *data)
{
    (void)s;
    mem_sink_t *k = data;
    if (nread == NECTAR_EOF) {
        k->eof = true;
        return;
    }
    if (nread < 0) {
        k->err = (int)nread;
        return;
    }
    k->reads++;
    if (k->len + (size_t)nread + 1 > k->cap) {
        size_t cap = k->cap ? k->cap : 1024;
        while (cap < k->len + (size_t)nread + 1)
            cap *= 2;
        k->data = realloc(k->data, cap);
        k->cap = cap;
    }
    memcpy(k->data + k->len, buf, (size_t)nread);
    k->len += (size_t)nread;
    k->data[k->len] = 0;
}

void mem_collect(svc_stream_t *s, mem_sink_t *sink)
{
    svc_read_start(s, sink_read, sink);
}

void mem_sink_free(mem_sink_t *sink)
{
    free(sink->data);
    memset(sink, 0, sizeof(*sink));
}

const char *mem_sink_str(mem_sink_t *sink)
{
    return sink->data ? (const char *)sink->data : "";
}

static void sent(svc_stream_t *s, int status, void *data)
{
    (void)s;
    (void)status;
    free(data);
}

int mem_send(svc_stream_t *s, const void *p, size_t n)
{
    void *copy = malloc(n ? n : 1);
    if (n > 0)
        memcpy(copy, p, n);
    int rc = svc_write(s, copy, n, sent, copy);
    if (rc != 0)
        free(copy);
    return rc;
}

int mem_send_str(svc_stream_t *s, const char *str)
{
    return mem_send(s, str, strlen(str));
}

int mem_run_until(uv_loop_t *loop, int (*cond)(void *), void *arg,
                  int timeout_ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
    int v = cond(arg);
    while (!v && uv_hrtime() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        v = cond(arg);
    }
    return v;
}

void mem_run_turns(uv_loop_t *loop, int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}

static void count_open(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) {
        (*(int *)arg)++;
        uv_close(h, NULL);
    }
}

int mem_loop_close(uv_loop_t *loop)
{
    mem_run_turns(loop, 10);
    int open = 0;
    uv_walk(loop, count_open, &open);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return open;
}
