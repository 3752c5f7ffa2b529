/*
 * promote.c - the promote (cutover) protocol, loop side (spec ne-engine
 * §4): the service asks to hand the flow back to the host, the engine
 * dispatches on_promote_request once under the gate, the host confirms,
 * and every caller of nectar_tcp_flow_promote gets the one cached result.
 *
 *   NONE --promote()--> REQUESTED --dispatch under gate--> WAIT_ACK
 *                          |  gate closed: ECANCELED           |
 *                          |  nothing registered: ENOTSUP      | confirm OK: 0
 *                          v                                   | (both senders
 *                       RESOLVED <-----------------------------+  dropped)
 *                          ^          confirm FAILED: EIO
 *                          +--------- cancel: ECANCELED (any unresolved state)
 *
 * After OK the queues are closed, so the service reads the queued tail,
 * then EOF on both halves; a relay writes that tail through the still
 * registered write callbacks and shuts down, which fires the two close
 * callbacks that tell the host the engine's tail is complete (§4.3.7).
 */
#include <assert.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

static void resolve(struct nectar_tcp_flow *f, int result)
{
    pthread_mutex_lock(&f->mu);
    if (f->promote != PROMOTE_RESOLVED) {
        f->promote = PROMOTE_RESOLVED;
        f->promote_result = result;
    }
    pthread_mutex_unlock(&f->mu);
}

static void dispatch(struct nectar_tcp_flow *f)
{
    bool fire = false;

    if (!ne_gate_enter(&f->gate)) {
        resolve(f, NECTAR_ECANCELED);
    } else if (f->pcbs.on_promote_request == NULL) {
        resolve(f, NECTAR_ENOTSUP);
    } else {
        pthread_mutex_lock(&f->mu);
        if (f->promote == PROMOTE_REQUESTED) {
            f->promote = PROMOTE_WAIT_ACK;
            fire = true;
        }
        /* At most one dispatch per session: only REQUESTED leads here. */
        assert(fire || f->promote == PROMOTE_RESOLVED);
        pthread_mutex_unlock(&f->mu);
        /* Under the gate: cancel and re-registration wait for us, and the
         * host may confirm synchronously from inside (mu is free). */
        if (fire)
            f->pcbs.on_promote_request(f->pcbs.context);
    }
    ne_gate_leave(&f->gate);
}

static void run_waiters(struct nectar_tcp_flow *f, int result)
{
    struct nectar_list *n;

    while ((n = nectar_list_first(&f->promote_waiters)) != NULL) {
        struct ne_promote_waiter *w =
            nectar_list_entry(n, struct ne_promote_waiter, node);
        nectar_list_remove(n);
        w->cb(f, result, w->data);
        nectar_free(w);
    }
}

void nectar__promote_process(struct nectar_tcp_flow *f)
{
    enum promote_state ps;
    int result;

    pthread_mutex_lock(&f->mu);
    ps = f->promote;
    pthread_mutex_unlock(&f->mu);
    if (ps == PROMOTE_REQUESTED)
        dispatch(f);
    pthread_mutex_lock(&f->mu);
    ps = f->promote;
    result = f->promote_result;
    pthread_mutex_unlock(&f->mu);
    if (ps == PROMOTE_RESOLVED && !nectar_list_empty(&f->promote_waiters)) {
        nectar_log(NECTAR_LOG_DEBUG, NE_TAG, "flow %llu: promote -> %s",
                   (unsigned long long)f->meta->m.flow_id,
                   result == 0 ? "ok" : nectar_err_name(result));
        run_waiters(f, result);
    }
}

void nectar__promote_cancel_waiters(struct nectar_tcp_flow *f)
{
    int result = NECTAR_ECANCELED;

    pthread_mutex_lock(&f->mu);
    if (f->promote == PROMOTE_RESOLVED) {
        result = f->promote_result;
    } else {
        f->promote = PROMOTE_RESOLVED;
        f->promote_result = result;
    }
    pthread_mutex_unlock(&f->mu);
    run_waiters(f, result);
}

NECTAR_API int nectar_tcp_flow_promote(nectar_tcp_flow_t *flow,
                                       nectar_promote_cb cb, void *data)
{
    struct ne_promote_waiter *w;

    if (flow == NULL || cb == NULL)
        return NECTAR_EINVAL;
    if (flow->torn)
        return NECTAR_ECLOSED;
    w = nectar_malloc(sizeof(*w));
    if (w == NULL)
        return NECTAR_ENOMEM;
    w->cb = cb;
    w->data = data;
    nectar_list_push_back(&flow->promote_waiters, &w->node);
    pthread_mutex_lock(&flow->mu);
    if (flow->promote == PROMOTE_NONE)
        flow->promote = PROMOTE_REQUESTED;
    pthread_mutex_unlock(&flow->mu);
    /* The result always arrives on a later loop turn. */
    nectar__tcp_kick(flow);
    return 0;
}
