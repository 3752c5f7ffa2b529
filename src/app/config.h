/*
 * config.h - the built-in handler's configuration: the engine-config JSON
 * (docs/config.md) parsed and validated into plain structs.
 *
 * Parsing is strict: malformed JSON, a wrong type, an out-of-range number
 * or an unknown key fails with NECTAR_ECONFIG and a message that starts
 * with the key path ("actions[2].match.remote_port: expected integer
 * 0..65535").  A parsed config is immutable and may be read from any
 * thread; it owns every string and array it points to.
 */
#ifndef NECTAR_APP_CONFIG_H
#define NECTAR_APP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/match.h"
#include "nectar/handler.h"

struct app_action_rule {
    struct app_match match;
    nectar_action_t action;
};

/* One optional override per RamaTransparentProxyConfig number. */
enum app_proxy_field {
    APP_PX_WRITE_PUMP = 0, /* tcp_write_pump_max_pending_bytes */
    APP_PX_SOFT_CAP,
    APP_PX_LOW_WATER,
    APP_PX_IDLE_FLOOR,
    APP_PX_HARD_CAP,
    APP_PX_START_SOFT_CAP,
    APP_PX_BREAKER_P95,
    APP_PX_BREAKER_CLOSE_P95,
    APP_PX_PRESSURE_TIMEOUT,
    APP_PX_BREAKER_TIMEOUT,
    APP_PX_REFUSAL_ACTION,
    APP_PX_COUNT
};

/* Bounds of tcp_write_pump_max_pending_bytes (spec ne-engine §6.1). */
#define APP_WRITE_PUMP_MIN 1u
#define APP_WRITE_PUMP_MAX (8u * 1024u * 1024u)

struct app_config {
    nectar_action_t default_action;
    struct app_action_rule *actions;
    size_t actions_len;

    bool has_rules; /* `rules` given (possibly empty) */
    nectar_rule_t *rules;
    size_t rules_len;

    char *tunnel_remote_address; /* NULL = default */
    bool proxy_set[APP_PX_COUNT];
    uint64_t proxy_value[APP_PX_COUNT]; /* already clamped */

    bool has_egress;
    RamaTcpEgressConnectOptions egress;
};

/*
 * Parse `len` bytes of JSON into *cfg.  NULL, empty or all-whitespace
 * input gives the defaults.  On error returns NECTAR_ECONFIG (or
 * NECTAR_ENOMEM), fills *err (may be NULL) and leaves *cfg empty (safe to
 * free).  Any thread; never logs.
 */
int nectar__app_config_parse(const uint8_t *json, size_t len,
                             struct app_config *cfg, nectar_error_t *err);

/* Release everything cfg owns; cfg is left zeroed.  NULL-safe. */
void nectar__app_config_free(struct app_config *cfg);

/* The first matching action for meta, or the default action. */
nectar_action_t nectar__app_config_decide(const struct app_config *cfg,
                                          const nectar_flow_meta_t *meta);

/* Apply the `rules`, `proxy` and tunnel overrides to cfg (which arrives
 * filled with the engine defaults).  Pointers stored into *out borrow
 * from cfg. */
void nectar__app_config_apply_proxy(const struct app_config *cfg,
                                    nectar_proxy_config_t *out);

/* Name of an action as written in the config ("intercept", ...). */
const char *nectar__app_action_name(nectar_action_t a);

#endif
