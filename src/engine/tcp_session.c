/*
 * tcp_session.c - the loop side of a TCP session: starting the service,
 * supervising it (idle backstop, spec §3.11), tearing it down (service
 * finish, cancel, idle, engine stop) and the flow accessors of handler.h.
 * Everything here runs on the session's loop thread.
 *
 * Service lifecycle (loop view):
 *
 *   attached --ACTIVE seen--> started --finish/cancel/idle/stop--> torn
 *       |                                                          ^
 *       +------------- cancel / stop while PENDING ---------------+
 *
 * Teardown, in order: svc->cancel(reason) when the engine initiated it;
 * queued writes complete with NECTAR_ECANCELED; both close callbacks fire
 * (once, gated: suppressed after host cancel); the queues are marked
 * rx_gone and their chunks released; promote waiters resolve; svc->destroy;
 * timers close; the loop reference is dropped when the last one closed.
 */
#include <assert.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

static struct nectar_tcp_flow *of(struct ne_obj *o)
{
    return nectar_list_entry(o, struct nectar_tcp_flow, obj);
}

/* ---- timers -------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct nectar_tcp_flow *f = h->data;

    assert(f->open_handles > 0);
    if (--f->open_handles == 0)
        nectar__obj_finalize(&f->obj);
}

static uint64_t total_bytes(const struct nectar_tcp_flow *f)
{
    return f->st[NE_IN].bytes_read + f->st[NE_IN].bytes_written +
           f->st[NE_EG].bytes_read + f->st[NE_EG].bytes_written;
}

static void teardown(struct nectar_tcp_flow *f, int reason, bool call_cancel);

/* The reference engine's close-reason names (spec §3.11). */
const char *nectar__close_reason(int reason)
{
    switch (reason) {
    case 0:
        return "peer_eof_left";
    case NECTAR_ETIMEDOUT:
        return "idle_timeout";
    case NECTAR_ECANCELED:
        return "shutdown";
    default:
        return nectar_err_name(reason);
    }
}

static void on_idle_tick(uv_timer_t *t)
{
    struct nectar_tcp_flow *f = t->data;
    uint64_t now = total_bytes(f);

    if (f->torn)
        return;
    /* Progress is sampled per tick: a silent flow closes between 1x and
     * 2x the timeout after its last byte (§3.11). */
    if (now != f->idle_last) {
        f->idle_last = now;
        return;
    }
    nectar_log(NECTAR_LOG_INFO, NE_TAG,
               "flow %llu: no byte progress for %u ms; reason=idle_timeout",
               (unsigned long long)f->meta->m.flow_id, f->idle_ms);
    teardown(f, NECTAR_ETIMEDOUT, true);
}

static void timers_up(struct nectar_tcp_flow *f)
{
    uv_loop_t *uv = &f->obj.loop->uv;

    if (f->timers_up)
        return;
    f->timers_up = true;
    uv_timer_init(uv, &f->idle);
    f->idle.data = f;
    for (int d = 0; d < 2; d++) {
        uv_timer_init(uv, &f->st[d].backstop);
        f->st[d].backstop.data = &f->st[d];
    }
    f->open_handles = 3;
}

static void timers_close(struct nectar_tcp_flow *f)
{
    if (!f->timers_up) {
        nectar__obj_finalize(&f->obj);
        return;
    }
    uv_close((uv_handle_t *)&f->idle, on_handle_closed);
    for (int d = 0; d < 2; d++) {
        f->st[d].backstop.data = f;
        uv_close((uv_handle_t *)&f->st[d].backstop, on_handle_closed);
    }
}

/* One close event per direction (spec §3.11): an engine-initiated end
 * (shutdown, idle) names both directions; otherwise each direction tells
 * what it saw first. */
