/*
 * tcp_flow.c - one intercepted TCP flow: decision, egress connect first,
 * activation, the engine-bound read pumps and the write pumps' wiring,
 * half-close, the drain backstop and teardown (ne-host §4).
 *
 * Divisions:
 *   1. engine callback trampolines (engine threads: copy or post, return)
 *   2. session calls (loop thread, under slock)
 *   3. read pumps (client -> engine, egress -> engine)
 *   4. connect and activation
 *   5. close callbacks, backstop, teardown
 *   6. entry point and event dispatch
 *
 * Lifecycle of one flow (loop thread unless noted):
 *
 *   accept thread: new_tcp_session -> INTERCEPT -> register -> post START
 *   START: adopt client fd, egress socket + options, connect, connect timer
 *   connected: register promote cbs -> activate -> open client write pump
 *              -> start egress reads -> start client reads
 *   on_close_egress: egress pump drains -> FIN (shutdown WR)    c2s_done
 *   on_server_closed: client pump drains -> shutdown WR         s2c_done
 *   both done, or any failure: finish() -> cancel session, close sockets
 *   all handles closed: free session, drop callback refs, report, remove
 *
 * Divergence from the Swift host, on purpose: a drained on_server_closed
 * shuts only the client's write half instead of closing the whole app flow,
 * because a socket (unlike an NE flow) can half-close; the flow ends when
 * both halves are shut, or when the idle-gated deadline timer gives up (the
 * drain backstop; linger after FIN and the EOF grace release the egress
 * socket early, which ends the client->server half).
 */
#include "host/core/tcp_flow.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TAG "host"

static struct wchunk *chunk_of(char *base)
{
    return (struct wchunk *)(base - offsetof(struct wchunk, data));
}

/* ---- 1. engine callback trampolines ------------------------------------- */

static RamaTcpDeliverStatus cb_server_bytes(void *ctx, RamaBytesView b)
{
    struct tcp_flow *f = ctx;
    if (f == NULL)
        return RAMA_TCP_DELIVER_CLOSED;
    return wpump_enqueue(&f->cwp, b.ptr, b.ptr != NULL ? b.len : 0);
}

static RamaTcpDeliverStatus cb_write_egress(void *ctx, RamaBytesView b)
{
    struct tcp_flow *f = ctx;
    if (f == NULL)
        return RAMA_TCP_DELIVER_CLOSED;
    return wpump_enqueue(&f->ewp, b.ptr, b.ptr != NULL ? b.len : 0);
}

static void post(void *ctx, unsigned ev)
{
    if (ctx != NULL)
        nectar__host_post(&((struct tcp_flow *)ctx)->obj, ev);
}

static void cb_server_closed(void *ctx)
{
    post(ctx, EV_SERVER_CLOSED);
}

static void cb_client_demand(void *ctx)
{
    post(ctx, EV_CLIENT_DEMAND);
}

static void cb_close_egress(void *ctx)
{
    post(ctx, EV_CLOSE_EGRESS);
}

static void cb_egress_demand(void *ctx)
{
    post(ctx, EV_EGRESS_DEMAND);
}

static void cb_promote(void *ctx)
{
    post(ctx, EV_PROMOTE);
}

/* ---- 2. session calls --------------------------------------------------- */

static RamaTcpDeliverStatus deliver(struct tcp_flow *f, bool client,
                                    struct wchunk *c)
{
    RamaBytesOwnedView v = {c->data, c->len, c, wchunk_release};
    RamaTcpDeliverStatus st = RAMA_TCP_DELIVER_CLOSED;
    f->saw_bytes = true;
    pthread_mutex_lock(&f->slock);
    if (!f->cancelled && f->session != NULL) {
        st = client ? rama_transparent_proxy_tcp_session_on_client_bytes_owned(
                          f->session, v)
                    : rama_transparent_proxy_tcp_session_on_egress_bytes_owned(
                          f->session, v);
    }
    pthread_mutex_unlock(&f->slock);
    return st;
}

static void session_call(struct tcp_flow *f,
                         void (*fn)(RamaTransparentProxyTcpSession *))
{
    pthread_mutex_lock(&f->slock);
    if (!f->cancelled && f->session != NULL)
        fn(f->session);
    pthread_mutex_unlock(&f->slock);
}

static void confirm(struct tcp_flow *f, RamaPromoteConfirmStatus st,
                    const char *reason)
{
    pthread_mutex_lock(&f->slock);
    if (!f->cancelled && f->session != NULL)
        rama_transparent_proxy_tcp_session_confirm_promoted(
            f->session, st, reason, reason != NULL ? strlen(reason) : 0);
    pthread_mutex_unlock(&f->slock);
}

/* ---- 3. read pumps ------------------------------------------------------ */

