/*
 * test_e2e.c - the built-in handler end to end through the rama ABI: an
 * engine created from JSON with rama_transparent_proxy_engine_new_with_
 * config, decisions on real flow metadata, a TCP relay driven by a small
 * in-test host (PAUSED, demand and drain honoured, half-close checked),
 * the UDP relay against real loopback echo peers (IPv4 and IPv6), app
 * messages and get_config.
 *
 * The in-test host obeys the ABI's threading rules: every session call is
 * made from the test thread; callbacks (engine threads) only record what
 * they saw under a mutex and raise flags the test thread acts on.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "harness/test.h"
#include "nectar/handler.h"
#include "nectar/log.h"
#include "nectar/ne_abi.h"

#define WAIT_MS 10000

/* ---- engine helpers ------------------------------------------------------ */

static RamaTransparentProxyEngine *engine_with(const char *json)
{
    RamaBytesView v = {(const uint8_t *)json, json ? strlen(json) : 0};
    return rama_transparent_proxy_engine_new_with_config(v);
}

static RamaTransparentProxyFlowMeta meta_of(uint32_t proto, const char *host,
                                            uint16_t port, const char *hostname,
                                            const char *app)
{
    RamaTransparentProxyFlowMeta m;

    memset(&m, 0, sizeof(m));
    m.protocol = proto;
    if (host != NULL) {
        m.remote_endpoint.host_utf8 = host;
        m.remote_endpoint.host_utf8_len = strlen(host);
        m.remote_endpoint.port = port;
    }
    if (hostname != NULL) {
        m.remote_hostname_utf8 = hostname;
        m.remote_hostname_utf8_len = strlen(hostname);
    }
    if (app != NULL) {
        m.source_app_signing_identifier_utf8 = app;
        m.source_app_signing_identifier_utf8_len = strlen(app);
    }
    return m;
}

/* Sends msg as an app message; returns the reply parsed (NULL: none). */
static json_t *app_message(RamaTransparentProxyEngine *e, const char *msg)
{
    RamaBytesView v = {(const uint8_t *)msg, strlen(msg)};
    RamaBytesOwned r = rama_transparent_proxy_engine_handle_app_message(e, v);
    json_t *j = NULL;

    if (r.ptr != NULL && r.len > 0) {
        j = json_loadb((const char *)r.ptr, r.len, 0, NULL);
        CHECK(j != NULL);
    }
    rama_owned_bytes_free(r);
    return j;
}

static long long stat_of(RamaTransparentProxyEngine *e, const char *group,
                         const char *key)
{
    json_t *j = app_message(e, "{\"op\":\"stats\"}");
    json_t *v;

    CHECK(j != NULL);
    v = json_object_get(json_object_get(j, group), key);
    if (!json_is_integer(v))
        NECTAR_FAIL_AT("stats has no integer %s.%s", group, key);
    long long n = json_integer_value(v);
    json_decref(j);
    return n;
}

/* ---- log capture ----------------------------------------------------------
 */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[4096];

static void log_sink(void *ctx, nectar_log_level_t level, const char *tag,
                     const char *line)
{
    (void)ctx;
    if (level > NECTAR_LOG_WARN)
        return;
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(log_text);
    snprintf(log_text + n, sizeof(log_text) - n, "%s: %s\n", tag, line);
    pthread_mutex_unlock(&log_mu);
}

/* ---- tests: creation and decisions ----------------------------------------
 */

static void test_bad_config_fails(void)
{
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{\"actions\":[{\"match\":{\"remote_port\":70000},"
         "\"action\":\"block\"}]}",
         "actions[0].match.remote_port: expected integer 0..65535"},
        {"{\"engine\":{\"decision_deadline_ms\":5}}", "engine: unknown key"},
        {"{\"default_action\":", "<root>: invalid JSON"},
        {"{\"rules\":[{\"protocol\":\"icmp\"}]}",
         "rules[0].protocol: expected \"any\", \"tcp\" or \"udp\""},
    };

    nectar_log_set_sink(log_sink, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pthread_mutex_lock(&log_mu);
        log_text[0] = '\0';
        pthread_mutex_unlock(&log_mu);
        CHECK(engine_with(cases[i].json) == NULL);
        pthread_mutex_lock(&log_mu);
        if (strstr(log_text, cases[i].want) == NULL)
            NECTAR_FAIL_AT("log lacks \"%s\":\n%s", cases[i].want, log_text);
        pthread_mutex_unlock(&log_mu);
    }
    nectar_log_set_sink(NULL, NULL);

    /* Absent, empty and whitespace configs are the defaults. */
    RamaTransparentProxyEngine *e = rama_transparent_proxy_engine_new();
    CHECK(e != NULL);
    rama_transparent_proxy_engine_stop(e, 0);
    e = engine_with("  \n");
    CHECK(e != NULL);
    rama_transparent_proxy_engine_stop(e, 0);
}

static void noop_ctx(void *ctx)
{
    (void)ctx;
}

static RamaTcpDeliverStatus accept_bytes(void *ctx, RamaBytesView b)
{
    (void)ctx;
    (void)b;
    return RAMA_TCP_DELIVER_ACCEPTED;
}

static RamaTransparentProxyFlowAction
tcp_decision(RamaTransparentProxyEngine *e, const char *host, uint16_t port,
             const char *hostname, const char *app)
{
    RamaTransparentProxyFlowMeta m =
        meta_of(RAMA_FLOW_PROTOCOL_TCP, host, port, hostname, app);
    RamaTransparentProxyTcpSessionCallbacks cbs = {NULL, accept_bytes, noop_ctx,
                                                   noop_ctx};
    RamaTransparentProxyTcpSessionResult r =
        rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);

    CHECK_EQ(r.session != NULL, r.action == RAMA_FLOW_ACTION_INTERCEPT);
    if (r.session != NULL) {
        rama_transparent_proxy_tcp_session_cancel(r.session);
        rama_transparent_proxy_tcp_session_free(r.session);
    }
    return r.action;
}

static void noop_datagram(void *ctx, RamaBytesView b, RamaUdpPeerView p)
{
    (void)ctx;
    (void)b;
    (void)p;
}

