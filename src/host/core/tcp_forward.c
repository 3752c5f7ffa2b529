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
 *
 * Hand-off to the front (hooks.tcp_direct set): a direction whose engine
 * side is done goes ACTIVE without pushing its carryover or reading; once
 * no direction is BUFFERING or FINISHING, the destination pumps of the
 * ACTIVE directions are drained and closed (the engine's tail reaches the
 * socket first), then both sockets are dup'ed, their libuv handles closed
 * (no RST, no shutdown) and the dups, the carryover and the EOF state go
 * to the hook.  The flow then waits, registered, for the front's done.
 */
#include <assert.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
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
    f->front = f->host->hooks.tcp_direct != NULL && !f->egress_released;
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

static void try_handoff(struct tcp_flow *f);

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
    try_handoff(f);
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
    try_handoff(f);
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
    if (f->front) {
        try_handoff(f); /* the carryover stays for the hook */
        return;
    }
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
    if (f->host->hooks.tcp_direct != NULL) {
        /* Passthrough: nothing was read or queued, hand over at once. */
        f->front = true;
        f->c2s.phase = FD_ACTIVE;
        f->s2c.phase = FD_ACTIVE;
        try_handoff(f);
        return;
    }
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

/* ---- hand-off to the front ---------------------------------------------- */

static void handoff_drained(struct wpump *p)
{
    struct tcp_flow *f = p->owner;
    if (!f->done)
        try_handoff(f);
}

/* Flatten a direction's carryover into one buffer (NULL when empty). */
static uint8_t *carry_flatten(struct fwd_dir *d, size_t *len, bool *oom)
{
    size_t n = 0;
    for (struct wchunk *c = d->head; c != NULL; c = c->next)
        n += c->len;
    *len = n;
    if (n == 0)
        return NULL;
    uint8_t *buf = nectar_malloc(n);
    if (buf == NULL) {
        *oom = true;
        return NULL;
    }
    size_t off = 0;
    for (struct wchunk *c = d->head; c != NULL; c = c->next) {
        memcpy(buf + off, c->data, c->len);
        off += c->len;
    }
    return buf;
}

static void dir_info(struct fwd_dir *d, nectar_host_direct_dir_t *out,
                     const uint8_t *carry, size_t len)
{
    out->carry = carry;
    out->carry_len = len;
    out->done = d->phase == FD_FINISHED;
    out->eof = !out->done && d->eof_buffered;
    out->error = out->eof ? d->error : 0;
}

/* A duplicate of a libuv socket's fd, or a negative code. */
static int dup_socket(uv_tcp_t *t)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)t, &fd) != 0)
        return NECTAR_EINVAL;
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    return d >= 0 ? d : -errno;
}

static void release_handle(struct tcp_flow *f, uv_tcp_t *t)
{
    uv_handle_t *h = (uv_handle_t *)t;
    if (uv_is_active(h))
        uv_read_stop((uv_stream_t *)t);
    nectar__tcp_close_handle(f, h);
}

