/*
 * test_stress.c - concurrency and lifetime at scale: cancel/free racing
 * engine callbacks across thousands of sessions (run under TSan; a
 * callback after free trips the poisoned context, or ASan), no leak over
 * 4096 sessions (LeakSanitizer in the ASan build; service create/destroy
 * counts everywhere), bounded stop with hundreds of live sessions, and
 * concurrent engine-level calls.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "engine/hostmock.h"
#include "engine/support.h"
#include "harness/test.h"

struct worker {
    RamaTransparentProxyEngine *e;
    int sessions;
    uint32_t seed;
};

static uint32_t next_rand(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* One session's life with a random cut point; the host context is freed
 * right after _free, as the Swift wrapper does. */
static void one_session(RamaTransparentProxyEngine *e, uint32_t *rng)
{
    struct hm *h = malloc(sizeof(*h));
    RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_TCP, 443);
    RamaTransparentProxyTcpSessionResult r;
    uint8_t buf[700];
    int steps = (int)(next_rand(rng) % 12);

    hm_init(h);
    h->pause_pct = 30;
    h->rng ^= next_rand(rng);
    /* Promote: confirm OK or FAILED from inside the callback, or never
     * (mode 3 without a drainer: cancel must resolve it). */
    h->confirm_mode = 1 + (int)(next_rand(rng) % 3);
    r = rama_transparent_proxy_engine_new_tcp_session(e, &m, hm_session_cbs(h));
    CHECK(r.session != NULL);
    h->s = r.session;
    rama_transparent_proxy_tcp_session_register_promote_callbacks(
        r.session, hm_promote_cbs(h));
    if (steps > 0)
        rama_transparent_proxy_tcp_session_activate(r.session,
                                                    hm_egress_cbs(h));
    memset(buf, (int)steps, sizeof(buf));
    if (steps > 2) {
        /* Let the service start and the first callbacks flow, so the
         * cancel below races callbacks in flight, not a pending session. */
        uint64_t end = nectar_test_now_ms() + 50;
        RamaBytesView v = {buf, 64};
        int calls = 0;
        rama_transparent_proxy_tcp_session_on_client_bytes(r.session, v);
        while (calls == 0 && nectar_test_now_ms() < end) {
            sched_yield();
            pthread_mutex_lock(&h->mu);
            calls = h->remote_calls + h->promote_requests;
            pthread_mutex_unlock(&h->mu);
        }
    }
    for (int i = 1; i < steps; i++) {
        RamaBytesView v = {buf, 1 + next_rand(rng) % sizeof(buf)};
        switch (next_rand(rng) % 6) {
        case 0:
        case 1:
            rama_transparent_proxy_tcp_session_on_client_bytes(r.session, v);
            break;
        case 2:
        case 3:
            rama_transparent_proxy_tcp_session_on_egress_bytes(r.session, v);
            break;
        case 4:
            rama_transparent_proxy_tcp_session_signal_server_drain(r.session);
            rama_transparent_proxy_tcp_session_signal_egress_drain(r.session);
            break;
        default:
            if (next_rand(rng) % 4 == 0)
                rama_transparent_proxy_tcp_session_on_client_eof(r.session);
            else
                rama_transparent_proxy_tcp_session_on_egress_eof(r.session);
            break;
        }
    }
    if (next_rand(rng) % 2)
        rama_transparent_proxy_tcp_session_cancel(r.session);
    rama_transparent_proxy_tcp_session_free(r.session);
    hm_destroy(h);
    free(h);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->sessions; i++)
        one_session(w->e, &w->seed);
    return NULL;
}

static int all_destroyed(void *arg)
{
    (void)arg;
    return atomic_load(&th_stats.svc_destroyed) ==
           atomic_load(&th_stats.svc_created);
}

