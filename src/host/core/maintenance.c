/*
 * maintenance.c - the host's process-wide policies: TCP start admission
 * with the latency breaker and connect-timeout clamps (ne-host §4.2), the
 * flow-pressure reaper (§5.5), the periodic maintenance tick with its
 * telemetry line and watchdogs (§5.1-§5.4), and system sleep/wake (§2.6,
 * §2.7).  All state is guarded by nectar_host.lock (the Swift stateQueue);
 * the tick and the reaper scan run on loops[0] and only post kick events to
 * the flows' own loops, which re-check before acting.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "host/core/core_int.h"
#include "host/core/tcp_flow.h"
#include "nectar/log.h"

#define TAG "host"

/* ---- knobs -------------------------------------------------------------- */

void nectar__host_adm_configure(nectar_host_t *h,
                                const RamaTransparentProxyConfig *c)
{
    struct admission *a = &h->adm;
    /* Spec defaults (ne-host §9) when the engine gives no config. */
    a->hard_cap = c ? c->tcp_start_in_flight_hard_cap : 128;
    a->soft_cap = c ? c->tcp_start_in_flight_soft_cap : 64;
    a->open_p95_ms = c ? c->tcp_start_latency_breaker_p95_ms : 1500;
    a->close_p95_ms = c ? c->tcp_start_latency_breaker_close_p95_ms : 500;
    a->pressure_clamp_ms = c ? c->tcp_pressure_connect_timeout_ms : 5000;
    a->breaker_clamp_ms = c ? c->tcp_breaker_connect_timeout_ms : 3000;
    a->soft_cap_flows = c ? c->flow_pressure_soft_cap : 450;
    a->low_water = c ? c->flow_pressure_low_water : 350;
    a->idle_floor_ms = c ? c->flow_pressure_idle_floor_ms : 120000;
    nectar_log(NECTAR_LOG_INFO, TAG,
               "tcp overload: hardCap=%u softCap=%u breakerOpenP95=%u "
               "breakerCloseP95=%u pressureConnectMs=%u breakerConnectMs=%u",
               a->hard_cap, a->soft_cap, a->open_p95_ms, a->close_p95_ms,
               a->pressure_clamp_ms, a->breaker_clamp_ms);
    nectar_log(NECTAR_LOG_INFO, TAG,
               "flow pressure: softCap=%u lowWater=%u idleFloorMs=%u",
               a->soft_cap_flows, a->low_water, a->idle_floor_ms);
}

/* ---- admission ---------------------------------------------------------- */

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

/* Percentile of the window: sorted, index ceil((n-1)p).  Lock held. */
static uint32_t percentile(const struct admission *a, double p)
{
    uint32_t tmp[ADM_WINDOW];
    unsigned n = a->wcount;
    if (n == 0)
        return 0;
    memcpy(tmp, a->window, n * sizeof(uint32_t));
    qsort(tmp, n, sizeof(uint32_t), cmp_u32);
    double idx = (double)(n - 1) * p;
    unsigned i = (unsigned)idx;
    if ((double)i < idx)
        i++;
    return tmp[i < n ? i : n - 1];
}

bool nectar__host_admit(nectar_host_t *h, char *why, size_t n)
{
    struct admission *a = &h->adm;
    bool ok = true;
    pthread_mutex_lock(&h->lock);
    if (a->hard_cap > 0 && a->in_flight >= a->hard_cap) {
        snprintf(why, n, "hard start cap reached inFlight=%u hardCap=%u",
                 a->in_flight, a->hard_cap);
        ok = false;
    } else if (a->breaker_open && a->soft_cap > 0 &&
               a->in_flight >= a->soft_cap) {
        snprintf(why, n, "latency breaker open inFlight=%u softCap=%u",
                 a->in_flight, a->soft_cap);
        ok = false;
    }
    if (ok) {
        a->in_flight++;
        a->admissions++;
    } else {
        a->sheds++;
        h->stats.admission_rejected++;
    }
    pthread_mutex_unlock(&h->lock);
    return ok;
}

/* Lock held. */
static void breaker_update(struct admission *a)
{
    if (a->soft_cap == 0 || a->open_p95_ms == 0)
        return;
    /* Only a transition needs the percentile (a sort of the window):
     * skip it in the common case of a closed breaker under the soft cap. */
    if (!a->breaker_open && a->in_flight < a->soft_cap)
        return;
    uint32_t p95 = percentile(a, 0.95);
    if (!a->breaker_open && a->in_flight >= a->soft_cap &&
        p95 >= a->open_p95_ms) {
        a->breaker_open = true;
        nectar_log(NECTAR_LOG_WARN, TAG,
                   "tcp overload breaker open: p95StartMs=%u inFlight=%u "
                   "softCap=%u",
                   p95, a->in_flight, a->soft_cap);
    } else if (a->breaker_open && a->in_flight < a->soft_cap &&
               p95 <= a->close_p95_ms) {
        a->breaker_open = false;
        nectar_log(NECTAR_LOG_INFO, TAG,
                   "tcp overload breaker closed: p95StartMs=%u inFlight=%u",
                   p95, a->in_flight);
    }
}