static void log_close(const struct nectar_tcp_flow *f, int reason)
{
    const nectar_flow_meta_t *m = &f->meta->m;
    unsigned long long age =
        (unsigned long long)(nectar__now_ms() - m->opened_at_ms);

    if (!f->started) {
        nectar_log(NECTAR_LOG_INFO, NE_TAG,
                   "flow %llu: tcp flow closed before activate "
                   "reason=shutdown age_ms=%llu",
                   (unsigned long long)m->flow_id, age);
        return;
    }
    for (int d = 0; d < 2; d++) {
        const struct nectar_stream *st = &f->st[d];
        const char *why = reason != 0 ? nectar__close_reason(reason)
                          : st->close_reason != NULL ? st->close_reason
                                                     : "peer_eof_left";
        nectar_log(NECTAR_LOG_INFO, NE_TAG,
                   "flow %llu: tcp flow closed direction=%s reason=%s "
                   "age_ms=%llu bytes_received=%llu bytes_sent=%llu "
                   "remote=%s:%u pid=%d bundle=%s",
                   (unsigned long long)m->flow_id,
                   d == NE_IN ? "ingress" : "egress", why, age,
                   (unsigned long long)st->bytes_read,
                   (unsigned long long)st->bytes_written,
                   m->remote.host ? m->remote.host : "-",
                   (unsigned)m->remote.port, m->has_pid ? (int)m->pid : 0,
                   m->bundle_identifier ? m->bundle_identifier : "-");
    }
}

/* ---- teardown ------------------------------------------------------------ */

static void teardown(struct nectar_tcp_flow *f, int reason, bool call_cancel)
{
    struct ne_chunk *c;
    struct nectar_ring drop[2];
    bool was_active;

    if (f->torn)
        return;
    f->torn = true;
    f->finishing = true;
    if (f->started && call_cancel && f->svc_vt->cancel != NULL)
        f->svc_vt->cancel(f->svc, f, reason);
    if (f->timers_up)
        uv_timer_stop(&f->idle);
    for (int d = 0; d < 2; d++) {
        f->st[d].reading = false;
        nectar__stream_fail_writes(&f->st[d], NECTAR_ECANCELED);
        if (f->timers_up)
            uv_timer_stop(&f->st[d].backstop);
    }

    pthread_mutex_lock(&f->mu);
    was_active = f->state == TCP_ACTIVE;
    if (f->state == TCP_PENDING && !f->cancelled) {
        /* Engine stop before activation: the service is gone but, as in
         * the reference, the ingress queue keeps buffering (quirk §7.4)
         * and a later activate closes synchronously. */
        f->service_gone = true;
    } else {
        f->state = TCP_DONE;
        f->in[NE_IN].rx_gone = true;
        f->in[NE_EG].rx_gone = true;
    }
    for (int d = 0; d < 2; d++) {
        drop[d] = f->in[d].q;
        f->in[d].paused = false;
        /* The ingress ring stays only while it keeps buffering (quirk). */
        if (f->service_gone && d == NE_IN) {
            memset(&drop[d], 0, sizeof(drop[d]));
            continue;
        }
        memset(&f->in[d].q, 0, sizeof(f->in[d].q));
    }
    pthread_mutex_unlock(&f->mu);

    /* Close callbacks ("streams dropped"): gated, so none after cancel. */
    if (was_active || f->started) {
        nectar__stream_fire_close(&f->st[NE_IN]);
        nectar__stream_fire_close(&f->st[NE_EG]);
    }
    /* Owned-buffer releases are not gated and run outside every lock. */
    for (int d = 0; d < 2; d++) {
        while ((c = nectar_ring_pop(&drop[d])) != NULL)
            nectar__chunk_free(c);
        nectar_ring_free(&drop[d], NULL);
    }
    nectar__promote_cancel_waiters(f);
    log_close(f, reason);
    f->svc_destroyed = true;
    f->svc_vt->destroy(f->svc);
    timers_close(f);
}

/* ---- ops ----------------------------------------------------------------- */

/* Bounded rounds per turn: service calls made during process (a write
 * queued from a read callback, read_start from a write callback) mark the
 * flow dirty instead of waking the loop, and are served in the same turn
 * without a uv_async round trip. */
#define PROCESS_ROUNDS 8

