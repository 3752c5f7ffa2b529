/*
 * config.c - parser for the example's engine-config JSON (see config.h).
 *
 * Map: typed getters; domain and UDP lists; the root (example keys, then
 * the remainder to the built-in parser); the updateSettings payload.
 */
#include "example/config.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

/* ---- typed getters ------------------------------------------------------ */

static int bad(nectar_error_t *err, const char *key, const char *what)
{
    return nectar_error_set(err, NECTAR_ECONFIG, "%s: expected %s", key, what);
}

static int get_bool(json_t *root, const char *key, bool *out,
                    nectar_error_t *err)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return bad(err, key, "true or false");
    *out = json_is_true(v);
    return 0;
}

/* Strings: absent or null keep *out (NULL). */
static int get_str(json_t *root, const char *key, char **out,
                   nectar_error_t *err)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return bad(err, key, "a string or null");
    char *s = nectar_strdup(json_string_value(v));
    if (s == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    nectar_free(*out);
    *out = s;
    return 0;
}

static int get_uint(json_t *root, const char *key, uint64_t max, uint64_t *out,
                    nectar_error_t *err)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max) {
        char what[64];
        snprintf(what, sizeof(what), "an integer 0..%llu",
                 (unsigned long long)max);
        return bad(err, key, what);
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* ---- lists -------------------------------------------------------------- */

static int get_domains(json_t *v, const char *key, ex_domains_t **out,
                       nectar_error_t *err)
{
    if (!json_is_array(v))
        return bad(err, key, "an array of strings");
    size_t n = json_array_size(v);
    const char **names = nectar_calloc(n ? n : 1, sizeof(*names));
    if (names == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            nectar_free(names);
            return bad(err, key, "an array of strings");
        }
        names[i] = json_string_value(e);
    }
    ex_domains_t *d = ex_domains_new(names, n);
    nectar_free(names);
    if (d == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    ex_domains_free(*out);
    *out = d;
    return 0;
}

static int get_ports(json_t *root, struct ex_config *cfg, nectar_error_t *err)
{
    const char *key = "udp_passthrough_ports";
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return bad(err, key, "an array of ports");
    size_t n = json_array_size(v);
    cfg->udp_passthrough_ports = nectar_calloc(n ? n : 1, sizeof(uint16_t));
    if (cfg->udp_passthrough_ports == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 ||
            json_integer_value(e) > 65535)
            return bad(err, key, "an array of integers 0..65535");
        cfg->udp_passthrough_ports[i] = (uint16_t)json_integer_value(e);
    }
    cfg->udp_passthrough_len = n;
    return 0;
}

void ex_endpoint_format(const char *host, uint16_t port, char *out, size_t cap)
{
    bool v6 = strchr(host, ':') != NULL;
    snprintf(out, cap, v6 ? "[%s]:%u" : "%s:%u", host, port);
}

/* "host:port" or "[v6]:port" -> normalised form, or false. */
static bool parse_endpoint(const char *s, char *out, size_t cap)
{
    char host[256];
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':' || close - s - 1 >= 255)
            return false;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        colon = close + 1;
        unsigned char buf[16];
        if (inet_pton(AF_INET6, host, buf) != 1)
            return false;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || colon == s || colon - s >= 255)
            return false;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || port < 0 || port > 65535)
        return false;
    ex_endpoint_format(host, (uint16_t)port, out, cap);
    return true;
}

static int get_blocked(json_t *root, struct ex_config *cfg, nectar_error_t *err)
{
    const char *key = "udp_blocked_endpoints";
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return bad(err, key, "an array of \"host:port\" strings");
    size_t n = json_array_size(v);
    cfg->udp_blocked = nectar_calloc(n ? n : 1, sizeof(char *));
    if (cfg->udp_blocked == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        char norm[300];
        if (!json_is_string(e) ||
            !parse_endpoint(json_string_value(e), norm, sizeof(norm)))
            return nectar_error_set(err, NECTAR_ECONFIG,
                                    "%s[%zu]: expected \"host:port\" or "
                                    "\"[v6]:port\"",
                                    key, i);
        cfg->udp_blocked[i] = nectar_strdup(norm);
        if (cfg->udp_blocked[i] == NULL)
            return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
        cfg->udp_blocked_len = i + 1;
    }
    return 0;
}

