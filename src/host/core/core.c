/*
 * core.c - the host core object: loop threads and their event inboxes,
 * the flow registry with counters, the engine reader/writer gate, flow
 * metadata building and stop (ne-host §1, §2.8).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "host/core/core_int.h"
#include "host/core/tcp_flow.h"
#include "nectar/log.h"

#define TAG "host"

static atomic_uint_fast64_t flow_ids;

uint64_t nectar__host_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t nectar__host_next_id(void)
{
    return atomic_fetch_add(&flow_ids, 1) + 1;
}

/* ---- refcount and event inbox ------------------------------------------- */

void nectar__host_ref(struct core_obj *o)
{
    atomic_fetch_add(&o->refs, 1);
}

void nectar__host_unref(struct core_obj *o)
{
    if (atomic_fetch_sub(&o->refs, 1) == 1)
        o->destroy(o);
}

static void loop_wake(struct core_loop *l)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
    ssize_t n = write(l->efd, &one, sizeof(one));
    (void)n;
}

void nectar__host_post(struct core_obj *o, unsigned events)
{
    /* If one of these bits was already pending, whoever set it made sure
     * the object is queued (see core_int.h), so skip the lock. */
    unsigned old = atomic_fetch_or(&o->events, events);
    if ((old & events) == events)
        return;
    struct core_loop *l = o->loop;
    bool wake = false;
    pthread_mutex_lock(&l->lock);
    if (!o->queued) {
        o->queued = true;
        nectar__host_ref(o);
        o->next = NULL;
        /* Only the first object into an empty inbox wakes the loop: the
         * loop drains the whole inbox on each wake-up. */
        wake = l->inbox_head == NULL;
        if (l->inbox_tail != NULL)
            l->inbox_tail->next = o;
        else
            l->inbox_head = o;
        l->inbox_tail = o;
    }
    pthread_mutex_unlock(&l->lock);
    if (wake)
        loop_wake(l);
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_wake(uv_poll_t *p, int status, int events)
{
    struct core_loop *l = p->data;
    uint64_t count;
    (void)status;
    (void)events;
    ssize_t n = read(l->efd, &count, sizeof(count));
    (void)n;
    pthread_mutex_lock(&l->lock);
    struct core_obj *list = l->inbox_head;
    l->inbox_head = l->inbox_tail = NULL;
    bool stopping = l->stopping;
    pthread_mutex_unlock(&l->lock);

    /* Bounded work per turn: each object handles what was pending when it
     * was taken; later posts queue it again for the next turn.  `queued`
     * is cleared one object at a time, under the lock, right before its
     * events are taken: while it is still set no poster touches o->next,
     * so walking the detached list is safe. */
    while (list != NULL) {
        struct core_obj *o = list;
        pthread_mutex_lock(&l->lock);
        list = o->next;
        o->queued = false;
        pthread_mutex_unlock(&l->lock);
        unsigned ev = atomic_exchange(&o->events, 0);
        if (ev != 0)
            o->dispatch(o, ev);
        nectar__host_unref(o);
    }
    if (stopping)
        uv_walk(&l->loop, close_any, NULL);
}

static void *loop_main(void *arg)
{
    struct core_loop *l = arg;
    char name[16];
    /* Named for top/perf: "host-loop/N". */
    snprintf(name, sizeof(name), "host-loop/%u", (unsigned)(l - l->host->loops));
    pthread_setname_np(pthread_self(), name);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    return NULL;
}

struct core_loop *nectar__host_pick_loop(nectar_host_t *h)
{
    unsigned i = atomic_fetch_add(&h->next_loop, 1);
    return &h->loops[i % h->nloops];
}

/* ---- registry ----------------------------------------------------------- */

bool nectar__host_register(nectar_host_t *h, struct core_obj *o)
{
    pthread_mutex_lock(&h->lock);
    if (atomic_load(&h->stopping)) {
        pthread_mutex_unlock(&h->lock);
        return false;
    }
    o->rprev = NULL;
    o->rnext = h->reg_head;
    if (h->reg_head != NULL)
        h->reg_head->rprev = o;
    h->reg_head = o;
    o->registered = true;
    if (o->protocol == IPPROTO_TCP) {
        h->stats.tcp_live++;
        h->stats.tcp_total++;
    } else {
        h->stats.udp_live++;
        h->stats.udp_total++;
    }
    pthread_mutex_unlock(&h->lock);
    return true;
}

void nectar__host_unregister(nectar_host_t *h, struct core_obj *o)
{
    pthread_mutex_lock(&h->lock);
    if (o->registered) {
        if (o->rprev != NULL)
            o->rprev->rnext = o->rnext;
        else
            h->reg_head = o->rnext;
        if (o->rnext != NULL)
            o->rnext->rprev = o->rprev;
        o->registered = false;
        if (o->protocol == IPPROTO_TCP)
            h->stats.tcp_live--;
        else
            h->stats.udp_live--;
        if (h->reg_head == NULL)
            pthread_cond_broadcast(&h->empty);
    }
    pthread_mutex_unlock(&h->lock);
}

/* ---- listing (control service) ------------------------------------------ */

/* Is e a live entry of the app table?  Compares pointers only, so a flow's
 * app pointer is never followed unless the entry still exists (the flow
 * drops its entry just before it unregisters).  Under host->lock. */
static bool app_live(nectar_host_t *h, const struct app_entry *e)
{
    for (unsigned b = 0; e != NULL && b < APP_BUCKETS; b++)
        for (struct app_entry *x = h->adm.apps[b]; x != NULL; x = x->next)
            if (x == e)
                return true;
    return false;
}

static void tcp_info(nectar_host_t *h, struct core_obj *o, char *text,
                     size_t n, nectar_host_flow_info_t *out)
{
    struct tcp_flow *f = (struct tcp_flow *)o;
    struct app_entry *app = f->app;
    out->app = app_live(h, app) ? app->name : NULL;
    /* decision, remote and start_ms are set before registration. */
    out->decision = f->decision;
    out->remote = nectar__host_addr_text(&f->remote.sa, text, n);
    out->bytes_c2s = wpump_written(&f->ewp);
    out->bytes_s2c = wpump_written(&f->cwp);
    out->age_ms = nectar__host_now_ms() - f->start_ms;
}

size_t nectar__host_flows(nectar_host_t *h, nectar_host_flow_cb cb, void *ctx)
{
    size_t count = 0;
    char text[80];
    pthread_mutex_lock(&h->lock);
    for (struct core_obj *o = h->reg_head; o != NULL; o = o->rnext) {
        nectar_host_flow_info_t info = {.id = o->id, .protocol = o->protocol};
        if (o->protocol == IPPROTO_TCP) {
            tcp_info(h, o, text, sizeof(text), &info);
        } else {
            info.decision = NECTAR_HOST_INTERCEPT; /* only those register */
            nectar__udp_flow_info(o, &info);
        }
        cb(ctx, &info);
        count++;
    }
    pthread_mutex_unlock(&h->lock);
    return count;
}

int nectar__host_app_message(nectar_host_t *h, const uint8_t *msg, size_t len,
                             RamaBytesOwned *reply)
{
    *reply = (RamaBytesOwned){0};
    RamaTransparentProxyEngine *e = nectar__host_engine_enter(h);
    if (e != NULL)
        *reply = rama_transparent_proxy_engine_handle_app_message(
            e, (RamaBytesView){msg, len});
    nectar__host_engine_leave(h);
    return e != NULL ? 0 : NECTAR_ESTATE;
}

void nectar__host_report(nectar_host_t *h, const nectar_host_flow_report_t *r)
{
    pthread_mutex_lock(&h->lock);
    if (r->decision == NECTAR_HOST_INTERCEPT)
        h->stats.intercepted++;
    else if (r->decision == NECTAR_HOST_PASSTHROUGH)
        h->stats.passthrough++;
    else
        h->stats.blocked++;
    if (r->promoted)
        h->stats.promoted++;
    if (r->reason != NULL && strcmp(r->reason, "pressure-evicted") == 0)
        h->stats.evicted++;
    h->stats.bytes_c2s += r->bytes_c2s;
    h->stats.bytes_s2c += r->bytes_s2c;
    pthread_mutex_unlock(&h->lock);
    if (h->hooks.flow_closed != NULL)
        h->hooks.flow_closed(h->hooks.ctx, r);
}

void nectar__host_stats(nectar_host_t *h, nectar_host_stats_t *out)
{
    pthread_mutex_lock(&h->lock);
    *out = h->stats;
    out->tcp_starts_in_flight = h->adm.in_flight;
    out->breaker_open = h->adm.breaker_open;
    pthread_mutex_unlock(&h->lock);
    out->pump_paused = atomic_load(&h->pump_paused);
    out->engine_paused = atomic_load(&h->engine_paused);
}

size_t nectar__host_write_pump_cap(const nectar_host_t *h)
{
    return h->wp_cap;
}

/* ---- engine gate -------------------------------------------------------- */

RamaTransparentProxyEngine *nectar__host_engine_enter(nectar_host_t *h)
{
    pthread_rwlock_rdlock(&h->engine_gate);
    return h->engine;
}

void nectar__host_engine_leave(nectar_host_t *h)
{
    pthread_rwlock_unlock(&h->engine_gate);
}

/* ---- metadata ----------------------------------------------------------- */

static void endpoint_of(const struct sockaddr *sa, char *host, size_t n,
                        RamaTransparentProxyFlowEndpoint *ep)
{
    memset(ep, 0, sizeof(*ep));
    host[0] = '\0';
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)n);
        ep->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)n);
        ep->port = ntohs(in6->sin6_port);
    } else {
        return;
    }
    ep->host_utf8 = host;
    ep->host_utf8_len = strlen(host);
}

