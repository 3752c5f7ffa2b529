/*
 * udp_session.c - a UDP session: the host-facing rama_transparent_proxy_
 * udp_session_* functions and the loop side behind nectar_udp_flow_*
 * (spec ne-engine §5).
 *
 *   P (pending) --activate--> A (active) --service ends / idle / lifetime /
 *    |                         |            engine stop--> D (on_server_closed)
 *    | on_client_close         | on_client_close
 *    v                         v
 *    C (nothing fires)         C (service cancelled; close callback gated)
 *
 * Ingress is lossy and never blocks (§5.3): a full queue drops the
 * datagram before anything is allocated, and read demand fires on the
 * host's thread, through the gate, on every accepted or dropped datagram
 * (never on a closed queue).  Replies go straight from the service to
 * on_server_datagram, gated, with the peer rendered on the stack.
 */
#include <assert.h>
#include <netinet/in.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

#define RECV_BUDGET 32

enum udp_state { UDP_PENDING, UDP_ACTIVE, UDP_DONE };

struct ne_dgram {
    size_t len;
    bool has_peer;
    struct sockaddr_storage peer;
    uint8_t data[];
};

struct nectar_udp_flow {
    struct ne_obj obj;
    struct ne_meta *meta;
    uint32_t idle_ms;
    uint32_t lifetime_ms;

    struct ne_gate gate;                         /* spec §3.8 */
    RamaTransparentProxyUdpSessionCallbacks cbs; /* immutable */

    pthread_mutex_t mu;
    enum udp_state state;
    bool closed;       /* on_client_close: sender dropped */
    bool service_gone; /* engine stop tore a pending session down */
    bool rx_gone;      /* the service side is gone */
    struct nectar_ring q;
    atomic_uint activity;

    /* Loop-thread-only. */
    const nectar_udp_service_t *svc_vt;
    void *svc;
    bool timers_up;
    bool started;
    bool finishing;
    bool torn;
    bool svc_destroyed;
    bool demand_once;
    unsigned open_handles;
    nectar_udp_recv_cb recv_cb;
    void *recv_data;
    bool receiving;
    uv_timer_t idle;
    uv_timer_t lifetime;
    unsigned idle_seen;
    uint64_t idle_last_ms;
};

static struct nectar_udp_flow *from(RamaTransparentProxyUdpSession *h)
{
    return (struct nectar_udp_flow *)h;
}

static struct nectar_udp_flow *of(struct ne_obj *o)
{
    return nectar_list_entry(o, struct nectar_udp_flow, obj);
}

/* ---- gated callbacks ----------------------------------------------------- */

static void fire_demand(struct nectar_udp_flow *f)
{
    if (ne_gate_enter(&f->gate) && f->cbs.on_client_read_demand != NULL)
        f->cbs.on_client_read_demand(f->cbs.context);
    ne_gate_leave(&f->gate);
}

static void fire_closed(struct nectar_udp_flow *f)
{
    if (ne_gate_enter(&f->gate) && f->cbs.on_server_closed != NULL)
        f->cbs.on_server_closed(f->cbs.context);
    ne_gate_leave(&f->gate);
}

/* ---- creation and host calls --------------------------------------------- */

extern const struct ne_obj_ops nectar__udp_ops;

struct nectar_udp_flow *
nectar__udp_new(struct RamaTransparentProxyEngine *e, struct ne_meta *meta,
                const struct ne_verdict *v,
                RamaTransparentProxyUdpSessionCallbacks cbs)
{
    struct nectar_udp_flow *f = nectar_calloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    if (nectar_ring_init(&f->q, e->opts.udp_channel_capacity) != 0) {
        nectar_free(f);
        return NULL;
    }
    nectar__meta_ref(meta);
    f->meta = meta;
    f->idle_ms = e->opts.udp_idle_timeout_ms;
    f->lifetime_ms = e->opts.udp_max_lifetime_ms;
    ne_gate_init(&f->gate);
    pthread_mutex_init(&f->mu, NULL);
    f->cbs = cbs;
    f->state = UDP_PENDING;
    atomic_init(&f->activity, 0);
    f->svc_vt = v->udp_vt;
    f->svc = v->svc;
    nectar__rt_ref(e->rt);
    nectar_log(NECTAR_LOG_DEBUG, NE_TAG, "flow %llu: new udp session",
               (unsigned long long)meta->m.flow_id);
    nectar__obj_attach(&f->obj, &nectar__udp_ops, nectar__rt_pick(e->rt));
    return f;
}

