/*
 * config.c - the proxy config the engine hands to the host (spec
 * ne-engine §1.2.6, §6.1, §6.2): defaults, the write-pump clamp, and the
 * ABI encoding with its one-allocation-per-string discipline, plus the
 * handler-side egress option defaults (§2.8).
 */
#include <string.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

#define WRITE_PUMP_MIN 1u
#define WRITE_PUMP_MAX (8u * 1024u * 1024u)

static const nectar_rule_t any_rule = {
    .remote_network = NULL,
    .remote_prefix = -1,
    .remote_port = -1,
    .local_network = NULL,
    .local_prefix = -1,
    .protocol = RAMA_RULE_PROTOCOL_ANY,
    .exclude = false,
};

NECTAR_API void nectar_proxy_config_defaults(nectar_proxy_config_t *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->tunnel_remote_address = "127.0.0.1";
    cfg->rules = &any_rule;
    cfg->rules_len = 1;
    cfg->tcp_write_pump_max_pending_bytes = 256u * 1024u;
    cfg->flow_pressure_soft_cap = 450;
    cfg->flow_pressure_low_water = 350;
    cfg->flow_pressure_idle_floor_ms = 120000;
    cfg->tcp_start_in_flight_hard_cap = 128;
    cfg->tcp_start_in_flight_soft_cap = 64;
    cfg->tcp_start_latency_breaker_p95_ms = 1500;
    cfg->tcp_start_latency_breaker_close_p95_ms = 500;
    cfg->tcp_pressure_connect_timeout_ms = 5000;
    cfg->tcp_breaker_connect_timeout_ms = 3000;
    cfg->flow_refusal_action = 0;
}

NECTAR_API void nectar_egress_options_defaults(RamaTcpEgressConnectOptions *o)
{
    if (o == NULL)
        return;
    memset(o, 0, sizeof(*o));
    o->parameters.preserve_original_meta_data = true;
    o->parameters.allow_system_proxy = false;
    o->tcp_keepalive_enabled = true;
    o->tcp_no_delay = true;
}

/* NULL or empty ⇒ {NULL, 0}; else an exact-length copy (not NUL-ended). */
static bool put_string(const char *s, const char **out, size_t *out_len)
{
    size_t len = s == NULL ? 0 : strlen(s);

    *out = NULL;
    *out_len = 0;
    if (len == 0)
        return true;
    char *copy = nectar_memdup(s, len);
    if (copy == NULL)
        return false;
    *out = copy;
    *out_len = len;
    return true;
}

static bool encode_rule(const nectar_rule_t *in,
                        RamaTransparentProxyNetworkRule *out)
{
    memset(out, 0, sizeof(*out));
    if (in->remote_prefix >= 0 && in->remote_prefix <= 128) {
        out->remote_prefix = (uint8_t)in->remote_prefix;
        out->remote_prefix_is_set = true;
    }
    if (in->remote_port >= 0 && in->remote_port <= 65535) {
        out->remote_port = (uint16_t)in->remote_port;
        out->remote_port_is_set = true;
    }
    if (in->local_prefix >= 0 && in->local_prefix <= 128) {
        out->local_prefix = (uint8_t)in->local_prefix;
        out->local_prefix_is_set = true;
    }
    out->protocol = (in->protocol == RAMA_RULE_PROTOCOL_TCP ||
                     in->protocol == RAMA_RULE_PROTOCOL_UDP)
                        ? (uint32_t)in->protocol
                        : RAMA_RULE_PROTOCOL_ANY;
    out->exclude = in->exclude;
    return put_string(in->remote_network, &out->remote_network_utf8,
                      &out->remote_network_utf8_len) &&
           put_string(in->local_network, &out->local_network_utf8,
                      &out->local_network_utf8_len);
}

RamaTransparentProxyConfig *
nectar__config_encode(const nectar_proxy_config_t *cfg)
{
    RamaTransparentProxyConfig *out = nectar_calloc(1, sizeof(*out));
    size_t pump = cfg->tcp_write_pump_max_pending_bytes;

    if (out == NULL)
        return NULL;
    if (!put_string(cfg->tunnel_remote_address,
                    &out->tunnel_remote_address_utf8,
                    &out->tunnel_remote_address_utf8_len))
        goto fail;
    if (cfg->rules != NULL && cfg->rules_len > 0) {
        RamaTransparentProxyNetworkRule *rules =
            nectar_calloc(cfg->rules_len, sizeof(*rules));
        if (rules == NULL)
            goto fail;
        out->rules = rules;
        out->rules_len = cfg->rules_len;
        for (size_t i = 0; i < cfg->rules_len; i++)
            if (!encode_rule(&cfg->rules[i], &rules[i]))
                goto fail;
    }
    if (pump < WRITE_PUMP_MIN)
        pump = WRITE_PUMP_MIN;
    if (pump > WRITE_PUMP_MAX)
        pump = WRITE_PUMP_MAX;
    out->tcp_write_pump_max_pending_bytes = pump;
    out->flow_pressure_soft_cap = cfg->flow_pressure_soft_cap;
    out->flow_pressure_low_water = cfg->flow_pressure_low_water;
    out->flow_pressure_idle_floor_ms = cfg->flow_pressure_idle_floor_ms;
    out->tcp_start_in_flight_hard_cap = cfg->tcp_start_in_flight_hard_cap;
    out->tcp_start_in_flight_soft_cap = cfg->tcp_start_in_flight_soft_cap;
    out->tcp_start_latency_breaker_p95_ms =
        cfg->tcp_start_latency_breaker_p95_ms;
    out->tcp_start_latency_breaker_close_p95_ms =
        cfg->tcp_start_latency_breaker_close_p95_ms;
    out->tcp_pressure_connect_timeout_ms = cfg->tcp_pressure_connect_timeout_ms;
    out->tcp_breaker_connect_timeout_ms = cfg->tcp_breaker_connect_timeout_ms;
    /* Taken verbatim like every other knob (spec §6.1): the host maps
     * values it does not know to its fail-closed default. */
    out->flow_refusal_action = cfg->flow_refusal_action;
    return out;
fail:
    nectar_log(NECTAR_LOG_ERROR, NE_TAG, "get_config: out of memory");
    rama_transparent_proxy_config_free(out);
    return NULL;
}

NECTAR_API RamaTransparentProxyConfig *
rama_transparent_proxy_get_config(RamaTransparentProxyEngine *engine)
{
    nectar_proxy_config_t cfg;

    if (engine == NULL || atomic_load(&engine->stopping))
        return NULL;
    nectar_proxy_config_defaults(&cfg);
    engine->vt->proxy_config(engine->state, &cfg);
    return nectar__config_encode(&cfg);
}

NECTAR_API void
rama_transparent_proxy_config_free(RamaTransparentProxyConfig *config)
{
    if (config == NULL)
        return;
    nectar_free((void *)config->tunnel_remote_address_utf8);
    if (config->rules != NULL) {
        for (size_t i = 0; i < config->rules_len; i++) {
            nectar_free((void *)config->rules[i].remote_network_utf8);
            nectar_free((void *)config->rules[i].local_network_utf8);
        }
        nectar_free((void *)config->rules);
    }
    nectar_free(config);
}
