/* hostmock.c - the scripted TCP host of the engine tests (hostmock.h). */
#include "engine/hostmock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/support.h"
#include "harness/test.h"

static void buf_append(struct hm_buf *b, const uint8_t *p, size_t len)
{
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        b->p = realloc(b->p, cap);
        CHECK(b->p != NULL);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, len);
    b->len += len;
}

static bool should_pause(struct hm *h)
{
    if (h->pause_pct <= 0)
        return false;
    h->rng ^= h->rng << 13;
    h->rng ^= h->rng >> 17;
    h->rng ^= h->rng << 5;
    return (int)(h->rng % 100) < h->pause_pct;
}

static struct hm *live(void *ctx)
{
    struct hm *h = ctx;
    /* A callback after free would read poisoned (or ASan-freed) memory. */
    if (h->magic != HM_MAGIC)
        NECTAR_FAIL_AT("callback on a dead host context");
    return h;
}

static RamaTcpDeliverStatus write_side(struct hm *h, struct hm_buf *b,
                                       bool *need_drain, RamaBytesView v,
                                       bool forever, int *calls, int pause_at)
{
    RamaTcpDeliverStatus rc;

    CHECK(v.len > 0 && v.ptr != NULL); /* never called with empty bytes */
    pthread_mutex_lock(&h->mu);
    ++*calls;
    if (forever || *calls == pause_at || should_pause(h)) {
        *need_drain = true;
        h->paused_count++;
        rc = RAMA_TCP_DELIVER_PAUSED;
    } else {
        buf_append(b, v.ptr, v.len);
        rc = RAMA_TCP_DELIVER_ACCEPTED;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return rc;
}

static RamaTcpDeliverStatus on_server_bytes(void *ctx, RamaBytesView v)
{
    struct hm *h = live(ctx);
    if (h->app_status_override != 0)
        return h->app_status_override;
    return write_side(h, &h->app, &h->need_app_drain, v, h->pause_forever_app,
                      &h->app_calls, h->pause_at_app);
}

static RamaTcpDeliverStatus on_write_to_egress(void *ctx, RamaBytesView v)
{
    struct hm *h = live(ctx);
    return write_side(h, &h->remote, &h->need_remote_drain, v, false,
                      &h->remote_calls, h->pause_at_remote);
}

static void bump(struct hm *h, int *field)
{
    pthread_mutex_lock(&h->mu);
    (*field)++;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void on_server_closed(void *ctx)
{
    struct hm *h = live(ctx);
    bump(h, &h->server_closed);
}

static void on_client_read_demand(void *ctx)
{
    struct hm *h = live(ctx);
    bump(h, &h->client_demand);
}

static void on_close_egress(void *ctx)
{
    struct hm *h = live(ctx);
    bump(h, &h->egress_closed);
}

static void on_egress_read_demand(void *ctx)
{
    struct hm *h = live(ctx);
    bump(h, &h->egress_demand);
}

static void on_promote_request(void *ctx)
{
    struct hm *h = live(ctx);

    bump(h, &h->promote_requests);
    /* confirm_promoted is the one call allowed from inside (§4.5). */
    if (h->confirm_mode == 1)
        rama_transparent_proxy_tcp_session_confirm_promoted(
            h->s, RAMA_PROMOTE_CONFIRM_OK, NULL, 0);
    else if (h->confirm_mode == 2)
        rama_transparent_proxy_tcp_session_confirm_promoted(
            h->s, 42, "egress not ready", 16);
    else if (h->confirm_mode == 3) {
        pthread_mutex_lock(&h->mu);
        h->confirm_pending = true;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
    }
}

RamaTransparentProxyTcpSessionCallbacks hm_session_cbs(struct hm *h)
{
    RamaTransparentProxyTcpSessionCallbacks c = {
        h, on_server_bytes, on_server_closed, on_client_read_demand};
    return c;
}

RamaTransparentProxyTcpEgressCallbacks hm_egress_cbs(struct hm *h)
{
    RamaTransparentProxyTcpEgressCallbacks c = {
        h, on_write_to_egress, on_close_egress, on_egress_read_demand};
    return c;
}

RamaTransparentProxyTcpPromoteCallbacks hm_promote_cbs(struct hm *h)
{
    RamaTransparentProxyTcpPromoteCallbacks c = {h, on_promote_request};
    return c;
}

static void abstime_ms(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *drainer_main(void *arg)
{
    struct hm *h = arg;

    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        bool app = h->need_app_drain, remote = h->need_remote_drain;
        bool confirm = h->confirm_pending;
        if (!app && !remote && !confirm) {
            struct timespec ts;
            abstime_ms(&ts, 20);
            pthread_cond_timedwait(&h->cv, &h->mu, &ts);
            continue;
        }
        h->need_app_drain = false;
        h->need_remote_drain = false;
        h->confirm_pending = false;
        pthread_mutex_unlock(&h->mu);
        /* Outside every callback, as the Swift pumps do. */
        if (app)
            rama_transparent_proxy_tcp_session_signal_server_drain(h->s);
        if (remote)
            rama_transparent_proxy_tcp_session_signal_egress_drain(h->s);
        if (confirm)
            rama_transparent_proxy_tcp_session_confirm_promoted(
                h->s, RAMA_PROMOTE_CONFIRM_OK, NULL, 0);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

void hm_init(struct hm *h)
{
    memset(h, 0, sizeof(*h));
    h->magic = HM_MAGIC;
    h->rng = 0x9e3779b9u;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
}

void hm_start_drainer(struct hm *h)
{
    h->drainer_up = true;
    CHECK_EQ(pthread_create(&h->drainer, NULL, drainer_main, h), 0);
}

void hm_destroy(struct hm *h)
{
    if (h->drainer_up) {
        pthread_mutex_lock(&h->mu);
        h->stop = true;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->drainer, NULL);
    }
    free(h->app.p);
    free(h->remote.p);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    h->magic = 0xdeadu;
}

size_t hm_feed(struct hm *h, int dir, const uint8_t *p, size_t len,
               size_t chunk)
{
    size_t off = 0;
    int *demand = dir == 0 ? &h->client_demand : &h->egress_demand;

    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;
        RamaBytesView v = {p + off, n};
        int before;
        RamaTcpDeliverStatus rc;

        pthread_mutex_lock(&h->mu);
        before = *demand;
        pthread_mutex_unlock(&h->mu);
        rc = dir == 0
                 ? rama_transparent_proxy_tcp_session_on_client_bytes(h->s, v)
                 : rama_transparent_proxy_tcp_session_on_egress_bytes(h->s, v);
        if (rc == RAMA_TCP_DELIVER_ACCEPTED) {
            off += n;
        } else if (rc == RAMA_TCP_DELIVER_PAUSED) {
            /* Keep the bytes; replay them first once demand arrives. */
            if (!hm_wait(h, demand, before + 1, 10000))
                NECTAR_FAIL_AT("no read demand within 10 s after PAUSED "
                               "(dir %d, at %zu of %zu)",
                               dir, off, len);
        } else {
            CHECK_EQ(rc, RAMA_TCP_DELIVER_CLOSED);
            break;
        }
    }
    return off;
}

bool hm_wait(struct hm *h, const int *field, int want, int timeout_ms)
{
    uint64_t end = nectar_test_now_ms() + (uint64_t)timeout_ms;
    bool ok;

    pthread_mutex_lock(&h->mu);
    while (*field < want && nectar_test_now_ms() < end) {
        struct timespec ts;
        abstime_ms(&ts, 10);
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    ok = *field >= want;
    pthread_mutex_unlock(&h->mu);
    return ok;
}

bool hm_wait_len(struct hm *h, const struct hm_buf *b, size_t want,
                 int timeout_ms)
{
    uint64_t end = nectar_test_now_ms() + (uint64_t)timeout_ms;
    bool ok;

    pthread_mutex_lock(&h->mu);
    while (b->len < want && nectar_test_now_ms() < end) {
        struct timespec ts;
        abstime_ms(&ts, 10);
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    ok = b->len >= want;
    pthread_mutex_unlock(&h->mu);
    return ok;
}
