/*
 * test_tcp.c - TCP sessions through the ABI: relay byte-exactness,
 * backpressure with PAUSED forced at every point, the capacity-1 lost
 * wake-up regression, owned buffers, EOF/half-close, cancel, backstops,
 * promote, and engine stop with live sessions.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/hostmock.h"
#include "engine/support.h"
#include "harness/test.h"

struct pair {
    RamaTransparentProxyEngine *e;
    struct hm h;
};

static void open_session(struct pair *p, bool activate)
{
    RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_TCP, 443);
    RamaTransparentProxyTcpSessionResult r;

    hm_init(&p->h);
    r = rama_transparent_proxy_engine_new_tcp_session(p->e, &m,
                                                      hm_session_cbs(&p->h));
    CHECK_EQ(r.action, RAMA_FLOW_ACTION_INTERCEPT);
    CHECK(r.session != NULL);
    p->h.s = r.session;
    rama_transparent_proxy_tcp_session_register_promote_callbacks(
        r.session, hm_promote_cbs(&p->h));
    if (activate)
        rama_transparent_proxy_tcp_session_activate(r.session,
                                                    hm_egress_cbs(&p->h));
}

static void close_session(struct pair *p)
{
    rama_transparent_proxy_tcp_session_cancel(p->h.s);
    rama_transparent_proxy_tcp_session_free(p->h.s);
    hm_destroy(&p->h);
}

static int destroyed_at_least(void *arg)
{
    return atomic_load(&th_stats.svc_destroyed) >= *(int *)arg;
}

static int started_at_least(void *arg)
{
    return atomic_load(&th_stats.svc_started) >= *(int *)arg;
}

static void wait_destroyed(int n)
{
    if (!nectar_test_poll(destroyed_at_least, &n, 5000))
        NECTAR_FAIL_AT("services destroyed %d, want %d",
                       atomic_load(&th_stats.svc_destroyed), n);
}

/* ---- relay --------------------------------------------------------------- */

struct feeder {
    struct hm *h;
    int dir;
    const uint8_t *p;
    size_t len;
    size_t chunk;
    size_t fed;
};

static void *feeder_main(void *arg)
{
    struct feeder *f = arg;
    f->fed = hm_feed(f->h, f->dir, f->p, f->len, f->chunk);
    return NULL;
}

/* Both directions at once through the relay, checked byte for byte. */
static void run_exact_at(uint32_t capacity, int pause_pct, size_t len,
                         size_t chunk, uint32_t seed, int pause_at)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t *up = malloc(len), *down = malloc(len);
    struct feeder fu, fd;
    pthread_t tu, td;

    th_reset();
    th_options(&o);
    o.tcp_channel_capacity = capacity;
    p.e = th_engine(&o);
    open_session(&p, true);
    p.h.pause_pct = pause_pct;
    p.h.pause_at_app = pause_at;
    p.h.pause_at_remote = pause_at;
    p.h.rng ^= seed;
    hm_start_drainer(&p.h);
    th_fill(up, len, seed);
    th_fill(down, len, seed + 1);

    fu = (struct feeder){&p.h, 0, up, len, chunk, 0};
    fd = (struct feeder){&p.h, 1, down, len, chunk, 0};
    pthread_create(&tu, NULL, feeder_main, &fu);
    pthread_create(&td, NULL, feeder_main, &fd);
    pthread_join(tu, NULL);
    pthread_join(td, NULL);
    CHECK_EQ(fu.fed, len);
    CHECK_EQ(fd.fed, len);
    rama_transparent_proxy_tcp_session_on_client_eof(p.h.s);
    rama_transparent_proxy_tcp_session_on_egress_eof(p.h.s);

    CHECK(hm_wait(&p.h, &p.h.egress_closed, 1, 10000));
    CHECK(hm_wait(&p.h, &p.h.server_closed, 1, 10000));
    pthread_mutex_lock(&p.h.mu);
    CHECK_EQ(p.h.remote.len, len);
    CHECK_EQ(p.h.app.len, len);
    CHECK_MEM_EQ(p.h.remote.p, up, len);
    CHECK_MEM_EQ(p.h.app.p, down, len);
    pthread_mutex_unlock(&p.h.mu);
    wait_destroyed(1);
    if (pause_at > 0)
        CHECK_GE(p.h.paused_count, 2); /* the forced pauses happened */
    /* At most once each, even after the service finished. */
    th_sleep_ms(20);
    CHECK_EQ(p.h.egress_closed, 1);
    CHECK_EQ(p.h.server_closed, 1);
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
    CHECK_EQ(atomic_load(&th_stats.handler_destroyed), 1);
    free(up);
    free(down);
}

