/*
 * udp_flow.c - intercepted UDP flows (ne-host §6): session start and
 * activate, client datagrams with their peer, the bounded write queue
 * towards the client (256 datagrams, drop newest, orphan handling with a
 * cached last-seen peer), the idle watchdog and terminate.
 *
 * Threads: nectar__host_udp_open/deliver/close/release run on the front's
 * threads; the engine's callbacks on engine threads only queue and post;
 * everything else runs on the flow's loop.  References: the front's, the
 * registry's (dropped at finalize) and the session callback context's
 * (dropped after udp_session_free).
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>

#include "common/alloc.h"
#include "host/core/core_int.h"
#include "nectar/log.h"

#define TAG "host"
#define UDP_QUEUE_MAX 256

struct udgram {
    struct udgram *next;
    struct sockaddr_storage peer;
    bool has_peer;
    size_t len;
    uint8_t data[];
};

struct nectar_host_udp {
    struct core_obj obj;
    nectar_host_t *host;
    void *flow_ctx;
    char remote_text[80];
    char *app_signing, *app_bundle; /* copied from the meta, or NULL */
    int32_t pid;
    pthread_mutex_t slock;                   /* every session call */
    RamaTransparentProxyUdpSession *session; /* slock */
    bool closed;                             /* slock: session closed */

    pthread_mutex_t qlock; /* queue, cached peer */
    struct udgram *qhead, *qtail;
    unsigned qlen;
    bool qclosed;
    struct sockaddr_storage last_peer;
    bool has_last_peer;

    uv_timer_t idle;
    bool timer_init, done, activated;
    atomic_uint_fast64_t last_activity;
    atomic_uint_fast64_t bytes_in, bytes_out;
    uint64_t start_ms;
    int end_error;
    const char *end_reason;
};

/* ---- peers -------------------------------------------------------------- */

/* Engine peer view -> socket address; false when absent or not an IP. */
static bool peer_to_addr(RamaUdpPeerView p, struct sockaddr_storage *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    if (!p.present || p.host_utf8 == NULL || p.host_utf8_len == 0 ||
        p.host_utf8_len >= sizeof(host))
        return false;
    memcpy(host, p.host_utf8, p.host_utf8_len);
    host[p.host_utf8_len] = '\0';
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(p.port);
        return true;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(p.port);
        in6->sin6_scope_id = p.scope_id;
        return true;
    }
    return false;
}

/* Socket address -> engine peer view; text lives in buf. */
static RamaUdpPeerView addr_to_peer(const struct sockaddr *sa, char *buf,
                                    size_t n)
{
    RamaUdpPeerView v;
    memset(&v, 0, sizeof(v));
    if (sa == NULL)
        return v;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, buf, (socklen_t)n);
        v.port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, (socklen_t)n);
        v.port = ntohs(in6->sin6_port);
        v.scope_id = in6->sin6_scope_id; /* the zone never goes in text */
    } else {
        return v;
    }
    v.present = true;
    v.host_utf8 = (const uint8_t *)buf;
    v.host_utf8_len = strlen(buf);
    return v;
}

static socklen_t addr_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                    : sizeof(struct sockaddr_in6);
}

/* ---- engine callbacks --------------------------------------------------- */

static void cb_server_datagram(void *ctx, RamaBytesView b, RamaUdpPeerView p)
{
    struct nectar_host_udp *u = ctx;
    if (u == NULL)
        return;
    size_t len = b.ptr != NULL ? b.len : 0;
    struct udgram *d = nectar_malloc(sizeof(*d) + len);
    if (d == NULL)
        return; /* lossy by design */
    d->next = NULL;
    d->len = len;
    if (len > 0)
        memcpy(d->data, b.ptr, len);
    d->has_peer = peer_to_addr(p, &d->peer);
    pthread_mutex_lock(&u->qlock);
    /* The peer is captured at enqueue time, falling back to the cache. */
    if (!d->has_peer && u->has_last_peer) {
        d->peer = u->last_peer;
        d->has_peer = true;
    }
    bool drop = u->qclosed || u->qlen >= UDP_QUEUE_MAX;
    if (!drop) {
        if (u->qtail != NULL)
            u->qtail->next = d;
        else
            u->qhead = d;
        u->qtail = d;
        u->qlen++;
    }
    pthread_mutex_unlock(&u->qlock);
    if (drop) {
        nectar_free(d); /* queue full: drop the newest */
        return;
    }
    atomic_store(&u->last_activity, nectar__host_now_ms());
    nectar__host_post(&u->obj, EV_UDP_FLUSH);
}

