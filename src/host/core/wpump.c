/*
 * wpump.c - the TCP write pump: a byte budget in front of one socket's
 * writes, with the engine's all-or-nothing ACCEPTED/PAUSED/CLOSED contract
 * (ne-host §4.6).  One writev in flight at a time.
 */
#include "host/core/wpump.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>

#include "common/alloc.h"

uint64_t nectar__host_now_ms(void);

struct wchunk *wchunk_new(size_t cap)
{
    struct wchunk *c = nectar_malloc(sizeof(*c) + cap);
    if (c != NULL) {
        c->next = NULL;
        c->len = 0;
    }
    return c;
}

struct wchunk *wchunk_fit(struct wchunk *c)
{
    /* Only worth it for small reads; realloc shrinks in place on glibc. */
    if (c->len >= 4096)
        return c;
    struct wchunk *s = nectar_realloc(c, sizeof(*c) + c->len);
    return s != NULL ? s : c;
}

void wchunk_free(struct wchunk *c)
{
    nectar_free(c);
}

void wchunk_release(void *owner)
{
    nectar_free(owner);
}

static void free_list(struct wchunk *c)
{
    while (c != NULL) {
        struct wchunk *n = c->next;
        wchunk_free(c);
        c = n;
    }
}

void wpump_init(struct wpump *p, size_t cap, void *owner,
                const struct wpump_ops *ops, void (*post_flush)(void *))
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    p->cap = cap > 0 ? cap : 1;
    p->owner = owner;
    p->ops = ops;
    p->post_flush = post_flush;
    p->lifecycle = WP_PENDING;
    p->direct_fd = -1;
}

void wpump_destroy(struct wpump *p)
{
    free_list(p->head);
    p->head = p->tail = NULL;
    if (p->inflight != NULL) {
        free_list(p->inflight->chunks);
        nectar_free(p->inflight);
        p->inflight = NULL;
    }
    pthread_mutex_destroy(&p->lock);
}

/* Caller holds the lock. */
static void append(struct wpump *p, struct wchunk *c)
{
    c->next = NULL;
    if (p->tail != NULL)
        p->tail->next = c;
    else
        p->head = c;
    p->tail = c;
    p->pending += c->len;
}

RamaTcpDeliverStatus wpump_enqueue(struct wpump *p, const uint8_t *buf,
                                   size_t len)
{
    if (len == 0)
        return RAMA_TCP_DELIVER_ACCEPTED;
    pthread_mutex_lock(&p->lock);
    if (p->closed) {
        pthread_mutex_unlock(&p->lock);
        return RAMA_TCP_DELIVER_CLOSED;
    }
    /* The first chunk is always taken, however large: refusing it could
     * never succeed later and would deadlock the flow. */
    if (p->pending > 0 && p->pending + len > p->cap) {
        p->paused_signaled = true;
        pthread_mutex_unlock(&p->lock);
        if (p->paused_count != NULL)
            atomic_fetch_add(p->paused_count, 1);
        return RAMA_TCP_DELIVER_PAUSED;
    }
    if (p->direct_fd >= 0 && !p->busy && p->head == NULL) {
        ssize_t n = send(p->direct_fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p->direct_written += (size_t)n;
            if (p->activity != NULL)
                atomic_store(p->activity, nectar__host_now_ms());
        }
        if (n == (ssize_t)len) {
            pthread_mutex_unlock(&p->lock);
            return RAMA_TCP_DELIVER_ACCEPTED;
        }
        /* Partial, EAGAIN or an error: the loop writes the rest (and
         * reports any error through the normal write path). */
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        }
    }
    struct wchunk *c = wchunk_new(len);
    if (c == NULL) {
        /* Out of memory: report PAUSED so the engine retries after the
         * next drain edge instead of losing bytes; with nothing queued the
         * flush fires that edge itself. */
        p->paused_signaled = true;
        bool idle = p->pending == 0;
        pthread_mutex_unlock(&p->lock);
        if (idle)
            p->post_flush(p->owner);
        return RAMA_TCP_DELIVER_PAUSED;
    }
    memcpy(c->data, buf, len);
    c->len = len;
    append(p, c);
    pthread_mutex_unlock(&p->lock);
    p->post_flush(p->owner);
    return RAMA_TCP_DELIVER_ACCEPTED;
}

bool wpump_push(struct wpump *p, struct wchunk *c)
{
    pthread_mutex_lock(&p->lock);
    if (p->closed) {
        pthread_mutex_unlock(&p->lock);
        wchunk_free(c);
        return false;
    }
    append(p, c);
    if (p->pending >= p->cap)
        p->fwd_waiting = true;
    pthread_mutex_unlock(&p->lock);
    wpump_flush(p);
    /* The flush may already have handed the bytes to the socket and fired
     * the drain edge; only a still-pending wait means "stop reading" (a
     * stale answer here would stop the reader after its resume). */
    pthread_mutex_lock(&p->lock);
    bool over = p->fwd_waiting;
    pthread_mutex_unlock(&p->lock);
    return over;
}

void wpump_open(struct wpump *p, uv_stream_t *stream)
{
    p->stream = stream;
    if (p->lifecycle == WP_PENDING)
        p->lifecycle = WP_OPEN;
    uv_os_fd_t fd;
    if (p->lifecycle == WP_OPEN && uv_fileno((uv_handle_t *)stream, &fd) == 0) {
        pthread_mutex_lock(&p->lock);
        if (!p->closed)
            p->direct_fd = fd;
        pthread_mutex_unlock(&p->lock);
    }
    wpump_flush(p);
}