static RamaTransparentProxyFlowAction
udp_decision(RamaTransparentProxyEngine *e, const char *host, uint16_t port)
{
    RamaTransparentProxyFlowMeta m =
        meta_of(RAMA_FLOW_PROTOCOL_UDP, host, port, NULL, NULL);
    RamaTransparentProxyUdpSessionCallbacks cbs = {NULL, noop_datagram,
                                                   noop_ctx, noop_ctx};
    RamaTransparentProxyUdpSessionResult r =
        rama_transparent_proxy_engine_new_udp_session(e, &m, cbs);

    CHECK_EQ(r.session != NULL, r.action == RAMA_FLOW_ACTION_INTERCEPT);
    if (r.session != NULL) {
        rama_transparent_proxy_udp_session_on_client_close(r.session);
        rama_transparent_proxy_udp_session_free(r.session);
    }
    return r.action;
}

static int live_zero(void *arg)
{
    RamaTransparentProxyEngine *e = arg;
    return stat_of(e, "tcp", "live") == 0 && stat_of(e, "udp", "live") == 0;
}

static void test_decisions(void)
{
    const char *json =
        "{\"default_action\":\"passthrough\",\"actions\":["
        " {\"match\":{\"protocol\":\"udp\",\"remote_port\":53},"
        "  \"action\":\"passthrough\"},"
        " {\"match\":{\"protocol\":\"udp\"},\"action\":\"intercept\"},"
        " {\"match\":{\"remote_host\":\".blocked.test\"},\"action\":\"block\"},"
        " {\"match\":{\"remote_host\":\"10.0.0.0/"
        "8\"},\"action\":\"intercept\"},"
        " {\"match\":{\"remote_host\":\"2001:db8::/32\"},\"action\":\"block\"},"
        " {\"match\":{\"app\":\"com.acme.*\",\"remote_port\":443},"
        "  \"action\":\"intercept\"}]}";
    RamaTransparentProxyEngine *e = engine_with(json);

    CHECK(e != NULL);
    CHECK_EQ(tcp_decision(e, "10.1.2.3", 443, NULL, NULL),
             RAMA_FLOW_ACTION_INTERCEPT);
    CHECK_EQ(tcp_decision(e, "93.184.216.34", 443, "www.blocked.test", NULL),
             RAMA_FLOW_ACTION_BLOCKED);
    CHECK_EQ(tcp_decision(e, "93.184.216.34", 443, "blocked.test", NULL),
             RAMA_FLOW_ACTION_BLOCKED);
    CHECK_EQ(tcp_decision(e, "93.184.216.34", 443, "notblocked.test", NULL),
             RAMA_FLOW_ACTION_PASSTHROUGH);
    CHECK_EQ(tcp_decision(e, "2001:db8::5", 80, NULL, NULL),
             RAMA_FLOW_ACTION_BLOCKED);
    CHECK_EQ(tcp_decision(e, "8.8.8.8", 443, NULL, "com.acme.tool"),
             RAMA_FLOW_ACTION_INTERCEPT);
    CHECK_EQ(tcp_decision(e, "8.8.8.8", 80, NULL, "com.acme.tool"),
             RAMA_FLOW_ACTION_PASSTHROUGH);
    CHECK_EQ(tcp_decision(e, "8.8.8.8", 443, NULL, "com.other"),
             RAMA_FLOW_ACTION_PASSTHROUGH);
    CHECK_EQ(udp_decision(e, "8.8.8.8", 53), RAMA_FLOW_ACTION_PASSTHROUGH);
    CHECK_EQ(udp_decision(e, "8.8.8.8", 443), RAMA_FLOW_ACTION_INTERCEPT);

    CHECK_EQ(stat_of(e, "decisions", "intercept"), 3);
    CHECK_EQ(stat_of(e, "decisions", "block"), 3);
    CHECK_EQ(stat_of(e, "decisions", "passthrough"), 4);
    CHECK_EQ(stat_of(e, "tcp", "opened"), 2);
    CHECK_EQ(stat_of(e, "udp", "opened"), 1);
    CHECK(nectar_test_poll(live_zero, e, WAIT_MS));
    rama_transparent_proxy_engine_stop(e, 0);

    /* The default action with an empty config is intercept. */
    e = engine_with("{}");
    CHECK_EQ(tcp_decision(e, "203.0.113.1", 80, NULL, NULL),
             RAMA_FLOW_ACTION_INTERCEPT);
    rama_transparent_proxy_engine_stop(e, 0);
    e = engine_with("{\"default_action\":\"block\"}");
    CHECK_EQ(udp_decision(e, "203.0.113.1", 80), RAMA_FLOW_ACTION_BLOCKED);
    rama_transparent_proxy_engine_stop(e, 0);
}

static void test_egress_options(void)
{
    RamaTransparentProxyEngine *e = engine_with(
        "{\"egress\":{\"connect_timeout_ms\":1234,\"tcp_no_delay\":false,"
        "\"keepalive_count\":7,\"fast_open\":true}}");
    RamaTransparentProxyFlowMeta m =
        meta_of(RAMA_FLOW_PROTOCOL_TCP, "10.0.0.1", 80, NULL, NULL);
    RamaTransparentProxyTcpSessionCallbacks cbs = {NULL, accept_bytes, noop_ctx,
                                                   noop_ctx};
    RamaTcpEgressConnectOptions o;

    CHECK(e != NULL);
    RamaTransparentProxyTcpSessionResult r =
        rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
    CHECK(r.session != NULL);
    memset(&o, 0xAA, sizeof(o));
    CHECK(rama_transparent_proxy_tcp_session_get_egress_connect_options(
        r.session, &o));
    CHECK(o.has_connect_timeout_ms);
    CHECK_EQ(o.connect_timeout_ms, 1234);
    CHECK(!o.tcp_no_delay);
    CHECK(o.tcp_keepalive_enabled);
    CHECK(o.has_tcp_keepalive_count);
    CHECK_EQ(o.tcp_keepalive_count, 7);
    CHECK(o.has_tcp_enable_fast_open);
    CHECK(o.tcp_enable_fast_open);
    CHECK(!o.has_linger_close_ms);
    CHECK(o.parameters.preserve_original_meta_data);
    CHECK(!o.parameters.allow_system_proxy);
    rama_transparent_proxy_tcp_session_cancel(r.session);
    rama_transparent_proxy_tcp_session_free(r.session);
    rama_transparent_proxy_engine_stop(e, 0);

    /* Without `egress` the handler gives no options. */
    e = engine_with("{}");
    r = rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
    CHECK(r.session != NULL);
    CHECK(!rama_transparent_proxy_tcp_session_get_egress_connect_options(
        r.session, &o));
    rama_transparent_proxy_tcp_session_cancel(r.session);
    rama_transparent_proxy_tcp_session_free(r.session);
    rama_transparent_proxy_engine_stop(e, 0);
}

