/*
 * tcp_abi.c - the host-facing half of a TCP session: every
 * rama_transparent_proxy_tcp_session_* function (spec ne-engine §1.3.12 -
 * §1.3.24, §3.2 - §3.5, §3.9, §3.10).  These run on any host thread; they
 * change state under the session mu, decide ACCEPTED/PAUSED/CLOSED
 * synchronously, and wake the session's loop.  They never call a host
 * callback (the one exception, activate after engine stop, is the spec's
 * own quirk, §1.3.13).
 *
 * Session states (host view; D = torn down on the loop, C = cancelled):
 *
 *        new_tcp_session
 *              |
 *              v          activate             service ends / idle /
 *        P (PENDING) -------------------> A (ACTIVE) ---- stop -----> D
 *              |  \                        |                          |
 *       cancel |   \ engine stop           | cancel                   |
 *              v    v                      v                          v
 *              C    D (service_gone: ingress keeps buffering, quirk)  C
 *                                                      free: C -> F
 *
 * Queue state per direction (under mu):  open -> closed (EOF, cancel,
 * promote OK); rx_gone once the loop tore the service down.  The pause
 * rule (§3.5): a full queue sets `paused` and answers PAUSED; the loop,
 * when it dequeues, clears `paused` under the same mu and fires demand
 * after unlocking.  Both steps share one lock, so the producer's
 * "publish paused" and the consumer's "dequeue + observe" are totally
 * ordered and a wake-up cannot be lost.
 */
#include <assert.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

static struct nectar_tcp_flow *from(RamaTransparentProxyTcpSession *h)
{
    return (struct nectar_tcp_flow *)h;
}

/* ---- creation ------------------------------------------------------------ */

struct nectar_tcp_flow *
nectar__tcp_new(struct RamaTransparentProxyEngine *e, struct ne_meta *meta,
                const struct ne_verdict *v,
                RamaTransparentProxyTcpSessionCallbacks cbs,
                const RamaTcpEgressConnectOptions *opts)
{
    struct nectar_tcp_flow *f = nectar_calloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    if (nectar_ring_init(&f->in[NE_IN].q, e->opts.tcp_channel_capacity) ||
        nectar_ring_init(&f->in[NE_EG].q, e->opts.tcp_channel_capacity)) {
        nectar_ring_free(&f->in[NE_IN].q, NULL);
        nectar_ring_free(&f->in[NE_EG].q, NULL);
        nectar_free(f);
        return NULL;
    }
    nectar__meta_ref(meta);
    f->meta = meta;
    f->capacity = e->opts.tcp_channel_capacity;
    f->paused_drain_ms = e->opts.paused_drain_max_wait_ms;
    f->idle_ms = e->opts.tcp_idle_timeout_ms;
    ne_gate_init(&f->gate);
    pthread_mutex_init(&f->mu, NULL);
    f->cbs = cbs;
    f->state = TCP_PENDING;
    f->in[NE_IN].exists = true;
    f->in[NE_IN].open = true;
    if (opts != NULL) {
        f->has_opts = true;
        f->opts = *opts;
    }
    f->promote = PROMOTE_NONE;
    f->svc_vt = v->tcp_vt;
    f->svc = v->svc;
    nectar__stream_init(&f->st[NE_IN], f, NE_IN);
    nectar__stream_init(&f->st[NE_EG], f, NE_EG);
    nectar_list_init(&f->promote_waiters);
    nectar__rt_ref(e->rt);
    nectar_log(NECTAR_LOG_DEBUG, NE_TAG,
               "flow %llu: new tcp session (pending egress connection)",
               (unsigned long long)meta->m.flow_id);
    nectar__obj_attach(&f->obj, &nectar__tcp_ops, nectar__rt_pick(e->rt));
    return f;
}

/* ---- byte delivery (§3.5) ----------------------------------------------- */