/* ---- root --------------------------------------------------------------- */

/* Every key this file owns; the rest goes to the built-in parser. */
static const char *const example_keys[] = {"app",
                                           "html_badge_enabled",
                                           "html_badge_label",
                                           "peek_duration_s",
                                           "tcp_connect_timeout_ms",
                                           "tcp_no_delay",
                                           "exclude_domains",
                                           "passthrough_domains",
                                           "udp_passthrough_ports",
                                           "udp_blocked_endpoints",
                                           "udp_e2e_mode",
                                           "ca_cert_pem",
                                           "ca_key_pem",
                                           "xpc_service_name",
                                           "container_signing_identifier",
                                           "upstream_ca_file",
                                           "upstream_insecure",
                                           "tls_keylog",
                                           "tls_keylog_file",
                                           "trust_cache_size",
                                           "trust_cache_ttl_s",
                                           "leaf_cache_size",
                                           "hijack_host",
                                           "admission_global_limit",
                                           "keychain_dir",
                                           "admission_per_app_host_limit",
                                           NULL};

static void set_defaults(struct ex_config *cfg)
{
    cfg->badge_enabled = true;
    cfg->peek_s = EX_PEEK_DEFAULT_S;
    cfg->no_delay = true;
    cfg->trust_cache_size = 4096;
    cfg->trust_cache_ttl_ms = 300000;
    cfg->leaf_cache_size = 32000;
}

static int get_peek(json_t *root, struct ex_config *cfg, nectar_error_t *err)
{
    json_t *v = json_object_get(root, "peek_duration_s");
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
        json_number_value(v) < 0 || json_number_value(v) > 3600)
        return bad(err, "peek_duration_s", "a number of seconds 0..3600");
    double s = json_number_value(v);
    cfg->peek_s = s < EX_PEEK_MIN_S ? EX_PEEK_MIN_S : s;
    return 0;
}

static int get_numbers(json_t *root, struct ex_config *cfg, nectar_error_t *err)
{
    uint64_t conn = 0, trust = cfg->trust_cache_size;
    uint64_t ttl_s = cfg->trust_cache_ttl_ms / 1000;
    uint64_t leaves = cfg->leaf_cache_size, global = 0, per = 0;
    struct {
        const char *key;
        uint64_t max;
        uint64_t *dst;
    } nums[] = {
        {"tcp_connect_timeout_ms", UINT32_MAX, &conn},
        {"trust_cache_size", 1u << 24, &trust},
        {"trust_cache_ttl_s", 86400ull * 365, &ttl_s},
        {"leaf_cache_size", 1u << 24, &leaves},
        {"admission_global_limit", 1u << 24, &global},
        {"admission_per_app_host_limit", 1u << 24, &per},
    };
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        int rc = get_uint(root, nums[i].key, nums[i].max, nums[i].dst, err);
        if (rc != 0)
            return rc;
    }
    cfg->connect_timeout_ms = (uint32_t)conn;
    cfg->trust_cache_size = trust ? (size_t)trust : 1;
    cfg->trust_cache_ttl_ms = ttl_s * 1000;
    cfg->leaf_cache_size = leaves ? (size_t)leaves : 1;
    cfg->admission_global = (uint32_t)global;
    cfg->admission_per_app_host = (uint32_t)per;
    return 0;
}

