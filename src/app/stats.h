/*
 * stats.h - the built-in handler's counters, reported by {"op":"stats"}.
 *
 * Decisions are counted by the handler; per-protocol live sessions, flows
 * opened and bytes each way are counted by the relay services through the
 * embedded struct svc_counters.  Every field is an atomic: update and read
 * from any thread.
 */
#ifndef NECTAR_APP_STATS_H
#define NECTAR_APP_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/handler.h"
#include "services/counters.h"

struct app_stats {
    atomic_uint_least64_t decisions[4]; /* by nectar_action_t (1..3) */
    struct svc_counters tcp;
    struct svc_counters udp;
};

void nectar__app_stats_decision(struct app_stats *s, nectar_action_t a);
uint64_t nectar__app_stats_decisions(const struct app_stats *s,
                                     nectar_action_t a);

/*
 * The stats reply, a JSON object:
 *   {"op":"stats","decisions":{"intercept":N,"passthrough":N,"block":N},
 *    "tcp":{"live":N,"opened":N,"bytes_to_remote":N,"bytes_to_app":N},
 *    "udp":{...same...}}
 * Returns a new jansson reference (json_decref it), or NULL when out of
 * memory.
 */
struct json_t;
struct json_t *nectar__app_stats_json(const struct app_stats *s);

#endif
