/*
 * decision.c - flow decisions and app-message replies, completed by the
 * handler from any thread and awaited with a deadline on the host's
 * calling thread (spec ne-engine §2.6, §1.3.8).
 *
 * Both objects have two references: the waiting host thread and the
 * handler's single completion.  Whoever drops the last one frees it, so a
 * completion that arrives after the deadline is safe: it finds `expired`,
 * destroys the service it carries (decision) or drops the bytes (reply),
 * and frees the object.
 *
 *   states:  WAITING --complete--> DONE          (caller reads the outcome)
 *            WAITING --deadline--> EXPIRED --complete--> (late: discarded)
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

struct nectar_decision {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int refs;
    bool done;
    bool expired;
    nectar_protocol_t proto;
    struct ne_meta *meta; /* kept alive for a late completer */
    struct ne_verdict v;
};

struct nectar_reply {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int refs;
    bool done;
    bool expired;
    uint8_t *buf;
    size_t len;
};

/* Deadlines use the monotonic clock where condition variables support
 * clock selection (a feature test, not an OS test), else the wall clock. */
#if defined(_POSIX_CLOCK_SELECTION) && _POSIX_CLOCK_SELECTION > 0
#define NE_COND_CLOCK CLOCK_MONOTONIC
#else
#define NE_COND_CLOCK CLOCK_REALTIME
#endif

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;

    pthread_condattr_init(&a);
#if defined(_POSIX_CLOCK_SELECTION) && _POSIX_CLOCK_SELECTION > 0
    pthread_condattr_setclock(&a, NE_COND_CLOCK);