NECTAR_API void rama_transparent_proxy_udp_session_activate(
    RamaTransparentProxyUdpSession *session)
{
    struct nectar_udp_flow *f = from(session);
    bool ok = false;

    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    if (f->state == UDP_PENDING && !f->closed) {
        if (f->service_gone) {
            /* Engine stopped: the flow is dropped silently (§5.7). */
            f->state = UDP_DONE;
            f->rx_gone = true;
        } else {
            f->state = UDP_ACTIVE;
            ok = true;
        }
    } else {
        nectar_log(NECTAR_LOG_WARN, NE_TAG, "flow %llu: udp activate ignored",
                   (unsigned long long)f->meta->m.flow_id);
    }
    pthread_mutex_unlock(&f->mu);
    if (ok)
        nectar__obj_schedule(&f->obj);
}

NECTAR_API void rama_transparent_proxy_udp_session_on_client_datagram(
    RamaTransparentProxyUdpSession *session, RamaBytesView bytes,
    RamaUdpPeerView peer)
{
    struct nectar_udp_flow *f = from(session);
    size_t len = bytes.ptr == NULL ? 0 : bytes.len;
    struct ne_dgram *dg;
    bool full, wake = false, demand = true;

    if (f == NULL)
        return;
    /* 1. Activity first: even a dropped datagram keeps the flow alive. */
    atomic_fetch_add(&f->activity, 1);
    /* 2-4. Closed, or receiver gone (checked before capacity: a gone
     * queue also looks full), or full. */
    pthread_mutex_lock(&f->mu);
    if (f->closed || f->rx_gone) {
        pthread_mutex_unlock(&f->mu);
        return;
    }
    full = nectar_ring_full(&f->q);
    pthread_mutex_unlock(&f->mu);
    if (full) {
        fire_demand(f);
        return;
    }
    /* 5. Only now allocate: one producer per session, so the slot seen
     * free above cannot be taken by anyone else meanwhile. */
    dg = nectar_malloc(sizeof(*dg) + len);
    if (dg != NULL) {
        dg->len = len;
        if (len > 0)
            memcpy(dg->data, bytes.ptr, len);
        dg->has_peer = nectar__peer_decode(&peer, &dg->peer);
    }
    pthread_mutex_lock(&f->mu);
    if (f->closed || f->rx_gone) {
        demand = false;
    } else if (dg != NULL && nectar_ring_push(&f->q, dg)) {
        wake = nectar_ring_count(&f->q) == 1;
        dg = NULL;
    }
    assert(f->q.cap == 0 || nectar_ring_count(&f->q) <= f->q.cap);
    pthread_mutex_unlock(&f->mu);
    nectar_free(dg);
    if (wake)
        nectar__obj_schedule(&f->obj);
    if (demand)
        fire_demand(f);
}

NECTAR_API void rama_transparent_proxy_udp_session_on_client_close(
    RamaTransparentProxyUdpSession *session)
{
    struct nectar_udp_flow *f = from(session);

    if (f == NULL)
        return;
    ne_gate_close(&f->gate);
    pthread_mutex_lock(&f->mu);
    if (f->closed) {
        pthread_mutex_unlock(&f->mu);
        return;
    }
    f->closed = true;
    pthread_mutex_unlock(&f->mu);
    nectar__obj_schedule(&f->obj);
}

NECTAR_API void
rama_transparent_proxy_udp_session_free(RamaTransparentProxyUdpSession *session)
{
    struct nectar_udp_flow *f = from(session);

    if (f == NULL)
        return;
    rama_transparent_proxy_udp_session_on_client_close(session);
    nectar__obj_unref(&f->obj);
}