static void set_text(const char *s, const char **p, size_t *len)
{
    if (s != NULL && s[0] != '\0') {
        *p = s;
        *len = strlen(s);
    }
}

int nectar__host_build_meta(const nectar_host_flow_meta_t *in, int protocol,
                            RamaTransparentProxyFlowMeta *out,
                            struct meta_store *st)
{
    memset(out, 0, sizeof(*out));
    out->protocol = protocol == IPPROTO_TCP ? RAMA_FLOW_PROTOCOL_TCP
                                            : RAMA_FLOW_PROTOCOL_UDP;
    endpoint_of(in->remote, st->remote, sizeof(st->remote),
                &out->remote_endpoint);
    endpoint_of(in->local, st->local, sizeof(st->local), &out->local_endpoint);
    nectar__host_addr_text(in->remote, st->remote_text,
                           sizeof(st->remote_text));
    set_text(in->signing_identifier, &out->source_app_signing_identifier_utf8,
             &out->source_app_signing_identifier_utf8_len);
    set_text(in->bundle_identifier, &out->source_app_bundle_identifier_utf8,
             &out->source_app_bundle_identifier_utf8_len);
    set_text(in->remote_hostname, &out->remote_hostname_utf8,
             &out->remote_hostname_utf8_len);
    set_text(in->interface_name, &out->local_interface_name_utf8,
             &out->local_interface_name_utf8_len);
    if (in->pid >= 0) {
        out->source_app_pid = in->pid;
        out->source_app_pid_is_set = true;
    }
    if (in->interface_index != 0) {
        out->local_interface_index = in->interface_index;
        out->local_interface_index_is_set = true;
    }
    return 0;
}