static void run_workers(int threads, int per_thread)
{
    nectar_engine_options_t o;
    struct worker w[8];
    pthread_t t[8];
    RamaTransparentProxyEngine *e;
    uint64_t t0;

    th_reset();
    th_options(&o);
    o.tcp_channel_capacity = 2;
    /* Flows that got as far as relaying a byte promote mid-race (how many
     * do depends on scheduling, so it is not asserted). */
    th_cfg.promote_after = 1;
    e = th_engine(&o);
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){e, per_thread, 0x1234567u * (uint32_t)(i + 1)};
        pthread_create(&t[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    CHECK(nectar_test_poll(all_destroyed, NULL, 10000));
    CHECK_EQ(atomic_load(&th_stats.svc_created), threads * per_thread);
    t0 = nectar_test_now_ms();
    rama_transparent_proxy_engine_stop(e, 0);
    CHECK_LT(nectar_test_now_ms() - t0, 5000);
}

static void test_cancel_free_race(void)
{
    run_workers(4, 600);
}

static void test_no_leak_4096(void)
{
    run_workers(2, 2048);
}

static int started_all(void *arg)
{
    (void)arg;
    return atomic_load(&th_stats.svc_started) == 192;
}

/* Sessions the host never cancels: stop tears them down, bounded. */
static void test_stop_bounded_256(void)
{
    enum { N = 256 };
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    struct hm *hs = calloc(N, sizeof(*hs));
    uint8_t b[100] = {0};
    uint64_t t0;

    th_reset();
    th_options(&o);
    o.stop_drain_max_wait_ms = 5000;
    e = th_engine(&o);
    for (int i = 0; i < N; i++) {
        RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_TCP, 443);
        RamaTransparentProxyTcpSessionResult r;
        hm_init(&hs[i]);
        hs[i].pause_forever_app = i % 3 == 0;
        r = rama_transparent_proxy_engine_new_tcp_session(
            e, &m, hm_session_cbs(&hs[i]));
        hs[i].s = r.session;
        if (i % 4 != 3)
            rama_transparent_proxy_tcp_session_activate(r.session,
                                                        hm_egress_cbs(&hs[i]));
        rama_transparent_proxy_tcp_session_on_client_bytes(
            r.session, (RamaBytesView){b, sizeof(b)});
        rama_transparent_proxy_tcp_session_on_egress_bytes(
            r.session, (RamaBytesView){b, sizeof(b)});
    }
    /* Every activated service runs (a third of them parked on PAUSED)
     * when stop begins. */
    CHECK(nectar_test_poll(started_all, NULL, 5000));
    t0 = nectar_test_now_ms();
    rama_transparent_proxy_engine_stop(e, 0);
    CHECK_LT(nectar_test_now_ms() - t0, 5000);
    CHECK_EQ(atomic_load(&th_stats.svc_destroyed), N);
    /* Handles stay valid memory; freeing them fires nothing. */
    for (int i = 0; i < N; i++) {
        int closed = hs[i].server_closed;
        rama_transparent_proxy_tcp_session_free(hs[i].s);
        CHECK_EQ(hs[i].server_closed, closed);
        /* Activated ones closed exactly once during stop, others never. */
        CHECK_EQ(hs[i].server_closed, i % 4 != 3 ? 1 : 0);
        CHECK_EQ(hs[i].egress_closed, i % 4 != 3 ? 1 : 0);
        hm_destroy(&hs[i]);
    }
    free(hs);
}

static void *engine_caller(void *arg)
{
    RamaTransparentProxyEngine *e = arg;
    RamaBytesView msg = {(const uint8_t *)"ping", 4};

    for (int i = 0; i < 200; i++) {
        RamaTransparentProxyFlowMeta m = th_meta(
            i % 2 ? RAMA_FLOW_PROTOCOL_TCP : RAMA_FLOW_PROTOCOL_UDP, 443);
        RamaBytesOwned r =
            rama_transparent_proxy_engine_handle_app_message(e, msg);
        CHECK_EQ(r.len, 4);
        rama_owned_bytes_free(r);
        RamaTransparentProxyConfig *c = rama_transparent_proxy_get_config(e);
        CHECK(c != NULL);
        rama_transparent_proxy_config_free(c);
        if (i % 2) {
            RamaTransparentProxyTcpSessionCallbacks cbs = {0};
            RamaTransparentProxyTcpSessionResult t =
                rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
            rama_transparent_proxy_tcp_session_free(t.session);
        } else {
            RamaTransparentProxyUdpSessionCallbacks cbs = {0};
            RamaTransparentProxyUdpSessionResult u =
                rama_transparent_proxy_engine_new_udp_session(e, &m, cbs);
            rama_transparent_proxy_udp_session_activate(u.session);
            rama_transparent_proxy_udp_session_on_client_datagram(
                u.session, msg, (RamaUdpPeerView){0});
            rama_transparent_proxy_udp_session_free(u.session);
        }
        rama_transparent_proxy_engine_notify_system_sleep(e);
        rama_transparent_proxy_engine_notify_system_wake(e);
    }
    return NULL;
}