/* Under mu.  Takes `chunk_src` (copy or owned view) only on ACCEPTED. */
static RamaTcpDeliverStatus enqueue(struct nectar_tcp_flow *f, int dir,
                                    const uint8_t *p, size_t len,
                                    const RamaBytesOwnedView *owned, bool *wake)
{
    struct ne_inq *q = &f->in[dir];
    struct ne_chunk *c;

    if (f->cancelled || !q->exists || !q->open || q->rx_gone)
        return RAMA_TCP_DELIVER_CLOSED;
    if (nectar_ring_full(&q->q)) {
        q->paused = true;
        return RAMA_TCP_DELIVER_PAUSED;
    }
    if (owned != NULL && owned->release != NULL) {
        c = nectar_malloc(sizeof(*c));
        if (c == NULL)
            return RAMA_TCP_DELIVER_CLOSED;
        c->ptr = p;
        c->owner = owned->owner;
        c->release = owned->release;
    } else {
        c = nectar_malloc(sizeof(*c) + len);
        if (c == NULL)
            return RAMA_TCP_DELIVER_CLOSED;
        memcpy(c + 1, p, len);
        c->ptr = (const uint8_t *)(c + 1);
        c->owner = NULL;
        c->release = NULL;
    }
    c->len = len;
    /* The consumer only needs a wake when it may have gone idle on an
     * empty queue. */
    *wake = nectar_ring_count(&q->q) == 0;
    nectar_ring_push(&q->q, c);
    /* The queue is bounded in chunks (spec §3.5). */
    assert(nectar_ring_count(&q->q) <= f->capacity);
    return RAMA_TCP_DELIVER_ACCEPTED;
}

static RamaTcpDeliverStatus deliver(struct nectar_tcp_flow *f, int dir,
                                    const uint8_t *p, size_t len,
                                    const RamaBytesOwnedView *owned)
{
    RamaTcpDeliverStatus st;
    bool wake = false;

    pthread_mutex_lock(&f->mu);
    if (dir == NE_IN)
        f->saw_client = true;
    else
        f->saw_server = true;
    st = enqueue(f, dir, p, len, owned, &wake);
    pthread_mutex_unlock(&f->mu);
    if (wake)
        nectar__obj_schedule(&f->obj);
    return st;
}

NECTAR_API RamaTcpDeliverStatus
rama_transparent_proxy_tcp_session_on_client_bytes(
    RamaTransparentProxyTcpSession *session, RamaBytesView bytes)
{
    if (session == NULL)
        return RAMA_TCP_DELIVER_CLOSED;
    if (bytes.ptr == NULL || bytes.len == 0)
        return RAMA_TCP_DELIVER_ACCEPTED;
    return deliver(from(session), NE_IN, bytes.ptr, bytes.len, NULL);
}

NECTAR_API RamaTcpDeliverStatus
rama_transparent_proxy_tcp_session_on_egress_bytes(
    RamaTransparentProxyTcpSession *session, RamaBytesView bytes)
{
    if (session == NULL)
        return RAMA_TCP_DELIVER_CLOSED;
    if (bytes.ptr == NULL || bytes.len == 0)
        return RAMA_TCP_DELIVER_ACCEPTED;
    return deliver(from(session), NE_EG, bytes.ptr, bytes.len, NULL);
}

static RamaTcpDeliverStatus deliver_owned(RamaTransparentProxyTcpSession *s,
                                          int dir, RamaBytesOwnedView b)
{
    if (s == NULL)
        return RAMA_TCP_DELIVER_CLOSED; /* ownership stays with the host */
    if (b.ptr == NULL || b.len == 0) {
        if (b.release != NULL)
            b.release(b.owner);
        return RAMA_TCP_DELIVER_ACCEPTED;
    }
    return deliver(from(s), dir, b.ptr, b.len, &b);
}

NECTAR_API RamaTcpDeliverStatus
rama_transparent_proxy_tcp_session_on_client_bytes_owned(
    RamaTransparentProxyTcpSession *session, RamaBytesOwnedView bytes)
{
    return deliver_owned(session, NE_IN, bytes);
}

NECTAR_API RamaTcpDeliverStatus
rama_transparent_proxy_tcp_session_on_egress_bytes_owned(
    RamaTransparentProxyTcpSession *session, RamaBytesOwnedView bytes)
{
    return deliver_owned(session, NE_EG, bytes);
}

/* ---- EOF, errors, drains ------------------------------------------------- */

NECTAR_API void rama_transparent_proxy_tcp_session_on_client_eof(
    RamaTransparentProxyTcpSession *session)
{
    struct nectar_tcp_flow *f = from(session);
    bool fast_cancel;

    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    if (f->cancelled) {
        pthread_mutex_unlock(&f->mu);
        return;
    }
    /* Pre-connect churn: no byte either way means nobody will miss the
     * flow, so it is cancelled outright (§3.7, §8.4.29). */
    fast_cancel = !f->saw_client && !f->saw_server;
    if (!fast_cancel)
        f->in[NE_IN].open = false;
    pthread_mutex_unlock(&f->mu);
    if (fast_cancel)
        rama_transparent_proxy_tcp_session_cancel(session);
    else
        nectar__obj_schedule(&f->obj);
}