/* ---- creation ----------------------------------------------------------- */

static void resolve_options(nectar_host_t *h, const nectar_host_options_t *o)
{
    nectar_host_options_t d;
    memset(&d, 0, sizeof(d));
    if (o != NULL)
        d = *o;
    if (d.loops == 0)
        d.loops = 2;
    if (d.connect_timeout_ms == 0)
        d.connect_timeout_ms = 10000;
    if (d.linger_close_ms == 0)
        d.linger_close_ms = 5000;
    if (d.egress_eof_grace_ms == 0)
        d.egress_eof_grace_ms = 2000;
    if (d.udp_idle_timeout_ms == 0)
        d.udp_idle_timeout_ms = 60000;
    if (d.stop_wait_ms == 0)
        d.stop_wait_ms = 5000;
    if (d.maintenance_ms == 0)
        d.maintenance_ms = 60000;
    if (d.promoted_idle_ms == 0)
        d.promoted_idle_ms = 900000;
    h->opts = d;
}

/* The engine's config is authoritative for the host knobs (ne-host §2.2);
 * explicit host options win so tests can shrink them. */
static void apply_engine_config(nectar_host_t *h)
{
    size_t cap = 256 * 1024;
    uint32_t refusal = 0;
    RamaTransparentProxyConfig *cfg = rama_transparent_proxy_get_config(
        h->engine);
    if (cfg != NULL) {
        if (cfg->tcp_write_pump_max_pending_bytes > 0)
            cap = cfg->tcp_write_pump_max_pending_bytes;
        refusal = cfg->flow_refusal_action;
    }
    nectar__host_adm_configure(h, cfg);
    rama_transparent_proxy_config_free(cfg);
    if (h->opts.tcp_write_pump_max_pending_bytes > 0)
        cap = h->opts.tcp_write_pump_max_pending_bytes;
    h->wp_cap = cap;
    if (h->opts.flow_refusal_action > 0)
        h->fail_open = h->opts.flow_refusal_action == 1;
    else
        h->fail_open = refusal == 1;
    nectar_log(NECTAR_LOG_INFO, TAG,
               "write pump cap=%zu refusal=%s loops=%u", cap,
               h->fail_open ? "passthrough (fail open)"
                            : "block (fail closed)",
               h->opts.loops);
}

