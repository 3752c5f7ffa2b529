/*
 * counters.h - live counters a per-flow service updates as it runs, so an
 * application can report them (the built-in handler's {"op":"stats"}).
 *
 * Services take an optional `struct svc_counters *` (NULL = no counting)
 * that must outlive every service created with it.  Fields are atomics
 * updated with relaxed ordering from any flow loop and read from any
 * thread; they are statistics, never used for synchronisation.
 */
#ifndef NECTAR_SERVICES_COUNTERS_H
#define NECTAR_SERVICES_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

struct svc_counters {
    atomic_uint_least64_t opened;          /* services created */
    atomic_int_least64_t live;             /* created, not yet destroyed */
    atomic_uint_least64_t bytes_to_remote; /* app -> remote */
    atomic_uint_least64_t bytes_to_app;    /* remote -> app */
};

static inline void svc_counters_add(atomic_uint_least64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* A service was created (live + opened) or destroyed (live - 1). */
static inline void svc_counters_open(struct svc_counters *c)
{
    if (c == NULL)
        return;
    atomic_fetch_add_explicit(&c->opened, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->live, 1, memory_order_relaxed);
}

static inline void svc_counters_close(struct svc_counters *c)
{
    if (c != NULL)
        atomic_fetch_sub_explicit(&c->live, 1, memory_order_relaxed);
}

#endif