static void handoff(struct tcp_flow *f)
{
    int cfd = dup_socket(&f->client);
    int efd = cfd >= 0 ? dup_socket(&f->egress) : cfd;
    if (efd < 0) {
        if (cfd >= 0)
            close(cfd);
        nectar__tcp_finish(f, efd, "direct-failed");
        return;
    }
    nectar_host_direct_info_t info = {
        .flow_id = f->obj.id,
        .promoted = f->promoted,
        .client_fd = cfd,
        .egress_fd = efd,
        .remote = &f->remote.sa,
    };
    bool oom = false;
    size_t l1, l2;
    uint8_t *b1 = carry_flatten(&f->c2s, &l1, &oom);
    uint8_t *b2 = carry_flatten(&f->s2c, &l2, &oom);
    dir_info(&f->c2s, &info.c2s, b1, l1);
    dir_info(&f->s2c, &info.s2c, b2, l2);
    nectar__fwd_drop(f);
    /* From here the loop touches neither socket: the core's descriptors
     * go, the front's duplicates keep the connections. */
    f->handed = true;
    uv_timer_stop(&f->timer);
    f->backstop_armed = false;
    release_handle(f, &f->client);
    release_handle(f, &f->egress);
    atomic_store(&f->direct_state, DIRECT_HANDED);
    nectar__host_ref(&f->obj); /* the front's, dropped in direct_done */
    const nectar_host_hooks_t *hk = &f->host->hooks;
    int rc;
    if (oom) {
        close(cfd);
        close(efd);
        rc = NECTAR_ENOMEM;
    } else {
        rc = hk->tcp_direct(hk->ctx, (nectar_host_direct_t *)f, &info);
    }
    nectar_free(b1);
    nectar_free(b2);
    nectar_log(NECTAR_LOG_DEBUG, TAG,
               "flow %llu: handed to the front (carry c2s %zu, s2c %zu): %d",
               (unsigned long long)f->obj.id, l1, l2, rc);
    if (rc != 0) {
        atomic_store(&f->direct_state, DIRECT_NONE);
        nectar__host_unref(&f->obj);
        nectar__tcp_finish(f, rc, "direct-failed");
        return;
    }
    f->front_took = true;
    pthread_mutex_lock(&f->host->lock);
    f->host->stats.direct_front++;
    pthread_mutex_unlock(&f->host->lock);
}

/* Hand the flow over once every direction is ready and the pumps of the
 * moving ones are empty; called again by each event that may get there. */
static void try_handoff(struct tcp_flow *f)
{
    if (!f->front || f->handed || f->done)
        return;
    struct fwd_dir *ds[2] = {&f->c2s, &f->s2c};
    int active = 0;
    for (int i = 0; i < 2; i++) {
        if (ds[i]->phase != FD_ACTIVE && ds[i]->phase != FD_FINISHED)
            return;
        active += ds[i]->phase == FD_ACTIVE;
    }
    if (active == 0)
        return; /* check_terminal ends it */
    bool waiting = false;
    for (int i = 0; i < 2; i++) {
        struct wpump *p = dest(f, ds[i]);
        if (ds[i]->phase != FD_ACTIVE || p->lifecycle == WP_PENDING ||
            wpump_is_closed(p))
            continue;
        waiting = true;
        if (!f->hand_wait[i]) {
            f->hand_wait[i] = true;
            wpump_close_when_drained(p, handoff_drained);
            if (f->done || f->handed)
                return; /* it drained at once and handed over */
        }
    }
    if (!waiting)
        handoff(f);
}

void nectar__fwd_front_done(struct tcp_flow *f)
{
    if (!f->handed || f->done)
        return;
    int err = atomic_load(&f->direct_error);
    nectar__tcp_finish(f, err, err == 0 ? "closed" : "direct-error");
}

void nectar__fwd_front_teardown(struct tcp_flow *f)
{
    int expected = DIRECT_HANDED;
    if (atomic_compare_exchange_strong(&f->direct_state, &expected,
                                       DIRECT_ORPHANED)) {
        nectar__tcp_finish(f, NECTAR_ECANCELED, "stopped");
        return;
    }
    nectar__fwd_front_done(f); /* the front finished first */
}

void nectar__host_tcp_direct_done(nectar_host_direct_t *d, uint64_t c2s,
                                  uint64_t s2c, int error)
{
    struct tcp_flow *f = (struct tcp_flow *)d;
    atomic_store(&f->direct_c2s, c2s);
    atomic_store(&f->direct_s2c, s2c);
    atomic_store(&f->direct_error, error);
    /* Orphaned (host stop reported it) or refused: just let go. */
    if (atomic_exchange(&f->direct_state, DIRECT_FRONT_DONE) == DIRECT_HANDED)
        nectar__host_post(&f->obj, EV_DIRECT_DONE);
    nectar__host_unref(&f->obj);
}
