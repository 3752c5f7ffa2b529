/*
 * tcp_stream.c - nectar_stream_*: the two halves of an intercepted TCP
 * flow as the service sees them (handler.h), over the session's queues and
 * the host's write callbacks (spec ne-engine §3.5 - §3.7).  Loop thread
 * only, except drain_gen which host threads bump.
 *
 * Read side: while reading, the pump pops chunks from the host->service
 * queue (clearing `paused` under the session mu and firing read demand
 * once per pause episode), then delivers EOF, or ECONNRESET after an
 * egress error, once the queue is closed and empty.
 *
 * Write side (one FIFO of borrowed buffers per stream):
 *
 *   head --sink ACCEPTED--> done(0) -----------------------> next head
 *   head --sink CLOSED----> done(EPIPE); stream write_dead (rest: EPIPE)
 *   head --sink PAUSED----> parked(gen) --drain (gen moves)--> retry head
 *                               |
 *                               +--backstop (60 s per pause episode)-->
 *                                   close callback; done(ETIMEDOUT)
 *
 * `gen` is read before calling the sink, so a drain racing the PAUSED
 * return is seen as a moved generation and never lost (§8.3.15).  A new
 * generation at a later PAUSED starts a fresh backstop (§8.3.16).
 */
#include <assert.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

#define READ_BUDGET  16
#define WRITE_BUDGET 16

void nectar__stream_init(struct nectar_stream *st, struct nectar_tcp_flow *f,
                         int dir)
{
    st->flow = f;
    st->dir = dir;
    nectar_list_init(&st->writes);
    atomic_init(&st->drain_gen, 0);
}

/* ---- gated host callbacks ------------------------------------------------ */

/* Raw byte from the host: 0/1/2, anything else is CLOSED (§8.5.30). */
static RamaTcpDeliverStatus decode_status(struct nectar_tcp_flow *f,
                                          RamaTcpDeliverStatus raw)
{
    if (raw <= RAMA_TCP_DELIVER_CLOSED)
        return raw;
    nectar_log(NECTAR_LOG_ERROR, NE_TAG,
               "flow %llu: invalid deliver status %u from host; CLOSED",
               (unsigned long long)f->meta->m.flow_id, (unsigned)raw);
    return RAMA_TCP_DELIVER_CLOSED;
}

static RamaTcpDeliverStatus call_sink(struct nectar_stream *st,
                                      const uint8_t *p, size_t len)
{
    struct nectar_tcp_flow *f = st->flow;
    RamaBytesView view = {p, len};
    RamaTcpDeliverStatus rc = RAMA_TCP_DELIVER_CLOSED;
    RamaTcpServerBytesFn fn;
    void *ctx;

    if (ne_gate_enter(&f->gate)) {
        fn = st->dir == NE_IN ? f->cbs.on_server_bytes
                              : f->ecbs.on_write_to_egress;
        ctx = st->dir == NE_IN ? f->cbs.context : f->ecbs.context;
        /* A NULL sink swallows bytes (spec §1.2.11). */
        rc = fn == NULL ? RAMA_TCP_DELIVER_ACCEPTED
                        : decode_status(f, fn(ctx, view));
    }
    ne_gate_leave(&f->gate);
    return rc;
}

void nectar__tcp_fire_demand(struct nectar_tcp_flow *f, int dir)
{
    RamaTcpClientReadDemandFn fn;
    void *ctx;

    if (ne_gate_enter(&f->gate)) {
        fn = dir == NE_IN ? f->cbs.on_client_read_demand
                          : f->ecbs.on_egress_read_demand;
        ctx = dir == NE_IN ? f->cbs.context : f->ecbs.context;
        if (fn != NULL)
            fn(ctx);
    }
    ne_gate_leave(&f->gate);
}

void nectar__stream_fire_close(struct nectar_stream *st)
{
    struct nectar_tcp_flow *f = st->flow;
    RamaTcpServerClosedFn fn;
    void *ctx;

    if (st->close_fired)
        return;
    st->close_fired = true;
    if (ne_gate_enter(&f->gate)) {
        fn = st->dir == NE_IN ? f->cbs.on_server_closed
                              : f->ecbs.on_close_egress;
        ctx = st->dir == NE_IN ? f->cbs.context : f->ecbs.context;
        if (fn != NULL)
            fn(ctx);
    }
    ne_gate_leave(&f->gate);
}