static void cb_client_demand(void *ctx)
{
    /* Datagrams are pushed by the front as they arrive; the engine's queue
     * is lossy, so demand needs no action here. */
    (void)ctx;
}

static void cb_server_closed(void *ctx)
{
    if (ctx != NULL)
        nectar__host_post(&((struct nectar_host_udp *)ctx)->obj,
                          EV_SERVER_CLOSED);
}

/* ---- loop side ---------------------------------------------------------- */

static void terminate(struct nectar_host_udp *u, int err, const char *reason);

static void flush(struct nectar_host_udp *u)
{
    const nectar_host_hooks_t *hk = &u->host->hooks;
    for (;;) {
        pthread_mutex_lock(&u->qlock);
        struct udgram *d = u->qhead;
        /* Orphans (no peer and no cached peer) are dropped so an
         * attributed datagram is never blocked behind them. */
        while (d != NULL && !d->has_peer && !u->has_last_peer) {
            u->qhead = d->next;
            u->qlen--;
            nectar_free(d);
            d = u->qhead;
        }
        if (d != NULL) {
            u->qhead = d->next;
            u->qlen--;
        }
        if (u->qhead == NULL)
            u->qtail = NULL;
        struct sockaddr_storage cached = u->last_peer;
        pthread_mutex_unlock(&u->qlock);
        if (d == NULL)
            return;
        const struct sockaddr *src = d->has_peer
                                         ? (const struct sockaddr *)&d->peer
                                         : (const struct sockaddr *)&cached;
        int rc = hk->udp_send(hk->ctx, u->flow_ctx, d->data, d->len, src);
        if (rc == 0)
            atomic_fetch_add(&u->bytes_out, d->len);
        nectar_free(d);
        /* EAGAIN: the socket is full and this datagram is lost, as the
         * kernel would drop it; the others are still tried, so nothing is
         * stranded in the queue. */
        if (rc != 0 && rc != NECTAR_EAGAIN) {
            terminate(u, rc, "send-error");
            return;
        }
    }
}

static void on_idle(uv_timer_t *t)
{
    struct nectar_host_udp *u = t->data;
    uint64_t timeout = u->host->opts.udp_idle_timeout_ms;
    uint64_t idle = nectar__host_now_ms() - atomic_load(&u->last_activity);
    if (idle < timeout) {
        uv_timer_start(&u->idle, on_idle, timeout - idle, 0);
        return;
    }
    terminate(u, 0, "idle");
}

static void finalize(uv_handle_t *h)
{
    struct nectar_host_udp *u = h->data;
    pthread_mutex_lock(&u->slock);
    RamaTransparentProxyUdpSession *s = u->session;
    u->session = NULL;
    u->closed = true;
    pthread_mutex_unlock(&u->slock);
    if (s != NULL) {
        rama_transparent_proxy_udp_session_free(s);
        nectar__host_unref(&u->obj); /* the callback context */
    }
    const nectar_host_hooks_t *hk = &u->host->hooks;
    if (hk->udp_closed != NULL)
        hk->udp_closed(hk->ctx, u->flow_ctx);
    nectar_host_flow_report_t r = {
        .id = u->obj.id,
        .protocol = IPPROTO_UDP,
        .decision = NECTAR_HOST_INTERCEPT,
        .bytes_c2s = atomic_load(&u->bytes_in),
        .bytes_s2c = atomic_load(&u->bytes_out),
        .duration_ms = nectar__host_now_ms() - u->start_ms,
        .error = u->end_error,
        .reason = u->end_reason,
        .remote = u->remote_text,
        .app_signing = u->app_signing,
        .app_bundle = u->app_bundle,
        .pid = u->pid,
    };
    nectar__host_report(u->host, &r);
    nectar__host_unregister(u->host, &u->obj);
    nectar__host_unref(&u->obj);
}