/* ---- loop side ----------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct nectar_udp_flow *f = h->data;

    assert(f->open_handles > 0);
    if (--f->open_handles == 0)
        nectar__obj_finalize(&f->obj);
}

static void teardown(struct nectar_udp_flow *f, int reason, bool call_cancel)
{
    struct nectar_ring drop;
    bool was_active;

    if (f->torn)
        return;
    f->torn = true;
    f->finishing = true;
    f->receiving = false;
    if (f->started && call_cancel && f->svc_vt->cancel != NULL)
        f->svc_vt->cancel(f->svc, f, reason);
    pthread_mutex_lock(&f->mu);
    was_active = f->state == UDP_ACTIVE;
    if (f->state == UDP_PENDING && !f->closed)
        f->service_gone = true; /* a later activate drops silently */
    if (was_active)
        f->state = UDP_DONE;
    /* Deliveries become silent no-ops from now on (no demand either). */
    f->rx_gone = true;
    drop = f->q;
    memset(&f->q, 0, sizeof(f->q));
    pthread_mutex_unlock(&f->mu);
    nectar_ring_free(&drop, nectar_free);
    if (was_active) {
        nectar_log(NECTAR_LOG_INFO, NE_TAG, "flow %llu: udp flow closed (%s)",
                   (unsigned long long)f->meta->m.flow_id,
                   nectar__close_reason(reason));
        fire_closed(f); /* gated: suppressed after on_client_close */
    }
    f->svc_destroyed = true;
    f->svc_vt->destroy(f->svc);
    if (!f->timers_up) {
        nectar__obj_finalize(&f->obj);
        return;
    }
    uv_close((uv_handle_t *)&f->idle, on_handle_closed);
    uv_close((uv_handle_t *)&f->lifetime, on_handle_closed);
}

static void on_idle_tick(uv_timer_t *t)
{
    struct nectar_udp_flow *f = t->data;
    unsigned seen = atomic_load(&f->activity);
    uint64_t now = uv_now(&f->obj.loop->uv);

    if (seen != f->idle_seen) {
        f->idle_seen = seen;
        f->idle_last_ms = now;
        return;
    }
    if (now - f->idle_last_ms < f->idle_ms)
        return;
    nectar_log(NECTAR_LOG_DEBUG, NE_TAG, "flow %llu: udp flow idle; closing",
               (unsigned long long)f->meta->m.flow_id);
    teardown(f, NECTAR_ETIMEDOUT, true);
}

static void on_lifetime(uv_timer_t *t)
{
    struct nectar_udp_flow *f = t->data;

    nectar_log(NECTAR_LOG_WARN, NE_TAG,
               "flow %llu: udp flow exceeded max lifetime (%u ms)",
               (unsigned long long)f->meta->m.flow_id, f->lifetime_ms);
    teardown(f, NECTAR_ETIMEDOUT, true);
}

static void timers_up(struct nectar_udp_flow *f)
{
    if (f->timers_up)
        return;
    f->timers_up = true;
    uv_timer_init(&f->obj.loop->uv, &f->idle);
    uv_timer_init(&f->obj.loop->uv, &f->lifetime);
    f->idle.data = f;
    f->lifetime.data = f;
    f->open_handles = 2;
}

static void start_service(struct nectar_udp_flow *f)
{
    f->started = true;
    if (f->idle_ms > 0) {
        /* Sampled at a quarter of the timeout: closes within 1.25x. */
        uint64_t tick = f->idle_ms / 4 ? f->idle_ms / 4 : 1;
        f->idle_seen = atomic_load(&f->activity);
        f->idle_last_ms = uv_now(&f->obj.loop->uv);
        uv_timer_start(&f->idle, on_idle_tick, tick, tick);
    }
    if (f->lifetime_ms > 0)
        uv_timer_start(&f->lifetime, on_lifetime, f->lifetime_ms, 0);
    f->svc_vt->start(f->svc, f);
}

/* First recv/send by the service: one read demand (§5.4 (a)). */
static void demand_once(struct nectar_udp_flow *f)
{
    if (f->demand_once)
        return;
    f->demand_once = true;
    fire_demand(f);
}

static bool pump_recv(struct nectar_udp_flow *f)
{
    int budget = RECV_BUDGET;

    while (f->receiving && !f->finishing) {
        struct ne_dgram *dg;

        if (budget-- == 0)
            return true;
        pthread_mutex_lock(&f->mu);
        dg = nectar_ring_pop(&f->q);
        pthread_mutex_unlock(&f->mu);
        if (dg == NULL)
            break;
        f->recv_cb(f, (ssize_t)dg->len, dg->data,
                   dg->has_peer ? (const struct sockaddr *)&dg->peer : NULL,
                   f->recv_data);
        nectar_free(dg);
    }
    return false;
}