/* Loops and their handles are made on this thread before any loop thread
 * runs (libuv handles must not be created on a loop another thread runs). */
static int start_loops(nectar_host_t *h, nectar_error_t *err)
{
    for (unsigned i = 0; i < h->nloops; i++) {
        struct core_loop *l = &h->loops[i];
        l->host = h;
        pthread_mutex_init(&l->lock, NULL);
        l->efd = -1;
        int rc = uv_loop_init(&l->loop);
        if (rc != 0)
            return nectar_error_set(err, rc, "host loop: %s", uv_strerror(rc));
        l->inited = true;
        l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (l->efd < 0)
            return nectar_error_set(err, -errno, "host loop: eventfd: %s",
                                    strerror(errno));
        rc = uv_poll_init(&l->loop, &l->wake, l->efd);
        if (rc == 0)
            rc = uv_poll_start(&l->wake, UV_READABLE, on_wake);
        if (rc != 0)
            return nectar_error_set(err, rc, "host loop: %s", uv_strerror(rc));
        l->wake.data = l;
    }
    int rc = nectar__host_maint_init(h);
    if (rc != 0)
        return nectar_error_set(err, rc, "host maintenance: %s",
                                uv_strerror(rc));
    for (unsigned i = 0; i < h->nloops; i++) {
        struct core_loop *l = &h->loops[i];
        rc = pthread_create(&l->thread, NULL, loop_main, l);
        if (rc != 0)
            return nectar_error_set(err, -rc, "host loop thread: %s",
                                    strerror(rc));
        l->started = true;
    }
    return 0;
}

static void stop_loops(nectar_host_t *h)
{
    pthread_mutex_lock(&h->lock);
    h->maint_started = false; /* no more scan wake-ups */
    pthread_mutex_unlock(&h->lock);
    for (unsigned i = 0; i < h->nloops; i++) {
        struct core_loop *l = &h->loops[i];
        if (!l->started) {
            if (l->inited) {
                /* Never ran: close its handles here. */
                uv_walk(&l->loop, close_any, NULL);
                uv_run(&l->loop, UV_RUN_DEFAULT);
                uv_loop_close(&l->loop);
                l->inited = false;
                if (l->efd >= 0)
                    close(l->efd);
                l->efd = -1;
            }
            continue;
        }
        pthread_mutex_lock(&l->lock);
        l->stopping = true;
        pthread_mutex_unlock(&l->lock);
        loop_wake(l);
        pthread_join(l->thread, NULL);
        l->started = false;
        l->inited = false;
        uv_loop_close(&l->loop);
        close(l->efd);
        l->efd = -1;
    }
}

/* Socket writes go through libuv's writev, which raises SIGPIPE when a
 * peer is gone; a proxy must survive that.  Only a default disposition is
 * changed: a process that installed its own handler keeps it. */
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO))
        signal(SIGPIPE, SIG_IGN);
}