#endif
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static void deadline(struct timespec *ts, uint32_t ms)
{
    clock_gettime(NE_COND_CLOCK, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* ---- decisions ----------------------------------------------------------- */

static void decision_unref(struct nectar_decision *d)
{
    if (atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    nectar__meta_unref(d->meta);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    nectar_free(d);
}

static void destroy_service(const struct ne_verdict *v)
{
    if (v->tcp_vt != NULL && v->tcp_vt->destroy != NULL)
        v->tcp_vt->destroy(v->svc);
    if (v->udp_vt != NULL && v->udp_vt->destroy != NULL)
        v->udp_vt->destroy(v->svc);
}

static void complete(nectar_decision_t *d, const struct ne_verdict *v)
{
    bool discard = false;

    if (d == NULL) {
        destroy_service(v);
        return;
    }
    pthread_mutex_lock(&d->mu);
    if (d->done) {
        nectar_log(NECTAR_LOG_ERROR, NE_TAG,
                   "decision completed twice; ignoring the second");
        pthread_mutex_unlock(&d->mu);
        destroy_service(v);
        return; /* the first completion already dropped its reference */
    }
    d->done = true;
    if (d->expired)
        discard = true;
    else
        d->v = *v;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (discard)
        destroy_service(v);
    decision_unref(d);
}

NECTAR_API void nectar_decision_passthrough(nectar_decision_t *d)
{
    struct ne_verdict v = {.action = NECTAR_ACTION_PASSTHROUGH};
    complete(d, &v);
}

NECTAR_API void nectar_decision_block(nectar_decision_t *d)
{
    struct ne_verdict v = {.action = NECTAR_ACTION_BLOCK};
    complete(d, &v);
}

NECTAR_API void nectar_decision_intercept_tcp(nectar_decision_t *d,
                                              const nectar_tcp_service_t *vt,
                                              void *svc)
{
    struct ne_verdict v = {.action = NECTAR_ACTION_INTERCEPT};

    if (vt == NULL || vt->start == NULL || vt->destroy == NULL) {
        nectar_log(NECTAR_LOG_ERROR, NE_TAG,
                   "intercept with an incomplete TCP service; blocking");
        v.action = NECTAR_ACTION_BLOCK;
        if (vt != NULL && vt->destroy != NULL)
            vt->destroy(svc);
    } else {
        v.tcp_vt = vt;
        v.svc = svc;
    }
    complete(d, &v);
}

NECTAR_API void nectar_decision_intercept_udp(nectar_decision_t *d,
                                              const nectar_udp_service_t *vt,
                                              void *svc)
{
    struct ne_verdict v = {.action = NECTAR_ACTION_INTERCEPT};

    if (vt == NULL || vt->start == NULL || vt->destroy == NULL) {
        nectar_log(NECTAR_LOG_ERROR, NE_TAG,
                   "intercept with an incomplete UDP service; blocking");
        v.action = NECTAR_ACTION_BLOCK;
        if (vt != NULL && vt->destroy != NULL)
            vt->destroy(svc);
    } else {
        v.udp_vt = vt;
        v.svc = svc;
    }
    complete(d, &v);
}

void nectar__decide(struct RamaTransparentProxyEngine *e, struct ne_meta *meta,
                    struct ne_verdict *out)
{
    const nectar_flow_meta_t *m = &meta->m;
    bool tcp = m->protocol == NECTAR_PROTO_TCP;
    void (*decide)(void *, const nectar_flow_meta_t *, nectar_decision_t *) =
        tcp ? e->vt->decide_tcp : e->vt->decide_udp;
    nectar_decision_t *d;
    struct timespec dl;

    memset(out, 0, sizeof(*out));
    if (decide == NULL) {
        out->action = NECTAR_ACTION_PASSTHROUGH;
        return;
    }
    d = nectar_calloc(1, sizeof(*d));
    if (d == NULL) {
        out->action = e->opts.deadline_action;
        return;
    }
    pthread_mutex_init(&d->mu, NULL);
    cond_init_mono(&d->cv);
    atomic_init(&d->refs, 2);
    d->proto = m->protocol;
    nectar__meta_ref(meta);
    d->meta = meta;

    /* The metadata is shared with the decision for as long as the handler
     * might still read it: a late completer may look at it. */
    /* The deadline covers the handler's synchronous part too. */
    deadline(&dl, e->opts.decision_deadline_ms);
    decide(e->state, m, d);

    pthread_mutex_lock(&d->mu);
    while (!d->done) {
        if (pthread_cond_timedwait(&d->cv, &d->mu, &dl) == ETIMEDOUT &&
            !d->done)
            break;
    }
    if (d->done) {
        *out = d->v;
    } else {
        d->expired = true;
        out->action = e->opts.deadline_action;
        out->timed_out = true;
    }
    pthread_mutex_unlock(&d->mu);
    decision_unref(d);

    if (out->timed_out)
        nectar_log(NECTAR_LOG_WARN, NE_TAG,
                   "flow %llu: handler exceeded decision deadline (%u ms); "
                   "reason=handler_deadline",
                   (unsigned long long)m->flow_id,
                   e->opts.decision_deadline_ms);
    /* A service of the wrong protocol is a handler bug: fail safe. */
    if (out->action == NECTAR_ACTION_INTERCEPT &&
        ((tcp && out->tcp_vt == NULL) || (!tcp && out->udp_vt == NULL))) {
        nectar_log(NECTAR_LOG_ERROR, NE_TAG,
                   "flow %llu: intercept with a service of the wrong "
                   "protocol; applying the fail-safe action",
                   (unsigned long long)m->flow_id);
        destroy_service(out);
        memset(out, 0, sizeof(*out));
        out->action = e->opts.deadline_action;
    }
}

/* ---- app-message replies ------------------------------------------------- */

static void reply_unref(struct nectar_reply *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    nectar_free(r->buf);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    nectar_free(r);
}

NECTAR_API void nectar_reply_send(nectar_reply_t *r, const uint8_t *buf,
                                  size_t len)
{
    uint8_t *copy = NULL;

    if (r == NULL)
        return;
    if (buf != NULL && len > 0) {
        copy = nectar_memdup(buf, len);
        if (copy == NULL)
            len = 0;
    } else {
        len = 0;
    }
    pthread_mutex_lock(&r->mu);
    if (r->done) {
        pthread_mutex_unlock(&r->mu);
        nectar_free(copy);
        nectar_log(NECTAR_LOG_ERROR, NE_TAG, "reply sent twice; ignored");
        return;
    }
    r->done = true;
    if (!r->expired) {
        r->buf = copy;
        r->len = len;
        copy = NULL;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    nectar_free(copy);
    reply_unref(r);
}

RamaBytesOwned nectar__app_message(struct RamaTransparentProxyEngine *e,
                                   const uint8_t *msg, size_t len)
{
    RamaBytesOwned out = {NULL, 0, 0};
    nectar_reply_t *r;
    struct timespec dl;
    uint32_t ms = e->opts.app_message_deadline_ms != 0
                      ? e->opts.app_message_deadline_ms
                      : e->opts.decision_deadline_ms;

    if (e->vt->app_message == NULL)
        return out;
    r = nectar_calloc(1, sizeof(*r));
    if (r == NULL)
        return out;
    pthread_mutex_init(&r->mu, NULL);
    cond_init_mono(&r->cv);
    atomic_init(&r->refs, 2);

    deadline(&dl, ms);
    e->vt->app_message(e->state, msg, len, r);

    pthread_mutex_lock(&r->mu);
    while (!r->done) {
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT &&
            !r->done)
            break;
    }
    if (r->done && r->len > 0) {
        out.ptr = r->buf;
        out.len = r->len;
        out.cap = r->len;
        r->buf = NULL;
        r->len = 0;
    } else if (!r->done) {
        r->expired = true;
        nectar_log(NECTAR_LOG_WARN, NE_TAG,
                   "app message handler exceeded deadline (%u ms); "
                   "dropping message of %zu bytes",
                   ms, len);
    }
    pthread_mutex_unlock(&r->mu);
    reply_unref(r);
    return out;
}
