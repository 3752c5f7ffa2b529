/*
 * test_udp.c - UDP sessions: echo through the service with peers, zero-
 * length datagrams, overflow drop with demand, demand semantics, scope id
 * round trips without "%zone" text, idle and lifetime closes, close
 * suppression, never-activated sessions, engine stop.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/support.h"
#include "harness/test.h"

struct uh {
    pthread_mutex_t mu;
    int datagrams;
    int zero_len;
    int demand;
    int closed;
    char last_host[64];
    uint16_t last_port;
    uint32_t last_scope;
    bool last_present;
    size_t last_len;
};

static void uh_datagram(void *ctx, RamaBytesView b, RamaUdpPeerView peer)
{
    struct uh *u = ctx;
    pthread_mutex_lock(&u->mu);
    u->datagrams++;
    if (b.len == 0)
        u->zero_len++;
    u->last_len = b.len;
    u->last_present = peer.present;
    u->last_port = peer.port;
    u->last_scope = peer.scope_id;
    memset(u->last_host, 0, sizeof(u->last_host));
    if (peer.present && peer.host_utf8_len < sizeof(u->last_host))
        memcpy(u->last_host, peer.host_utf8, peer.host_utf8_len);
    pthread_mutex_unlock(&u->mu);
}

static void uh_demand(void *ctx)
{
    struct uh *u = ctx;
    pthread_mutex_lock(&u->mu);
    u->demand++;
    pthread_mutex_unlock(&u->mu);
}

static void uh_closed(void *ctx)
{
    struct uh *u = ctx;
    pthread_mutex_lock(&u->mu);
    u->closed++;
    pthread_mutex_unlock(&u->mu);
}

static int uh_get(struct uh *u, const int *f)
{
    int v;
    pthread_mutex_lock(&u->mu);
    v = *f;
    pthread_mutex_unlock(&u->mu);
    return v;
}

struct wait_arg {
    struct uh *u;
    const int *f;
    int want;
};

static int wait_cond(void *arg)
{
    struct wait_arg *w = arg;
    return uh_get(w->u, w->f) >= w->want;
}

static bool uh_wait(struct uh *u, const int *f, int want, int ms)
{
    struct wait_arg w = {u, f, want};
    return nectar_test_poll(wait_cond, &w, ms);
}

static RamaTransparentProxyUdpSession *open_udp(RamaTransparentProxyEngine *e,
                                                struct uh *u)
{
    RamaTransparentProxyFlowMeta m = th_meta(RAMA_FLOW_PROTOCOL_UDP, 5353);
    RamaTransparentProxyUdpSessionCallbacks cbs = {u, uh_datagram, uh_demand,
                                                   uh_closed};
    RamaTransparentProxyUdpSessionResult r;

    memset(u, 0, sizeof(*u));
    pthread_mutex_init(&u->mu, NULL);
    r = rama_transparent_proxy_engine_new_udp_session(e, &m, cbs);
    CHECK_EQ(r.action, RAMA_FLOW_ACTION_INTERCEPT);
    CHECK(r.session != NULL);
    return r.session;
}

static RamaUdpPeerView peer_view(const char *host, uint16_t port,
                                 uint32_t scope)
{
    RamaUdpPeerView p = {true, (const uint8_t *)host, strlen(host), port,
                         scope};
    return p;
}

static int started_ge(void *arg)
{
    return atomic_load(&th_stats.svc_started) >= *(int *)arg;
}

static int destroyed_ge(void *arg)
{
    return atomic_load(&th_stats.svc_destroyed) >= *(int *)arg;
}

static void test_echo_and_zero_length(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    RamaTransparentProxyUdpSession *s;
    struct uh u;
    uint8_t big[65000];
    int one = 1;

    th_reset();
    th_options(&o);
    e = th_engine(&o);
    s = open_udp(e, &u);
    rama_transparent_proxy_udp_session_activate(s);
    /* First recv by the service: one demand. */
    CHECK(nectar_test_poll(started_ge, &one, 5000));
    CHECK(uh_wait(&u, &u.demand, 1, 5000));

    rama_transparent_proxy_udp_session_on_client_datagram(
        s, (RamaBytesView){(const uint8_t *)"hi", 2},
        peer_view("198.51.100.9", 53, 7)); /* v4: scope ignored */
    CHECK(uh_wait(&u, &u.datagrams, 1, 5000));
    CHECK(u.last_present);
    CHECK_STR_EQ(u.last_host, "198.51.100.9");
    CHECK_EQ(u.last_port, 53);
    CHECK_EQ(u.last_scope, 0);
    CHECK_EQ(u.demand, 2); /* accepted datagram: demand, synchronously */

    rama_transparent_proxy_udp_session_on_client_datagram(
        s, (RamaBytesView){NULL, 0}, peer_view("fe80::1", 9, 4));
    CHECK(uh_wait(&u, &u.zero_len, 1, 5000));
    CHECK_STR_EQ(u.last_host, "fe80::1");
    CHECK_EQ(u.last_scope, 4);
    CHECK(strchr(u.last_host, '%') == NULL);

    /* A "%zone" in the text is not a numeric literal: no peer. */
    rama_transparent_proxy_udp_session_on_client_datagram(
        s, (RamaBytesView){(const uint8_t *)"z", 1},
        peer_view("fe80::1%en0", 9, 0));
    CHECK(uh_wait(&u, &u.datagrams, 3, 5000));
    CHECK(!u.last_present);

    th_fill(big, sizeof(big), 1);
    rama_transparent_proxy_udp_session_on_client_datagram(
        s, (RamaBytesView){big, sizeof(big)}, peer_view("::1", 1, 0));
    CHECK(uh_wait(&u, &u.datagrams, 4, 5000));
    CHECK_EQ(u.last_len, sizeof(big));

    rama_transparent_proxy_udp_session_on_client_close(s);
    CHECK(nectar_test_poll(destroyed_ge, &one, 5000));
    th_sleep_ms(20);
    CHECK_EQ(uh_get(&u, &u.closed), 0); /* suppressed after close */
    rama_transparent_proxy_udp_session_free(s);
    rama_transparent_proxy_engine_stop(e, 0);
}