/* ---- tests: app messages and get_config ------------------------------------
 */

static void test_ping_and_stats(void)
{
    RamaTransparentProxyEngine *e = engine_with(NULL);
    const char *ping = "{\"op\":\"ping\",\"source\":\"container-app\","
                       "\"sent_at\":\"2026-11-28T08:00:00Z\"}";
    json_t *j;

    CHECK(e != NULL);
    j = app_message(e, ping);
    CHECK(j != NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "op")), "pong");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "source")),
                 "transparent-proxy-provider");
    CHECK_EQ(json_integer_value(json_object_get(j, "received_bytes")),
             (long long)strlen(ping));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "acknowledged_source")),
                 "container-app");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "acknowledged_sent_at")),
                 "2026-11-28T08:00:00Z");
    json_decref(j);
    CHECK(app_message(e, "{\"op\":\"reboot\"}") == NULL);
    CHECK(app_message(e, "garbage") == NULL);
    j = app_message(e, "{\"op\":\"stats\"}");
    CHECK(j != NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "op")), "stats");
    CHECK_EQ(json_integer_value(
                 json_object_get(json_object_get(j, "decisions"), "block")),
             0);
    json_decref(j);
    rama_transparent_proxy_engine_stop(e, 0);
}

static bool text_is(const char *p, size_t len, const char *want)
{
    return p != NULL && len == strlen(want) && memcmp(p, want, len) == 0;
}

static void test_get_config(void)
{
    RamaTransparentProxyEngine *e =
        engine_with("{\"rules\":[{\"protocol\":\"tcp\"},"
                    "{\"remote_network\":\"192.168.7.9/16\",\"exclude\":true},"
                    "{\"remote_network\":\"2001:db8::\",\"remote_prefix\":32,"
                    "\"remote_port\":0,\"local_network\":\"10.0.0.1\","
                    "\"protocol\":\"udp\"}],"
                    "\"proxy\":{\"tunnel_remote_address\":\"10.255.0.1\","
                    "\"tcp_write_pump_max_pending_bytes\":99999999,"
                    "\"flow_pressure_soft_cap\":7,\"flow_refusal_action\":"
                    "\"passthrough\",\"tcp_breaker_connect_timeout_ms\":42}}");
    RamaTransparentProxyConfig *c;

    CHECK(e != NULL);
    c = rama_transparent_proxy_get_config(e);
    CHECK(c != NULL);
    CHECK(text_is(c->tunnel_remote_address_utf8,
                  c->tunnel_remote_address_utf8_len, "10.255.0.1"));
    CHECK_EQ(c->tcp_write_pump_max_pending_bytes, 8388608); /* clamped */
    CHECK_EQ(c->flow_pressure_soft_cap, 7);
    CHECK_EQ(c->flow_pressure_low_water, 350); /* default kept */
    CHECK_EQ(c->tcp_breaker_connect_timeout_ms, 42);
    CHECK_EQ(c->flow_refusal_action, 1);
    CHECK_EQ(c->rules_len, 3);
    const RamaTransparentProxyNetworkRule *r = c->rules;
    CHECK(r[0].remote_network_utf8 == NULL);
    CHECK(!r[0].remote_prefix_is_set);
    CHECK(!r[0].remote_port_is_set);
    CHECK_EQ(r[0].protocol, RAMA_RULE_PROTOCOL_TCP);
    CHECK(!r[0].exclude);
    CHECK(text_is(r[1].remote_network_utf8, r[1].remote_network_utf8_len,
                  "192.168.0.0"));
    CHECK(r[1].remote_prefix_is_set);
    CHECK_EQ(r[1].remote_prefix, 16);
    CHECK(r[1].exclude);
    CHECK_EQ(r[1].protocol, RAMA_RULE_PROTOCOL_ANY);
    CHECK(text_is(r[2].remote_network_utf8, r[2].remote_network_utf8_len,
                  "2001:db8::"));
    CHECK_EQ(r[2].remote_prefix, 32);
    CHECK(r[2].remote_port_is_set);
    CHECK_EQ(r[2].remote_port, 0);
    CHECK(text_is(r[2].local_network_utf8, r[2].local_network_utf8_len,
                  "10.0.0.1"));
    CHECK(!r[2].local_prefix_is_set);
    CHECK_EQ(r[2].protocol, RAMA_RULE_PROTOCOL_UDP);
    rama_transparent_proxy_config_free(c);
    rama_transparent_proxy_engine_stop(e, 0);

    /* Defaults: one include-all rule, 256 KiB pumps, 127.0.0.1. */
    e = engine_with("{}");
    c = rama_transparent_proxy_get_config(e);
    CHECK(c != NULL);
    CHECK(text_is(c->tunnel_remote_address_utf8,
                  c->tunnel_remote_address_utf8_len, "127.0.0.1"));
    CHECK_EQ(c->rules_len, 1);
    CHECK(c->rules[0].remote_network_utf8 == NULL);
    CHECK_EQ(c->rules[0].protocol, RAMA_RULE_PROTOCOL_ANY);
    CHECK_EQ(c->tcp_write_pump_max_pending_bytes, 262144);
    CHECK_EQ(c->flow_pressure_soft_cap, 450);
    rama_transparent_proxy_config_free(c);
    rama_transparent_proxy_engine_stop(e, 0);

    /* An empty rules list is no rules at all. */
    e = engine_with("{\"rules\":[]}");
    c = rama_transparent_proxy_get_config(e);
    CHECK(c != NULL);
    CHECK_EQ(c->rules_len, 0);
    CHECK(c->rules == NULL);
    rama_transparent_proxy_config_free(c);
    rama_transparent_proxy_engine_stop(e, 0);
}