int nectar__host_new(RamaTransparentProxyEngine *engine,
                     const nectar_host_hooks_t *hooks,
                     const nectar_host_options_t *opts, nectar_host_t **out,
                     nectar_error_t *err)
{
    if (engine == NULL || hooks == NULL || out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "host: missing argument");
    nectar_host_t *h = nectar_calloc(1, sizeof(*h));
    if (h == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "host: out of memory");
    ignore_sigpipe();
    h->engine = engine;
    h->hooks = *hooks;
    resolve_options(h, opts);
    pthread_rwlock_init(&h->engine_gate, NULL);
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_init(&h->stop_lock, NULL);
    pthread_cond_init(&h->empty, NULL);
    apply_engine_config(h);
    h->nloops = h->opts.loops;
    h->loops = nectar_calloc(h->nloops, sizeof(*h->loops));
    int rc = h->loops == NULL
                 ? nectar_error_set(err, NECTAR_ENOMEM, "host: out of memory")
                 : start_loops(h, err);
    if (rc != 0) {
        stop_loops(h);
        h->engine = NULL; /* the caller keeps it */
        h->stopped = true;
        nectar__host_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

/* Wait until every flow left the registry or the deadline passed. */
static bool wait_empty(nectar_host_t *h, uint32_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->lock);
    int rc = 0;
    while (h->reg_head != NULL && rc == 0) {
        /* The cond uses the realtime clock by default; convert. */
        struct timespec now_m, now_r;
        clock_gettime(CLOCK_MONOTONIC, &now_m);
        clock_gettime(CLOCK_REALTIME, &now_r);
        long long left_ns = (long long)(until.tv_sec - now_m.tv_sec) *
                                1000000000LL +
                            (until.tv_nsec - now_m.tv_nsec);
        if (left_ns <= 0)
            break;
        long long abs_ns = (long long)now_r.tv_sec * 1000000000LL +
                           now_r.tv_nsec + left_ns;
        struct timespec abs = {.tv_sec = abs_ns / 1000000000LL,
                               .tv_nsec = abs_ns % 1000000000LL};
        rc = pthread_cond_timedwait(&h->empty, &h->lock, &abs);
    }
    bool empty = h->reg_head == NULL;
    pthread_mutex_unlock(&h->lock);
    return empty;
}

void nectar__host_stop(nectar_host_t *h, int32_t reason)
{
    pthread_mutex_lock(&h->stop_lock);
    if (h->stopped) {
        pthread_mutex_unlock(&h->stop_lock);
        return;
    }
    atomic_store(&h->stopping, true);
    /* Cancel every live session before the engine stops (as the Swift
     * host does), so no close callback races the stop. */
    pthread_mutex_lock(&h->lock);
    for (struct core_obj *o = h->reg_head; o != NULL; o = o->rnext)
        nectar__host_post(o, EV_TEARDOWN);
    pthread_mutex_unlock(&h->lock);
    if (!wait_empty(h, h->opts.stop_wait_ms))
        nectar_log(NECTAR_LOG_WARN, TAG,
                   "stop: flows still live after %u ms", h->opts.stop_wait_ms);
    pthread_rwlock_wrlock(&h->engine_gate);
    RamaTransparentProxyEngine *e = h->engine;
    h->engine = NULL;
    pthread_rwlock_unlock(&h->engine_gate);
    if (e != NULL)
        rama_transparent_proxy_engine_stop(e, reason);
    stop_loops(h);
    h->stopped = true;
    pthread_mutex_unlock(&h->stop_lock);
}

void nectar__host_free(nectar_host_t *h)
{
    if (h == NULL)
        return;
    nectar__host_stop(h, 0);
    if (h->loops != NULL) {
        for (unsigned i = 0; i < h->nloops; i++)
            pthread_mutex_destroy(&h->loops[i].lock);
    }
    nectar_free(h->loops);
    nectar__host_app_clear(h);
    pthread_rwlock_destroy(&h->engine_gate);
    pthread_mutex_destroy(&h->lock);
    pthread_mutex_destroy(&h->stop_lock);
    pthread_cond_destroy(&h->empty);
    nectar_free(h);
}

int nectar__host_tcp_accept(nectar_host_t *h, int client_fd,
                            const nectar_host_flow_meta_t *meta,
                            nectar_host_decision_t *decision)
{
    return nectar__tcp_flow_start(h, client_fd, meta, decision);
}