static int get_strings(json_t *root, struct ex_config *cfg, nectar_error_t *err)
{
    struct {
        const char *key;
        char **dst;
    } strs[] = {
        {"html_badge_label", &cfg->badge_label},
        {"ca_cert_pem", &cfg->ca_cert_pem},
        {"ca_key_pem", &cfg->ca_key_pem},
        {"xpc_service_name", &cfg->ipc_service_name},
        {"container_signing_identifier", &cfg->ipc_required_peer},
        {"upstream_ca_file", &cfg->upstream_ca_file},
        {"tls_keylog_file", &cfg->tls_keylog_file},
        {"hijack_host", &cfg->hijack_host},
        {"keychain_dir", &cfg->keychain_dir},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        int rc = get_str(root, strs[i].key, strs[i].dst, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int get_bools(json_t *root, struct ex_config *cfg, nectar_error_t *err)
{
    int rc = get_bool(root, "html_badge_enabled", &cfg->badge_enabled, err);
    if (rc == 0)
        rc = get_bool(root, "tcp_no_delay", &cfg->no_delay, err);
    if (rc == 0)
        rc = get_bool(root, "udp_e2e_mode", &cfg->udp_e2e_mode, err);
    if (rc == 0)
        rc = get_bool(root, "upstream_insecure", &cfg->upstream_insecure, err);
    if (rc == 0)
        rc = get_bool(root, "tls_keylog", &cfg->tls_keylog, err);
    return rc;
}

static int get_lists(json_t *root, struct ex_config *cfg, nectar_error_t *err)
{
    json_t *v = json_object_get(root, "exclude_domains");
    int rc = 0;
    if (v != NULL && !json_is_null(v))
        rc = get_domains(v, "exclude_domains", &cfg->exclude, err);
    v = json_object_get(root, "passthrough_domains");
    if (rc == 0 && v != NULL && !json_is_null(v))
        rc = get_domains(v, "passthrough_domains", &cfg->passthrough, err);
    if (rc == 0)
        rc = get_ports(root, cfg, err);
    if (rc == 0)
        rc = get_blocked(root, cfg, err);
    return rc;
}

static int parse_example_keys(json_t *root, struct ex_config *cfg,
                              nectar_error_t *err)
{
    json_t *app = json_object_get(root, "app");
    if (app != NULL && (!json_is_string(app) ||
                        strcmp(json_string_value(app), "example") != 0))
        return bad(err, "app", "\"example\"");
    int rc = get_bools(root, cfg, err);
    if (rc == 0)
        rc = get_strings(root, cfg, err);
    if (rc == 0)
        rc = get_numbers(root, cfg, err);
    if (rc == 0)
        rc = get_peek(root, cfg, err);
    if (rc == 0)
        rc = get_lists(root, cfg, err);
    if (rc == 0 && cfg->badge_label != NULL && cfg->badge_label[0] == '\0') {
        nectar_free(cfg->badge_label);
        cfg->badge_label = NULL;
    }
    return rc;
}

static int fill_defaults(struct ex_config *cfg, nectar_error_t *err)
{
    if (cfg->badge_label == NULL)
        cfg->badge_label = nectar_strdup(EX_BADGE_LABEL_DEFAULT);
    if (cfg->hijack_host == NULL)
        cfg->hijack_host = nectar_strdup(EX_HIJACK_HOST_DEFAULT);
    if (cfg->exclude == NULL)
        cfg->exclude =
            ex_domains_new(ex_default_excluded, ex_default_excluded_len);
    if (cfg->passthrough == NULL)
        cfg->passthrough =
            ex_domains_new(ex_default_passthrough, ex_default_passthrough_len);
    if (cfg->badge_label == NULL || cfg->hijack_host == NULL ||
        cfg->exclude == NULL || cfg->passthrough == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    return 0;
}

/* Serialises root without the example keys for the built-in parser. */
static int parse_engine_keys(json_t *root, struct ex_config *cfg,
                             nectar_error_t *err)
{
    for (const char *const *k = example_keys; *k != NULL; k++)
        json_object_del(root, *k);
    char *rest = json_dumps(root, JSON_COMPACT);
    if (rest == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    int rc = nectar__app_config_parse((const uint8_t *)rest, strlen(rest),
                                      &cfg->engine, err);
    free(rest); /* checksrc: allow (jansson's allocator) */
    return rc;
}

int ex_config_parse(const uint8_t *json, size_t len, struct ex_config *cfg,
                    nectar_error_t *err)
{
    memset(cfg, 0, sizeof(*cfg));
    set_defaults(cfg);
    size_t i = 0;
    while (json != NULL && i < len &&
           (json[i] == ' ' || json[i] == '\n' || json[i] == '\r' ||
            json[i] == '\t'))
        i++;
    int rc;
    if (json == NULL || i == len) {
        rc = nectar__app_config_parse(NULL, 0, &cfg->engine, err);
    } else {
        json_error_t jerr;
        json_t *root = json_loadb((const char *)json, len, 0, &jerr);
        if (root == NULL || !json_is_object(root)) {
            json_decref(root);
            return nectar_error_set(err, NECTAR_ECONFIG,
                                    "<root>: expected a JSON object (%s)",
                                    root ? "not an object" : jerr.text);
        }
        rc = parse_example_keys(root, cfg, err);
        if (rc == 0)
            rc = parse_engine_keys(root, cfg, err);
        json_decref(root);
    }
    if (rc == 0)
        rc = fill_defaults(cfg, err);
    return rc;
}

void ex_config_free(struct ex_config *cfg)
{
    nectar__app_config_free(&cfg->engine);
    nectar_free(cfg->badge_label);
    ex_domains_free(cfg->exclude);
    ex_domains_free(cfg->passthrough);
    nectar_free(cfg->udp_passthrough_ports);
    for (size_t i = 0; i < cfg->udp_blocked_len; i++)
        nectar_free(cfg->udp_blocked[i]);
    nectar_free(cfg->udp_blocked);
    if (cfg->ca_key_pem != NULL)
        nectar_wipe(cfg->ca_key_pem, strlen(cfg->ca_key_pem));
    nectar_free(cfg->ca_cert_pem);
    nectar_free(cfg->ca_key_pem);
    nectar_free(cfg->ipc_service_name);
    nectar_free(cfg->ipc_required_peer);
    nectar_free(cfg->upstream_ca_file);
    nectar_free(cfg->tls_keylog_file);
    nectar_free(cfg->hijack_host);
    nectar_free(cfg->keychain_dir);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- updateSettings ----------------------------------------------------- */

int ex_settings_update_parse(const char *json, size_t len,
                             struct ex_settings_update *u, nectar_error_t *err)
{
    memset(u, 0, sizeof(*u));
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return nectar_error_set(err, NECTAR_ECONFIG,
                                "settings: expected a JSON object");
    }
    int rc = 0;
    json_t *v = json_object_get(root, "html_badge_enabled");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_boolean(v))
            rc = bad(err, "html_badge_enabled", "true or false");
        u->has_badge_enabled = true;
        u->badge_enabled = json_is_true(v);
    }
    v = json_object_get(root, "html_badge_label");
    if (rc == 0 && v != NULL && !json_is_null(v)) {
        if (!json_is_string(v))
            rc = bad(err, "html_badge_label", "a string");
        else if (json_string_value(v)[0] != '\0')
            u->badge_label = nectar_strdup(json_string_value(v));
    }
    v = json_object_get(root, "exclude_domains");
    if (rc == 0 && v != NULL && !json_is_null(v)) {
        rc = get_domains(v, "exclude_domains", &u->exclude, err);
        u->has_exclude = rc == 0;
    }
    json_decref(root);
    if (rc != 0)
        ex_settings_update_free(u);
    return rc;
}

void ex_settings_update_free(struct ex_settings_update *u)
{
    nectar_free(u->badge_label);
    ex_domains_free(u->exclude);
    memset(u, 0, sizeof(*u));
}