/* ---- a small TCP host ------------------------------------------------------
 */

struct bytes {
    uint8_t *p;
    size_t len;
};

static void bytes_add(struct bytes *b, const uint8_t *p, size_t n)
{
    b->p = realloc(b->p, b->len + n + 1);
    CHECK(b->p != NULL);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* One side of the host as the engine sees it: a sink that sometimes
 * answers PAUSED, and the close callback. */
struct sink {
    pthread_mutex_t mu;
    struct bytes got;
    unsigned calls;
    unsigned pause_every; /* 0: always accept */
    int closed;
    bool bytes_after_close;
    atomic_int need_drain;
};

struct tcp_host {
    struct sink app;    /* on_server_bytes / on_server_closed */
    struct sink remote; /* on_write_to_egress / on_close_egress */
    atomic_int client_demand;
    atomic_int egress_demand;
};

static RamaTcpDeliverStatus sink_bytes(struct sink *s, RamaBytesView b)
{
    RamaTcpDeliverStatus st = RAMA_TCP_DELIVER_ACCEPTED;

    pthread_mutex_lock(&s->mu);
    s->calls++;
    if (s->closed)
        s->bytes_after_close = true;
    if (s->pause_every != 0 && s->calls % s->pause_every == 0) {
        /* Not taken: the engine re-offers the same bytes after a drain. */
        atomic_store(&s->need_drain, 1);
        st = RAMA_TCP_DELIVER_PAUSED;
    } else {
        bytes_add(&s->got, b.ptr, b.len);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

static void sink_close(struct sink *s)
{
    pthread_mutex_lock(&s->mu);
    s->closed++;
    pthread_mutex_unlock(&s->mu);
}

static RamaTcpDeliverStatus on_server_bytes(void *ctx, RamaBytesView b)
{
    return sink_bytes(&((struct tcp_host *)ctx)->app, b);
}

static void on_server_closed(void *ctx)
{
    sink_close(&((struct tcp_host *)ctx)->app);
}

static void on_client_demand(void *ctx)
{
    atomic_fetch_add(&((struct tcp_host *)ctx)->client_demand, 1);
}

static RamaTcpDeliverStatus on_write_to_egress(void *ctx, RamaBytesView b)
{
    return sink_bytes(&((struct tcp_host *)ctx)->remote, b);
}

static void on_close_egress(void *ctx)
{
    sink_close(&((struct tcp_host *)ctx)->remote);
}

static void on_egress_demand(void *ctx)
{
    atomic_fetch_add(&((struct tcp_host *)ctx)->egress_demand, 1);
}

/* Bytes the host feeds into one direction, honouring PAUSED + demand. */
struct feeder {
    const uint8_t *data;
    size_t len, off, chunk;
    bool waiting;
    int demand_seen;
    bool send_eof;
    bool eof_sent;
    bool egress; /* on_egress_* instead of on_client_* */
};

static bool feed_step(RamaTransparentProxyTcpSession *s, struct feeder *f,
                      atomic_int *demand)
{
    if (f->waiting) {
        if (atomic_load(demand) == f->demand_seen)
            return false;
        f->waiting = false;
    }
    if (f->off < f->len) {
        size_t n = f->len - f->off < f->chunk ? f->len - f->off : f->chunk;
        RamaBytesView v = {f->data + f->off, n};
        int before = atomic_load(demand);
        RamaTcpDeliverStatus st =
            f->egress
                ? rama_transparent_proxy_tcp_session_on_egress_bytes(s, v)
                : rama_transparent_proxy_tcp_session_on_client_bytes(s, v);
        if (st == RAMA_TCP_DELIVER_CLOSED)
            NECTAR_FAIL_AT("%s bytes CLOSED at %zu",
                           f->egress ? "egress" : "client", f->off);
        if (st == RAMA_TCP_DELIVER_ACCEPTED) {
            f->off += n;
        } else {
            /* Keep the bytes; replay them once demand arrives. */
            f->waiting = true;
            f->demand_seen = before;
        }
        return true;
    }
    if (f->send_eof && !f->eof_sent) {
        f->eof_sent = true;
        if (f->egress)
            rama_transparent_proxy_tcp_session_on_egress_eof(s);
        else
            rama_transparent_proxy_tcp_session_on_client_eof(s);
        return true;
    }
    return false;
}

static size_t sink_len(struct sink *s, int *closed)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->got.len;
    if (closed != NULL)
        *closed = s->closed;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Run the host until `until` holds (or fail after WAIT_MS). */
static void drive(RamaTransparentProxyTcpSession *s, struct tcp_host *h,
                  struct feeder *up, struct feeder *down,
                  bool (*until)(struct tcp_host *, void *), void *arg)
{
    uint64_t deadline = nectar_test_now_ms() + WAIT_MS;

    while (!until(h, arg)) {
        bool progress = false;
        if (atomic_exchange(&h->app.need_drain, 0)) {
            rama_transparent_proxy_tcp_session_signal_server_drain(s);
            progress = true;
        }
        if (atomic_exchange(&h->remote.need_drain, 0)) {
            rama_transparent_proxy_tcp_session_signal_egress_drain(s);
            progress = true;
        }
        if (up != NULL)
            progress |= feed_step(s, up, &h->client_demand);
        if (down != NULL)
            progress |= feed_step(s, down, &h->egress_demand);
        if (nectar_test_now_ms() > deadline)
            NECTAR_FAIL_AT("host stalled: to remote %zu, to app %zu",
                           sink_len(&h->remote, NULL), sink_len(&h->app, NULL));
        if (!progress)
            sched_yield();
    }
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
}

struct want {
    size_t remote_len;
    int remote_closed;
    size_t app_len;
    int app_closed;
};

static bool reached(struct tcp_host *h, void *arg)
{
    const struct want *w = arg;
    int rc, ac;
    size_t rl = sink_len(&h->remote, &rc), al = sink_len(&h->app, &ac);
    return rl >= w->remote_len && rc >= w->remote_closed && al >= w->app_len &&
           ac >= w->app_closed;
}

static void host_init(struct tcp_host *h, unsigned pause_app,
                      unsigned pause_remote)
{
    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->app.mu, NULL);
    pthread_mutex_init(&h->remote.mu, NULL);
    h->app.pause_every = pause_app;
    h->remote.pause_every = pause_remote;
}

static void host_fini(struct tcp_host *h)
{
    free(h->app.got.p);
    free(h->remote.got.p);
    pthread_mutex_destroy(&h->app.mu);
    pthread_mutex_destroy(&h->remote.mu);
}

static RamaTransparentProxyTcpSession *open_relay(RamaTransparentProxyEngine *e,
                                                  struct tcp_host *h)
{
    RamaTransparentProxyFlowMeta m =
        meta_of(RAMA_FLOW_PROTOCOL_TCP, "198.51.100.7", 443, NULL, NULL);
    RamaTransparentProxyTcpSessionCallbacks cbs = {
        h, on_server_bytes, on_server_closed, on_client_demand};
    RamaTransparentProxyTcpEgressCallbacks ecbs = {
        h, on_write_to_egress, on_close_egress, on_egress_demand};
    RamaTransparentProxyTcpSessionResult r =
        rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);

    CHECK_EQ(r.action, RAMA_FLOW_ACTION_INTERCEPT);
    CHECK(r.session != NULL);
    rama_transparent_proxy_tcp_session_activate(r.session, ecbs);
    return r.session;
}

/* The app sends and half-closes; the remote sees every byte and then its
 * FIN while it can still answer; then the remote answers and closes. */
static void test_tcp_relay_half_close(void)
{
    enum { UP = 300 * 1024 + 17, DOWN = 500 * 1024 + 3 };
    static uint8_t up[UP], down[DOWN];
    RamaTransparentProxyEngine *e = engine_with("{}");
    struct tcp_host h;
    int closed;

    fill(up, UP, 1);
    fill(down, DOWN, 2);
    host_init(&h, 3, 4);
    RamaTransparentProxyTcpSession *s = open_relay(e, &h);
    struct feeder fu = {
        .data = up, .len = UP, .chunk = 16384, .send_eof = true};
    struct feeder fd = {.data = down,
                        .len = DOWN,
                        .chunk = 7000,
                        .send_eof = true,
                        .egress = true};

    struct want w1 = {.remote_len = UP, .remote_closed = 1};
    drive(s, &h, &fu, NULL, reached, &w1);
    /* Half-close: the remote saw FIN, the app side is still open. */
    CHECK_EQ(sink_len(&h.app, &closed), 0);
    CHECK_EQ(closed, 0);
    CHECK_EQ(sink_len(&h.remote, &closed), UP);
    CHECK_EQ(closed, 1);
    CHECK_MEM_EQ(h.remote.got.p, up, UP);

    struct want w2 = {
        .remote_len = UP, .remote_closed = 1, .app_len = DOWN, .app_closed = 1};
    drive(s, &h, NULL, &fd, reached, &w2);
    CHECK_EQ(sink_len(&h.app, &closed), DOWN);
    CHECK_EQ(closed, 1);
    CHECK_MEM_EQ(h.app.got.p, down, DOWN);
    CHECK(!h.app.bytes_after_close);
    CHECK(!h.remote.bytes_after_close);
    /* PAUSED really happened and demand really came back. */
    CHECK_GT(h.app.calls, DOWN / 7000 + 1);
    CHECK_GT(h.remote.calls, UP / 16384 + 1);

    rama_transparent_proxy_tcp_session_cancel(s);
    rama_transparent_proxy_tcp_session_free(s);
    CHECK_EQ(stat_of(e, "tcp", "bytes_to_remote"), UP);
    CHECK_EQ(stat_of(e, "tcp", "bytes_to_app"), DOWN);
    CHECK_EQ(stat_of(e, "tcp", "opened"), 1);
    CHECK(nectar_test_poll(live_zero, e, WAIT_MS));
    rama_transparent_proxy_engine_stop(e, 0);
    /* Exactly one close per direction. */
    CHECK_EQ(h.app.closed, 1);
    CHECK_EQ(h.remote.closed, 1);
    host_fini(&h);
}

/* Both directions at once, with PAUSED on both sinks and small engine
 * queues filling up (client PAUSED + demand). */
static void test_tcp_relay_both_ways(void)
{
    enum { UP = 1024 * 1024, DOWN = 768 * 1024 + 5 };
    static uint8_t up[UP], down[DOWN];
    RamaTransparentProxyEngine *e = engine_with(NULL);
    struct tcp_host h;

    fill(up, UP, 3);
    fill(down, DOWN, 4);
    host_init(&h, 2, 3);
    RamaTransparentProxyTcpSession *s = open_relay(e, &h);
    struct feeder fu = {
        .data = up, .len = UP, .chunk = 65536, .send_eof = true};
    struct feeder fd = {.data = down,
                        .len = DOWN,
                        .chunk = 1500,
                        .send_eof = true,
                        .egress = true};
    struct want w = {
        .remote_len = UP, .remote_closed = 1, .app_len = DOWN, .app_closed = 1};

    drive(s, &h, &fu, &fd, reached, &w);
    CHECK_EQ(h.remote.got.len, UP);
    CHECK_MEM_EQ(h.remote.got.p, up, UP);
    CHECK_EQ(h.app.got.len, DOWN);
    CHECK_MEM_EQ(h.app.got.p, down, DOWN);
    rama_transparent_proxy_tcp_session_cancel(s);
    rama_transparent_proxy_tcp_session_free(s);
    rama_transparent_proxy_engine_stop(e, 0);
    CHECK_EQ(h.app.closed, 1);
    CHECK_EQ(h.remote.closed, 1);
    host_fini(&h);
}

/* The remote resets after sending: the bytes before the reset reach the
 * app, then the flow ends (app side closed). */
static void test_tcp_relay_egress_error(void)
{
    RamaTransparentProxyEngine *e = engine_with(NULL);
    struct tcp_host h;

    host_init(&h, 0, 0);
    RamaTransparentProxyTcpSession *s = open_relay(e, &h);
    struct feeder fu = {.data = (const uint8_t *)"hello", .len = 5, .chunk = 5};
    struct feeder fd = {.data = (const uint8_t *)"last words",
                        .len = 10,
                        .chunk = 10,
                        .egress = true};
    struct want w = {.remote_len = 5, .app_len = 10};
    drive(s, &h, &fu, &fd, reached, &w);
    rama_transparent_proxy_tcp_session_on_egress_error(s);
    struct want w2 = {
        .remote_len = 5, .remote_closed = 1, .app_len = 10, .app_closed = 1};
    drive(s, &h, NULL, NULL, reached, &w2);
    CHECK_MEM_EQ(h.app.got.p, "last words", 10);
    rama_transparent_proxy_tcp_session_cancel(s);
    rama_transparent_proxy_tcp_session_free(s);
    CHECK(nectar_test_poll(live_zero, e, WAIT_MS));
    rama_transparent_proxy_engine_stop(e, 0);
    host_fini(&h);
}

/* Several host threads, each owning its own sessions (the ABI's
 * single-owner rule), relay at once over the engine's loops. */
struct relay_job {
    RamaTransparentProxyEngine *e;
    unsigned seed;
};

static void *relay_thread(void *arg)
{
    enum { FLOWS = 6, UP = 96 * 1024 + 1, DOWN = 64 * 1024 + 9 };
    struct relay_job *job = arg;
    uint8_t *up = malloc(UP), *down = malloc(DOWN);

    for (int k = 0; k < FLOWS; k++) {
        struct tcp_host h;
        fill(up, UP, job->seed * 100 + (unsigned)k);
        fill(down, DOWN, job->seed * 100 + (unsigned)k + 50);
        host_init(&h, 2 + (unsigned)k % 3, 3);
        RamaTransparentProxyTcpSession *s = open_relay(job->e, &h);
        struct feeder fu = {
            .data = up, .len = UP, .chunk = 8192, .send_eof = true};
        struct feeder fd = {.data = down,
                            .len = DOWN,
                            .chunk = 3000,
                            .send_eof = true,
                            .egress = true};
        struct want w = {.remote_len = UP,
                         .remote_closed = 1,
                         .app_len = DOWN,
                         .app_closed = 1};
        drive(s, &h, &fu, &fd, reached, &w);
        rama_transparent_proxy_tcp_session_cancel(s);
        rama_transparent_proxy_tcp_session_free(s);
        CHECK_EQ(h.remote.got.len, UP);
        CHECK_MEM_EQ(h.remote.got.p, up, UP);
        CHECK_EQ(h.app.got.len, DOWN);
        CHECK_MEM_EQ(h.app.got.p, down, DOWN);
        host_fini(&h);
    }
    free(up);
    free(down);
    return NULL;
}

static void test_tcp_relay_threads(void)
{
    enum { THREADS = 4 };
    RamaTransparentProxyEngine *e = engine_with(NULL);
    pthread_t t[THREADS];
    struct relay_job jobs[THREADS];

    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (struct relay_job){e, (unsigned)i + 1};
        CHECK_EQ(pthread_create(&t[i], NULL, relay_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(stat_of(e, "tcp", "opened"), THREADS * 6);
    CHECK_EQ(stat_of(e, "tcp", "bytes_to_remote"),
             THREADS * 6 * (96 * 1024 + 1));
    CHECK_EQ(stat_of(e, "tcp", "bytes_to_app"), THREADS * 6 * (64 * 1024 + 9));
    CHECK(nectar_test_poll(live_zero, e, WAIT_MS));
    rama_transparent_proxy_engine_stop(e, 0);
}

/* ---- UDP: real loopback echo peers -----------------------------------------
 */

#define PEERS 8 /* 4 IPv4, 4 IPv6 */

struct echo {
    int fd[PEERS];
    struct sockaddr_storage addr[PEERS];
    int stop[2];
    pthread_t thread;
    atomic_int echoed;
    /* Source ports seen per family ([0] IPv4, [1] IPv6): one relay socket
     * per family means one port each. */
    atomic_int src_port[2];
    atomic_bool src_ports_differ;
};

static void echo_note_source(struct echo *ec, const struct sockaddr *from)
{
    int v6 = from->sa_family == AF_INET6;
    int port = v6 ? ntohs(((const struct sockaddr_in6 *)from)->sin6_port)
                  : ntohs(((const struct sockaddr_in *)from)->sin_port);
    int expected = 0;

    if (!atomic_compare_exchange_strong(&ec->src_port[v6], &expected, port) &&
        expected != port)
        atomic_store(&ec->src_ports_differ, true);
}

static void *echo_main(void *arg)
{
    struct echo *ec = arg;
    struct pollfd pf[PEERS + 1];
    uint8_t buf[65536];

    for (int i = 0; i < PEERS; i++)
        pf[i] = (struct pollfd){.fd = ec->fd[i], .events = POLLIN};
    pf[PEERS] = (struct pollfd){.fd = ec->stop[0], .events = POLLIN};
    for (;;) {
        if (poll(pf, PEERS + 1, -1) < 0)
            continue;
        if (pf[PEERS].revents != 0)
            return NULL;
        for (int i = 0; i < PEERS; i++) {
            if ((pf[i].revents & POLLIN) == 0)
                continue;
            struct sockaddr_storage from;
            socklen_t fl = sizeof(from);
            ssize_t n = recvfrom(ec->fd[i], buf, sizeof(buf), 0,
                                 (struct sockaddr *)&from, &fl);
            if (n < 0)
                continue;
            echo_note_source(ec, (struct sockaddr *)&from);
            sendto(ec->fd[i], buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
            atomic_fetch_add(&ec->echoed, 1);
        }
    }
}

static void echo_start(struct echo *ec)
{
    memset(ec, 0, sizeof(*ec));
    for (int i = 0; i < PEERS; i++) {
        int v6 = i >= PEERS / 2;
        socklen_t len =
            v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        ec->fd[i] = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
        CHECK_GE(ec->fd[i], 0);
        if (v6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ec->addr[i];
            a->sin6_family = AF_INET6;
            a->sin6_addr = in6addr_loopback;
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ec->addr[i];
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        }
        CHECK_EQ(bind(ec->fd[i], (struct sockaddr *)&ec->addr[i], len), 0);
        CHECK_EQ(getsockname(ec->fd[i], (struct sockaddr *)&ec->addr[i], &len),
                 0);
    }
    CHECK_EQ(pipe(ec->stop), 0);
    CHECK_EQ(pthread_create(&ec->thread, NULL, echo_main, ec), 0);
}

static void echo_stop(struct echo *ec)
{
    CHECK_EQ(write(ec->stop[1], "x", 1), 1);
    pthread_join(ec->thread, NULL);
    for (int i = 0; i < PEERS; i++)
        close(ec->fd[i]);
    close(ec->stop[0]);
    close(ec->stop[1]);
}

static uint16_t peer_port(const struct echo *ec, int i)
{
    const struct sockaddr *sa = (const struct sockaddr *)&ec->addr[i];
    return sa->sa_family == AF_INET6
               ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
               : ntohs(((const struct sockaddr_in *)sa)->sin_port);
}

struct reply {
    char payload[64];
    size_t len;
    bool present;
    char host[64];
    uint16_t port;
    uint32_t scope;
};

struct udp_host {
    pthread_mutex_t mu;
    struct reply r[256];
    int n;
    atomic_int demand;
    atomic_int closed;
};

static void udp_on_datagram(void *ctx, RamaBytesView b, RamaUdpPeerView p)
{
    struct udp_host *h = ctx;

    pthread_mutex_lock(&h->mu);
    if (h->n < 256) {
        struct reply *r = &h->r[h->n++];
        r->len = b.len < sizeof(r->payload) ? b.len : sizeof(r->payload);
        if (r->len > 0)
            memcpy(r->payload, b.ptr, r->len);
        r->present = p.present;
        if (p.present && p.host_utf8_len < sizeof(r->host)) {
            memcpy(r->host, p.host_utf8, p.host_utf8_len);
            r->host[p.host_utf8_len] = '\0';
        }
        r->port = p.port;
        r->scope = p.scope_id;
    }
    pthread_mutex_unlock(&h->mu);
}

static void udp_on_demand(void *ctx)
{
    atomic_fetch_add(&((struct udp_host *)ctx)->demand, 1);
}

static void udp_on_closed(void *ctx)
{
    atomic_fetch_add(&((struct udp_host *)ctx)->closed, 1);
}

static int udp_count(void *arg)
{
    struct udp_host *h = arg;
    pthread_mutex_lock(&h->mu);
    int n = h->n;
    pthread_mutex_unlock(&h->mu);
    return n;
}

struct udp_wait {
    struct udp_host *h;
    int n;
};

static int udp_has(void *arg)
{
    struct udp_wait *w = arg;
    return udp_count(w->h) >= w->n;
}

static void send_dgram(RamaTransparentProxyUdpSession *s, const char *text,
                       size_t len, const char *host, uint16_t port)
{
    RamaBytesView b = {(const uint8_t *)text, len};
    RamaUdpPeerView p = {0};

    if (host != NULL) {
        p.present = true;
        p.host_utf8 = (const uint8_t *)host;
        p.host_utf8_len = strlen(host);
        p.port = port;
    }
    rama_transparent_proxy_udp_session_on_client_datagram(s, b, p);
}

static RamaTransparentProxyUdpSession *open_udp(RamaTransparentProxyEngine *e,
                                                struct udp_host *h,
                                                const char *host, uint16_t port)
{
    RamaTransparentProxyFlowMeta m =
        meta_of(RAMA_FLOW_PROTOCOL_UDP, host, port, NULL, NULL);
    RamaTransparentProxyUdpSessionCallbacks cbs = {
        h, udp_on_datagram, udp_on_demand, udp_on_closed};
    RamaTransparentProxyUdpSessionResult r =
        rama_transparent_proxy_engine_new_udp_session(e, &m, cbs);

    CHECK_EQ(r.action, RAMA_FLOW_ACTION_INTERCEPT);
    CHECK(r.session != NULL);
    rama_transparent_proxy_udp_session_activate(r.session);
    return r.session;
}

struct echo_wait {
    struct echo *ec;
    int n;
};

static int echoed_all(void *arg)
{
    struct echo_wait *w = arg;
    return atomic_load(&w->ec->echoed) == w->n;
}

static void test_udp_relay_peers(void)
{
    RamaTransparentProxyEngine *e = engine_with(NULL);
    struct echo ec;
    struct udp_host h;
    char port0[8];
    int sent = 0;

    memset(&h, 0, sizeof(h));
    pthread_mutex_init(&h.mu, NULL);
    echo_start(&ec);
    snprintf(port0, sizeof(port0), "%u", peer_port(&ec, 0));
    RamaTransparentProxyUdpSession *s =
        open_udp(e, &h, "127.0.0.1", peer_port(&ec, 0));

    /* Three rounds to every peer; each payload names its peer.  Pace on
     * the replies so the 32-datagram ingress queue never overflows. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < PEERS; i++) {
            char msg[32];
            int n = snprintf(msg, sizeof(msg), "peer=%d round=%d", i, round);
            send_dgram(s, msg, (size_t)n, i < PEERS / 2 ? "127.0.0.1" : "::1",
                       peer_port(&ec, i));
            sent++;
        }
        struct udp_wait w = {&h, sent};
        CHECK(nectar_test_poll(udp_has, &w, WAIT_MS));
    }
    /* No peer: the flow's own remote endpoint (peer 0) gets it. */
    send_dgram(s, "peer=0 unattributed", 19, NULL, 0);
    sent++;
    /* A zero-length datagram survives both ways. */
    send_dgram(s, "", 0, "::1", peer_port(&ec, PEERS - 1));
    sent++;
    struct udp_wait w = {&h, sent};
    CHECK(nectar_test_poll(udp_has, &w, WAIT_MS));

    pthread_mutex_lock(&h.mu);
    CHECK_EQ(h.n, sent);
    int zero = 0;
    for (int k = 0; k < h.n; k++) {
        const struct reply *r = &h.r[k];
        int i = -1;
        CHECK(r->present);
        CHECK_EQ(r->scope, 0);
        CHECK(strchr(r->host, '%') == NULL);
        if (r->len == 0) {
            zero++;
            i = PEERS - 1;
        } else {
            CHECK_EQ(sscanf(r->payload, "peer=%d", &i), 1);
        }
        /* Attributed to the peer that really answered. */
        CHECK_STR_EQ(r->host, i < PEERS / 2 ? "127.0.0.1" : "::1");
        CHECK_EQ(r->port, peer_port(&ec, i));
    }
    CHECK_EQ(zero, 1);
    pthread_mutex_unlock(&h.mu);
    struct echo_wait ew = {&ec, sent};
    CHECK(nectar_test_poll(echoed_all, &ew, WAIT_MS));
    /* One unconnected socket per family served all four peers. */
    CHECK(!atomic_load(&ec.src_ports_differ));
    CHECK_NE(atomic_load(&ec.src_port[0]), 0);
    CHECK_NE(atomic_load(&ec.src_port[1]), 0);
    CHECK_GT(atomic_load(&h.demand), 0);
    CHECK_EQ(stat_of(e, "udp", "opened"), 1);
    CHECK_EQ(stat_of(e, "udp", "live"), 1);
    CHECK_GT(stat_of(e, "udp", "bytes_to_remote"), 0);
    CHECK_EQ(stat_of(e, "udp", "bytes_to_remote"),
             stat_of(e, "udp", "bytes_to_app"));

    rama_transparent_proxy_udp_session_on_client_close(s);
    rama_transparent_proxy_udp_session_free(s);
    CHECK(nectar_test_poll(live_zero, e, WAIT_MS));
    rama_transparent_proxy_engine_stop(e, 0);
    /* Closed by the host: no on_server_closed. */
    CHECK_EQ(atomic_load(&h.closed), 0);
    echo_stop(&ec);
    pthread_mutex_destroy(&h.mu);
}

static int udp_closed(void *arg)
{
    return atomic_load(&((struct udp_host *)arg)->closed) > 0;
}

/* A send error (broadcast without SO_BROADCAST) ends the flow. */
static void test_udp_relay_send_error(void)
{
    RamaTransparentProxyEngine *e = engine_with(NULL);
    struct udp_host h;

    memset(&h, 0, sizeof(h));
    pthread_mutex_init(&h.mu, NULL);
    RamaTransparentProxyUdpSession *s = open_udp(e, &h, "127.0.0.1", 9);
    send_dgram(s, "x", 1, "255.255.255.255", 9);
    CHECK(nectar_test_poll(udp_closed, &h, WAIT_MS));
    CHECK(nectar_test_poll(live_zero, e, WAIT_MS));
    rama_transparent_proxy_udp_session_on_client_close(s);
    rama_transparent_proxy_udp_session_free(s);
    rama_transparent_proxy_engine_stop(e, 0);
    CHECK_EQ(atomic_load(&h.closed), 1);
    pthread_mutex_destroy(&h.mu);
}

/* Many UDP flows at once on several engine threads. */
static void test_udp_relay_many_flows(void)
{
    enum { FLOWS = 24 };
    RamaTransparentProxyEngine *e = engine_with(NULL);
    struct echo ec;
    static struct udp_host h[FLOWS];
    RamaTransparentProxyUdpSession *s[FLOWS];

    echo_start(&ec);
    for (int f = 0; f < FLOWS; f++) {
        memset(&h[f], 0, sizeof(h[f]));
        pthread_mutex_init(&h[f].mu, NULL);
        s[f] = open_udp(e, &h[f], "::1", peer_port(&ec, PEERS - 1));
    }
    for (int f = 0; f < FLOWS; f++) {
        for (int i = 0; i < PEERS; i++) {
            char msg[32];
            int n = snprintf(msg, sizeof(msg), "peer=%d flow=%d", i, f);
            send_dgram(s[f], msg, (size_t)n,
                       i < PEERS / 2 ? "127.0.0.1" : "::1", peer_port(&ec, i));
        }
    }
    for (int f = 0; f < FLOWS; f++) {
        struct udp_wait w = {&h[f], PEERS};
        CHECK(nectar_test_poll(udp_has, &w, WAIT_MS));
        pthread_mutex_lock(&h[f].mu);
        for (int k = 0; k < h[f].n; k++) {
            int i, flow;
            CHECK_EQ(sscanf(h[f].r[k].payload, "peer=%d flow=%d", &i, &flow),
                     2);
            CHECK_EQ(flow, f); /* replies reach the flow that asked */
            CHECK_EQ(h[f].r[k].port, peer_port(&ec, i));
        }
        pthread_mutex_unlock(&h[f].mu);
    }
    CHECK_EQ(stat_of(e, "udp", "live"), FLOWS);
    for (int f = 0; f < FLOWS; f++) {
        rama_transparent_proxy_udp_session_on_client_close(s[f]);
        rama_transparent_proxy_udp_session_free(s[f]);
    }
    CHECK(nectar_test_poll(live_zero, e, WAIT_MS));
    rama_transparent_proxy_engine_stop(e, 0);
    echo_stop(&ec);
    for (int f = 0; f < FLOWS; f++)
        pthread_mutex_destroy(&h[f].mu);
}

static const nectar_test_t tests[] = {
    {"bad_config_fails", test_bad_config_fails},
    {"decisions", test_decisions},
    {"egress_options", test_egress_options},
    {"ping_and_stats", test_ping_and_stats},
    {"get_config", test_get_config},
    {"tcp_relay_half_close", test_tcp_relay_half_close},
    {"tcp_relay_both_ways", test_tcp_relay_both_ways},
    {"tcp_relay_egress_error", test_tcp_relay_egress_error},
    {"tcp_relay_threads", test_tcp_relay_threads},
    {"udp_relay_peers", test_udp_relay_peers},
    {"udp_relay_send_error", test_udp_relay_send_error},
    {"udp_relay_many_flows", test_udp_relay_many_flows},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
