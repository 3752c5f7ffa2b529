/*
 * runtime.c - the engine threads: a small pool of libuv loops, each on its
 * own thread, and the way work reaches them.
 *
 * Host calls run on any thread.  They change session state under the
 * session lock and then call nectar__obj_schedule(), which links the
 * session into its loop's ready list (once: scheduling coalesces) and wakes
 * the loop through its eventfd.  The loop's wake-up callback runs
 * ops->process for every ready object; process does bounded work and
 * reschedules itself when more is left (Redis's "bounded work per turn").
 *
 * Why an eventfd and not uv_async_t: libuv 1.44's async callback, on the
 * loop side, spins (and then sched_yield()s) while a sender is between
 * marking the handle pending and finishing its send; when that sender is
 * a preempted host thread the engine thread burns its slice waiting for
 * it (about 5 % of ping-pong samples).  The host core wakes its loops the
 * same way for the same reason.  Guarantees kept:
 *  - coalescing: only the poster that finds wake_pending clear writes; the
 *    rest ride on that wake-up (the eventfd counter also merges writes);
 *  - no lost wake-up: posters publish work and set wake_pending under mu
 *    before writing; the loop reads (clears) the eventfd first, then clears
 *    wake_pending and takes the lists under mu, so work published after
 *    that sees wake_pending clear and writes again.  A write that lands
 *    after its work was already taken costs one empty wake-up, nothing more;
 *  - stop: nothing is written once accepting is false (no work is accepted
 *    then); the poll handle is closed on its own loop by job_close_loop's
 *    walk, and the descriptor stays open until rt_free, so a write racing
 *    with the close hits a live (unwatched) counter, never a reused fd;
 *  - signals: nothing schedules from a signal handler, so losing
 *    uv_async_send's async-signal safety costs nothing.
 *
 * Object lifetime: refs = host handle + loop side + one per queued
 * schedule.  The loop side drops its reference in nectar__obj_finalize,
 * after the session's timers are closed, which also unlinks it from the
 * loop's live list.
 *
 * Stop (spec §7.4): (1) each loop runs ops->shutdown on every live object;
 * (2) the stopping thread waits for the live count to reach zero, bounded by
 * drain_ms; (3) loop 0 runs `last` (the handler's destroy), then every loop
 * stops accepting work and closes its remaining handles; (4) threads are
 * joined, bounded by drain_ms + 2 s; a wedged thread is detached and its
 * runtime leaked rather than freed under it.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <assert.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

struct ne_job {
    struct nectar_list node;
    void (*fn)(void *arg);
    void *arg;
};

/* ---- objects ------------------------------------------------------------- */

void nectar__obj_ref(struct ne_obj *o)
{
    atomic_fetch_add(&o->refs, 1);
}

void nectar__obj_unref(struct ne_obj *o)
{
    if (atomic_fetch_sub(&o->refs, 1) == 1)
        o->ops->destroy(o);
}

void nectar__obj_attach(struct ne_obj *o, const struct ne_obj_ops *ops,
                        struct ne_loop *loop)
{
    struct ne_runtime *rt = loop->rt;

    o->ops = ops;
    o->loop = loop;
    atomic_init(&o->refs, 2);
    o->queued = false;
    nectar_list_init(&o->ready_node);
    nectar_list_init(&o->live_node);
    pthread_mutex_lock(&rt->mu);
    rt->live_objs++;
    pthread_mutex_unlock(&rt->mu);
    pthread_mutex_lock(&loop->mu);
    o->live = true;
    nectar_list_push_back(&loop->live, &o->live_node);
    pthread_mutex_unlock(&loop->mu);
    nectar__obj_schedule(o);
}

/* Under loop->mu, right after publishing work: whether this poster must
 * write the eventfd (no wake-up is pending yet). */
static bool claim_wake(struct ne_loop *loop)
{
    if (loop->wake_pending)
        return false;
    loop->wake_pending = true;
    return true;
}

/* Outside mu, so the loop never waits on the lock for a system call.  The
 * caller holds a reference that keeps the runtime (and so efd) alive. */
static void loop_wake(struct ne_loop *loop)
{
    uint64_t one = 1;
    /* EAGAIN only when the counter is saturated: a wake-up is pending. */
    ssize_t n = write(loop->efd, &one, sizeof(one));
    (void)n;
}

void nectar__obj_schedule(struct ne_obj *o)
{
    struct ne_loop *loop = o->loop;
    bool wake = false;

    pthread_mutex_lock(&loop->mu);
    if (loop->accepting && !o->queued) {
        o->queued = true;
        nectar__obj_ref(o);
        nectar_list_push_back(&loop->ready, &o->ready_node);
        wake = claim_wake(loop);
    }
    pthread_mutex_unlock(&loop->mu);
    if (wake)
        loop_wake(loop);
}