static void run_exact(uint32_t capacity, int pause_pct, size_t len,
                      size_t chunk, uint32_t seed)
{
    run_exact_at(capacity, pause_pct, len, chunk, seed, 0);
}

/* PAUSED forced at each write position in turn (both directions), with a
 * capacity-1 queue so deliveries see PAUSED too: every point of the
 * state machine is crossed with a pause, and the bytes stay exact. */
static void test_paused_at_each_point(void)
{
    for (int k = 1; k <= 24; k++)
        run_exact_at(1, 0, 24 * 100, 100, (uint32_t)k, k);
}

static void test_relay_exact(void)
{
    run_exact(8, 0, 256 * 1024, 16 * 1024, 1);
}

static void test_backpressure_paused_everywhere(void)
{
    /* PAUSED in both write directions at random points, tiny queues so
     * the host sees PAUSED on delivery too, odd chunk sizes. */
    run_exact(1, 50, 200 * 1024, 1000, 7);
    run_exact(2, 30, 300 * 1024, 4093, 8);
    run_exact(8, 70, 200 * 1024, 64 * 1024, 9);
}

/* ---- capacity-1 lost wake-up regression ---------------------------------- */

struct demand_producer {
    struct hm h;
    const uint8_t *p;
    size_t len;
    atomic_size_t off;
};

static void produce(struct demand_producer *dp)
{
    for (;;) {
        size_t off = atomic_load(&dp->off);
        size_t n = dp->len - off < 512 ? dp->len - off : 512;
        RamaBytesView v = {dp->p + off, n};
        if (n == 0)
            return;
        if (rama_transparent_proxy_tcp_session_on_client_bytes(dp->h.s, v) !=
            RAMA_TCP_DELIVER_ACCEPTED)
            return;
        atomic_store(&dp->off, off + n);
    }
}

static RamaTcpDeliverStatus dp_server_bytes(void *ctx, RamaBytesView v)
{
    (void)ctx;
    (void)v;
    return RAMA_TCP_DELIVER_ACCEPTED;
}

static void dp_noop(void *ctx)
{
    (void)ctx;
}

/* The producer runs only from demand callbacks: a lost wake-up stalls. */
static void dp_demand(void *ctx)
{
    produce(ctx);
}

static int dp_done(void *arg)
{
    struct demand_producer *dp = arg;
    int done;
    pthread_mutex_lock(&dp->h.mu);
    done = dp->h.remote.len == dp->len;
    pthread_mutex_unlock(&dp->h.mu);
    return done;
}

static void test_lost_wakeup_capacity1(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    struct demand_producer dp;
    size_t len = 400 * 1024;
    uint8_t *buf = malloc(len);
    RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_TCP, 80);
    RamaTransparentProxyTcpSessionCallbacks cbs = {&dp, dp_server_bytes,
                                                   dp_noop, dp_demand};
    RamaTransparentProxyTcpSessionResult r;

    th_reset();
    th_options(&o);
    o.tcp_channel_capacity = 1;
    e = th_engine(&o);
    th_fill(buf, len, 3);
    hm_init(&dp.h);
    dp.p = buf;
    dp.len = len;
    atomic_init(&dp.off, 0);
    r = rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
    CHECK(r.session != NULL);
    dp.h.s = r.session;
    rama_transparent_proxy_tcp_session_activate(r.session,
                                                hm_egress_cbs(&dp.h));
    produce(&dp); /* the first push; every later one comes from demand */
    if (!nectar_test_poll(dp_done, &dp, 10000))
        NECTAR_FAIL_AT("stalled at %zu of %zu bytes: lost wake-up",
                       dp.h.remote.len, len);
    CHECK_MEM_EQ(dp.h.remote.p, buf, len);
    rama_transparent_proxy_tcp_session_free(r.session);
    rama_transparent_proxy_engine_stop(e, 0);
    hm_destroy(&dp.h);
    free(buf);
}