void nectar__tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    struct wchunk *c = wchunk_new(WCHUNK_READ_SIZE);
    if (c == NULL) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init((char *)c->data, WCHUNK_READ_SIZE);
}

static void rp_start(struct tcp_flow *f, struct rpump *rp)
{
    (void)f;
    rp->phase = RP_READING;
    uv_read_start((uv_stream_t *)rp->tcp, nectar__tcp_alloc,
                  nectar__tcp_on_read);
}

static void rp_stop(struct rpump *rp, enum rp_phase phase)
{
    if (rp->phase == RP_READING)
        uv_read_stop((uv_stream_t *)rp->tcp);
    rp->phase = phase;
}

/* The client half is done (EOF, or the engine refused more bytes): tell
 * the engine; the egress direction keeps running (half-close). */
static void client_half_closed(struct tcp_flow *f)
{
    session_call(f, rama_transparent_proxy_tcp_session_on_client_eof);
    /* With no byte either way the engine treats this EOF as a fast
     * cancel (ne-engine §1.3.16): no callback will ever come, so the flow
     * ends here instead of waiting forever. */
    if (!f->saw_bytes)
        nectar__tcp_finish(f, 0, "client-eof-before-data");
}

/* Act on a delivery status; c is consumed unless PAUSED keeps it. */
static void rp_settle(struct tcp_flow *f, struct rpump *rp, bool client,
                      struct wchunk *c, RamaTcpDeliverStatus st)
{
    if (st == RAMA_TCP_DELIVER_ACCEPTED) {
        if (rp->phase != RP_READING)
            rp_start(f, rp);
        return;
    }
    if (st == RAMA_TCP_DELIVER_PAUSED) {
        atomic_fetch_add(&f->host->engine_paused, 1);
        /* Keep the exact bytes; no further read until demand. */
        rp_stop(rp, RP_PAUSED);
        rp->replay = c;
        return;
    }
    wchunk_free(c);
    rp_stop(rp, RP_CLOSED);
    if (client)
        client_half_closed(f);
}

static void engine_read(struct tcp_flow *f, bool client, struct wchunk *c)
{
    struct rpump *rp = client ? &f->crp : &f->erp;
    RamaTcpDeliverStatus st = deliver(f, client, c);
    rp_settle(f, rp, client, c, st);
}

static void engine_read_end(struct tcp_flow *f, bool client, int err)
{
    struct rpump *rp = client ? &f->crp : &f->erp;
    rp_stop(rp, RP_CLOSED);
    rp->eof = true;
    if (err != UV_EOF)
        rp->error = err;
    if (client) {
        if (err == UV_EOF)
            client_half_closed(f);
        else
            nectar__tcp_finish(f, err, "client-read-error");
        return;
    }
    nectar__tcp_arm_backstop(f, f->c2s_done ? 1 : f->eof_grace_ms);
    if (err == UV_EOF)
        session_call(f, rama_transparent_proxy_tcp_session_on_egress_eof);
    else
        session_call(f, rama_transparent_proxy_tcp_session_on_egress_error);
}

void nectar__tcp_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tcp_flow *f = s->data;
    bool client = s == (uv_stream_t *)&f->client;
    struct wchunk *c = buf->base != NULL ? chunk_of(buf->base) : NULL;
    if (nread == 0 || f->done) {
        wchunk_free(c);
        return;
    }
    if (nread < 0) {
        wchunk_free(c);
        if (f->mode == MODE_ENGINE)
            engine_read_end(f, client, (int)nread);
        else
            nectar__fwd_read_end(f, client, (int)nread);
        if (!f->done)
            nectar__tcp_publish(f);
        return;
    }
    c->len = (size_t)nread;
    c = wchunk_fit(c);
    atomic_store(&f->last_activity, nectar__host_now_ms());
    if (f->mode == MODE_ENGINE)
        engine_read(f, client, c);
    else
        nectar__fwd_read(f, client, c);
}


/* Demand from the engine: replay the held chunk first, then read on. */
static void rp_resume(struct tcp_flow *f, struct rpump *rp, bool client)
{
    if (f->mode != MODE_ENGINE || rp->phase != RP_PAUSED)
        return;
    struct wchunk *c = rp->replay;
    rp->replay = NULL;
    RamaTcpDeliverStatus st = deliver(f, client, c);
    rp_settle(f, rp, client, c, st);
}

/* ---- write pump wiring -------------------------------------------------- */

static void post_client_flush(void *owner)
{
    nectar__host_post(&((struct tcp_flow *)owner)->obj, EV_CLIENT_FLUSH);
}

static void post_egress_flush(void *owner)
{
    nectar__host_post(&((struct tcp_flow *)owner)->obj, EV_EGRESS_FLUSH);
}