/* The first terminal reason of a direction wins (spec §3.11). */
static void note_reason(struct nectar_stream *st, const char *reason)
{
    if (st->close_reason == NULL)
        st->close_reason = reason;
}

/* ---- writes -------------------------------------------------------------- */

static void complete_head(struct nectar_stream *st, int status)
{
    struct nectar_list *n = nectar_list_first(&st->writes);
    struct ne_write *w;

    assert(n != NULL);
    w = nectar_list_entry(n, struct ne_write, node);
    nectar_list_remove(n);
    st->write_bytes -= w->len;
    if (w->cb != NULL)
        w->cb(st, status, w->data);
    nectar_free(w);
}

void nectar__stream_fail_writes(struct nectar_stream *st, int status)
{
    st->parked = false;
    while (!nectar_list_empty(&st->writes))
        complete_head(st, status);
}

static void backstop_disarm(struct nectar_stream *st)
{
    if (st->backstop_armed) {
        uv_timer_stop(&st->backstop);
        st->backstop_armed = false;
    }
}

static void on_backstop(uv_timer_t *t)
{
    struct nectar_stream *st = t->data;
    struct nectar_tcp_flow *f = st->flow;

    st->backstop_armed = false;
    if (f->torn || !st->parked)
        return;
    nectar_log(NECTAR_LOG_WARN, NE_TAG,
               "flow %llu: %s writer paused for %u ms without a drain; "
               "reason=paused_timeout",
               (unsigned long long)f->meta->m.flow_id,
               st->dir == NE_IN ? "app-side" : "egress", f->paused_drain_ms);
    st->parked = false;
    st->write_dead = true;
    note_reason(st, "paused_timeout");
    nectar__stream_fire_close(st);
    complete_head(st, NECTAR_ETIMEDOUT);
    nectar__obj_schedule(&f->obj);
}

static void backstop_arm(struct nectar_stream *st, unsigned gen)
{
    /* Fresh timer per pause episode: none armed, or a drain happened
     * since it was armed. */
    if (st->backstop_armed && st->backstop_gen == gen)
        return;
    st->backstop_gen = gen;
    st->backstop_armed = true;
    uv_timer_start(&st->backstop, on_backstop, st->flow->paused_drain_ms, 0);
}

/* Returns true when the budget ran out with work left. */
static bool pump_writes(struct nectar_stream *st)
{
    struct nectar_tcp_flow *f = st->flow;
    int budget = WRITE_BUDGET;
    struct nectar_list *n;

    while ((n = nectar_list_first(&st->writes)) != NULL && !f->finishing) {
        struct ne_write *w = nectar_list_entry(n, struct ne_write, node);
        RamaTcpDeliverStatus rc;
        unsigned gen;

        if (budget-- == 0)
            return true;
        if (st->write_dead) {
            complete_head(st, NECTAR_EPIPE);
            continue;
        }
        if (w->len == 0) {
            complete_head(st, 0);
            continue;
        }
        gen = atomic_load(&st->drain_gen);
        /* Parked implies a head write and a live gate-checked sink. */
        assert(!st->parked || !st->write_dead);
        if (st->parked) {
            if (gen == st->parked_gen)
                return false; /* still waiting for signal_*_drain */
            st->parked = false;
        }
        rc = call_sink(st, w->buf, w->len);
        if (rc == RAMA_TCP_DELIVER_PAUSED) {
            st->parked = true;
            st->parked_gen = gen;
            backstop_arm(st, gen);
            return false;
        }
        backstop_disarm(st);
        if (rc == RAMA_TCP_DELIVER_ACCEPTED) {
            st->bytes_written += w->len;
            complete_head(st, 0);
        } else {
            st->write_dead = true;
            note_reason(st, "peer_eof_right");
            complete_head(st, NECTAR_EPIPE);
        }
    }
    if (nectar_list_empty(&st->writes) && st->shutdown_req && !f->finishing)
        nectar__stream_fire_close(st);
    return false;
}

