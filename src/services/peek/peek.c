/*
 * peek.c - bounded, timed protocol peek over an svc_stream_t (peek.h).
 */
#include "services/peek/peek.h"

#include <string.h>

#include "common/alloc.h"

struct svc_peek {
    svc_stream_t *s;
    uv_timer_t *timer; /* heap: outlives the peek until its close cb */
    uint8_t *buf;
    size_t len, cap, max;
    svc_peek_judge_fn judge;
    svc_peek_done_cb done;
    void *data;
};

static void on_timer_closed(uv_handle_t *h)
{
    nectar_free(h);
}

static void peek_free(struct svc_peek *p)
{
    uv_timer_stop(p->timer);
    uv_close((uv_handle_t *)p->timer, on_timer_closed);
    nectar_free(p);
}

static void finish(struct svc_peek *p, int status)
{
    svc_read_stop(p->s);
    uint8_t *buf = p->buf;
    size_t len = p->len;
    svc_peek_done_cb done = p->done;
    void *data = p->data;
    peek_free(p);
    done(status, buf, len, data);
}

static void on_read(svc_stream_t *s, ssize_t n, const uint8_t *buf, void *data)
{
    (void)s;
    struct svc_peek *p = data;
    if (n < 0) {
        p->judge(p->buf, p->len, true, p->data);
        finish(p, (int)n);
        return;
    }
    size_t take = (size_t)n;
    if (p->len + take > p->cap) {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap < p->len + take)
            cap *= 2;
        uint8_t *nb = nectar_realloc(p->buf, cap);
        if (nb == NULL) {
            p->judge(p->buf, p->len, true, p->data);
            finish(p, NECTAR_ENOMEM);
            return;
        }
        p->buf = nb;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, buf, take);
    p->len += take;
    if (p->judge(p->buf, p->len, false, p->data)) {
        finish(p, 0);
    } else if (p->len >= p->max) {
        p->judge(p->buf, p->len, true, p->data);
        finish(p, NECTAR_ELIMIT);
    }
}

static void on_timeout(uv_timer_t *t)
{
    struct svc_peek *p = t->data;
    p->judge(p->buf, p->len, true, p->data);
    finish(p, NECTAR_ETIMEDOUT);
}

svc_peek_t *svc_peek_start(svc_stream_t *s, uint64_t timeout_ms,
                           size_t max_bytes, svc_peek_judge_fn judge,
                           svc_peek_done_cb done, void *data)
{
    struct svc_peek *p = nectar_calloc(1, sizeof(*p));
    uv_timer_t *t = nectar_malloc(sizeof(*t));
    if (p == NULL || t == NULL) {
        nectar_free(p);
        nectar_free(t);
        return NULL;
    }
    p->s = s;
    p->timer = t;
    p->max = max_bytes ? max_bytes : 64 * 1024;
    p->judge = judge;
    p->done = done;
    p->data = data;
    uv_timer_init(s->loop, t);
    t->data = p;
    if (svc_read_start(s, on_read, p) != 0) {
        peek_free(p);
        return NULL;
    }
    if (timeout_ms > 0)
        uv_timer_start(t, on_timeout, timeout_ms, 0);
    return p;
}

uint8_t *svc_peek_cancel(svc_peek_t *p, size_t *len)
{
    svc_read_stop(p->s);
    uint8_t *buf = p->buf;
    *len = p->len;
    peek_free(p);
    return buf;
}
