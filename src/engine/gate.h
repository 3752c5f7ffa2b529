/*
 * gate.h - the per-session callback gate (spec ne-engine §3.8, §8.1).
 *
 * A mutex held across every host callback of one session, guarding an
 * `active` flag.  Closing the gate takes the same mutex, so it waits for a
 * callback that is running right now and no callback starts afterwards:
 * once cancel/close returns, the host may free its callback contexts.  An
 * atomic flag would not do (check-then-call leaves a window).  The gate
 * also serialises all callbacks of a session.
 *
 *   open --ne_gate_close--> closed      (one way; idempotent)
 *
 * Threading: any thread.  Never close the gate from inside one of its own
 * callbacks (the mutex is not recursive: that would deadlock).
 */
#ifndef NECTAR_ENGINE_GATE_H
#define NECTAR_ENGINE_GATE_H

#include <pthread.h>
#include <stdbool.h>

struct ne_gate {
    pthread_mutex_t mu;
    bool active; /* under mu */
};

static inline void ne_gate_init(struct ne_gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    g->active = true;
}

static inline void ne_gate_destroy(struct ne_gate *g)
{
    pthread_mutex_destroy(&g->mu);
}

/* Takes the gate and tells whether callbacks may run.  Always pair with
 * ne_gate_leave, whatever it returned; call the host only while held. */
static inline bool ne_gate_enter(struct ne_gate *g)
{
    pthread_mutex_lock(&g->mu);
    return g->active;
}

static inline void ne_gate_leave(struct ne_gate *g)
{
    pthread_mutex_unlock(&g->mu);
}

/* Waits for a callback in progress, then refuses every later one. */
static inline void ne_gate_close(struct ne_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->active = false;
    pthread_mutex_unlock(&g->mu);
}

#endif