static void udp_process(struct ne_obj *o)
{
    struct nectar_udp_flow *f = of(o);
    enum udp_state state;
    bool closed, more = false;

    if (f->torn)
        return;
    timers_up(f);
    pthread_mutex_lock(&f->mu);
    state = f->state;
    closed = f->closed;
    pthread_mutex_unlock(&f->mu);
    if (closed) {
        teardown(f, NECTAR_ECANCELED, true);
        return;
    }
    if (state == UDP_ACTIVE && !f->started && !f->finishing)
        start_service(f);
    if (f->started && !f->finishing)
        more = pump_recv(f);
    if (f->finishing) {
        teardown(f, 0, false);
        return;
    }
    if (more)
        nectar__obj_schedule(&f->obj);
}

static void udp_shutdown(struct ne_obj *o)
{
    struct nectar_udp_flow *f = of(o);

    timers_up(f);
    teardown(f, NECTAR_ECANCELED, true);
}

static void udp_destroy(struct ne_obj *o)
{
    struct nectar_udp_flow *f = of(o);
    struct ne_runtime *rt = o->loop->rt;

    nectar_ring_free(&f->q, nectar_free);
    if (!f->svc_destroyed)
        f->svc_vt->destroy(f->svc); /* a wedged stop never tore it down */
    ne_gate_destroy(&f->gate);
    pthread_mutex_destroy(&f->mu);
    nectar__meta_unref(f->meta);
    nectar_free(f);
    nectar__rt_unref(rt);
}

const struct ne_obj_ops nectar__udp_ops = {
    .process = udp_process,
    .shutdown = udp_shutdown,
    .destroy = udp_destroy,
};

/* ---- handler.h API ------------------------------------------------------- */

NECTAR_API uv_loop_t *nectar_udp_flow_loop(nectar_udp_flow_t *flow)
{
    return flow == NULL ? NULL : &flow->obj.loop->uv;
}

NECTAR_API const nectar_flow_meta_t *
nectar_udp_flow_meta(const nectar_udp_flow_t *flow)
{
    return flow == NULL ? NULL : &flow->meta->m;
}

NECTAR_API int nectar_udp_flow_recv_start(nectar_udp_flow_t *flow,
                                          nectar_udp_recv_cb cb, void *data)
{
    if (flow == NULL || cb == NULL)
        return NECTAR_EINVAL;
    if (flow->torn || flow->finishing)
        return NECTAR_ECLOSED;
    flow->recv_cb = cb;
    flow->recv_data = data;
    flow->receiving = true;
    demand_once(flow);
    nectar__obj_schedule(&flow->obj);
    return 0;
}

NECTAR_API int nectar_udp_flow_recv_stop(nectar_udp_flow_t *flow)
{
    if (flow == NULL)
        return NECTAR_EINVAL;
    flow->receiving = false;
    return 0;
}

NECTAR_API int nectar_udp_flow_send(nectar_udp_flow_t *flow, const uint8_t *buf,
                                    size_t len, const struct sockaddr *source)
{
    char scratch[64];
    RamaUdpPeerView peer;
    RamaBytesView view = {buf, len};
    bool sent = false;

    if (flow == NULL || (buf == NULL && len > 0))
        return NECTAR_EINVAL;
    if (flow->torn || flow->finishing)
        return NECTAR_ECLOSED;
    demand_once(flow);
    peer = nectar__peer_encode(source, scratch, sizeof(scratch));
    if (ne_gate_enter(&flow->gate)) {
        sent = true;
        atomic_fetch_add(&flow->activity, 1);
        if (flow->cbs.on_server_datagram != NULL)
            flow->cbs.on_server_datagram(flow->cbs.context, view, peer);
    }
    ne_gate_leave(&flow->gate);
    return sent ? 0 : NECTAR_ECLOSED;
}

NECTAR_API void nectar_udp_flow_finish(nectar_udp_flow_t *flow)
{
    if (flow == NULL || flow->finishing)
        return;
    flow->finishing = true;
    nectar__obj_schedule(&flow->obj);
}