NECTAR_API void rama_transparent_proxy_tcp_session_on_egress_eof(
    RamaTransparentProxyTcpSession *session)
{
    struct nectar_tcp_flow *f = from(session);

    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    if (f->in[NE_EG].exists)
        f->in[NE_EG].open = false;
    pthread_mutex_unlock(&f->mu);
    nectar__obj_schedule(&f->obj);
}

NECTAR_API void rama_transparent_proxy_tcp_session_on_egress_error(
    RamaTransparentProxyTcpSession *session)
{
    struct nectar_tcp_flow *f = from(session);

    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    if (!f->cancelled && f->state != TCP_DONE)
        f->egress_error = true;
    if (f->in[NE_EG].exists)
        f->in[NE_EG].open = false;
    pthread_mutex_unlock(&f->mu);
    nectar__obj_schedule(&f->obj);
}

static void signal_drain(RamaTransparentProxyTcpSession *session, int dir)
{
    struct nectar_tcp_flow *f = from(session);

    if (f == NULL)
        return;
    /* Bump first, then wake: the loop compares generations, so a drain
     * that races a PAUSED return is never lost (§3.6, §8.3.15). */
    atomic_fetch_add(&f->st[dir].drain_gen, 1);
    nectar__obj_schedule(&f->obj);
}

NECTAR_API void rama_transparent_proxy_tcp_session_signal_server_drain(
    RamaTransparentProxyTcpSession *session)
{
    signal_drain(session, NE_IN);
}

NECTAR_API void rama_transparent_proxy_tcp_session_signal_egress_drain(
    RamaTransparentProxyTcpSession *session)
{
    signal_drain(session, NE_EG);
}

/* ---- options, activation ------------------------------------------------- */