void nectar__obj_finalize(struct ne_obj *o)
{
    struct ne_loop *loop = o->loop;
    struct ne_runtime *rt = loop->rt;
    bool was_live;

    pthread_mutex_lock(&loop->mu);
    was_live = o->live;
    o->live = false;
    nectar_list_remove(&o->live_node);
    pthread_mutex_unlock(&loop->mu);
    if (!was_live)
        return;
    pthread_mutex_lock(&rt->mu);
    rt->live_objs--;
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    nectar__obj_unref(o);
}

int nectar__loop_post(struct ne_loop *loop, void (*fn)(void *), void *arg)
{
    struct ne_job *job = nectar_malloc(sizeof(*job));
    bool ok, wake = false;

    if (job == NULL)
        return NECTAR_ENOMEM;
    job->fn = fn;
    job->arg = arg;
    pthread_mutex_lock(&loop->mu);
    ok = loop->accepting;
    if (ok) {
        nectar_list_push_back(&loop->jobs, &job->node);
        wake = claim_wake(loop);
    }
    pthread_mutex_unlock(&loop->mu);
    if (wake)
        loop_wake(loop);
    if (!ok) {
        nectar_free(job);
        return NECTAR_ECLOSED;
    }
    return 0;
}

/* ---- the loop thread ----------------------------------------------------- */

static void on_wake(uv_poll_t *h, int status, int events)
{
    struct ne_loop *loop = h->data;
    struct nectar_list jobs, ready, *n;
    uint64_t count;
    ssize_t got;

    (void)status; /* an eventfd reports no errors worth handling here */
    (void)events;
    /* Clear before taking the lists (see the top of this file). */
    got = read(loop->efd, &count, sizeof(count));
    (void)got;
    nectar_list_init(&jobs);
    nectar_list_init(&ready);
    pthread_mutex_lock(&loop->mu);
    loop->wake_pending = false;
    nectar_list_splice(&jobs, &loop->jobs);
    nectar_list_splice(&ready, &loop->ready);
    pthread_mutex_unlock(&loop->mu);

    while ((n = nectar_list_first(&jobs)) != NULL) {
        struct ne_job *job = nectar_list_entry(n, struct ne_job, node);
        nectar_list_remove(n);
        job->fn(job->arg);
        nectar_free(job);
    }
    for (;;) {
        struct ne_obj *o;

        /* Unlink and clear `queued` together, under mu: a concurrent
         * schedule must never relink a node still on this local list. */
        pthread_mutex_lock(&loop->mu);
        n = nectar_list_first(&ready);
        if (n != NULL) {
            assert(nectar_list_entry(n, struct ne_obj, ready_node)->queued);
            nectar_list_remove(n);
            nectar_list_entry(n, struct ne_obj, ready_node)->queued = false;
        }
        pthread_mutex_unlock(&loop->mu);
        if (n == NULL)
            break;
        o = nectar_list_entry(n, struct ne_obj, ready_node);
        o->ops->process(o);
        nectar__obj_unref(o);
    }
}

static void *loop_main(void *arg)
{
    struct ne_loop *loop = arg;
    struct ne_runtime *rt = loop->rt;

    uv_run(&loop->uv, UV_RUN_DEFAULT);
    pthread_mutex_lock(&rt->mu);
    loop->exited = true;
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->mu);
    return NULL;
}

/* ---- creation and teardown ----------------------------------------------- */

static void rt_free(struct ne_runtime *rt)
{
    for (unsigned i = 0; i < rt->n; i++) {
        struct ne_loop *loop = &rt->loops[i];
        struct nectar_list *n;

        while ((n = nectar_list_first(&loop->jobs)) != NULL) {
            nectar_list_remove(n);
            nectar_free(nectar_list_entry(n, struct ne_job, node));
        }
        if (loop->uv_inited && uv_loop_close(&loop->uv) != 0)
            nectar_log(NECTAR_LOG_WARN, NE_TAG, "loop %u still busy", i);
        if (loop->efd >= 0)
            close(loop->efd);
        pthread_mutex_destroy(&loop->mu);
    }
    pthread_mutex_destroy(&rt->mu);
    pthread_cond_destroy(&rt->cv);
    nectar_free(rt->loops);
    nectar_free(rt);
}

void nectar__rt_ref(struct ne_runtime *rt)
{
    atomic_fetch_add(&rt->refs, 1);
}

void nectar__rt_unref(struct ne_runtime *rt)
{
    if (atomic_fetch_sub(&rt->refs, 1) == 1 && !rt->leaked)
        rt_free(rt);
}

