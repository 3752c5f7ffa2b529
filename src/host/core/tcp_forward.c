/*
 * tcp_forward.c - the direct forwarder (ne-host §7): after a promote
 * cutover the client socket and the egress socket are joined without the
 * engine; passthrough flows use the same forwarder from the start.
 *
 * Per direction: IDLE -> BUFFERING -> ACTIVE -> FINISHING -> FINISHED.
 *  BUFFERING  (promoted only) until the engine's done signal for that
 *             direction (on_close_egress: C->S, on_server_closed: S->C); the
 *             read pump's PAUSED replay chunk and EOF are carried over.
 *  ACTIVE     carryover is pushed into the destination write pump after
 *             the engine's tail (FIFO), then the socket is read directly;
 *             reading stops while the pump is over its budget and resumes
 *             on its drain edge.
 *  FINISHING  EOF/error read: the destination pump drains, then FIN (or a
 *             reset for an S->C read error).
 *  FINISHED   both finished => the flow ends cleanly.
 * Reads are callbacks on this loop, so no read is ever in flight across the
 * cutover: the read barrier of the Swift forwarder is immediate here.
 */
#include <assert.h>
#include <string.h>

#include "host/core/tcp_flow.h"
#include "nectar/log.h"

#define TAG "host"

static bool is_c2s(const struct tcp_flow *f, const struct fwd_dir *d)
{
    return d == &f->c2s;
}

static uv_stream_t *source(struct tcp_flow *f, struct fwd_dir *d)
{
    return is_c2s(f, d) ? (uv_stream_t *)&f->client
                        : (uv_stream_t *)&f->egress;
}

static struct wpump *dest(struct tcp_flow *f, struct fwd_dir *d)
{
    return is_c2s(f, d) ? &f->ewp : &f->cwp;
}

static const char *dir_name(const struct tcp_flow *f, const struct fwd_dir *d)
{
    return is_c2s(f, d) ? "c2s" : "s2c";
}

static void carry_append(struct fwd_dir *d, struct wchunk *c)
{
    c->next = NULL;
    if (d->tail != NULL)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
}

/* Hand the read pump's state over to a forwarder direction. */
static void carry(struct rpump *rp, struct fwd_dir *d)
{
    if (rp->phase == RP_READING)
        uv_read_stop((uv_stream_t *)rp->tcp);
    rp->phase = RP_CLOSED;
    if (rp->replay != NULL) {
        carry_append(d, rp->replay);
        rp->replay = NULL;
    }
    if (rp->eof) {
        d->eof_buffered = true;
        d->error = rp->error;
    }
    d->phase = FD_BUFFERING;
}

static void c2s_drained(struct wpump *p);
static void s2c_drained(struct wpump *p);

static void drop_carry(struct fwd_dir *d)
{
    while (d->head != NULL) {
        struct wchunk *c = d->head;
        d->head = c->next;
        wchunk_free(c);
    }
    d->tail = NULL;
}

static void adopt_engine_close(struct tcp_flow *f, struct fwd_dir *d,
                               bool done)
{
    drop_carry(d);
    if (done) {
        d->phase = FD_FINISHED;
        return;
    }
    d->phase = FD_FINISHING;
    /* Still draining: finish through the forwarder's callback. */
    dest(f, d)->drained = is_c2s(f, d) ? c2s_drained : s2c_drained;
}

void nectar__fwd_promote(struct tcp_flow *f)
{
    nectar_log(NECTAR_LOG_DEBUG, TAG,
               "flow %llu: promote cutover (client %s, egress %s)",
               (unsigned long long)f->obj.id,
               f->crp.replay ? "replay held" : "no replay",
               f->erp.replay ? "replay held" : "no replay");
    f->mode = MODE_PROMOTED;
    f->promoted = true;
    atomic_store(&f->last_activity, nectar__host_now_ms()); /* fresh idle budget */
    carry(&f->crp, &f->c2s);
    carry(&f->erp, &f->s2c);
    /* The engine may have finished a direction before it asked to be
     * promoted (its close callback was handled in engine mode): that
     * direction is already draining or done, with nothing to splice. */
    if (f->close_egress)
        adopt_engine_close(f, &f->c2s, f->c2s_done);
    if (f->server_closed)
        adopt_engine_close(f, &f->s2c, f->s2c_done);
}

static void read_start(struct tcp_flow *f, struct fwd_dir *d)
{
    if (d->reading || d->phase != FD_ACTIVE)
        return;
    d->reading = true;
    uv_read_start(source(f, d), nectar__tcp_alloc, nectar__tcp_on_read);
}

static void read_stop(struct tcp_flow *f, struct fwd_dir *d)
{
    if (!d->reading)
        return;
    d->reading = false;
    uv_read_stop(source(f, d));
}