static void client_drain_edge(struct wpump *p, bool engine, bool fwd)
{
    struct tcp_flow *f = p->owner;
    /* Always signal the engine first: it may be parked on a PAUSED even
     * after promote, while it pushes its tail. */
    if (engine)
        session_call(f, rama_transparent_proxy_tcp_session_signal_server_drain);
    if (fwd)
        nectar__fwd_resume(f, &f->s2c);
}

static void egress_drain_edge(struct wpump *p, bool engine, bool fwd)
{
    struct tcp_flow *f = p->owner;
    if (engine)
        session_call(f, rama_transparent_proxy_tcp_session_signal_egress_drain);
    if (fwd)
        nectar__fwd_resume(f, &f->c2s);
}

static void pump_written(struct wpump *p, size_t n)
{
    (void)n;
    struct tcp_flow *f = p->owner;
    atomic_store(&f->last_activity, nectar__host_now_ms());
}

static void client_write_error(struct wpump *p, int err)
{
    nectar__tcp_finish(p->owner, err, "client-write-error");
}

static void egress_write_error(struct wpump *p, int err)
{
    nectar__tcp_finish(p->owner, err, "egress-write-error");
}

static const struct wpump_ops client_ops = {client_drain_edge, pump_written,
                                            client_write_error};
static const struct wpump_ops egress_ops = {egress_drain_edge, pump_written,
                                            egress_write_error};

/* ---- 4. connect and activation ------------------------------------------ */

static void on_closed(uv_handle_t *h);
static void token_finish(struct tcp_flow *f, enum adm_outcome outcome);

static void activate(struct tcp_flow *f)
{
    RamaTransparentProxyTcpEgressCallbacks ecb = {
        f, cb_write_egress, cb_close_egress, cb_egress_demand};
    RamaTransparentProxyTcpPromoteCallbacks pcb = {f, cb_promote};
    wpump_open(&f->ewp, (uv_stream_t *)&f->egress);
    pthread_mutex_lock(&f->slock);
    if (!f->cancelled && f->session != NULL) {
        /* Before activate: the service may promote on its first poll. */
        rama_transparent_proxy_tcp_session_register_promote_callbacks(
            f->session, pcb);
        rama_transparent_proxy_tcp_session_activate(f->session, ecb);
    }
    pthread_mutex_unlock(&f->slock);
    f->activated = true;
    /* "flow.open": from here the engine's queued writes flush and reads
     * begin, egress first. */
    wpump_open(&f->cwp, (uv_stream_t *)&f->client);
    rp_start(f, &f->erp);
    rp_start(f, &f->crp);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct tcp_flow *f = req->data;
    nectar_free(req); /* libuv is done with it either way */
    f->creq = NULL;
    if (f->done)
        return;
    if (status < 0) {
        nectar__tcp_finish(f, status, "connect-failed");
        return;
    }
    uv_timer_stop(&f->timer);
    f->egress_ready = true;
    token_finish(f, ADM_READY);
    atomic_store(&f->last_activity, nectar__host_now_ms());
    if (f->mode == MODE_DIRECT)
        nectar__fwd_start_direct(f);
    else
        activate(f);
    nectar__tcp_publish(f);
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct tcp_flow *f = t->data;
    if (!f->egress_ready) {
        token_finish(f, ADM_TIMEOUT);
        nectar__tcp_finish(f, NECTAR_ETIMEDOUT, "connect-timeout");
    }
}