/* The loop's wake-up: an eventfd watched by a poll handle.  On failure
 * nothing is left open and the loop has no handles. */
static int wake_init(struct ne_loop *loop)
{
    int rc;

    loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->efd < 0)
        return -errno;
    rc = uv_poll_init(&loop->uv, &loop->wake, loop->efd);
    if (rc == 0) {
        loop->wake.data = loop;
        rc = uv_poll_start(&loop->wake, UV_READABLE, on_wake);
        if (rc != 0) {
            uv_close((uv_handle_t *)&loop->wake, NULL);
            uv_run(&loop->uv, UV_RUN_NOWAIT);
        }
    }
    if (rc != 0) {
        close(loop->efd);
        loop->efd = -1;
    }
    return rc;
}

static int loop_init(struct ne_runtime *rt, struct ne_loop *loop)
{
    int rc;

    loop->rt = rt;
    nectar_list_init(&loop->ready);
    nectar_list_init(&loop->live);
    nectar_list_init(&loop->jobs);
    pthread_mutex_init(&loop->mu, NULL);
    loop->efd = -1;
    rc = uv_loop_init(&loop->uv);
    if (rc != 0)
        return rc;
    rc = wake_init(loop);
    if (rc != 0) {
        uv_loop_close(&loop->uv);
        return rc;
    }
    loop->uv_inited = true;
    loop->accepting = true;
    rc = pthread_create(&loop->thread, NULL, loop_main, loop);
    if (rc != 0) {
        loop->accepting = false;
        uv_close((uv_handle_t *)&loop->wake, NULL);
        uv_run(&loop->uv, UV_RUN_NOWAIT);
        close(loop->efd);
        loop->efd = -1;
        return -rc;
    }
    loop->thread_started = true;
    return 0;
}

int nectar__rt_new(unsigned threads, struct ne_runtime **out)
{
    struct ne_runtime *rt = nectar_calloc(1, sizeof(*rt));
    int rc = 0;

    *out = NULL;
    if (rt == NULL)
        return NECTAR_ENOMEM;
    rt->loops = nectar_calloc(threads, sizeof(struct ne_loop));
    if (rt->loops == NULL) {
        nectar_free(rt);
        return NECTAR_ENOMEM;
    }
    atomic_init(&rt->refs, 1);
    atomic_init(&rt->next, 0);
    pthread_mutex_init(&rt->mu, NULL);
    pthread_cond_init(&rt->cv, NULL);
    for (unsigned i = 0; i < threads; i++) {
        rc = loop_init(rt, &rt->loops[i]);
        if (rc != 0)
            break;
        rt->n = i + 1;
    }
    if (rc != 0) {
        nectar__rt_stop(rt, 0, NULL, NULL);
        nectar__rt_unref(rt);
        return rc;
    }
    *out = rt;
    return 0;
}

struct ne_loop *nectar__rt_pick(struct ne_runtime *rt)
{
    return &rt->loops[atomic_fetch_add(&rt->next, 1) % rt->n];
}

/* ---- stop ---------------------------------------------------------------- */

