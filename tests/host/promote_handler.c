/*
 * promote_handler.c - a test handler for the promote cutover: a plain relay
 * on handler.h streams that asks to be promoted once it has relayed
 * `threshold` client bytes, so the host must splice the rest of the flow
 * byte-exactly (carryover first, no loss, no duplicate).
 */
#include "promote_handler.h"

#include <stdlib.h>
#include <string.h>

/* Stop reading a side while this many bytes wait to be accepted. */
#define RELAY_LIMIT (256u * 1024u)

static atomic_ullong g_threshold;
static atomic_size_t g_pump_cap;
atomic_int promote_ok, promote_failed;

struct prelay {
    nectar_tcp_flow_t *flow;
    nectar_stream_t *in, *eg;
    uint64_t c2s;
    bool requested;
    bool stopped[2]; /* [0] ingress reading stopped, [1] egress */
};

struct wreq {
    struct prelay *r;
    nectar_stream_t *src;
    uint8_t data[];
};

static void on_read(nectar_stream_t *s, ssize_t nread, const uint8_t *buf,
                    void *data);

static int side(struct prelay *r, nectar_stream_t *s)
{
    return s == r->in ? 0 : 1;
}

static void on_written(nectar_stream_t *s, int status, void *data)
{
    struct wreq *w = data;
    struct prelay *r = w->r;
    nectar_stream_t *src = w->src;
    free(w);
    if (status != 0)
        return;
    int k = side(r, src);
    if (r->stopped[k] && nectar_stream_write_queue_size(s) < RELAY_LIMIT) {
        r->stopped[k] = false;
        nectar_stream_read_start(src, on_read, r);
    }
}

static void on_promoted(nectar_tcp_flow_t *flow, int status, void *data)
{
    (void)flow;
    (void)data;
    if (status == 0)
        atomic_fetch_add(&promote_ok, 1);
    else
        atomic_fetch_add(&promote_failed, 1);
}

static void on_read(nectar_stream_t *s, ssize_t nread, const uint8_t *buf,
                    void *data)
{
    struct prelay *r = data;
    nectar_stream_t *dst = s == r->in ? r->eg : r->in;
    if (nread <= 0) {
        nectar_stream_shutdown(dst);
        return;
    }
    struct wreq *w = malloc(sizeof(*w) + (size_t)nread);
    w->r = r;
    w->src = s;
    memcpy(w->data, buf, (size_t)nread);
    if (nectar_stream_write(dst, w->data, (size_t)nread, on_written, w) != 0) {
        free(w);
        return;
    }
    if (s == r->in) {
        r->c2s += (uint64_t)nread;
        if (!r->requested && r->c2s >= atomic_load(&g_threshold)) {
            r->requested = true;
            nectar_tcp_flow_promote(r->flow, on_promoted, r);
        }
    }
    if (nectar_stream_write_queue_size(dst) >= RELAY_LIMIT) {
        r->stopped[side(r, s)] = true;
        nectar_stream_read_stop(s);
    }
}

static void svc_start(void *svc, nectar_tcp_flow_t *flow)
{
    struct prelay *r = svc;
    r->flow = flow;
    r->in = nectar_tcp_flow_ingress(flow);
    r->eg = nectar_tcp_flow_egress(flow);
    nectar_stream_read_start(r->in, on_read, r);
    nectar_stream_read_start(r->eg, on_read, r);
}

static void svc_cancel(void *svc, nectar_tcp_flow_t *flow, int reason)
{
    (void)svc;
    (void)flow;
    (void)reason;
}

static void svc_destroy(void *svc)
{
    free(svc);
}

static const nectar_tcp_service_t relay_vt = {svc_start, svc_cancel,
                                              svc_destroy};

static int h_create(nectar_engine_ctx_t *ctx, void **state,
                    nectar_error_t *err)
{
    (void)ctx;
    (void)err;
    *state = NULL;
    return 0;
}

static void h_config(void *state, nectar_proxy_config_t *cfg)
{
    (void)state;
    size_t cap = atomic_load(&g_pump_cap);
    if (cap > 0)
        cfg->tcp_write_pump_max_pending_bytes = cap;
}

static void h_decide(void *state, const nectar_flow_meta_t *meta,
                     nectar_decision_t *d)
{
    (void)state;
    (void)meta;
    struct prelay *r = calloc(1, sizeof(*r));
    nectar_decision_intercept_tcp(d, &relay_vt, r);
}

static const nectar_handler_vtable_t promote_vt = {
    .version = NECTAR_HANDLER_VERSION,
    .name = "test-promote",
    .create = h_create,
    .proxy_config = h_config,
    .decide_tcp = h_decide,
};

RamaTransparentProxyEngine *promote_engine_new(uint64_t threshold,
                                               size_t pump_cap)
{
    atomic_store(&g_threshold, threshold);
    atomic_store(&g_pump_cap, pump_cap);
    nectar_error_t err = {0};
    return nectar_engine_new(&promote_vt, NULL, NULL, 0, &err);
}