/* ---- owned buffers ------------------------------------------------------- */

static atomic_int releases;

static void rel(void *owner)
{
    (void)owner;
    atomic_fetch_add(&releases, 1);
}

static void test_owned_release(void)
{
    nectar_engine_options_t o;
    struct pair p;
    static const uint8_t data[16] = "0123456789abcdef";
    RamaBytesOwnedView v = {data, sizeof(data), NULL, rel};
    RamaBytesOwnedView empty = {NULL, 0, NULL, rel};
    RamaBytesOwnedView copy = {data, sizeof(data), NULL, NULL};
    int accepted = 0;

    th_reset();
    th_options(&o);
    o.tcp_channel_capacity = 2;
    th_cfg.relay_no_read = true; /* nothing drains the queue */
    p.e = th_engine(&o);
    open_session(&p, false);
    atomic_store(&releases, 0);

    /* NULL session: CLOSED, ownership stays with the caller. */
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_client_bytes_owned(NULL, v),
             RAMA_TCP_DELIVER_CLOSED);
    CHECK_EQ(atomic_load(&releases), 0);
    /* Empty: ACCEPTED and released immediately, inside the call. */
    CHECK_EQ(
        rama_transparent_proxy_tcp_session_on_client_bytes_owned(p.h.s, empty),
        RAMA_TCP_DELIVER_ACCEPTED);
    CHECK_EQ(atomic_load(&releases), 1);
    /* Egress before activate: CLOSED, not taken. */
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_egress_bytes_owned(p.h.s, v),
             RAMA_TCP_DELIVER_CLOSED);
    CHECK_EQ(atomic_load(&releases), 1);
    /* Pending state buffers client bytes up to capacity, then PAUSED. */
    for (int i = 0; i < 4; i++) {
        RamaTcpDeliverStatus rc =
            rama_transparent_proxy_tcp_session_on_client_bytes_owned(p.h.s, v);
        if (rc == RAMA_TCP_DELIVER_ACCEPTED)
            accepted++;
        else
            CHECK_EQ(rc, RAMA_TCP_DELIVER_PAUSED);
    }
    CHECK_EQ(accepted, 2);
    /* NULL release: copied, never called back. */
    CHECK_EQ(
        rama_transparent_proxy_tcp_session_on_client_bytes_owned(p.h.s, copy),
        RAMA_TCP_DELIVER_PAUSED);
    CHECK_EQ(atomic_load(&releases), 1);
    /* Cancel discards the queued chunks: each released exactly once. */
    rama_transparent_proxy_tcp_session_free(p.h.s);
    rama_transparent_proxy_engine_stop(p.e, 0);
    CHECK_EQ(atomic_load(&releases), 1 + accepted);
    hm_destroy(&p.h);
}

/* ---- lifecycle edges ----------------------------------------------------- */