static void job_shutdown_all(void *arg)
{
    struct ne_loop *loop = arg;
    struct nectar_list *n;
    size_t count = 0, cap = 0;
    struct ne_obj **objs = NULL;

    /* Snapshot with references first: shutdown may finalise (unlink) the
     * object it is given. */
    pthread_mutex_lock(&loop->mu);
    for (n = loop->live.next; n != &loop->live; n = n->next)
        cap++;
    if (cap > 0)
        objs = nectar_malloc(cap * sizeof(*objs));
    for (n = loop->live.next; objs != NULL && n != &loop->live; n = n->next) {
        objs[count] = nectar_list_entry(n, struct ne_obj, live_node);
        nectar__obj_ref(objs[count]);
        count++;
    }
    pthread_mutex_unlock(&loop->mu);
    if (cap > 0 && objs == NULL)
        nectar_log(NECTAR_LOG_ERROR, NE_TAG, "stop: out of memory");
    for (size_t i = 0; i < count; i++)
        objs[i]->ops->shutdown(objs[i]);
    for (size_t i = 0; i < count; i++)
        nectar__obj_unref(objs[i]);
    nectar_free(objs);
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

struct last_job {
    struct ne_loop *loop;
    void (*last)(void *);
    void *arg;
};

static void job_close_loop(void *arg)
{
    struct last_job *lj = arg;
    struct ne_loop *loop = lj->loop;

    struct nectar_list ready, jobs, *n;

    if (lj->last != NULL)
        lj->last(lj->arg);
    nectar_list_init(&ready);
    nectar_list_init(&jobs);
    pthread_mutex_lock(&loop->mu);
    loop->accepting = false;
    /* Jobs posted just before this one still run (posts are never lost
     * once accepted). */
    nectar_list_splice(&jobs, &loop->jobs);
    /* Schedules that arrived after teardown (a late drain signal, say)
     * would never run once the wake-up handle closes: drop their refs. */
    nectar_list_splice(&ready, &loop->ready);
    for (n = ready.next; n != &ready; n = n->next)
        nectar_list_entry(n, struct ne_obj, ready_node)->queued = false;
    pthread_mutex_unlock(&loop->mu);
    while ((n = nectar_list_first(&jobs)) != NULL) {
        struct ne_job *job = nectar_list_entry(n, struct ne_job, node);
        nectar_list_remove(n);
        job->fn(job->arg);
        nectar_free(job);
    }
    while ((n = nectar_list_first(&ready)) != NULL) {
        nectar_list_remove(n);
        nectar__obj_unref(nectar_list_entry(n, struct ne_obj, ready_node));
    }
    uv_walk(&loop->uv, close_walk_cb, NULL);
    nectar_free(lj);
}

static void deadline_after(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Waits on rt->cv (a CLOCK_MONOTONIC condvar is not portable; use the
 * realtime clock with a monotonic deadline check). */
static int timed_wait(struct ne_runtime *rt, const struct timespec *mono_dl)
{
    struct timespec now, rt_dl;
    long long left_ns;

    clock_gettime(CLOCK_MONOTONIC, &now);
    left_ns = (long long)(mono_dl->tv_sec - now.tv_sec) * 1000000000LL +
              (mono_dl->tv_nsec - now.tv_nsec);
    if (left_ns <= 0)
        return ETIMEDOUT;
    if (left_ns > 50000000LL)
        left_ns = 50000000LL; /* re-check every 50 ms */
    clock_gettime(CLOCK_REALTIME, &rt_dl);
    rt_dl.tv_nsec += left_ns;
    while (rt_dl.tv_nsec >= 1000000000L) {
        rt_dl.tv_sec++;
        rt_dl.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&rt->cv, &rt->mu, &rt_dl);
    return 0;
}

bool nectar__rt_stop(struct ne_runtime *rt, uint32_t drain_ms,
                     void (*last)(void *arg), void *arg)
{
    struct timespec dl;
    bool all_exited = true;

    for (unsigned i = 0; i < rt->n; i++)
        nectar__loop_post(&rt->loops[i], job_shutdown_all, &rt->loops[i]);

    deadline_after(&dl, drain_ms);
    pthread_mutex_lock(&rt->mu);
    while (rt->live_objs > 0 && timed_wait(rt, &dl) == 0)
        ;
    if (rt->live_objs > 0)
        nectar_log(NECTAR_LOG_WARN, NE_TAG,
                   "stop: %u flows still draining after %u ms; proceeding",
                   rt->live_objs, drain_ms);
    pthread_mutex_unlock(&rt->mu);

    for (unsigned i = 0; i < rt->n; i++) {
        struct last_job *lj = nectar_calloc(1, sizeof(*lj));
        bool posted = false;
        if (lj != NULL) {
            lj->loop = &rt->loops[i];
            if (i == 0) {
                lj->last = last;
                lj->arg = arg;
            }
            posted = nectar__loop_post(&rt->loops[i], job_close_loop, lj) == 0;
        }
        if (!posted) {
            nectar_free(lj);
            if (i == 0 && last != NULL)
                last(arg);
        }
    }

    deadline_after(&dl, 2000);
    pthread_mutex_lock(&rt->mu);
    for (;;) {
        bool done = true;
        for (unsigned i = 0; i < rt->n; i++)
            if (rt->loops[i].thread_started && !rt->loops[i].exited)
                done = false;
        if (done || timed_wait(rt, &dl) != 0)
            break;
    }
    for (unsigned i = 0; i < rt->n; i++) {
        struct ne_loop *loop = &rt->loops[i];
        if (!loop->thread_started)
            continue;
        if (loop->exited) {
            pthread_mutex_unlock(&rt->mu);
            pthread_join(loop->thread, NULL);
            pthread_mutex_lock(&rt->mu);
        } else {
            pthread_detach(loop->thread);
            all_exited = false;
        }
    }
    if (!all_exited) {
        rt->leaked = true;
        nectar_log(NECTAR_LOG_ERROR, NE_TAG,
                   "stop hit its hard cap; abandoning wedged engine threads");
    }
    pthread_mutex_unlock(&rt->mu);
    return all_exited;
}