static void tcp_process(struct ne_obj *o)
{
    struct nectar_tcp_flow *f = of(o);
    enum tcp_state state;
    bool cancelled, more = false;
    int rounds = 0;

    if (f->torn)
        return;
    timers_up(f);
    pthread_mutex_lock(&f->mu);
    state = f->state;
    cancelled = f->cancelled;
    pthread_mutex_unlock(&f->mu);

    if (cancelled) {
        teardown(f, NECTAR_ECANCELED, true);
        return;
    }
    f->in_process = true;
    do {
        f->dirty = false;
        more = false;
        if (state == TCP_ACTIVE && !f->started && !f->finishing) {
            f->started = true;
            if (f->idle_ms > 0)
                uv_timer_start(&f->idle, on_idle_tick, f->idle_ms, f->idle_ms);
            f->svc_vt->start(f->svc, f);
        }
        if (f->started && !f->finishing) {
            nectar__promote_process(f);
            for (int d = 0; d < 2 && !f->finishing; d++)
                more |= nectar__stream_pump(&f->st[d]);
        }
    } while ((f->dirty || more) && !f->finishing && ++rounds < PROCESS_ROUNDS);
    f->in_process = false;
    if (f->finishing) {
        teardown(f, 0, false);
        return;
    }
    if (more || f->dirty)
        nectar__obj_schedule(&f->obj);
}

void nectar__tcp_kick(struct nectar_tcp_flow *f)
{
    if (f->in_process)
        f->dirty = true;
    else
        nectar__obj_schedule(&f->obj);
}

static void tcp_shutdown(struct ne_obj *o)
{
    struct nectar_tcp_flow *f = of(o);

    timers_up(f);
    teardown(f, NECTAR_ECANCELED, true);
}

static void tcp_destroy(struct ne_obj *o)
{
    struct nectar_tcp_flow *f = of(o);
    struct ne_runtime *rt = o->loop->rt;

    for (int d = 0; d < 2; d++)
        nectar_ring_free(&f->in[d].q, nectar__chunk_free);
    if (!f->svc_destroyed) {
        /* Only when the loop never tore it down (a wedged stop). */
        f->svc_vt->destroy(f->svc);
    }
    while (!nectar_list_empty(&f->promote_waiters)) {
        struct nectar_list *n = nectar_list_first(&f->promote_waiters);
        nectar_list_remove(n);
        nectar_free(nectar_list_entry(n, struct ne_promote_waiter, node));
    }
    ne_gate_destroy(&f->gate);
    pthread_mutex_destroy(&f->mu);
    nectar__meta_unref(f->meta);
    nectar_free(f);
    nectar__rt_unref(rt);
}

const struct ne_obj_ops nectar__tcp_ops = {
    .process = tcp_process,
    .shutdown = tcp_shutdown,
    .destroy = tcp_destroy,
};

void nectar__chunk_free(void *chunk)
{
    struct ne_chunk *c = chunk;

    if (c->release != NULL)
        c->release(c->owner);
    nectar_free(c);
}

/* ---- handler.h flow accessors -------------------------------------------- */

NECTAR_API uv_loop_t *nectar_tcp_flow_loop(nectar_tcp_flow_t *flow)
{
    return flow == NULL ? NULL : &flow->obj.loop->uv;
}

NECTAR_API const nectar_flow_meta_t *
nectar_tcp_flow_meta(const nectar_tcp_flow_t *flow)
{
    return flow == NULL ? NULL : &flow->meta->m;
}

NECTAR_API nectar_stream_t *nectar_tcp_flow_ingress(nectar_tcp_flow_t *flow)
{
    return flow == NULL ? NULL : &flow->st[NE_IN];
}

NECTAR_API nectar_stream_t *nectar_tcp_flow_egress(nectar_tcp_flow_t *flow)
{
    return flow == NULL ? NULL : &flow->st[NE_EG];
}

NECTAR_API nectar_tcp_flow_t *nectar_stream_flow(nectar_stream_t *s)
{
    return s == NULL ? NULL : s->flow;
}

NECTAR_API void nectar_tcp_flow_finish(nectar_tcp_flow_t *flow)
{
    if (flow == NULL || flow->finishing)
        return;
    /* Deferred: destroy must not run under the service's own callback. */
    flow->finishing = true;
    nectar__tcp_kick(flow);
}