uint64_t wpump_written(struct wpump *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t n = p->written + p->direct_written;
    pthread_mutex_unlock(&p->lock);
    return n;
}

bool wpump_is_closed(struct wpump *p)
{
    pthread_mutex_lock(&p->lock);
    bool c = p->closed;
    pthread_mutex_unlock(&p->lock);
    return c;
}

static void fire_drained(struct wpump *p)
{
    wpump_drained_cb cb = p->drained;
    p->drained = NULL;
    if (cb != NULL)
        cb(p);
}

static void on_write(uv_write_t *req, int status);

void wpump_flush(struct wpump *p)
{
    if (p->writing)
        return;
    pthread_mutex_lock(&p->lock);
    if (p->closed) {
        assert(p->head == NULL && p->pending == 0);
        pthread_mutex_unlock(&p->lock);
        return;
    }
    /* A draining pump writes even if it was never opened, as long as it
     * has a socket. */
    bool can_write = p->stream != NULL && p->lifecycle != WP_PENDING;
    if (p->head == NULL || !can_write) {
        /* pending == 0 guards the gap between an ACCEPTED enqueue and its
         * flush event; here the enqueue appends under the lock, so an
         * empty queue already means nothing is in transit. */
        bool fin = p->lifecycle == WP_DRAINING && p->head == NULL &&
                   p->pending == 0;
        if (fin)
            p->closed = true;
        /* A PAUSED with nothing queued (the copy failed for lack of
         * memory) still owes the engine a drain edge, or it would park
         * until its 60 s backstop. */
        bool retry = can_write && p->head == NULL && p->paused_signaled;
        if (retry)
            p->paused_signaled = false;
        pthread_mutex_unlock(&p->lock);
        if (retry)
            p->ops->drain_edge(p, true, false);
        if (fin)
            fire_drained(p);
        return;
    }
    unsigned n = 0;
    for (struct wchunk *c = p->head; c != NULL && n < WPUMP_MAX_IOV;
         c = c->next)
        n++;
    struct wbatch *b = nectar_malloc(sizeof(*b) + n * sizeof(uv_buf_t));
    if (b == NULL) {
        pthread_mutex_unlock(&p->lock);
        wpump_cancel(p);
        p->ops->error(p, UV_ENOMEM);
        return;
    }
    size_t total = 0;
    struct wchunk *last = NULL;
    b->chunks = p->head;
    n = 0;
    for (struct wchunk *c = p->head; c != NULL && n < WPUMP_MAX_IOV;
         c = c->next) {
        b->bufs[n] = uv_buf_init((char *)c->data, (unsigned)c->len);
        total += c->len;
        last = c;
        n++;
    }
    b->total = total;
    b->pump = p;
    p->head = last->next;
    if (p->head == NULL)
        p->tail = NULL;
    last->next = NULL;
    p->pending -= total;
    p->busy = true;
    bool edge_engine = false, edge_fwd = false;
    if (p->pending < p->cap) {
        edge_engine = p->paused_signaled;
        edge_fwd = p->fwd_waiting;
        p->paused_signaled = false;
        p->fwd_waiting = false;
    }
    pthread_mutex_unlock(&p->lock);

    p->inflight = b;
    p->writing = true;
    int rc = uv_write(&b->req, p->stream, b->bufs, n, on_write);
    /* Signal the drain before the write completes so the engine can
     * produce in parallel (edge-triggered, ne-host §4.6). */
    if (edge_engine || edge_fwd)
        p->ops->drain_edge(p, edge_engine, edge_fwd);
    if (rc != 0) {
        p->writing = false;
        pthread_mutex_lock(&p->lock);
        p->busy = false;
        pthread_mutex_unlock(&p->lock);
        free_list(b->chunks);
        nectar_free(b);
        p->inflight = NULL;
        wpump_cancel(p);
        p->ops->error(p, rc);
    }
}

static void on_write(uv_write_t *req, int status)
{
    struct wbatch *b = (struct wbatch *)req;
    struct wpump *p = b->pump;
    size_t n = b->total;
    free_list(b->chunks);
    nectar_free(b);
    p->inflight = NULL;
    p->writing = false;
    pthread_mutex_lock(&p->lock);
    p->busy = false;
    bool closed = p->closed;
    if (!closed && status >= 0)
        p->written += n;
    pthread_mutex_unlock(&p->lock);
    if (closed)
        return; /* cancelled meanwhile: do not resurrect anything */
    if (status < 0) {
        wpump_cancel(p);
        p->ops->error(p, status);
        return;
    }
    p->ops->written(p, n);
    wpump_flush(p);
}

void wpump_close_when_drained(struct wpump *p, wpump_drained_cb cb)
{
    if (wpump_is_closed(p)) {
        cb(p);
        return;
    }
    p->drained = cb;
    p->lifecycle = WP_DRAINING;
    pthread_mutex_lock(&p->lock);
    p->direct_fd = -1; /* the FIN must follow every byte */
    pthread_mutex_unlock(&p->lock);
    wpump_flush(p);
}

void wpump_cancel(struct wpump *p)
{
    pthread_mutex_lock(&p->lock);
    struct wchunk *q = p->head;
    p->head = p->tail = NULL;
    p->pending = 0;
    p->closed = true;
    p->direct_fd = -1;
    pthread_mutex_unlock(&p->lock);
    free_list(q);
    fire_drained(p);
}