void nectar__host_admit_finish(nectar_host_t *h, uint64_t start_ms,
                               enum adm_outcome outcome)
{
    struct admission *a = &h->adm;
    uint64_t lat = nectar__host_now_ms() - start_ms;
    pthread_mutex_lock(&h->lock);
    if (a->in_flight > 0)
        a->in_flight--;
    a->window[a->wpos] = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
    a->wpos = (a->wpos + 1) % ADM_WINDOW;
    if (a->wcount < ADM_WINDOW)
        a->wcount++;
    if (outcome == ADM_TIMEOUT)
        a->timeouts++;
    breaker_update(a);
    pthread_mutex_unlock(&h->lock);
}

uint32_t nectar__host_connect_timeout(nectar_host_t *h, uint32_t base)
{
    struct admission *a = &h->adm;
    uint32_t t = base;
    pthread_mutex_lock(&h->lock);
    /* Never raises an already short timeout. */
    if (a->breaker_open && a->breaker_clamp_ms > 0) {
        if (a->breaker_clamp_ms < t)
            t = a->breaker_clamp_ms;
    } else if (a->soft_cap > 0 && a->in_flight >= a->soft_cap &&
               a->pressure_clamp_ms > 0 && a->pressure_clamp_ms < t) {
        t = a->pressure_clamp_ms;
    }
    pthread_mutex_unlock(&h->lock);
    return t;
}

/* ---- the flow-pressure reaper ------------------------------------------- */

void nectar__host_pressure_check(nectar_host_t *h)
{
    bool wake = false;
    pthread_mutex_lock(&h->lock);
    uint64_t occ = h->stats.tcp_live + h->stats.udp_live;
    if (occ > h->adm.peak)
        h->adm.peak = occ;
    if (h->adm.soft_cap_flows > 0 && occ >= h->adm.soft_cap_flows &&
        !h->adm.scan_pending && h->maint_started) {
        h->adm.scan_pending = true; /* coalesce a burst into one scan */
        wake = true;
    }
    pthread_mutex_unlock(&h->lock);
    if (wake)
        uv_async_send(&h->maint_wake);
}

static struct tcp_flow *as_tcp(struct core_obj *o)
{
    return o->protocol == IPPROTO_TCP ? (struct tcp_flow *)o : NULL;
}

static uint64_t idle_ms(struct tcp_flow *f, uint64_t now)
{
    uint64_t last = atomic_load(&f->last_activity);
    return now > last ? now - last : 0;
}

/* Closing, drain not finished and quiet for longer than the linger. */
static bool drain_wedged(struct tcp_flow *f, unsigned pub, uint64_t now)
{
    return (pub & PS_CLOSING) && (pub & PS_DRAIN) &&
           idle_ms(f, now) > f->linger_ms;
}

struct victim {
    struct tcp_flow *f;
    uint64_t last;
};

static int cmp_victim(const void *x, const void *y)
{
    const struct victim *a = x, *b = y;
    return a->last < b->last ? -1 : a->last > b->last;
}

static void pressure_scan(nectar_host_t *h)
{
    struct admission *a = &h->adm;
    uint64_t now = nectar__host_now_ms();
    pthread_mutex_lock(&h->lock);
    a->scan_pending = false;
    uint64_t occ = h->stats.tcp_live + h->stats.udp_live;
    if (a->soft_cap_flows == 0 || occ < a->soft_cap_flows) {
        a->no_headroom_logged = false;
        pthread_mutex_unlock(&h->lock);
        return;
    }
    uint64_t low = a->low_water > 0 ? a->low_water : 1;
    uint64_t want = occ > low ? occ - low : 0;
    struct victim *v = nectar_calloc(h->stats.tcp_live + 1, sizeof(*v));
    size_t nv = 0;
    for (struct core_obj *o = h->reg_head; o != NULL && v != NULL;
         o = o->rnext) {
        struct tcp_flow *f = as_tcp(o);
        if (f == NULL || nv > h->stats.tcp_live)
            continue;
        unsigned pub = atomic_load(&f->pub);
        if (!(pub & PS_READY) || (pub & PS_DONE))
            continue;
        if ((pub & PS_CLOSING) && !drain_wedged(f, pub, now))
            continue; /* gracefully closing: never evicted */
        if (idle_ms(f, now) <= a->idle_floor_ms)
            continue;
        v[nv].f = f;
        v[nv].last = atomic_load(&f->last_activity);
        nv++;
    }
    if (nv == 0 && want > 0 && !a->no_headroom_logged) {
        a->no_headroom_logged = true;
        nectar_log(NECTAR_LOG_WARN, TAG,
                   "flow pressure: over soft cap (%llu >= %u), nothing idle "
                   "enough; admitting without reap",
                   (unsigned long long)occ, a->soft_cap_flows);
    }
    qsort(v, nv, sizeof(*v), cmp_victim); /* oldest idle first */
    for (size_t i = 0; i < nv && i < want; i++)
        nectar__host_post(&v[i].f->obj, EV_EVICT);
    pthread_mutex_unlock(&h->lock);
    nectar_free(v);
}