static void check_terminal(struct tcp_flow *f)
{
    assert(f->mode != MODE_ENGINE);
    if (f->c2s.phase == FD_FINISHED && f->s2c.phase == FD_FINISHED)
        nectar__tcp_finish(f, 0, "closed");
}

static void c2s_drained(struct wpump *p)
{
    struct tcp_flow *f = p->owner;
    if (f->done)
        return;
    nectar__tcp_shutdown_write(&f->egress); /* FIN to the remote */
    nectar_log(NECTAR_LOG_DEBUG, TAG, "flow %llu c2s: finished (FIN sent)",
               (unsigned long long)f->obj.id);
    f->c2s.phase = FD_FINISHED;
    check_terminal(f);
    if (!f->done)
        nectar__tcp_publish(f);
}

static void s2c_drained(struct wpump *p)
{
    struct tcp_flow *f = p->owner;
    if (f->done)
        return;
    if (f->s2c.error != 0) {
        /* Forward the server's reset to the app (ne-host §7.3). */
        nectar__tcp_finish(f, f->s2c.error, "egress-reset");
        return;
    }
    nectar__tcp_shutdown_write(&f->client);
    nectar_log(NECTAR_LOG_DEBUG, TAG, "flow %llu s2c: finished (client EOF)",
               (unsigned long long)f->obj.id);
    f->s2c.phase = FD_FINISHED;
    check_terminal(f);
    if (!f->done)
        nectar__tcp_publish(f);
}

static void finish_dir(struct tcp_flow *f, struct fwd_dir *d)
{
    if (d->phase >= FD_FINISHING)
        return;
    nectar_log(NECTAR_LOG_DEBUG, TAG, "flow %llu %s: finishing",
               (unsigned long long)f->obj.id, dir_name(f, d));
    read_stop(f, d);
    d->phase = FD_FINISHING;
    wpump_close_when_drained(dest(f, d),
                             is_c2s(f, d) ? c2s_drained : s2c_drained);
    if (!f->done)
        nectar__tcp_arm_backstop(f, f->linger_ms);
}

void nectar__fwd_activate(struct tcp_flow *f, struct fwd_dir *d)
{
    nectar_log(NECTAR_LOG_DEBUG, TAG, "flow %llu %s: engine done (phase %d%s)",
               (unsigned long long)f->obj.id, dir_name(f, d), (int)d->phase,
               d->eof_buffered ? ", eof buffered" : "");
    if (d->phase != FD_BUFFERING)
        return;
    d->phase = FD_ACTIVE;
    bool over = false;
    while (d->head != NULL) {
        struct wchunk *c = d->head;
        d->head = c->next;
        if (d->head == NULL)
            d->tail = NULL;
        over = wpump_push(dest(f, d), c);
        if (f->done)
            return;
    }
    if (d->eof_buffered) {
        finish_dir(f, d);
        return;
    }
    if (!over)
        read_start(f, d);
}

void nectar__fwd_start_direct(struct tcp_flow *f)
{
    wpump_open(&f->ewp, (uv_stream_t *)&f->egress);
    wpump_open(&f->cwp, (uv_stream_t *)&f->client);
    f->c2s.phase = FD_BUFFERING;
    f->s2c.phase = FD_BUFFERING;
    nectar__fwd_activate(f, &f->c2s);
    if (!f->done)
        nectar__fwd_activate(f, &f->s2c);
}

void nectar__fwd_read(struct tcp_flow *f, bool from_client, struct wchunk *c)
{
    struct fwd_dir *d = from_client ? &f->c2s : &f->s2c;
    if (d->phase != FD_ACTIVE) {
        wchunk_free(c);
        return;
    }
    if (wpump_push(dest(f, d), c) && !f->done)
        read_stop(f, d);
}

void nectar__fwd_read_end(struct tcp_flow *f, bool from_client, int err)
{
    struct fwd_dir *d = from_client ? &f->c2s : &f->s2c;
    if (!from_client && err != UV_EOF)
        d->error = err;
    finish_dir(f, d);
}

void nectar__fwd_resume(struct tcp_flow *f, struct fwd_dir *d)
{
    if (!f->done)
        read_start(f, d);
}

bool nectar__fwd_drain_pending(const struct tcp_flow *f)
{
    const struct fwd_dir *ds[2] = {&f->c2s, &f->s2c};
    for (int i = 0; i < 2; i++) {
        if (ds[i]->phase == FD_FINISHING ||
            (ds[i]->phase == FD_BUFFERING && ds[i]->eof_buffered))
            return true;
    }
    return false;
}

void nectar__fwd_drop(struct tcp_flow *f)
{
    drop_carry(&f->c2s);
    drop_carry(&f->s2c);
}
