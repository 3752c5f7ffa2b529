/*
 * port80_counter.c - a small nectar handler: intercept TCP to port 80,
 * pass everything else through, and relay the intercepted bytes unchanged
 * while counting them, written against the handler.h streams.
 *
 * It shows the one step an application needs to bind its handler to the
 * exported rama ABI: nectar_register_handler() before the host creates
 * the engine.  Here main() plays a minimal host (what the Swift provider
 * or the nectar daemon does) for one flow, so the program is self-
 * contained: it prints the decision and the byte counts and exits 0.
 *
 * Build: part of the nectar tree (examples/CMakeLists.txt), or
 *   cc port80_counter.c $(pkg-config --cflags --libs nectar libuv)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nectar/handler.h>

/* ---- the relay service (one per intercepted flow) ------------------------ */

struct half {
    struct relay *r;
    nectar_stream_t *from;
    nectar_stream_t *to;
    uint8_t *pending; /* our copy of the chunk being written */
    bool eof;
};

struct relay {
    nectar_tcp_flow_t *flow;
    struct half up;   /* app -> remote */
    struct half down; /* remote -> app */
    bool done;
};

static atomic_ullong total_up, total_down;

static void half_read(nectar_stream_t *s, ssize_t n, const uint8_t *buf,
                      void *data);

static void relay_done_if_idle(struct relay *r)
{
    if (r->done || !r->up.eof || !r->down.eof || r->up.pending ||
        r->down.pending)
        return;
    r->done = true;
    nectar_tcp_flow_finish(r->flow);
}

static void half_written(nectar_stream_t *s, int status, void *data)
{
    struct half *h = data;

    (void)s;
    free(h->pending);
    h->pending = NULL;
    if (status != 0) {
        /* The host closed that side (or we are being torn down). */
        if (!h->r->done) {
            h->r->done = true;
            nectar_tcp_flow_finish(h->r->flow);
        }
        return;
    }
    /* Backpressure: read the next chunk only once this one is taken. */
    if (!h->eof)
        nectar_stream_read_start(h->from, half_read, h);
    relay_done_if_idle(h->r);
}

static void half_read(nectar_stream_t *s, ssize_t n, const uint8_t *buf,
                      void *data)
{
    struct half *h = data;

    if (n < 0) {
        /* EOF (or reset): propagate the half-close to the other side. */
        h->eof = true;
        nectar_stream_shutdown(h->to);
        relay_done_if_idle(h->r);
        return;
    }
    nectar_stream_read_stop(s);
    h->pending = malloc((size_t)n);
    if (h->pending == NULL) {
        h->r->done = true;
        nectar_tcp_flow_finish(h->r->flow);
        return;
    }
    memcpy(h->pending, buf, (size_t)n);
    if (h == &h->r->up)
        atomic_fetch_add(&total_up, (unsigned long long)n);
    else
        atomic_fetch_add(&total_down, (unsigned long long)n);
    nectar_stream_write(h->to, h->pending, (size_t)n, half_written, h);
}

static void relay_start(void *svc, nectar_tcp_flow_t *flow)
{
    struct relay *r = svc;

    r->flow = flow;
    r->up = (struct half){r, nectar_tcp_flow_ingress(flow),
                          nectar_tcp_flow_egress(flow), NULL, false};
    r->down = (struct half){r, nectar_tcp_flow_egress(flow),
                            nectar_tcp_flow_ingress(flow), NULL, false};
    nectar_stream_read_start(r->up.from, half_read, &r->up);
    nectar_stream_read_start(r->down.from, half_read, &r->down);
}

static void relay_cancel(void *svc, nectar_tcp_flow_t *flow, int reason)
{
    (void)svc;
    (void)flow;
    (void)reason; /* nothing of our own to stop; destroy follows */
}

static void relay_destroy(void *svc)
{
    free(svc);
}

static const nectar_tcp_service_t relay_service = {relay_start, relay_cancel,
                                                   relay_destroy};

/* ---- the handler --------------------------------------------------------- */

static int h_create(nectar_engine_ctx_t *ctx, void **state, nectar_error_t *err)
{
    (void)ctx;
    (void)err;
    *state = NULL;
    return 0;
}

static void h_proxy_config(void *state, nectar_proxy_config_t *cfg)
{
    /* Only port 80 reaches us at all; everything else stays in the
     * kernel (zero per-flow cost). */
    static const nectar_rule_t rules[] = {
        {NULL, -1, 80, NULL, -1, RAMA_RULE_PROTOCOL_TCP, false},
    };
    (void)state;
    cfg->rules = rules;
    cfg->rules_len = 1;
}

static void h_decide_tcp(void *state, const nectar_flow_meta_t *meta,
                         nectar_decision_t *d)
{
    struct relay *r;

    (void)state;
    if (meta->remote.host == NULL || meta->remote.port != 80) {
        nectar_decision_passthrough(d);
        return;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        nectar_decision_passthrough(d);
        return;
    }
    nectar_decision_intercept_tcp(d, &relay_service, r);
}