static void test_concurrent_engine_calls(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    pthread_t t[4];

    th_reset();
    th_options(&o);
    e = th_engine(&o);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, engine_caller, e);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    rama_transparent_proxy_engine_stop(e, 0);
    CHECK_EQ(atomic_load(&th_stats.svc_destroyed),
             atomic_load(&th_stats.svc_created));
    CHECK_EQ(atomic_load(&th_stats.sleeps), 800);
    CHECK_EQ(atomic_load(&th_stats.wakes), 800);
}

/* ---- UDP: close/free racing the echo service's replies ---------------- */

struct uctx {
    uint32_t magic;
    atomic_int demand;
    atomic_int replies;
};

static struct uctx *ulive(void *ctx)
{
    struct uctx *u = ctx;
    if (u->magic != HM_MAGIC)
        NECTAR_FAIL_AT("UDP callback on a dead host context");
    return u;
}

static void u_datagram(void *ctx, RamaBytesView b, RamaUdpPeerView peer)
{
    (void)b;
    (void)peer;
    atomic_fetch_add(&ulive(ctx)->replies, 1);
}

static void u_demand(void *ctx)
{
    atomic_fetch_add(&ulive(ctx)->demand, 1);
}

static void u_closed(void *ctx)
{
    (void)ulive(ctx);
}

static void *udp_worker(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < w->sessions; i++) {
        struct uctx *u = calloc(1, sizeof(*u));
        RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_UDP, 53);
        RamaTransparentProxyUdpSessionCallbacks cbs = {u, u_datagram, u_demand,
                                                       u_closed};
        RamaTransparentProxyUdpSessionResult r;
        RamaUdpPeerView peer = {true, (const uint8_t *)"192.0.2.1", 9, 53, 0};
        uint8_t b[32] = {0};
        int n = (int)(next_rand(&w->seed) % 8);
        uint64_t end = nectar_test_now_ms() + 50;

        u->magic = HM_MAGIC;
        r = rama_transparent_proxy_engine_new_udp_session(w->e, &m, cbs);
        CHECK(r.session != NULL);
        rama_transparent_proxy_udp_session_activate(r.session);
        /* The first demand means the service runs (its first recv). */
        while (atomic_load(&u->demand) == 0 && nectar_test_now_ms() < end)
            sched_yield();
        for (int k = 0; k < n; k++)
            rama_transparent_proxy_udp_session_on_client_datagram(
                r.session, (RamaBytesView){b, 1 + (size_t)k}, peer);
        /* Half the time let replies start flowing, so the close below
         * races the service's sends rather than an idle queue. */
        end = nectar_test_now_ms() + 20;
        bool wait_replies = n > 0 && next_rand(&w->seed) % 2;
        while (wait_replies && atomic_load(&u->replies) == 0 &&
               nectar_test_now_ms() < end)
            sched_yield();
        if (next_rand(&w->seed) % 2)
            rama_transparent_proxy_udp_session_on_client_close(r.session);
        rama_transparent_proxy_udp_session_free(r.session);
        u->magic = 0xdead;
        free(u);
    }
    return NULL;
}

static void test_udp_close_race(void)
{
    nectar_engine_options_t o;
    struct worker w[4];
    pthread_t t[4];
    RamaTransparentProxyEngine *e;

    th_reset();
    th_options(&o);
    o.udp_channel_capacity = 4;
    e = th_engine(&o);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){e, 300, 0x9876543u * (uint32_t)(i + 1)};
        pthread_create(&t[i], NULL, udp_worker, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(nectar_test_poll(all_destroyed, NULL, 10000));
    CHECK_GT(atomic_load(&th_stats.udp_received), 0);
    rama_transparent_proxy_engine_stop(e, 0);
}

static const nectar_test_t tests[] = {
    {"udp_close_race", test_udp_close_race},
    {"cancel_free_race", test_cancel_free_race},
    {"no_leak_4096", test_no_leak_4096},
    {"stop_bounded_256", test_stop_bounded_256},
    {"concurrent_engine_calls", test_concurrent_engine_calls},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