static void terminate(struct nectar_host_udp *u, int err, const char *reason)
{
    if (u->done)
        return;
    u->done = true;
    u->end_error = err;
    u->end_reason = reason;
    pthread_mutex_lock(&u->slock);
    if (!u->closed && u->session != NULL)
        rama_transparent_proxy_udp_session_on_client_close(u->session);
    u->closed = true;
    pthread_mutex_unlock(&u->slock);
    pthread_mutex_lock(&u->qlock);
    struct udgram *q = u->qhead;
    u->qhead = u->qtail = NULL;
    u->qlen = 0;
    u->qclosed = true;
    pthread_mutex_unlock(&u->qlock);
    while (q != NULL) {
        struct udgram *n = q->next;
        nectar_free(q);
        q = n;
    }
    if (!u->timer_init) {
        uv_timer_init(&u->obj.loop->loop, &u->idle);
        u->idle.data = u;
        u->timer_init = true;
    }
    uv_close((uv_handle_t *)&u->idle, finalize);
}

static void start(struct nectar_host_udp *u)
{
    uv_timer_init(&u->obj.loop->loop, &u->idle);
    u->idle.data = u;
    u->timer_init = true;
    pthread_mutex_lock(&u->slock);
    if (!u->closed && u->session != NULL)
        rama_transparent_proxy_udp_session_activate(u->session);
    pthread_mutex_unlock(&u->slock);
    u->activated = true;
    uint32_t t = u->host->opts.udp_idle_timeout_ms;
    if (t != UINT32_MAX)
        uv_timer_start(&u->idle, on_idle, t, 0);
}

static void dispatch(struct core_obj *o, unsigned ev)
{
    struct nectar_host_udp *u = (struct nectar_host_udp *)o;
    if (ev & EV_TEARDOWN)
        terminate(u, NECTAR_ECANCELED, "stopped");
    if ((ev & EV_START) && !u->done)
        start(u);
    if ((ev & EV_UDP_FLUSH) && !u->done)
        flush(u);
    if ((ev & EV_SERVER_CLOSED) && !u->done)
        terminate(u, 0, "closed");
    if ((ev & EV_UDP_CLOSE) && !u->done)
        terminate(u, 0, "client-closed");
}

static void destroy(struct core_obj *o)
{
    struct nectar_host_udp *u = (struct nectar_host_udp *)o;
    while (u->qhead != NULL) {
        struct udgram *n = u->qhead->next;
        nectar_free(u->qhead);
        u->qhead = n;
    }
    pthread_mutex_destroy(&u->slock);
    pthread_mutex_destroy(&u->qlock);
    nectar_free(u->app_signing);
    nectar_free(u->app_bundle);
    nectar_free(u);
}

/* ---- front side --------------------------------------------------------- */

static struct nectar_host_udp *udp_new(nectar_host_t *h, void *flow_ctx)
{
    struct nectar_host_udp *u = nectar_calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->obj.loop = nectar__host_pick_loop(h);
    /* front + registry + session context */
    atomic_init(&u->obj.refs, 3);
    u->obj.dispatch = dispatch;
    u->obj.destroy = destroy;
    u->obj.id = nectar__host_next_id();
    u->obj.protocol = IPPROTO_UDP;
    u->host = h;
    u->flow_ctx = flow_ctx;
    u->start_ms = nectar__host_now_ms();
    atomic_init(&u->last_activity, u->start_ms);
    pthread_mutex_init(&u->slock, NULL);
    pthread_mutex_init(&u->qlock, NULL);
    return u;
}

static nectar_host_decision_t decide(nectar_host_t *h,
                                     struct nectar_host_udp *u,
                                     const nectar_host_flow_meta_t *meta)
{
    RamaTransparentProxyFlowMeta m;
    struct meta_store st;
    nectar__host_build_meta(meta, IPPROTO_UDP, &m, &st);
    memcpy(u->remote_text, st.remote_text, sizeof(u->remote_text));
    RamaTransparentProxyUdpSessionCallbacks cb = {
        u, cb_server_datagram, cb_client_demand, cb_server_closed};
    RamaTransparentProxyEngine *e = nectar__host_engine_enter(h);
    if (e == NULL || atomic_load(&h->stopping)) {
        nectar__host_engine_leave(h);
        return NECTAR_HOST_BLOCKED;
    }
    RamaTransparentProxyUdpSessionResult res =
        rama_transparent_proxy_engine_new_udp_session(e, &m, cb);
    nectar__host_engine_leave(h);
    if (res.action == RAMA_FLOW_ACTION_INTERCEPT && res.session != NULL) {
        u->session = res.session;
        return NECTAR_HOST_INTERCEPT;
    }
    if (res.session != NULL)
        rama_transparent_proxy_udp_session_free(res.session);
    if (res.action == RAMA_FLOW_ACTION_PASSTHROUGH)
        return NECTAR_HOST_PASSTHROUGH;
    if (res.action == RAMA_FLOW_ACTION_BLOCKED)
        return NECTAR_HOST_BLOCKED;
    return h->fail_open ? NECTAR_HOST_PASSTHROUGH : NECTAR_HOST_BLOCKED;
}