static const nectar_handler_vtable_t port80_handler = {
    .version = NECTAR_HANDLER_VERSION,
    .name = "port80-counter",
    .create = h_create,
    .proxy_config = h_proxy_config,
    .decide_tcp = h_decide_tcp,
    /* decide_udp NULL: UDP passes through. */
};

/* ---- a minimal host for one flow ----------------------------------------- */

struct host {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char to_app[256];
    size_t to_app_len;
    char to_remote[256];
    size_t to_remote_len;
    int closes;
};

static RamaTcpDeliverStatus append(struct host *h, char *dst, size_t *len,
                                   RamaBytesView b)
{
    pthread_mutex_lock(&h->mu);
    if (*len + b.len <= 256) {
        memcpy(dst + *len, b.ptr, b.len);
        *len += b.len;
    }
    pthread_mutex_unlock(&h->mu);
    return RAMA_TCP_DELIVER_ACCEPTED;
}

static RamaTcpDeliverStatus to_app(void *ctx, RamaBytesView b)
{
    struct host *h = ctx;
    return append(h, h->to_app, &h->to_app_len, b);
}

static RamaTcpDeliverStatus to_remote(void *ctx, RamaBytesView b)
{
    struct host *h = ctx;
    return append(h, h->to_remote, &h->to_remote_len, b);
}

static void closed(void *ctx)
{
    struct host *h = ctx;
    pthread_mutex_lock(&h->mu);
    h->closes++;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void demand(void *ctx)
{
    (void)ctx; /* we never get PAUSED here: the queues are large enough */
}

static RamaTransparentProxyFlowMeta meta_for(uint16_t port)
{
    static const char host[] = "93.184.216.34";
    RamaTransparentProxyFlowMeta m;

    memset(&m, 0, sizeof(m));
    m.protocol = RAMA_FLOW_PROTOCOL_TCP;
    m.remote_endpoint.host_utf8 = host;
    m.remote_endpoint.host_utf8_len = sizeof(host) - 1;
    m.remote_endpoint.port = port;
    return m;
}

int main(void)
{
    static const char req[] = "GET / HTTP/1.0\r\nHost: example\r\n\r\n";
    static const char resp[] = "HTTP/1.0 200 OK\r\n\r\nhello";
    struct host h = {.mu = PTHREAD_MUTEX_INITIALIZER,
                     .cv = PTHREAD_COND_INITIALIZER};
    RamaTransparentProxyTcpSessionCallbacks cbs = {&h, to_app, closed, demand};
    RamaTransparentProxyTcpEgressCallbacks ecbs = {&h, to_remote, closed,
                                                   demand};
    RamaTransparentProxyEngine *engine;
    RamaTransparentProxyTcpSessionResult r;
    RamaTransparentProxyFlowMeta m;
    int rc = 0;

    /* The binding: from now on every engine the ABI creates uses us. */
    if (nectar_register_handler(&port80_handler, NULL) != 0)
        return 1;
    engine = rama_transparent_proxy_engine_new();
    if (engine == NULL)
        return 1;

    m = meta_for(443);
    r = rama_transparent_proxy_engine_new_tcp_session(engine, &m, cbs);
    printf("port 443: %s\n",
           r.action == RAMA_FLOW_ACTION_PASSTHROUGH ? "passthrough" : "?");
    if (r.action != RAMA_FLOW_ACTION_PASSTHROUGH)
        rc = 1;

    m = meta_for(80);
    r = rama_transparent_proxy_engine_new_tcp_session(engine, &m, cbs);
    printf("port 80: %s\n",
           r.action == RAMA_FLOW_ACTION_INTERCEPT ? "intercept" : "?");
    if (r.session == NULL) {
        rama_transparent_proxy_engine_stop(engine, 0);
        return 1;
    }
    /* The host would connect the egress first, then activate. */
    rama_transparent_proxy_tcp_session_activate(r.session, ecbs);
    rama_transparent_proxy_tcp_session_on_client_bytes(
        r.session, (RamaBytesView){(const uint8_t *)req, sizeof(req) - 1});
    rama_transparent_proxy_tcp_session_on_client_eof(r.session);
    rama_transparent_proxy_tcp_session_on_egress_bytes(
        r.session, (RamaBytesView){(const uint8_t *)resp, sizeof(resp) - 1});
    rama_transparent_proxy_tcp_session_on_egress_eof(r.session);

    /* Both close callbacks: the relay finished both directions. */
    pthread_mutex_lock(&h.mu);
    while (h.closes < 2)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    rama_transparent_proxy_tcp_session_free(r.session);
    rama_transparent_proxy_engine_stop(engine, 0);

    printf("relayed %llu bytes up, %llu bytes down\n",
           (unsigned long long)atomic_load(&total_up),
           (unsigned long long)atomic_load(&total_down));
    if (h.to_remote_len != sizeof(req) - 1 ||
        memcmp(h.to_remote, req, h.to_remote_len) != 0 ||
        h.to_app_len != sizeof(resp) - 1 ||
        memcmp(h.to_app, resp, h.to_app_len) != 0)
        rc = 1;
    return rc;
}
