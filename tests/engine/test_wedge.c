/*
 * test_wedge.c - engine stop is bounded even when a host callback blocks
 * an engine thread far longer than the stop budget (spec §7.4, §8.4.26):
 * stop gives up on the wedged thread after drain + 2 s, detaches it and
 * leaks its runtime instead of freeing memory under it.  Own binary,
 * because that deliberate leak must not trip LeakSanitizer elsewhere.
 */
#include <stdlib.h>

#include "engine/support.h"
#include "harness/test.h"

/* The leak is the point of this test. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}

static atomic_int entered;
static atomic_int left;

static RamaTcpDeliverStatus slow_sink(void *ctx, RamaBytesView v)
{
    (void)ctx;
    (void)v;
    atomic_store(&entered, 1);
    th_sleep_ms(5000); /* a provider wedged in foreign code */
    atomic_store(&left, 1);
    return RAMA_TCP_DELIVER_ACCEPTED;
}

static void noop(void *ctx)
{
    (void)ctx;
}

static int is_set(void *arg)
{
    return atomic_load((atomic_int *)arg);
}

static void test_stop_bounded_when_wedged(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_TCP, 443);
    RamaTransparentProxyTcpSessionCallbacks cbs = {NULL, slow_sink, noop, noop};
    RamaTransparentProxyTcpEgressCallbacks ecbs = {NULL, slow_sink, noop, noop};
    RamaTransparentProxyTcpSessionResult r;
    uint8_t b[10] = {1};
    uint64_t t0;

    th_reset();
    th_options(&o);
    o.stop_drain_max_wait_ms = 300;
    o.threads = 1;
    e = th_engine(&o);
    r = rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
    rama_transparent_proxy_tcp_session_activate(r.session, ecbs);
    rama_transparent_proxy_tcp_session_on_egress_bytes(r.session,
                                                       (RamaBytesView){b, 10});
    CHECK(nectar_test_poll(is_set, &entered, 5000));
    t0 = nectar_test_now_ms();
    rama_transparent_proxy_engine_stop(e, 0);
    /* drain (300 ms) + hard cap (2 s), with slack for a loaded machine */
    CHECK_LT(nectar_test_now_ms() - t0, 4500);
    CHECK_EQ(atomic_load(&left), 0);
    /* The session handle stays usable memory; freeing it is safe. */
    rama_transparent_proxy_tcp_session_free(r.session);
    /* Let the wedged thread come back and run down on leaked memory. */
    CHECK(nectar_test_poll(is_set, &left, 10000));
    th_sleep_ms(100);
}

static const nectar_test_t tests[] = {
    {"stop_bounded_when_wedged", test_stop_bounded_when_wedged},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
