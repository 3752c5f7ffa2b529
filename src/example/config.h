/*
 * config.h - the example's engine-config JSON: the keys of spec §5.5 (plus
 * a few nectar additions, docs/example.md) merged with the built-in
 * handler's engine keys (`default_action`, `actions`, `rules`, `proxy`,
 * `egress`; docs/config.md), and the live-updatable subset.
 *
 * The example keys are parsed here and removed; what is left goes to the
 * built-in parser, which rejects unknown keys.  A wrong type or range is
 * NECTAR_ECONFIG with the key named in the message.
 *
 * Threading: parse/free from any thread; a parsed config is immutable.
 */
#ifndef NECTAR_EXAMPLE_CONFIG_H
#define NECTAR_EXAMPLE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/config.h"
#include "example/domains.h"

#define EX_PEEK_DEFAULT_S      8.0
#define EX_PEEK_MIN_S          0.5
#define EX_BADGE_LABEL_DEFAULT "proxied by nectar"
#define EX_HIJACK_HOST_DEFAULT "nectar.localhost"

struct ex_config {
    struct app_config engine; /* the built-in handler's keys */

    bool badge_enabled;
    char *badge_label;
    double peek_s;               /* already >= EX_PEEK_MIN_S */
    uint32_t connect_timeout_ms; /* 0: platform default */
    bool no_delay;
    ex_domains_t *exclude;
    ex_domains_t *passthrough; /* declined at decision time */
    uint16_t *udp_passthrough_ports;
    size_t udp_passthrough_len;
    char **udp_blocked; /* normalised "host:port", "[v6]:port" */
    size_t udp_blocked_len;
    bool udp_e2e_mode;
    char *ca_cert_pem, *ca_key_pem;
    char *keychain_dir;      /* NULL: the keychain's default */
    char *ipc_service_name;  /* xpc_service_name */
    char *ipc_required_peer; /* container_signing_identifier */
    char *upstream_ca_file;
    bool upstream_insecure;
    bool tls_keylog;
    char *tls_keylog_file;
    size_t trust_cache_size;
    uint64_t trust_cache_ttl_ms;
    size_t leaf_cache_size;
    char *hijack_host;
    uint32_t admission_global; /* 0: default */
    uint32_t admission_per_app_host;
};

/* NULL/empty input: all defaults.  On error *cfg is left freeable. */
int ex_config_parse(const uint8_t *json, size_t len, struct ex_config *cfg,
                    nectar_error_t *err);
void ex_config_free(struct ex_config *cfg);

/* The updateSettings payload: fields present override. */
struct ex_settings_update {
    bool has_badge_enabled;
    bool badge_enabled;
    char *badge_label; /* NULL: keep; "" is ignored too */
    bool has_exclude;
    ex_domains_t *exclude;
};

int ex_settings_update_parse(const char *json, size_t len,
                             struct ex_settings_update *u, nectar_error_t *err);
void ex_settings_update_free(struct ex_settings_update *u);

/* Formats host:port the way udp_blocked_endpoints entries are stored. */
void ex_endpoint_format(const char *host, uint16_t port, char *out, size_t cap);

#endif