NECTAR_API bool rama_transparent_proxy_tcp_session_get_egress_connect_options(
    RamaTransparentProxyTcpSession *session,
    RamaTcpEgressConnectOptions *out_options)
{
    struct nectar_tcp_flow *f = from(session);
    bool ok;

    if (f == NULL || out_options == NULL)
        return false;
    pthread_mutex_lock(&f->mu);
    ok = f->has_opts && f->state == TCP_PENDING && !f->cancelled &&
         !f->service_gone;
    if (ok)
        *out_options = f->opts;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

/* Activate after engine stop (spec §1.3.13 quirk): the service is gone, so
 * the stream pair is "dropped" here, firing both close callbacks on the
 * calling thread through the (still open) gate. */
static void close_now(struct nectar_tcp_flow *f,
                      const RamaTransparentProxyTcpEgressCallbacks *ecbs)
{
    if (ne_gate_enter(&f->gate)) {
        if (f->cbs.on_server_closed != NULL)
            f->cbs.on_server_closed(f->cbs.context);
        if (ecbs->on_close_egress != NULL)
            ecbs->on_close_egress(ecbs->context);
    }
    ne_gate_leave(&f->gate);
}

NECTAR_API void rama_transparent_proxy_tcp_session_activate(
    RamaTransparentProxyTcpSession *session,
    RamaTransparentProxyTcpEgressCallbacks callbacks)
{
    struct nectar_tcp_flow *f = from(session);
    bool gone = false;

    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    if (f->state != TCP_PENDING || f->cancelled) {
        pthread_mutex_unlock(&f->mu);
        nectar_log(NECTAR_LOG_WARN, NE_TAG,
                   "flow %llu: activate ignored (already activated or "
                   "cancelled)",
                   (unsigned long long)f->meta->m.flow_id);
        return;
    }
    if (f->service_gone) {
        f->state = TCP_DONE;
        f->in[NE_IN].rx_gone = true;
        gone = true;
    } else {
        f->ecbs = callbacks;
        f->in[NE_EG].exists = true;
        f->in[NE_EG].open = true;
        f->has_opts = false;
        f->state = TCP_ACTIVE;
    }
    pthread_mutex_unlock(&f->mu);
    if (gone) {
        nectar_log(NECTAR_LOG_DEBUG, NE_TAG,
                   "flow %llu: activate after engine stop; closing",
                   (unsigned long long)f->meta->m.flow_id);
        close_now(f, &callbacks);
        return;
    }
    nectar__obj_schedule(&f->obj);
}

/* ---- cancel and release (§3.10) ----------------------------------------- */

NECTAR_API void rama_transparent_proxy_tcp_session_cancel(
    RamaTransparentProxyTcpSession *session)
{
    struct nectar_tcp_flow *f = from(session);

    if (f == NULL)
        return;
    /* 1. Close the gate; waits only for a callback running right now. */
    ne_gate_close(&f->gate);

    pthread_mutex_lock(&f->mu);
    if (f->cancelled) {
        pthread_mutex_unlock(&f->mu);
        return;
    }
    /* 2-6. Flow stop, both senders dropped, pending state dropped, any
     * in-flight promote aborted.  The loop does the rest (wakes parked
     * writers, cancels and destroys the service) without waiting here. */
    f->cancelled = true;
    f->in[NE_IN].open = false;
    f->in[NE_EG].open = false;
    f->has_opts = false;
    if (f->promote == PROMOTE_REQUESTED || f->promote == PROMOTE_WAIT_ACK ||
        f->promote == PROMOTE_NONE) {
        f->promote = PROMOTE_RESOLVED;
        f->promote_result = NECTAR_ECANCELED;
    }
    pthread_mutex_unlock(&f->mu);
    /* 7. Detach: the loop finishes the service cooperatively. */
    nectar__obj_schedule(&f->obj);
}

NECTAR_API void
rama_transparent_proxy_tcp_session_free(RamaTransparentProxyTcpSession *session)
{
    struct nectar_tcp_flow *f = from(session);

    if (f == NULL)
        return;
    rama_transparent_proxy_tcp_session_cancel(session);
    nectar__obj_unref(&f->obj);
}

/* ---- promote (§4), host side -------------------------------------------- */

NECTAR_API void rama_transparent_proxy_tcp_session_register_promote_callbacks(
    RamaTransparentProxyTcpSession *session,
    RamaTransparentProxyTcpPromoteCallbacks callbacks)
{
    struct nectar_tcp_flow *f = from(session);

    if (f == NULL || callbacks.on_promote_request == NULL)
        return;
    /* Under the gate: a dispatch in progress finishes first, so the old
     * context is unused once this returns (§8.1.4). */
    (void)ne_gate_enter(&f->gate); /* open or closed: just serialise */
    f->pcbs = callbacks;
    ne_gate_leave(&f->gate);
}

NECTAR_API void rama_transparent_proxy_tcp_session_confirm_promoted(
    RamaTransparentProxyTcpSession *session, RamaPromoteConfirmStatus status,
    const char *reason_ptr, size_t reason_len)
{
    struct nectar_tcp_flow *f = from(session);
    bool resolved = false;
    uint8_t raw = status;

    if (f == NULL)
        return;
    /* Only the session mu: safe from inside on_promote_request. */
    pthread_mutex_lock(&f->mu);
    if (f->promote == PROMOTE_WAIT_ACK) {
        f->promote = PROMOTE_RESOLVED;
        resolved = true;
        if (raw == RAMA_PROMOTE_CONFIRM_OK) {
            f->promote_result = 0;
            /* Both senders go: deliveries now answer CLOSED and the
             * service reads the queued tail, then EOF on both halves. */
            f->in[NE_IN].open = false;
            f->in[NE_EG].open = false;
        } else {
            f->promote_result = NECTAR_EIO;
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (!resolved)
        return;
    if (raw != RAMA_PROMOTE_CONFIRM_OK) {
        bool ok = reason_ptr != NULL && reason_len > 0 &&
                  nectar__utf8_valid((const uint8_t *)reason_ptr, reason_len);
        nectar_log(NECTAR_LOG_DEBUG, NE_TAG, "flow %llu: promote failed: %.*s",
                   (unsigned long long)f->meta->m.flow_id,
                   ok ? (int)(reason_len > 512 ? 512 : reason_len)
                      : (reason_len == 0 || reason_ptr == NULL ? 0 : 18),
                   ok ? reason_ptr
                      : (reason_len == 0 || reason_ptr == NULL
                             ? ""
                             : "<non-utf8 reason>"));
    }
    nectar__obj_schedule(&f->obj);
}
