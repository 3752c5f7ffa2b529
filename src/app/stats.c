/* stats.c - counting the built-in handler's decisions and rendering every
 * counter as the {"op":"stats"} JSON reply (see stats.h). */
#include "app/stats.h"

#include <jansson.h>

void nectar__app_stats_decision(struct app_stats *s, nectar_action_t a)
{
    if (a >= NECTAR_ACTION_INTERCEPT && a <= NECTAR_ACTION_BLOCK)
        atomic_fetch_add_explicit(&s->decisions[a], 1, memory_order_relaxed);
}

uint64_t nectar__app_stats_decisions(const struct app_stats *s,
                                     nectar_action_t a)
{
    if (a < NECTAR_ACTION_INTERCEPT || a > NECTAR_ACTION_BLOCK)
        return 0;
    return atomic_load_explicit(&s->decisions[a], memory_order_relaxed);
}

static json_t *u64(uint64_t v)
{
    /* json_int_t is signed 64-bit; counters never get near 2^63. */
    return json_integer((json_int_t)v);
}

static json_t *counters_json(const struct svc_counters *c)
{
    int64_t live = atomic_load_explicit(&c->live, memory_order_relaxed);

    return json_pack(
        "{s:o, s:o, s:o, s:o}", "live", json_integer(live < 0 ? 0 : live),
        "opened", u64(atomic_load_explicit(&c->opened, memory_order_relaxed)),
        "bytes_to_remote",
        u64(atomic_load_explicit(&c->bytes_to_remote, memory_order_relaxed)),
        "bytes_to_app",
        u64(atomic_load_explicit(&c->bytes_to_app, memory_order_relaxed)));
}

json_t *nectar__app_stats_json(const struct app_stats *s)
{
    return json_pack(
        "{s:s, s:{s:o, s:o, s:o}, s:o, s:o}", "op", "stats", "decisions",
        "intercept",
        u64(nectar__app_stats_decisions(s, NECTAR_ACTION_INTERCEPT)),
        "passthrough",
        u64(nectar__app_stats_decisions(s, NECTAR_ACTION_PASSTHROUGH)), "block",
        u64(nectar__app_stats_decisions(s, NECTAR_ACTION_BLOCK)), "tcp",
        counters_json(&s->tcp), "udp", counters_json(&s->udp));
}