static void test_overflow_drop(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    RamaTransparentProxyUdpSession *s;
    struct uh u;

    th_reset();
    th_options(&o);
    o.udp_channel_capacity = 4;
    th_cfg.relay_no_read = true; /* the service never receives */
    e = th_engine(&o);
    s = open_udp(e, &u);
    /* Pending sessions queue too, and demand fires on accept and drop. */
    for (int i = 0; i < 10; i++)
        rama_transparent_proxy_udp_session_on_client_datagram(
            s, (RamaBytesView){(const uint8_t *)"d", 1},
            peer_view("192.0.2.1", 9, 0));
    CHECK_EQ(uh_get(&u, &u.demand), 10);
    rama_transparent_proxy_udp_session_free(s);
    CHECK_EQ(uh_get(&u, &u.datagrams), 0);
    rama_transparent_proxy_engine_stop(e, 0);
    /* Never activated: nothing fired but demand; the service was
     * destroyed without starting. */
    CHECK_EQ(uh_get(&u, &u.closed), 0);
    CHECK_EQ(atomic_load(&th_stats.svc_started), 0);
    CHECK_EQ(atomic_load(&th_stats.svc_destroyed), 1);
}

static void test_idle_and_lifetime(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    RamaTransparentProxyUdpSession *s;
    struct uh u;
    uint64_t t0;

    th_reset();
    th_options(&o);
    o.udp_idle_timeout_ms = 300;
    e = th_engine(&o);
    s = open_udp(e, &u);
    rama_transparent_proxy_udp_session_activate(s);
    t0 = nectar_test_now_ms();
    /* Activity keeps it alive past the timeout ... */
    for (int i = 0; i < 10; i++) {
        th_sleep_ms(60);
        rama_transparent_proxy_udp_session_on_client_datagram(
            s, (RamaBytesView){(const uint8_t *)"k", 1},
            peer_view("192.0.2.1", 9, 0));
    }
    CHECK_EQ(uh_get(&u, &u.closed), 0);
    /* ... silence closes it, with on_server_closed (gate open). */
    CHECK(uh_wait(&u, &u.closed, 1, 3000));
    CHECK_GE(nectar_test_now_ms() - t0, 600 + 290);
    /* Deliveries after the service ended: silent, no demand. */
    int d = uh_get(&u, &u.demand);
    rama_transparent_proxy_udp_session_on_client_datagram(
        s, (RamaBytesView){(const uint8_t *)"k", 1}, peer_view("::1", 9, 0));
    CHECK_EQ(uh_get(&u, &u.demand), d);
    rama_transparent_proxy_udp_session_free(s);
    rama_transparent_proxy_engine_stop(e, 0);

    th_reset();
    th_options(&o);
    o.udp_idle_timeout_ms = 0;
    o.udp_max_lifetime_ms = 150;
    e = th_engine(&o);
    s = open_udp(e, &u);
    rama_transparent_proxy_udp_session_activate(s);
    CHECK(uh_wait(&u, &u.closed, 1, 3000));
    CHECK_EQ(uh_get(&u, &u.closed), 1);
    rama_transparent_proxy_udp_session_free(s);
    rama_transparent_proxy_engine_stop(e, 0);
}

