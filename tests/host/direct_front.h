/* direct_front.h - a test front for hooks.tcp_direct: one thread per
 * handed-off flow, a poll loop moving bytes both ways (direct_front.c). */
#ifndef NECTAR_TESTS_HOST_DIRECT_FRONT_H
#define NECTAR_TESTS_HOST_DIRECT_FRONT_H

#include <stdatomic.h>
#include <stdint.h>

#include "host/core/host.h"

/* What the front saw, since the last direct_front_reset. */
extern atomic_int front_calls;    /* hand-offs taken */
extern atomic_int front_promoted; /* ... of promoted flows */
extern atomic_int front_running;  /* flow threads not yet finished */
extern atomic_uint_fast64_t front_carry; /* carryover bytes, both ways */
/* Refuse the next hand-off with this code (0 = take them all). */
extern atomic_int front_refuse;

void direct_front_reset(void);

/* The hook (ctx unused).  Threads: any core loop thread. */
int direct_front_hook(void *ctx, nectar_host_direct_t *d,
                      const nectar_host_direct_info_t *info);

#endif