static int open_egress_socket(struct tcp_flow *f)
{
    const nectar_host_hooks_t *hk = &f->host->hooks;
    const struct sockaddr *ra = &f->remote.sa;
    if (hk->egress_socket != NULL)
        return hk->egress_socket(hk->ctx, ra);
    int fd = socket(ra->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    return fd >= 0 ? fd : -errno;
}

static void init_handle(struct tcp_flow *f, uv_handle_t *h)
{
    h->data = f;
    f->handles++;
}

static void start(struct tcp_flow *f)
{
    uv_loop_t *loop = &f->obj.loop->loop;
    uv_timer_init(loop, &f->timer);
    init_handle(f, (uv_handle_t *)&f->timer);
    uv_tcp_init(loop, &f->client);
    init_handle(f, (uv_handle_t *)&f->client);
    int rc = uv_tcp_open(&f->client, f->client_fd);
    if (rc != 0) {
        nectar__tcp_finish(f, rc, "client-socket");
        return;
    }
    f->client_fd = -1;
    /* The app side is a socket here (an NE flow has no Nagle): never let
     * small engine writes wait for an ACK. */
    uv_tcp_nodelay(&f->client, 1);

    RamaTcpEgressConnectOptions o;
    bool have = false;
    memset(&o, 0, sizeof(o));
    if (f->mode == MODE_ENGINE) {
        pthread_mutex_lock(&f->slock);
        if (!f->cancelled && f->session != NULL)
            have = rama_transparent_proxy_tcp_session_get_egress_connect_options(
                f->session, &o);
        pthread_mutex_unlock(&f->slock);
    }
    const nectar_host_options_t *ho = &f->host->opts;
    f->connect_timeout_ms = nectar__host_connect_timeout(
        f->host, have && o.has_connect_timeout_ms && o.connect_timeout_ms > 0
                     ? o.connect_timeout_ms
                     : ho->connect_timeout_ms);
    f->linger_ms = have && o.has_linger_close_ms && o.linger_close_ms > 0
                       ? o.linger_close_ms
                       : ho->linger_close_ms;
    f->eof_grace_ms = have && o.has_egress_eof_grace_ms &&
                              o.egress_eof_grace_ms > 0
                          ? o.egress_eof_grace_ms
                          : ho->egress_eof_grace_ms;

    int efd = open_egress_socket(f);
    if (efd < 0) {
        nectar__tcp_finish(f, efd, "egress-socket");
        return;
    }
    nectar__host_apply_egress_options(efd, have ? &o : NULL);
    uv_tcp_init(loop, &f->egress);
    init_handle(f, (uv_handle_t *)&f->egress);
    rc = uv_tcp_open(&f->egress, efd);
    if (rc != 0) {
        close(efd);
        nectar__tcp_finish(f, rc, "egress-socket");
        return;
    }
    f->creq = nectar_malloc(sizeof(*f->creq));
    rc = f->creq != NULL ? 0 : UV_ENOMEM;
    if (rc == 0) {
        f->creq->data = f;
        rc = uv_tcp_connect(f->creq, &f->egress, &f->remote.sa, on_connect);
        if (rc != 0) {
            nectar_free(f->creq);
            f->creq = NULL;
        }
    }
    if (rc != 0) {
        nectar__tcp_finish(f, rc, "connect-failed");
        return;
    }
    uv_timer_start(&f->timer, on_connect_timeout, f->connect_timeout_ms, 0);
}

/* ---- 5. close callbacks, backstop, teardown ----------------------------- */

static bool drain_pending(const struct tcp_flow *f);

void nectar__tcp_publish(struct tcp_flow *f)
{
    unsigned v = 0;
    if (f->egress_ready)
        v |= PS_READY;
    if (f->server_closed || f->close_egress ||
        (f->mode != MODE_ENGINE && drain_pending(f)))
        v |= PS_CLOSING;
    if (drain_pending(f))
        v |= PS_DRAIN;
    if (f->mode == MODE_PROMOTED)
        v |= PS_PROMOTED;
    if (f->done)
        v |= PS_DONE;
    atomic_store(&f->pub, v);
}

/* Give the admission token back (ne-host §4.2). */
static void token_finish(struct tcp_flow *f, enum adm_outcome outcome)
{
    if (!f->token)
        return;
    f->token = false;
    nectar__host_admit_finish(f->host, f->token_start_ms, outcome);
}

void nectar__tcp_shutdown_write(uv_tcp_t *tcp)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)tcp, &fd) == 0)
        shutdown(fd, SHUT_WR);
}

static void maybe_done(struct tcp_flow *f)
{
    if (f->s2c_done && f->c2s_done)
        nectar__tcp_finish(f, 0, "closed");
}

static void client_drained(struct wpump *p)
{
    struct tcp_flow *f = p->owner;
    if (f->done)
        return;
    /* The server side failed: the app sees a reset, not a clean EOF. */
    if (f->erp.error != 0) {
        nectar__tcp_finish(f, f->erp.error, "egress-read-error");
        return;
    }
    nectar__tcp_shutdown_write(&f->client);
    f->s2c_done = true;
    maybe_done(f);
    if (!f->done)
        nectar__tcp_publish(f);
}

static void release_egress(struct tcp_flow *f);

static void egress_drained(struct wpump *p)
{
    struct tcp_flow *f = p->owner;
    if (f->done || f->egress_released)
        return;
    nectar__tcp_shutdown_write(&f->egress); /* the FIN */
    f->c2s_done = true;
    if (f->erp.eof)
        release_egress(f); /* both ways done: nothing left to wait for */
    else
        nectar__tcp_arm_backstop(f, f->linger_ms); /* linger after FIN */
    maybe_done(f);
    if (!f->done)
        nectar__tcp_publish(f);
}

static bool drain_pending(const struct tcp_flow *f)
{
    if (f->handed)
        return false; /* the front owns the sockets and their timing */
    if (f->mode != MODE_ENGINE)
        return nectar__fwd_drain_pending(f);
    return (f->server_closed && !f->s2c_done) ||
           (f->close_egress && !f->c2s_done);
}