/* ---- reads --------------------------------------------------------------- */

static bool pump_reads(struct nectar_stream *st)
{
    struct nectar_tcp_flow *f = st->flow;
    struct ne_inq *q = &f->in[st->dir];
    int budget = READ_BUDGET;

    while (st->reading && !st->read_done && !f->finishing) {
        struct ne_chunk *c;
        bool was_paused = false, eof = false, err = false;

        if (budget-- == 0)
            return true;
        pthread_mutex_lock(&f->mu);
        c = nectar_ring_pop(&q->q);
        if (c != NULL) {
            /* A dequeue always leaves room: nobody may stay paused. */
            was_paused = q->paused;
            q->paused = false;
            assert(!nectar_ring_full(&q->q));
        } else if (!q->open || f->cancelled) {
            eof = true;
            err = st->dir == NE_EG && f->egress_error;
        }
        pthread_mutex_unlock(&f->mu);

        if (c != NULL) {
            /* Demand after unlocking, so a host that retries its bytes
             * synchronously from the callback does not deadlock. */
            if (was_paused)
                nectar__tcp_fire_demand(f, st->dir);
            if (c->len > 0) {
                st->bytes_read += c->len;
                st->read_cb(st, (ssize_t)c->len, c->ptr, st->read_data);
            }
            nectar__chunk_free(c);
        } else if (eof) {
            st->read_done = true;
            st->reading = false;
            note_reason(st, err ? "read_error_left" : "peer_eof_left");
            st->read_cb(st, err ? NECTAR_ECONNRESET : NECTAR_EOF, NULL,
                        st->read_data);
        } else {
            break;
        }
    }
    return false;
}

bool nectar__stream_pump(struct nectar_stream *st)
{
    bool more = pump_reads(st);
    return pump_writes(st) || more;
}

/* ---- handler.h API ------------------------------------------------------- */

NECTAR_API int nectar_stream_read_start(nectar_stream_t *s,
                                        nectar_stream_read_cb cb, void *data)
{
    if (s == NULL || cb == NULL)
        return NECTAR_EINVAL;
    if (s->read_done || s->flow->torn)
        return NECTAR_ECLOSED;
    s->read_cb = cb;
    s->read_data = data;
    s->reading = true;
    nectar__tcp_kick(s->flow);
    return 0;
}

NECTAR_API int nectar_stream_read_stop(nectar_stream_t *s)
{
    if (s == NULL)
        return NECTAR_EINVAL;
    s->reading = false;
    return 0;
}

NECTAR_API int nectar_stream_write(nectar_stream_t *s, const uint8_t *buf,
                                   size_t len, nectar_stream_write_cb cb,
                                   void *data)
{
    struct ne_write *w;

    if (s == NULL || (buf == NULL && len > 0))
        return NECTAR_EINVAL;
    if (s->shutdown_req || s->flow->torn || s->flow->finishing)
        return NECTAR_ECLOSED;
    w = nectar_malloc(sizeof(*w));
    if (w == NULL)
        return NECTAR_ENOMEM;
    w->buf = buf;
    w->len = len;
    w->cb = cb;
    w->data = data;
    nectar_list_push_back(&s->writes, &w->node);
    s->write_bytes += len;
    /* Completion always on a later loop turn, never inside this call. */
    nectar__tcp_kick(s->flow);
    return 0;
}

NECTAR_API size_t nectar_stream_write_queue_size(const nectar_stream_t *s)
{
    return s == NULL ? 0 : s->write_bytes;
}

NECTAR_API int nectar_stream_shutdown(nectar_stream_t *s)
{
    if (s == NULL)
        return NECTAR_EINVAL;
    if (!s->shutdown_req) {
        s->shutdown_req = true;
        nectar__tcp_kick(s->flow);
    }
    return 0;
}

NECTAR_API uint64_t nectar_stream_bytes_read(const nectar_stream_t *s)
{
    return s == NULL ? 0 : s->bytes_read;
}

NECTAR_API uint64_t nectar_stream_bytes_written(const nectar_stream_t *s)
{
    return s == NULL ? 0 : s->bytes_written;
}