static void test_stop_and_late_activate(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    RamaTransparentProxyUdpSession *a, *p;
    struct uh ua, up;
    int one = 1;

    th_reset();
    th_options(&o);
    e = th_engine(&o);
    a = open_udp(e, &ua);
    p = open_udp(e, &up);
    rama_transparent_proxy_udp_session_activate(a);
    CHECK(nectar_test_poll(started_ge, &one, 5000));
    rama_transparent_proxy_engine_stop(e, 0);
    CHECK_EQ(uh_get(&ua, &ua.closed), 1);           /* active: fires at stop */
    CHECK_EQ(uh_get(&up, &up.closed), 0);           /* pending: nothing */
    rama_transparent_proxy_udp_session_activate(p); /* dropped silently */
    rama_transparent_proxy_udp_session_on_client_datagram(
        p, (RamaBytesView){(const uint8_t *)"k", 1}, peer_view("::1", 9, 0));
    CHECK_EQ(uh_get(&up, &up.closed), 0);
    CHECK_EQ(uh_get(&up, &up.demand), 0);
    rama_transparent_proxy_udp_session_free(a);
    rama_transparent_proxy_udp_session_free(p);
    CHECK_EQ(atomic_load(&th_stats.svc_destroyed), 2);
}

/* The service ending by itself: on_server_closed fires once (gate open),
 * later deliveries are silent. */
static void test_service_finish(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    RamaTransparentProxyUdpSession *s;
    struct uh u;
    int one = 1, d;

    th_reset();
    th_options(&o);
    th_cfg.udp_finish_after = 2;
    e = th_engine(&o);
    s = open_udp(e, &u);
    rama_transparent_proxy_udp_session_activate(s);
    for (int i = 0; i < 2; i++)
        rama_transparent_proxy_udp_session_on_client_datagram(
            s, (RamaBytesView){(const uint8_t *)"ab", 2},
            peer_view("192.0.2.1", 9, 0));
    CHECK(uh_wait(&u, &u.closed, 1, 5000));
    CHECK(nectar_test_poll(destroyed_ge, &one, 5000));
    CHECK_EQ(uh_get(&u, &u.datagrams), 2);
    d = uh_get(&u, &u.demand);
    rama_transparent_proxy_udp_session_on_client_datagram(
        s, (RamaBytesView){(const uint8_t *)"ab", 2}, peer_view("::1", 9, 0));
    CHECK_EQ(uh_get(&u, &u.demand), d);
    th_sleep_ms(20);
    CHECK_EQ(uh_get(&u, &u.closed), 1);
    CHECK_EQ(atomic_load(&th_stats.svc_cancelled), 0);
    rama_transparent_proxy_udp_session_free(s);
    rama_transparent_proxy_engine_stop(e, 0);
}

static void test_peer_round_trip(void)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    char scratch[64];
    RamaUdpPeerView v, back;

    v = peer_view("fe80::1", 443, 4);
    CHECK(nectar__peer_decode(&v, &ss));
    CHECK_EQ(ss.ss_family, AF_INET6);
    CHECK_EQ(s6->sin6_scope_id, 4);
    CHECK_EQ(ntohs(s6->sin6_port), 443);
    back =
        nectar__peer_encode((struct sockaddr *)&ss, scratch, sizeof(scratch));
    CHECK(back.present);
    CHECK_EQ(back.scope_id, 4);
    CHECK_EQ(back.port, 443);
    CHECK_EQ(back.host_utf8_len, 7);
    CHECK_MEM_EQ(back.host_utf8, "fe80::1", 7);

    v = peer_view("2001:db8::5", 1, 0);
    CHECK(nectar__peer_decode(&v, &ss));
    back =
        nectar__peer_encode((struct sockaddr *)&ss, scratch, sizeof(scratch));
    CHECK_EQ(back.scope_id, 0);

    v = peer_view("10.1.2.3", 80, 9);
    CHECK(nectar__peer_decode(&v, &ss));
    CHECK_EQ(ss.ss_family, AF_INET);
    back =
        nectar__peer_encode((struct sockaddr *)&ss, scratch, sizeof(scratch));
    CHECK_EQ(back.scope_id, 0);
    CHECK_MEM_EQ(back.host_utf8, "10.1.2.3", 8);

    v = peer_view("example.com", 80, 0); /* never DNS */
    CHECK(!nectar__peer_decode(&v, &ss));
    v = peer_view("10.1.2.3", 80, 0);
    v.present = false;
    CHECK(!nectar__peer_decode(&v, &ss));
    back = nectar__peer_encode(NULL, scratch, sizeof(scratch));
    CHECK(!back.present && back.host_utf8 == NULL && back.port == 0);
    /* Too small a scratch buffer: absent, never truncated. */
    v = peer_view("2001:db8::5", 1, 0);
    nectar__peer_decode(&v, &ss);
    back = nectar__peer_encode((struct sockaddr *)&ss, scratch, 4);
    CHECK(!back.present);
}

static const nectar_test_t tests[] = {
    {"echo_and_zero_length", test_echo_and_zero_length},
    {"overflow_drop", test_overflow_drop},
    {"idle_and_lifetime", test_idle_and_lifetime},
    {"stop_and_late_activate", test_stop_and_late_activate},
    {"service_finish", test_service_finish},
    {"peer_round_trip", test_peer_round_trip},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