/*
 * Close the egress socket before the flow ends (ne-host §4.6 linger
 * watchdog and EOF-grace release): after our FIN when the server stays
 * quiet for the linger, or after the server's EOF when the flow stays
 * quiet for the EOF grace.  The engine hears an egress error if it had no
 * EOF yet, so its service winds the client side down; nothing more can go
 * to the server, so the client->server half counts as done.
 */
static void release_egress(struct tcp_flow *f)
{
    if (f->egress_released)
        return;
    f->egress_released = true;
    bool had_eof = f->erp.eof;
    rp_stop(&f->erp, RP_CLOSED);
    f->erp.eof = true;
    wpump_cancel(&f->ewp);
    if (!had_eof)
        session_call(f, rama_transparent_proxy_tcp_session_on_egress_error);
    uv_handle_t *h = (uv_handle_t *)&f->egress;
    if (h->data == f && !uv_is_closing(h))
        uv_close(h, on_closed);
    f->c2s_done = true;
    maybe_done(f);
}

/* Budget of the egress release rule now in force, or 0 when none. */
static uint32_t release_budget(const struct tcp_flow *f)
{
    if (f->mode != MODE_ENGINE || !f->egress_ready || f->egress_released)
        return 0;
    if (f->erp.eof && f->c2s_done)
        return 1; /* both ways done: release at once */
    if (f->erp.eof)
        return f->eof_grace_ms;
    if (f->c2s_done)
        return f->linger_ms;
    return 0;
}

static void on_backstop(uv_timer_t *t)
{
    struct tcp_flow *f = t->data;
    f->backstop_armed = false;
    if (f->done)
        return;
    uint64_t idle = nectar__host_now_ms() - atomic_load(&f->last_activity);
    uint64_t next = UINT64_MAX;
    /* Both rules are idle-gated: a half-close whose other direction still
     * moves bytes is never truncated. */
    if (drain_pending(f)) {
        if (idle >= f->linger_ms) {
            nectar__tcp_finish(f, NECTAR_ETIMEDOUT, "drain-backstop");
            return;
        }
        next = f->linger_ms - idle;
    }
    uint32_t budget = release_budget(f);
    if (budget > 0) {
        if (idle >= budget) {
            release_egress(f);
            if (f->done)
                return;
        } else if (budget - idle < next) {
            next = budget - idle;
        }
    }
    if (next != UINT64_MAX)
        nectar__tcp_arm_backstop(f, next < 50 ? 50 : (uint32_t)next);
    nectar__tcp_publish(f);
}

void nectar__tcp_arm_backstop(struct tcp_flow *f, uint32_t ms)
{
    if (f->done)
        return;
    uint64_t at = nectar__host_now_ms() + ms;
    if (f->backstop_armed && f->deadline_at <= at)
        return;
    f->backstop_armed = true;
    f->deadline_at = at;
    uv_timer_start(&f->timer, on_backstop, ms, 0);
}

static void on_server_closed(struct tcp_flow *f)
{
    f->server_closed = true;
    if (f->mode == MODE_PROMOTED) {
        nectar__fwd_activate(f, &f->s2c);
        return;
    }
    wpump_close_when_drained(&f->cwp, client_drained);
    nectar__tcp_arm_backstop(f, f->linger_ms);
}

static void on_close_egress(struct tcp_flow *f)
{
    f->close_egress = true;
    if (f->mode == MODE_PROMOTED) {
        nectar__fwd_activate(f, &f->c2s);
        return;
    }
    wpump_close_when_drained(&f->ewp, egress_drained);
    nectar__tcp_arm_backstop(f, f->linger_ms);
}

