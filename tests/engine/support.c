/*
 * support.c - the engine tests' handler: decisions driven by th_cfg, a
 * byte-exact relay TCP service (ingress <-> egress, one write in flight per
 * direction, half-close preserved, optional promote), and a UDP echo
 * service.
 */
#include "engine/support.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness/test.h"

struct th_config th_cfg;
struct th_stats th_stats;

void th_reset(void)
{
    memset(&th_cfg, 0, sizeof(th_cfg));
    th_cfg.tcp_action = NECTAR_ACTION_INTERCEPT;
    th_cfg.udp_action = NECTAR_ACTION_INTERCEPT;
    memset(&th_stats, 0, sizeof(th_stats));
}

void th_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void th_fill(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

/* ---- TCP relay service --------------------------------------------------- */

struct relay;
struct relay_dir {
    struct relay *r;
    nectar_stream_t *from;
    nectar_stream_t *to;
    uint8_t *buf;
    bool eof;
    bool writing;
};

struct relay {
    nectar_tcp_flow_t *flow;
    struct relay_dir d[2];
    uint64_t relayed_in;
    bool promoted_asked;
    bool finished;
};

static void relay_maybe_finish(struct relay *r)
{
    if (r->finished)
        return;
    for (int i = 0; i < 2; i++)
        if (!r->d[i].eof || r->d[i].writing)
            return;
    /* The stream counters agree with what the relay saw and wrote. */
    CHECK_EQ(nectar_stream_bytes_read(r->d[0].from), r->relayed_in);
    CHECK_EQ(nectar_stream_bytes_written(r->d[0].to), r->relayed_in);
    CHECK_EQ(nectar_stream_write_queue_size(r->d[0].to), 0);
    r->finished = true;
    nectar_tcp_flow_finish(r->flow);
}

static void relay_read(nectar_stream_t *s, ssize_t nread, const uint8_t *buf,
                       void *data);

static void on_promoted(nectar_tcp_flow_t *flow, int status, void *data)
{
    (void)flow;
    (void)data;
    atomic_store(&th_stats.last_promote_status, status);
    atomic_fetch_add(&th_stats.promote_results, 1);
}

static void relay_written(nectar_stream_t *s, int status, void *data)
{
    struct relay_dir *d = data;
    struct relay *r = d->r;

    (void)s;
    free(d->buf);
    d->buf = NULL;
    d->writing = false;
    if (status != 0 || r->finished) {
        if (!r->finished) {
            r->finished = true;
            nectar_tcp_flow_finish(r->flow);
        }
        return;
    }
    if (!d->eof)
        nectar_stream_read_start(d->from, relay_read, d);
    relay_maybe_finish(r);
}

static void relay_read(nectar_stream_t *s, ssize_t nread, const uint8_t *buf,
                       void *data)
{
    struct relay_dir *d = data;
    struct relay *r = d->r;

    if (nread < 0) {
        d->eof = true;
        nectar_stream_shutdown(d->to);
        relay_maybe_finish(r);
        return;
    }
    /* One write in flight: stop reading until it completes, so the
     * engine's queue (and the host's PAUSED) carry the backpressure. */
    nectar_stream_read_stop(s);
    d->buf = malloc((size_t)nread);
    memcpy(d->buf, buf, (size_t)nread);
    d->writing = true;
    if (nectar_stream_write(d->to, d->buf, (size_t)nread, relay_written, d) !=
        0) {
        free(d->buf);
        d->buf = NULL;
        d->writing = false;
        return;
    }
    CHECK_GE(nectar_stream_write_queue_size(d->to), (size_t)nread);
    if (d == &r->d[0]) {
        r->relayed_in += (uint64_t)nread;
        if (th_cfg.promote_after > 0 && !r->promoted_asked &&
            r->relayed_in >= th_cfg.promote_after) {
            r->promoted_asked = true;
            nectar_tcp_flow_promote(r->flow, on_promoted, r);
        }
    }
}

static void relay_start(void *svc, nectar_tcp_flow_t *flow)
{
    struct relay *r = svc;

    atomic_fetch_add(&th_stats.svc_started, 1);
    r->flow = flow;
    r->d[0].r = r;
    r->d[0].from = nectar_tcp_flow_ingress(flow);
    r->d[0].to = nectar_tcp_flow_egress(flow);
    r->d[1].r = r;
    r->d[1].from = nectar_tcp_flow_egress(flow);
    r->d[1].to = nectar_tcp_flow_ingress(flow);
    CHECK(nectar_stream_flow(r->d[0].from) == flow);
    CHECK(nectar_tcp_flow_meta(flow) != NULL);
    CHECK(nectar_tcp_flow_loop(flow) != NULL);
    if (th_cfg.relay_no_read)
        return;
    nectar_stream_read_start(r->d[0].from, relay_read, &r->d[0]);
    nectar_stream_read_start(r->d[1].from, relay_read, &r->d[1]);
}

static void relay_cancel(void *svc, nectar_tcp_flow_t *flow, int reason)
{
    (void)svc;
    (void)flow;
    (void)reason;
    atomic_fetch_add(&th_stats.svc_cancelled, 1);
}

static void relay_destroy(void *svc)
{
    struct relay *r = svc;
    /* Writes were completed (ECANCELED at worst) before destroy. */
    CHECK(r->d[0].buf == NULL && r->d[1].buf == NULL);
    free(r);
    atomic_fetch_add(&th_stats.svc_destroyed, 1);
}

static const nectar_tcp_service_t relay_vt = {
    .start = relay_start,
    .cancel = relay_cancel,
    .destroy = relay_destroy,
};

/* ---- UDP echo service ---------------------------------------------------- */

struct echo {
    nectar_udp_flow_t *flow;
};

static void echo_recv(nectar_udp_flow_t *flow, ssize_t nread,
                      const uint8_t *buf, const struct sockaddr *peer,
                      void *data)
{
    (void)data;
    if (nread < 0)
        return;
    int n = atomic_fetch_add(&th_stats.udp_received, 1) + 1;
    if (nread == 0)
        atomic_fetch_add(&th_stats.udp_zero_len, 1);
    /* ECLOSED once the host closed its side (its gate is shut). */
    int rc = nectar_udp_flow_send(flow, buf, (size_t)nread, peer);
    CHECK(rc == 0 || rc == NECTAR_ECLOSED);
    if (th_cfg.udp_finish_after > 0 && n >= th_cfg.udp_finish_after) {
        CHECK_EQ(nectar_udp_flow_recv_stop(flow), 0);
        nectar_udp_flow_finish(flow);
        CHECK_EQ(nectar_udp_flow_send(flow, buf, 0, NULL), NECTAR_ECLOSED);
    }
}

static void echo_start(void *svc, nectar_udp_flow_t *flow)
{
    struct echo *e = svc;
    atomic_fetch_add(&th_stats.svc_started, 1);
    e->flow = flow;
    CHECK(nectar_udp_flow_meta(flow) != NULL);
    CHECK(nectar_udp_flow_loop(flow) != NULL);
    if (!th_cfg.relay_no_read)
        nectar_udp_flow_recv_start(flow, echo_recv, e);
}

static void echo_cancel(void *svc, nectar_udp_flow_t *flow, int reason)
{
    (void)svc;
    (void)flow;
    (void)reason;
    atomic_fetch_add(&th_stats.svc_cancelled, 1);
}

static void echo_destroy(void *svc)
{
    free(svc);
    atomic_fetch_add(&th_stats.svc_destroyed, 1);
}

static const nectar_udp_service_t echo_vt = {
    .start = echo_start,
    .cancel = echo_cancel,
    .destroy = echo_destroy,
};

/* ---- the handler --------------------------------------------------------- */

static void ctx_job(void *arg)
{
    (void)arg;
    atomic_fetch_add(&th_stats.ctx_posts, 1);
}

static int th_create(nectar_engine_ctx_t *ctx, void **state,
                     nectar_error_t *err)
{
    size_t len = 0;

    (void)err;
    nectar_engine_ctx_config(ctx, &len);
    atomic_store(&th_stats.config_len, len);
    CHECK(nectar_engine_ctx_loop(ctx) != NULL);
    CHECK_EQ(nectar_engine_ctx_post(ctx, ctx_job, NULL), 0);
    *state = ctx;
    return 0;
}

static void th_destroy(void *state)
{
    (void)state;
    atomic_fetch_add(&th_stats.handler_destroyed, 1);
}

static void th_proxy_config(void *state, nectar_proxy_config_t *cfg)
{
    (void)state;
    if (th_cfg.proxy_config != NULL)
        th_cfg.proxy_config(cfg);
}

static bool th_egress_options(void *state, const nectar_flow_meta_t *meta,
                              RamaTcpEgressConnectOptions *out)
{
    (void)state;
    (void)meta;
    if (!th_cfg.give_options)
        return false;
    out->has_connect_timeout_ms = true;
    out->connect_timeout_ms = 1234;
    return true;
}

struct late {
    nectar_decision_t *d;
    nectar_protocol_t proto;
    int delay_ms;
};

static void complete_now(nectar_decision_t *d, nectar_protocol_t proto)
{
    nectar_action_t a =
        proto == NECTAR_PROTO_TCP ? th_cfg.tcp_action : th_cfg.udp_action;

    if (a == NECTAR_ACTION_PASSTHROUGH) {
        nectar_decision_passthrough(d);
    } else if (a == NECTAR_ACTION_BLOCK) {
        nectar_decision_block(d);
    } else if (proto == NECTAR_PROTO_TCP) {
        atomic_fetch_add(&th_stats.svc_created, 1);
        nectar_decision_intercept_tcp(d, &relay_vt,
                                      calloc(1, sizeof(struct relay)));
    } else {
        atomic_fetch_add(&th_stats.svc_created, 1);
        nectar_decision_intercept_udp(d, &echo_vt,
                                      calloc(1, sizeof(struct echo)));
    }
}

static void *late_main(void *arg)
{
    struct late *l = arg;
    th_sleep_ms(l->delay_ms);
    complete_now(l->d, l->proto);
    free(l);
    return NULL;
}

static pthread_mutex_t parked_mu = PTHREAD_MUTEX_INITIALIZER;
static nectar_decision_t *parked[64];
static int parked_n;

void th_release_parked(void)
{
    pthread_mutex_lock(&parked_mu);
    for (int i = 0; i < parked_n; i++)
        nectar_decision_block(parked[i]);
    parked_n = 0;
    pthread_mutex_unlock(&parked_mu);
}

static void decide(const nectar_flow_meta_t *meta, nectar_decision_t *d)
{
    atomic_fetch_add(&th_stats.decisions, 1);
    if (th_cfg.never_decide) {
        /* Kept until the test releases it: a handler may complete long
         * after the deadline, and the engine must cope. */
        pthread_mutex_lock(&parked_mu);
        if (parked_n < 64)
            parked[parked_n++] = d;
        pthread_mutex_unlock(&parked_mu);
        return;
    }
    if (th_cfg.decide_delay_ms > 0) {
        struct late *l = malloc(sizeof(*l));
        pthread_t t;
        l->d = d;
        l->proto = meta->protocol;
        l->delay_ms = th_cfg.decide_delay_ms;
        pthread_create(&t, NULL, late_main, l);
        pthread_detach(t);
        return;
    }
    complete_now(d, meta->protocol);
}

static void th_decide_tcp(void *state, const nectar_flow_meta_t *meta,
                          nectar_decision_t *d)
{
    (void)state;
    decide(meta, d);
}

static void th_decide_udp(void *state, const nectar_flow_meta_t *meta,
                          nectar_decision_t *d)
{
    (void)state;
    decide(meta, d);
}

struct late_reply {
    nectar_reply_t *r;
    uint8_t msg[64];
    size_t len;
};

static void *late_reply_main(void *arg)
{
    struct late_reply *l = arg;
    th_sleep_ms(th_cfg.app_delay_ms);
    nectar_reply_send(l->r, l->msg, l->len);
    free(l);
    return NULL;
}

static void th_app_message(void *state, const uint8_t *msg, size_t len,
                           nectar_reply_t *r)
{
    (void)state;
    if (th_cfg.app_delay_ms > 0) {
        struct late_reply *l = calloc(1, sizeof(*l));
        pthread_t t;
        l->r = r;
        l->len = len > sizeof(l->msg) ? sizeof(l->msg) : len;
        memcpy(l->msg, msg, l->len);
        pthread_create(&t, NULL, late_reply_main, l);
        pthread_detach(t);
        return;
    }
    /* Echo the message back, "no reply" for an empty one. */
    nectar_reply_send(r, msg, len);
}

static void th_sleep(void *state)
{
    (void)state;
    atomic_fetch_add(&th_stats.sleeps, 1);
}

static void th_wake(void *state)
{
    (void)state;
    atomic_fetch_add(&th_stats.wakes, 1);
}

const nectar_handler_vtable_t th_vtable = {
    .version = NECTAR_HANDLER_VERSION,
    .name = "test",
    .create = th_create,
    .destroy = th_destroy,
    .proxy_config = th_proxy_config,
    .egress_options = th_egress_options,
    .decide_tcp = th_decide_tcp,
    .decide_udp = th_decide_udp,
    .app_message = th_app_message,
    .system_sleep = th_sleep,
    .system_wake = th_wake,
};

void th_options(nectar_engine_options_t *o)
{
    nectar_engine_options_defaults(o);
    o->decision_deadline_ms = 300;
    o->stop_drain_max_wait_ms = 2000;
}

RamaTransparentProxyEngine *th_engine(const nectar_engine_options_t *o)
{
    nectar_error_t err;
    RamaTransparentProxyEngine *e =
        nectar_engine_new(&th_vtable, o, NULL, 0, &err);
    if (e == NULL)
        NECTAR_FAIL_AT("nectar_engine_new: %s", err.message);
    return e;
}

RamaTransparentProxyFlowMeta th_meta(uint32_t proto, uint16_t port)
{
    RamaTransparentProxyFlowMeta m;
    static const char host[] = "203.0.113.7";

    memset(&m, 0, sizeof(m));
    m.protocol = proto;
    m.remote_endpoint.host_utf8 = host;
    m.remote_endpoint.host_utf8_len = sizeof(host) - 1;
    m.remote_endpoint.port = port;
    return m;
}