static void test_options_and_activate_edges(void)
{
    nectar_engine_options_t o;
    struct pair p;
    RamaTcpEgressConnectOptions opts;

    th_reset();
    th_options(&o);
    th_cfg.give_options = true;
    p.e = th_engine(&o);
    open_session(&p, false);
    CHECK(!rama_transparent_proxy_tcp_session_get_egress_connect_options(p.h.s,
                                                                         NULL));
    CHECK(!rama_transparent_proxy_tcp_session_get_egress_connect_options(
        NULL, &opts));
    memset(&opts, 0, sizeof(opts));
    CHECK(rama_transparent_proxy_tcp_session_get_egress_connect_options(p.h.s,
                                                                        &opts));
    CHECK(opts.has_connect_timeout_ms);
    CHECK_EQ(opts.connect_timeout_ms, 1234);
    CHECK(opts.tcp_no_delay);
    CHECK(opts.tcp_keepalive_enabled);
    CHECK(opts.parameters.preserve_original_meta_data);
    rama_transparent_proxy_tcp_session_activate(p.h.s, hm_egress_cbs(&p.h));
    /* Only before activation. */
    CHECK(!rama_transparent_proxy_tcp_session_get_egress_connect_options(
        p.h.s, &opts));
    /* A second activate is ignored (its callbacks are never used). */
    rama_transparent_proxy_tcp_session_activate(p.h.s, hm_egress_cbs(&p.h));
    {
        int one = 1;
        CHECK(nectar_test_poll(started_at_least, &one, 5000));
    }
    close_session(&p);
    wait_destroyed(1);
    CHECK_EQ(atomic_load(&th_stats.svc_started), 1);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_client_eof_fast_cancel(void)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t b = 'x';
    RamaBytesView v = {&b, 1};

    th_reset();
    th_options(&o);
    p.e = th_engine(&o);
    open_session(&p, true);
    /* Empty deliveries do not count as bytes seen. */
    RamaBytesView none = {NULL, 5};
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_client_bytes(p.h.s, none),
             RAMA_TCP_DELIVER_ACCEPTED);
    rama_transparent_proxy_tcp_session_on_client_eof(p.h.s);
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_client_bytes(p.h.s, v),
             RAMA_TCP_DELIVER_CLOSED);
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_egress_bytes(p.h.s, v),
             RAMA_TCP_DELIVER_CLOSED);
    wait_destroyed(1);
    th_sleep_ms(30);
    /* A cancel: no close callbacks. */
    CHECK_EQ(p.h.server_closed, 0);
    CHECK_EQ(p.h.egress_closed, 0);
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_half_close(void)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t up[100], down[300];

    th_reset();
    th_options(&o);
    p.e = th_engine(&o);
    open_session(&p, true);
    th_fill(up, sizeof(up), 1);
    th_fill(down, sizeof(down), 2);
    CHECK_EQ(hm_feed(&p.h, 0, up, sizeof(up), 50), sizeof(up));
    rama_transparent_proxy_tcp_session_on_client_eof(p.h.s);
    /* The relay propagates the half-close to the remote ... */
    CHECK(hm_wait(&p.h, &p.h.egress_closed, 1, 5000));
    CHECK_EQ(p.h.server_closed, 0);
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_client_bytes(
                 p.h.s, (RamaBytesView){up, 1}),
             RAMA_TCP_DELIVER_CLOSED);
    /* ... while the response direction keeps working. */
    CHECK_EQ(hm_feed(&p.h, 1, down, sizeof(down), 77), sizeof(down));
    CHECK(hm_wait_len(&p.h, &p.h.app, sizeof(down), 5000));
    CHECK_MEM_EQ(p.h.app.p, down, sizeof(down));
    rama_transparent_proxy_tcp_session_on_egress_eof(p.h.s);
    rama_transparent_proxy_tcp_session_on_egress_eof(p.h.s); /* idempotent */
    CHECK(hm_wait(&p.h, &p.h.server_closed, 1, 5000));
    CHECK_MEM_EQ(p.h.remote.p, up, sizeof(up));
    wait_destroyed(1);
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_egress_error(void)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t down[64];

    th_reset();
    th_options(&o);
    p.e = th_engine(&o);
    open_session(&p, true);
    th_fill(down, sizeof(down), 5);
    CHECK_EQ(hm_feed(&p.h, 1, down, sizeof(down), 64), sizeof(down));
    rama_transparent_proxy_tcp_session_on_egress_error(p.h.s);
    /* Queued bytes first, then the error ends that direction. */
    CHECK(hm_wait(&p.h, &p.h.server_closed, 1, 5000));
    CHECK_EQ(p.h.app.len, sizeof(down));
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_cancel_prompt_and_silent(void)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t down[64];
    uint64_t t0;

    th_reset();
    th_options(&o);
    p.e = th_engine(&o);
    open_session(&p, true);
    p.h.pause_forever_app = true; /* the relay write stays parked */
    th_fill(down, sizeof(down), 5);
    CHECK_EQ(hm_feed(&p.h, 1, down, sizeof(down), 64), sizeof(down));
    CHECK(hm_wait(&p.h, &p.h.paused_count, 1, 5000));
    t0 = nectar_test_now_ms();
    rama_transparent_proxy_tcp_session_cancel(p.h.s);
    rama_transparent_proxy_tcp_session_cancel(p.h.s); /* idempotent */
    CHECK_LT(nectar_test_now_ms() - t0, 500);
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_egress_bytes(
                 p.h.s, (RamaBytesView){down, 1}),
             RAMA_TCP_DELIVER_CLOSED);
    wait_destroyed(1);
    th_sleep_ms(30);
    CHECK_EQ(p.h.server_closed, 0);
    CHECK_EQ(p.h.egress_closed, 0);
    CHECK_EQ(atomic_load(&th_stats.svc_cancelled), 1);
    rama_transparent_proxy_tcp_session_free(p.h.s);
    hm_destroy(&p.h);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_paused_drain_backstop(void)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t down[64];
    uint64_t t0;

    th_reset();
    th_options(&o);
    o.paused_drain_max_wait_ms = 150;
    p.e = th_engine(&o);
    open_session(&p, true);
    p.h.pause_forever_app = true;
    th_fill(down, sizeof(down), 5);
    t0 = nectar_test_now_ms();
    CHECK_EQ(hm_feed(&p.h, 1, down, sizeof(down), 64), sizeof(down));
    /* Never drained: that direction closes after the backstop. */
    CHECK(hm_wait(&p.h, &p.h.server_closed, 1, 5000));
    CHECK_GE(nectar_test_now_ms() - t0, 140);
    wait_destroyed(1);
    th_sleep_ms(20);
    CHECK_EQ(p.h.server_closed, 1);
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_drain_renews_backstop(void)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t down[64];

    th_reset();
    th_options(&o);
    o.paused_drain_max_wait_ms = 500;
    p.e = th_engine(&o);
    open_session(&p, true);
    p.h.pause_forever_app = true;
    th_fill(down, sizeof(down), 5);
    CHECK_EQ(hm_feed(&p.h, 1, down, sizeof(down), 64), sizeof(down));
    /* Drains every 100 ms start fresh pause episodes: no timeout, although
     * the whole run outlasts the backstop. */
    for (int i = 0; i < 8; i++) {
        th_sleep_ms(100);
        rama_transparent_proxy_tcp_session_signal_server_drain(p.h.s);
    }
    CHECK_EQ(p.h.server_closed, 0);
    p.h.pause_forever_app = false;
    rama_transparent_proxy_tcp_session_signal_server_drain(p.h.s);
    CHECK(hm_wait_len(&p.h, &p.h.app, sizeof(down), 5000));
    CHECK_MEM_EQ(p.h.app.p, down, sizeof(down));
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_idle_backstop(void)
{
    nectar_engine_options_t o;
    struct pair p;

    th_reset();
    th_options(&o);
    o.tcp_idle_timeout_ms = 100;
    p.e = th_engine(&o);
    open_session(&p, true);
    CHECK(hm_wait(&p.h, &p.h.server_closed, 1, 5000));
    CHECK(hm_wait(&p.h, &p.h.egress_closed, 1, 5000));
    wait_destroyed(1);
    CHECK_EQ(atomic_load(&th_stats.svc_cancelled), 1);
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_invalid_status_is_closed(void)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t down[8] = {1};

    th_reset();
    th_options(&o);
    p.e = th_engine(&o);
    open_session(&p, true);
    p.h.app_status_override = 7;
    CHECK_EQ(hm_feed(&p.h, 1, down, sizeof(down), 8), sizeof(down));
    /* The relay sees EPIPE and finishes: close callbacks fire. */
    CHECK(hm_wait(&p.h, &p.h.server_closed, 1, 5000));
    CHECK_EQ(p.h.app.len, 0);
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

/* ---- promote ------------------------------------------------------------- */

static int promote_seen(void *arg)
{
    return atomic_load(&th_stats.promote_results) >= *(int *)arg;
}

static void promote_case(int confirm_mode, bool register_cb, int want)
{
    nectar_engine_options_t o;
    struct pair p;
    uint8_t up[32];
    int one = 1;

    th_reset();
    th_options(&o);
    th_cfg.promote_after = 1;
    p.e = th_engine(&o);
    hm_init(&p.h);
    {
        RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_TCP, 443);
        RamaTransparentProxyTcpSessionResult r =
            rama_transparent_proxy_engine_new_tcp_session(p.e, &m,
                                                          hm_session_cbs(&p.h));
        p.h.s = r.session;
    }
    if (register_cb) {
        RamaTransparentProxyTcpPromoteCallbacks none = {&p.h, NULL};
        rama_transparent_proxy_tcp_session_register_promote_callbacks(
            p.h.s, hm_promote_cbs(&p.h));
        /* A NULL function keeps the earlier registration. */
        rama_transparent_proxy_tcp_session_register_promote_callbacks(p.h.s,
                                                                      none);
    }
    p.h.confirm_mode = confirm_mode;
    rama_transparent_proxy_tcp_session_activate(p.h.s, hm_egress_cbs(&p.h));
    th_fill(up, sizeof(up), 1);
    CHECK_EQ(hm_feed(&p.h, 0, up, sizeof(up), 32), sizeof(up));
    if (confirm_mode == 0 && register_cb) {
        CHECK(hm_wait(&p.h, &p.h.promote_requests, 1, 5000));
        rama_transparent_proxy_tcp_session_cancel(p.h.s);
    }
    CHECK(nectar_test_poll(promote_seen, &one, 5000));
    CHECK_EQ(atomic_load(&th_stats.last_promote_status), want);
    CHECK_EQ(p.h.promote_requests, register_cb ? 1 : 0);
    /* Confirm without a pending promote: a harmless no-op. */
    rama_transparent_proxy_tcp_session_confirm_promoted(p.h.s, 0, NULL, 0);
    if (want == 0) {
        /* Both senders dropped: deliveries CLOSED, relay drains + exits. */
        CHECK_EQ(rama_transparent_proxy_tcp_session_on_client_bytes(
                     p.h.s, (RamaBytesView){up, 1}),
                 RAMA_TCP_DELIVER_CLOSED);
        CHECK(hm_wait(&p.h, &p.h.egress_closed, 1, 5000));
        CHECK(hm_wait(&p.h, &p.h.server_closed, 1, 5000));
        CHECK_MEM_EQ(p.h.remote.p, up, sizeof(up));
    } else if (want != NECTAR_ECANCELED) {
        /* Flow continues in-process. */
        CHECK_EQ(hm_feed(&p.h, 0, up, sizeof(up), 32), sizeof(up));
        CHECK(hm_wait_len(&p.h, &p.h.remote, 2 * sizeof(up), 5000));
    }
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
}

