/*
 * admission.h - the example's TCP concurrency limiter (spec §5.2): a
 * reservation is taken when a flow is decided INTERCEPT and released when
 * its service is destroyed.  A rejected flow is passed through, never
 * blocked.
 *
 * Defaults: global = max(cpus * 128, 2048); 75 % of it is reserved for web
 * ports (80, 443), so other ports share the remaining 25 %; per app+host
 * = clamp(global / 32, 16, 64), counted only when both the bundle id and
 * the host are known.
 *
 * Threading: all functions may be called from any thread (one mutex).
 */
#ifndef NECTAR_EXAMPLE_ADMISSION_H
#define NECTAR_EXAMPLE_ADMISSION_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ex_admission ex_admission_t;

typedef enum ex_reject {
    EX_ADMIT = 0,
    EX_REJECT_GLOBAL,
    EX_REJECT_NONWEB,
    EX_REJECT_APPHOST,
} ex_reject_t;

/* What a granted reservation holds, to release it exactly. */
typedef struct ex_permit {
    bool held;
    bool nonweb;
    bool keyed;
    uint64_t key;
} ex_permit_t;

/* 0 for a limit means the default above.  NULL on ENOMEM. */
ex_admission_t *ex_admission_new(uint32_t global, uint32_t per_app_host);
void ex_admission_free(ex_admission_t *a);

/* Reserve for a flow to `port`; bundle/host may be NULL.  EX_ADMIT fills
 * *permit. */
ex_reject_t ex_admission_try(ex_admission_t *a, uint16_t port,
                             const char *bundle, const char *host,
                             ex_permit_t *permit);
/* Give a reservation back (idempotent: clears permit->held). */
void ex_admission_release(ex_admission_t *a, ex_permit_t *permit);

const char *ex_reject_name(ex_reject_t r);
uint32_t ex_admission_global_limit(const ex_admission_t *a);
uint32_t ex_admission_app_host_limit(const ex_admission_t *a);
uint32_t ex_admission_in_use(ex_admission_t *a);

#endif