static void close_handle(struct tcp_flow *f, uv_handle_t *h, bool rst)
{
    if (h->data != f || uv_is_closing(h))
        return;
    if (rst && h->type == UV_TCP) {
        /* SO_LINGER {1, 0}: close sends RST, the way a rejected or failed
         * flow is refused (ne-host §4.5 Linux mapping). */
        uv_os_fd_t fd;
        struct linger lg = {1, 0};
        if (uv_fileno(h, &fd) == 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    uv_close(h, on_closed);
}

void nectar__tcp_close_handle(struct tcp_flow *f, uv_handle_t *h)
{
    close_handle(f, h, false);
}

static void finalize(struct tcp_flow *f)
{
    assert(f->done && f->handles == 0);
    pthread_mutex_lock(&f->slock);
    RamaTransparentProxyTcpSession *s = f->session;
    f->session = NULL;
    f->cancelled = true;
    pthread_mutex_unlock(&f->slock);
    /* Free first, then release the callback contexts (our ref). */
    if (s != NULL) {
        rama_transparent_proxy_tcp_session_free(s);
        nectar__host_unref(&f->obj);
    }
    char text[80];
    nectar_host_flow_report_t r = {
        .id = f->obj.id,
        .protocol = IPPROTO_TCP,
        .decision = f->decision,
        .promoted = f->promoted,
        .bytes_c2s = wpump_written(&f->ewp) + atomic_load(&f->direct_c2s),
        .bytes_s2c = wpump_written(&f->cwp) + atomic_load(&f->direct_s2c),
        .duration_ms = nectar__host_now_ms() - f->start_ms,
        .error = f->end_error,
        .reason = f->end_reason,
        .remote = nectar__host_addr_text(&f->remote.sa, text, sizeof(text)),
        .app_signing = f->app_signing,
        .app_bundle = f->app_bundle,
        .pid = f->pid,
        .forwarded_by_front = f->front_took,
    };
    nectar__host_report(f->host, &r);
    nectar__host_app_drop(f->host, f->app);
    f->app = NULL;
    nectar__host_unregister(f->host, &f->obj);
    nectar__host_unref(&f->obj);
}

static void on_closed(uv_handle_t *h)
{
    struct tcp_flow *f = h->data;
    if (--f->handles == 0)
        finalize(f);
}

void nectar__tcp_finish(struct tcp_flow *f, int err, const char *reason)
{
    if (f->done)
        return;
    f->done = true;
    f->end_error = err;
    f->end_reason = reason;
    token_finish(f, ADM_FAILED);
    nectar__tcp_publish(f);
    if (err != 0 && err != NECTAR_ECANCELED) {
        char text[80];
        nectar_log(NECTAR_LOG_DEBUG, TAG, "tcp flow %llu to %s: %s (%s)",
                   (unsigned long long)f->obj.id,
                   nectar__host_addr_text(&f->remote.sa, text, sizeof(text)),
                   reason, uv_strerror(err));
    }
    /* Client write pump first, so queued writes short-circuit before the
     * client socket goes away. */
    wpump_cancel(&f->cwp);
    wpump_cancel(&f->ewp);
    pthread_mutex_lock(&f->slock);
    if (!f->cancelled && f->session != NULL)
        rama_transparent_proxy_tcp_session_cancel(f->session);
    f->cancelled = true;
    pthread_mutex_unlock(&f->slock);
    wchunk_free(f->crp.replay);
    wchunk_free(f->erp.replay);
    f->crp.replay = f->erp.replay = NULL;
    nectar__fwd_drop(f);
    if (f->client_fd >= 0) {
        close(f->client_fd);
        f->client_fd = -1;
    }
    bool rst = err != 0;
    close_handle(f, (uv_handle_t *)&f->client, rst);
    close_handle(f, (uv_handle_t *)&f->egress, rst);
    close_handle(f, (uv_handle_t *)&f->timer, false);
    if (f->handles == 0)
        finalize(f);
}

/* ---- 6. entry point and event dispatch ---------------------------------- */

static void promote(struct tcp_flow *f)
{
    if (f->mode != MODE_ENGINE)
        return; /* idempotent: no second forwarder, no second confirm */
    if (!f->activated) {
        confirm(f, RAMA_PROMOTE_CONFIRM_FAILED, "egress not ready");
        return;
    }
    nectar__fwd_promote(f);
    confirm(f, RAMA_PROMOTE_CONFIRM_OK, NULL);
}

/* A maintenance or pressure kick: re-check here, on the flow's loop,
 * before acting (the flow may have moved on since it was picked). */
static void kick(struct tcp_flow *f, unsigned ev)
{
    if (f->handed)
        return; /* the front's forwarder has no core timers */
    uint64_t now = nectar__host_now_ms();
    uint64_t idle = now - atomic_load(&f->last_activity);
    bool wedged = drain_pending(f) && idle > f->linger_ms;
    if ((ev & EV_KICK_STALE) && !f->egress_ready) {
        token_finish(f, ADM_TIMEOUT);
        nectar__tcp_finish(f, NECTAR_ETIMEDOUT, "connect-timeout");
    } else if ((ev & EV_KICK_WEDGED) && f->egress_ready && wedged) {
        nectar__tcp_finish(f, NECTAR_ETIMEDOUT, "drain-backstop");
    } else if ((ev & EV_KICK_IDLE) && f->mode == MODE_PROMOTED && !wedged &&
               idle > f->host->opts.promoted_idle_ms) {
        nectar__tcp_finish(f, NECTAR_ETIMEDOUT, "idle-timeout");
    } else if ((ev & EV_EVICT) && f->egress_ready &&
               (!drain_pending(f) || wedged) &&
               idle > f->host->adm.idle_floor_ms) {
        nectar__tcp_finish(f, NECTAR_ETIMEDOUT, "pressure-evicted");
    }
}

static void dispatch(struct core_obj *o, unsigned ev)
{
    struct tcp_flow *f = (struct tcp_flow *)o;
    if ((ev & EV_TEARDOWN) && f->handed)
        nectar__fwd_front_teardown(f);
    else if (ev & EV_TEARDOWN)
        nectar__tcp_finish(f, NECTAR_ECANCELED, "stopped");
    if (ev & EV_DIRECT_DONE)
        nectar__fwd_front_done(f);
    if ((ev & EV_START) && !f->done)
        start(f);
    if ((ev & EV_EGRESS_FLUSH) && !f->done)
        wpump_flush(&f->ewp);
    if ((ev & EV_CLIENT_FLUSH) && !f->done)
        wpump_flush(&f->cwp);
    if ((ev & EV_CLIENT_DEMAND) && !f->done)
        rp_resume(f, &f->crp, true);
    if ((ev & EV_EGRESS_DEMAND) && !f->done)
        rp_resume(f, &f->erp, false);
    if ((ev & EV_PROMOTE) && !f->done)
        promote(f);
    if ((ev & EV_CLOSE_EGRESS) && !f->done)
        on_close_egress(f);
    if ((ev & EV_SERVER_CLOSED) && !f->done)
        on_server_closed(f);
    if ((ev & (EV_KICK_STALE | EV_KICK_WEDGED | EV_KICK_IDLE | EV_EVICT)) &&
        !f->done)
        kick(f, ev);
    if (!f->done)
        nectar__tcp_publish(f);
}

static void destroy(struct core_obj *o)
{
    struct tcp_flow *f = (struct tcp_flow *)o;
    wpump_destroy(&f->cwp);
    wpump_destroy(&f->ewp);
    wchunk_free(f->crp.replay);
    wchunk_free(f->erp.replay);
    nectar__fwd_drop(f);
    if (f->client_fd >= 0)
        close(f->client_fd);
    pthread_mutex_destroy(&f->slock);
    nectar_free(f->app_signing);
    nectar_free(f->app_bundle);
    nectar_free(f);
}

static void reset_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static struct tcp_flow *flow_new(nectar_host_t *h, int fd,
                                 const nectar_host_flow_meta_t *meta)
{
    struct tcp_flow *f = nectar_calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->obj.loop = nectar__host_pick_loop(h);
    atomic_init(&f->obj.refs, 1); /* the registry's (owner) reference */
    f->obj.dispatch = dispatch;
    f->obj.destroy = destroy;
    f->obj.id = nectar__host_next_id();
    f->obj.protocol = IPPROTO_TCP;
    f->host = h;
    f->client_fd = fd;
    f->start_ms = nectar__host_now_ms();
    atomic_init(&f->last_activity, f->start_ms);
    f->linger_ms = h->opts.linger_close_ms;
    f->eof_grace_ms = h->opts.egress_eof_grace_ms;
    size_t alen = meta->remote->sa_family == AF_INET
                      ? sizeof(struct sockaddr_in)
                      : sizeof(struct sockaddr_in6);
    memcpy(&f->remote, meta->remote, alen);
    /* Kept for the close report; a failed copy only loses the name. */
    if (meta->signing_identifier != NULL)
        f->app_signing = nectar_strdup(meta->signing_identifier);
    if (meta->bundle_identifier != NULL)
        f->app_bundle = nectar_strdup(meta->bundle_identifier);
    f->pid = meta->pid;
    pthread_mutex_init(&f->slock, NULL);
    f->crp.tcp = &f->client;
    f->erp.tcp = &f->egress;
    /* Built before the engine is asked, like the Swift client write pump. */
    wpump_init(&f->cwp, h->wp_cap, f, &client_ops, post_client_flush);
    wpump_init(&f->ewp, h->wp_cap, f, &egress_ops, post_egress_flush);
    f->cwp.paused_count = &h->pump_paused;
    f->ewp.paused_count = &h->pump_paused;
    f->cwp.activity = &f->last_activity;
    f->ewp.activity = &f->last_activity;
    return f;
}

static void report_refused(nectar_host_t *h, struct tcp_flow *f)
{
    char text[80];
    nectar_host_flow_report_t r = {
        .id = f->obj.id,
        .protocol = IPPROTO_TCP,
        .decision = NECTAR_HOST_BLOCKED,
        .reason = "blocked",
        .remote = nectar__host_addr_text(&f->remote.sa, text, sizeof(text)),
        .app_signing = f->app_signing,
        .app_bundle = f->app_bundle,
        .pid = f->pid,
    };
    nectar__host_report(h, &r);
}

/* Ask the engine; returns the host decision and sets f->session. */
static nectar_host_decision_t decide(nectar_host_t *h, struct tcp_flow *f,
                                     const nectar_host_flow_meta_t *meta)
{
    RamaTransparentProxyFlowMeta m;
    struct meta_store st;
    nectar__host_build_meta(meta, IPPROTO_TCP, &m, &st);
    RamaTransparentProxyTcpSessionCallbacks cb = {
        f, cb_server_bytes, cb_server_closed, cb_client_demand};
    RamaTransparentProxyEngine *e = nectar__host_engine_enter(h);
    if (e == NULL || atomic_load(&h->stopping)) {
        nectar__host_engine_leave(h);
        return NECTAR_HOST_BLOCKED;
    }
    RamaTransparentProxyTcpSessionResult res =
        rama_transparent_proxy_engine_new_tcp_session(e, &m, cb);
    nectar__host_engine_leave(h);
    switch (res.action) {
    case RAMA_FLOW_ACTION_INTERCEPT:
        if (res.session != NULL) {
            f->session = res.session;
            return NECTAR_HOST_INTERCEPT;
        }
        break;
    case RAMA_FLOW_ACTION_PASSTHROUGH:
        return NECTAR_HOST_PASSTHROUGH;
    case RAMA_FLOW_ACTION_BLOCKED:
        return NECTAR_HOST_BLOCKED;
    default:
        if (res.session != NULL)
            rama_transparent_proxy_tcp_session_free(res.session);
        break;
    }
    nectar_log(NECTAR_LOG_INFO, TAG, "tcp flow to %s refused by the engine: %s",
               st.remote_text, h->fail_open ? "passthrough" : "blocked");
    return h->fail_open ? NECTAR_HOST_PASSTHROUGH : NECTAR_HOST_BLOCKED;
}

/* TCP start admission (ne-host §4.1, §4.2): a refused start drops the
 * session and falls back to the refusal action. */
static nectar_host_decision_t admit(nectar_host_t *h, struct tcp_flow *f)
{
    char why[128];
    if (nectar__host_admit(h, why, sizeof(why))) {
        f->token = true;
        f->token_start_ms = nectar__host_now_ms();
        return NECTAR_HOST_INTERCEPT;
    }
    nectar_log(NECTAR_LOG_INFO, TAG, "tcp admission rejected: %s, %s", why,
               h->fail_open ? "passing through (fail open)"
                            : "blocking (fail closed)");
    rama_transparent_proxy_tcp_session_free(f->session);
    f->session = NULL;
    return h->fail_open ? NECTAR_HOST_PASSTHROUGH : NECTAR_HOST_BLOCKED;
}

int nectar__tcp_flow_start(nectar_host_t *h, int client_fd,
                           const nectar_host_flow_meta_t *meta,
                           nectar_host_decision_t *decision)
{
    if (meta == NULL || meta->remote == NULL ||
        (meta->remote->sa_family != AF_INET &&
         meta->remote->sa_family != AF_INET6) ||
        client_fd < 0) {
        if (client_fd >= 0)
            reset_close(client_fd);
        return NECTAR_EINVAL;
    }
    struct tcp_flow *f = flow_new(h, client_fd, meta);
    if (f == NULL) {
        reset_close(client_fd);
        return NECTAR_ENOMEM;
    }
    /* One reference for the session's callback contexts, dropped after
     * tcp_session_free (callbacks may fire as soon as the session exists). */
    nectar__host_ref(&f->obj);
    nectar_host_decision_t d = decide(h, f, meta);
    if (d == NECTAR_HOST_INTERCEPT)
        d = admit(h, f);
    if (f->session == NULL)
        nectar__host_unref(&f->obj);
    f->decision = d;
    f->mode = d == NECTAR_HOST_PASSTHROUGH ? MODE_DIRECT : MODE_ENGINE;
    if (d != NECTAR_HOST_BLOCKED && !nectar__host_register(h, &f->obj)) {
        d = NECTAR_HOST_BLOCKED; /* host stopping */
        if (f->session != NULL) {
            rama_transparent_proxy_tcp_session_free(f->session);
            f->session = NULL;
            nectar__host_unref(&f->obj);
        }
    }
    if (decision != NULL)
        *decision = d;
    if (d == NECTAR_HOST_BLOCKED) {
        reset_close(client_fd);
        f->client_fd = -1;
        report_refused(h, f);
        nectar__host_unref(&f->obj);
        return 0;
    }
    f->app = nectar__host_app_hold(h, meta);
    nectar__host_post(&f->obj, EV_START);
    if (d == NECTAR_HOST_INTERCEPT)
        nectar__host_pressure_check(h);
    return 0;
}