static void test_promote_ok(void)
{
    promote_case(1, true, 0);
}

static void test_promote_failed(void)
{
    promote_case(2, true, NECTAR_EIO);
}

static void test_promote_no_callback(void)
{
    promote_case(1, false, NECTAR_ENOTSUP);
}

static void test_promote_cancelled(void)
{
    promote_case(0, true, NECTAR_ECANCELED);
}

/* Under load: the host keeps feeding while the cutover happens; what the
 * engine accepted (its tail) plus what it refused with CLOSED (the host's
 * carryover) is exactly the input, in order, in both directions. */
static void test_promote_under_load(void)
{
    nectar_engine_options_t o;
    struct pair p;
    size_t len = 512 * 1024;
    uint8_t *up = malloc(len), *down = malloc(len);
    struct feeder fu, fd;
    pthread_t tu, td;

    th_reset();
    th_options(&o);
    o.tcp_channel_capacity = 4;
    th_cfg.promote_after = 64 * 1024;
    p.e = th_engine(&o);
    open_session(&p, false);
    p.h.confirm_mode = 3; /* confirm OK from the drainer thread */
    p.h.pause_pct = 20;
    hm_start_drainer(&p.h);
    rama_transparent_proxy_tcp_session_activate(p.h.s, hm_egress_cbs(&p.h));
    th_fill(up, len, 11);
    th_fill(down, len, 12);
    fu = (struct feeder){&p.h, 0, up, len, 3000, 0};
    fd = (struct feeder){&p.h, 1, down, len, 5000, 0};
    pthread_create(&tu, NULL, feeder_main, &fu);
    pthread_create(&td, NULL, feeder_main, &fd);
    pthread_join(tu, NULL);
    pthread_join(td, NULL);
    CHECK_LT(fu.fed, len); /* the cutover happened mid-stream */
    CHECK_GE(fu.fed, th_cfg.promote_after);
    CHECK(hm_wait(&p.h, &p.h.egress_closed, 1, 10000));
    CHECK(hm_wait(&p.h, &p.h.server_closed, 1, 10000));
    CHECK_EQ(atomic_load(&th_stats.last_promote_status), 0);
    pthread_mutex_lock(&p.h.mu);
    /* The engine's tail is exactly the accepted prefix ... */
    CHECK_EQ(p.h.remote.len, fu.fed);
    CHECK_EQ(p.h.app.len, fd.fed);
    CHECK_MEM_EQ(p.h.remote.p, up, fu.fed);
    if (fd.fed > 0) /* the cutover may beat the first response byte */
        CHECK_MEM_EQ(p.h.app.p, down, fd.fed);
    pthread_mutex_unlock(&p.h.mu);
    /* ... and the carryover (up + fed .. len) follows it directly. */
    close_session(&p);
    rama_transparent_proxy_engine_stop(p.e, 0);
    free(up);
    free(down);
}