static void on_maint_wake(uv_async_t *w)
{
    pressure_scan(w->data);
}

/* ---- live flows per app --------------------------------------------------- */

static unsigned app_hash(const char *name)
{
    uint32_t h = 2166136261u;
    for (const char *p = name; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % APP_BUCKETS;
}

struct app_entry *nectar__host_app_hold(nectar_host_t *h,
                                        const nectar_host_flow_meta_t *meta)
{
    char pid[24];
    const char *name = meta->bundle_identifier;
    if (name == NULL || name[0] == '\0')
        name = meta->signing_identifier;
    if (name == NULL || name[0] == '\0') {
        if (meta->pid >= 0)
            snprintf(pid, sizeof(pid), "pid:%d", (int)meta->pid);
        else
            snprintf(pid, sizeof(pid), "pid:unknown");
        name = pid;
    }
    unsigned b = app_hash(name);
    pthread_mutex_lock(&h->lock);
    struct app_entry *e = h->adm.apps[b];
    while (e != NULL && strcmp(e->name, name) != 0)
        e = e->next;
    if (e == NULL) {
        size_t n = strlen(name) + 1;
        e = nectar_malloc(sizeof(*e) + n);
        if (e != NULL) {
            memcpy(e->name, name, n);
            e->live = 0;
            e->next = h->adm.apps[b];
            h->adm.apps[b] = e;
        }
    }
    if (e != NULL)
        e->live++;
    pthread_mutex_unlock(&h->lock);
    return e;
}

void nectar__host_app_drop(nectar_host_t *h, struct app_entry *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    if (--e->live == 0) {
        struct app_entry **pp = &h->adm.apps[app_hash(e->name)];
        while (*pp != e)
            pp = &(*pp)->next;
        *pp = e->next;
        nectar_free(e);
    }
    pthread_mutex_unlock(&h->lock);
}

void nectar__host_app_clear(nectar_host_t *h)
{
    for (unsigned i = 0; i < APP_BUCKETS; i++) {
        while (h->adm.apps[i] != NULL) {
            struct app_entry *e = h->adm.apps[i];
            h->adm.apps[i] = e->next;
            nectar_free(e);
        }
    }
}

/* Does a rank before b (more live flows, ties by name)? */
static bool app_before(const struct app_entry *a, const struct app_entry *b)
{
    return a->live > b->live ||
           (a->live == b->live && strcmp(a->name, b->name) < 0);
}

/* "a=n,b=m,c=k": the top 3 apps by live TCP flows.  Lock held. */
static void top_apps(nectar_host_t *h, char *buf, size_t n)
{
    const struct app_entry *top[3] = {NULL, NULL, NULL};
    for (unsigned i = 0; i < APP_BUCKETS; i++) {
        for (const struct app_entry *e = h->adm.apps[i]; e; e = e->next) {
            for (int k = 0; k < 3; k++) {
                if (top[k] == NULL || app_before(e, top[k])) {
                    for (int j = 2; j > k; j--)
                        top[j] = top[j - 1];
                    top[k] = e;
                    break;
                }
            }
        }
    }
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < 3 && top[k] != NULL && used < n; k++) {
        int w = snprintf(buf + used, n - used, "%s%s=%llu", k ? "," : "",
                         top[k]->name, (unsigned long long)top[k]->live);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* ---- the maintenance tick ----------------------------------------------- */

static void telemetry(nectar_host_t *h, double secs)
{
    struct admission *a = &h->adm;
    char apps[256];
    top_apps(h, apps, sizeof(apps));
    nectar_log(NECTAR_LOG_INFO, TAG,
               "tproxy live-flow counts tcp=%llu udp=%llu total=%llu "
               "peak=%llu softCap=%u tcpStartsInFlight=%u "
               "admissionRate=%.2f/s timeoutRate=%.2f/s shedRate=%.2f/s "
               "startLatencyMs[p50=%u,p95=%u,p99=%u] breaker=%s topApps=%s",
               (unsigned long long)h->stats.tcp_live,
               (unsigned long long)h->stats.udp_live,
               (unsigned long long)(h->stats.tcp_live + h->stats.udp_live),
               (unsigned long long)a->peak, a->soft_cap_flows, a->in_flight,
               (double)a->admissions / secs, (double)a->timeouts / secs,
               (double)a->sheds / secs, percentile(a, 0.5),
               percentile(a, 0.95), percentile(a, 0.99),
               a->breaker_open ? "open" : "closed", apps);
    a->admissions = a->timeouts = a->sheds = 0;
}

static void on_tick(uv_timer_t *t)
{
    nectar_host_t *h = t->data;
    uint64_t now = nectar__host_now_ms();
    uint32_t idle_limit = h->opts.promoted_idle_ms;
    pthread_mutex_lock(&h->lock);
    uint64_t tick = ++h->adm.tick;
    telemetry(h, (double)h->opts.maintenance_ms / 1000.0);
    for (struct core_obj *o = h->reg_head; o != NULL; o = o->rnext) {
        struct tcp_flow *f = as_tcp(o);
        if (f == NULL)
            continue;
        unsigned pub = atomic_load(&f->pub);
        if (pub & PS_DONE)
            continue;
        if (!(pub & PS_READY)) {
            /* Stuck before ready on two consecutive ticks: the flow's own
             * connect timer may be starved; kick it from here. */
            if (f->stale_tick == tick - 1)
                nectar__host_post(o, EV_KICK_STALE);
            f->stale_tick = tick;
            continue;
        }
        bool wedged = drain_wedged(f, pub, now);
        if (wedged) {
            if (f->wedge_tick == tick - 1)
                nectar__host_post(o, EV_KICK_WEDGED);
            f->wedge_tick = tick;
        } else if ((pub & PS_PROMOTED) && idle_limit != UINT32_MAX &&
                   idle_ms(f, now) > idle_limit) {
            /* The long deadline is its own hysteresis: first tick. */
            nectar__host_post(o, EV_KICK_IDLE);
        }
    }
    pthread_mutex_unlock(&h->lock);
}

int nectar__host_maint_init(nectar_host_t *h)
{
    uv_loop_t *loop = &h->loops[0].loop;
    int rc = uv_timer_init(loop, &h->maint_timer);
    if (rc == 0)
        rc = uv_async_init(loop, &h->maint_wake, on_maint_wake);
    if (rc != 0)
        return rc;
    h->maint_timer.data = h;
    h->maint_wake.data = h;
    uint64_t ms = h->opts.maintenance_ms;
    uv_timer_start(&h->maint_timer, on_tick, ms, ms);
    pthread_mutex_lock(&h->lock);
    h->maint_started = true;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

/* ---- sleep / wake ------------------------------------------------------- */

void nectar__host_system_sleep(nectar_host_t *h)
{
    pthread_mutex_lock(&h->lock);
    struct admission *a = &h->adm;
    /* Overload state resets: a sleep would poison the latency window. */
    a->wcount = a->wpos = 0;
    a->breaker_open = false;
    a->admissions = a->timeouts = a->sheds = 0;
    pthread_mutex_unlock(&h->lock);
    RamaTransparentProxyEngine *e = nectar__host_engine_enter(h);
    if (e != NULL)
        rama_transparent_proxy_engine_notify_system_sleep(e);
    nectar__host_engine_leave(h);
    nectar_log(NECTAR_LOG_INFO, TAG, "system sleep");
}

void nectar__host_system_wake(nectar_host_t *h)
{
    RamaTransparentProxyEngine *e = nectar__host_engine_enter(h);
    if (e != NULL)
        rama_transparent_proxy_engine_notify_system_wake(e);
    nectar__host_engine_leave(h);
    pthread_mutex_lock(&h->lock);
    for (struct core_obj *o = h->reg_head; o != NULL; o = o->rnext) {
        struct tcp_flow *f = as_tcp(o);
        if (f != NULL && !(atomic_load(&f->pub) & PS_READY))
            nectar__host_post(o, EV_KICK_STALE);
    }
    pthread_mutex_unlock(&h->lock);
    nectar_log(NECTAR_LOG_INFO, TAG, "system wake");
}