static void report_now(nectar_host_t *h, struct nectar_host_udp *u,
                       nectar_host_decision_t d)
{
    nectar_host_flow_report_t r = {
        .id = u->obj.id,
        .protocol = IPPROTO_UDP,
        .decision = d,
        .reason = d == NECTAR_HOST_BLOCKED ? "blocked" : "passthrough",
        .remote = u->remote_text,
        .app_signing = u->app_signing,
        .app_bundle = u->app_bundle,
        .pid = u->pid,
    };
    nectar__host_report(h, &r);
}

int nectar__host_udp_open(nectar_host_t *h, const nectar_host_flow_meta_t *meta,
                          void *flow_ctx, nectar_host_decision_t *decision,
                          nectar_host_udp_t **out)
{
    if (out == NULL || meta == NULL)
        return NECTAR_EINVAL;
    *out = NULL;
    if (h->hooks.udp_send == NULL)
        return NECTAR_EINVAL;
    struct nectar_host_udp *u = udp_new(h, flow_ctx);
    if (u == NULL)
        return NECTAR_ENOMEM;
    /* Kept for the close report; a failed copy only loses the name. */
    if (meta->signing_identifier != NULL)
        u->app_signing = nectar_strdup(meta->signing_identifier);
    if (meta->bundle_identifier != NULL)
        u->app_bundle = nectar_strdup(meta->bundle_identifier);
    u->pid = meta->pid;
    nectar_host_decision_t d = decide(h, u, meta);
    if (d == NECTAR_HOST_INTERCEPT && !nectar__host_register(h, &u->obj)) {
        rama_transparent_proxy_udp_session_free(u->session);
        u->session = NULL;
        d = NECTAR_HOST_BLOCKED;
    }
    if (decision != NULL)
        *decision = d;
    if (d != NECTAR_HOST_INTERCEPT) {
        report_now(h, u, d);
        destroy(&u->obj);
        return 0;
    }
    if (meta->remote != NULL) {
        memcpy(&u->last_peer, meta->remote, addr_len(meta->remote));
        u->has_last_peer = true;
    }
    nectar__host_post(&u->obj, EV_START);
    nectar__host_pressure_check(h);
    *out = u;
    return 0;
}

void nectar__host_udp_deliver(nectar_host_udp_t *u, const uint8_t *buf,
                              size_t len, const struct sockaddr *dest)
{
    char text[INET6_ADDRSTRLEN];
    atomic_store(&u->last_activity, nectar__host_now_ms());
    if (dest != NULL && (dest->sa_family == AF_INET ||
                         dest->sa_family == AF_INET6)) {
        pthread_mutex_lock(&u->qlock);
        memcpy(&u->last_peer, dest, addr_len(dest));
        u->has_last_peer = true;
        pthread_mutex_unlock(&u->qlock);
    }
    RamaUdpPeerView peer = addr_to_peer(dest, text, sizeof(text));
    RamaBytesView v = {buf, len};
    pthread_mutex_lock(&u->slock);
    if (!u->closed && u->session != NULL) {
        /* May run the demand callback synchronously: it only returns. */
        rama_transparent_proxy_udp_session_on_client_datagram(u->session, v,
                                                              peer);
        atomic_fetch_add(&u->bytes_in, len);
    }
    pthread_mutex_unlock(&u->slock);
}

void nectar__host_udp_close(nectar_host_udp_t *u)
{
    nectar__host_post(&u->obj, EV_UDP_CLOSE);
}

void nectar__host_udp_release(nectar_host_udp_t *u)
{
    if (u != NULL)
        nectar__host_unref(&u->obj);
}

void nectar__udp_flow_info(struct core_obj *o, nectar_host_flow_info_t *out)
{
    struct nectar_host_udp *u = (struct nectar_host_udp *)o;
    /* remote_text and start_ms are written before the flow registers and
     * never again, so the registry lock orders them for this reader. */
    out->remote = u->remote_text;
    out->bytes_c2s = atomic_load(&u->bytes_in);
    out->bytes_s2c = atomic_load(&u->bytes_out);
    out->age_ms = nectar__host_now_ms() - u->start_ms;
}