/* ---- engine stop with live sessions -------------------------------------- */

static void test_stop_with_live_sessions(void)
{
    enum { N = 64 };
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    struct hm *hs = calloc(N, sizeof(*hs));
    uint64_t t0;
    uint8_t b = 1;

    th_reset();
    th_options(&o);
    e = th_engine(&o);
    for (int i = 0; i < N; i++) {
        RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_TCP, 443);
        RamaTransparentProxyTcpSessionResult r;
        hm_init(&hs[i]);
        r = rama_transparent_proxy_engine_new_tcp_session(
            e, &m, hm_session_cbs(&hs[i]));
        hs[i].s = r.session;
        if (i % 2 == 0)
            rama_transparent_proxy_tcp_session_activate(r.session,
                                                        hm_egress_cbs(&hs[i]));
    }
    th_sleep_ms(50);
    t0 = nectar_test_now_ms();
    rama_transparent_proxy_engine_stop(e, 3);
    CHECK_LT(nectar_test_now_ms() - t0, 3000);
    CHECK_EQ(atomic_load(&th_stats.svc_destroyed), N);
    CHECK_EQ(atomic_load(&th_stats.handler_destroyed), 1);
    for (int i = 0; i < N; i++) {
        RamaBytesView v = {&b, 1};
        if (i % 2 == 0) {
            /* Active sessions: close callbacks fired during stop. */
            CHECK_EQ(hs[i].server_closed, 1);
            CHECK_EQ(hs[i].egress_closed, 1);
            CHECK_EQ(
                rama_transparent_proxy_tcp_session_on_client_bytes(hs[i].s, v),
                RAMA_TCP_DELIVER_CLOSED);
        } else {
            /* Pending: nothing fired; activate now closes synchronously
             * (spec §1.3.13 quirk). */
            CHECK_EQ(hs[i].server_closed, 0);
            CHECK_EQ(
                rama_transparent_proxy_tcp_session_on_client_bytes(hs[i].s, v),
                RAMA_TCP_DELIVER_ACCEPTED);
            rama_transparent_proxy_tcp_session_activate(hs[i].s,
                                                        hm_egress_cbs(&hs[i]));
            CHECK_EQ(hs[i].server_closed, 1);
            CHECK_EQ(hs[i].egress_closed, 1);
        }
        rama_transparent_proxy_tcp_session_cancel(hs[i].s);
        rama_transparent_proxy_tcp_session_free(hs[i].s);
        hm_destroy(&hs[i]);
    }
    free(hs);
}

static const nectar_test_t tests[] = {
    {"relay_exact", test_relay_exact},
    {"backpressure_paused_everywhere", test_backpressure_paused_everywhere},
    {"paused_at_each_point", test_paused_at_each_point},
    {"lost_wakeup_capacity1", test_lost_wakeup_capacity1},
    {"owned_release", test_owned_release},
    {"options_and_activate_edges", test_options_and_activate_edges},
    {"client_eof_fast_cancel", test_client_eof_fast_cancel},
    {"half_close", test_half_close},
    {"egress_error", test_egress_error},
    {"cancel_prompt_and_silent", test_cancel_prompt_and_silent},
    {"paused_drain_backstop", test_paused_drain_backstop},
    {"drain_renews_backstop", test_drain_renews_backstop},
    {"idle_backstop", test_idle_backstop},
    {"invalid_status_is_closed", test_invalid_status_is_closed},
    {"promote_ok", test_promote_ok},
    {"promote_failed", test_promote_failed},
    {"promote_no_callback", test_promote_no_callback},
    {"promote_cancelled", test_promote_cancelled},
    {"promote_under_load", test_promote_under_load},
    {"stop_with_live_sessions", test_stop_with_live_sessions},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
