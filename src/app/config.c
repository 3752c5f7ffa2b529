/*
 * config.c - strict parser for the built-in handler's engine-config JSON
 * (keys and semantics: docs/config.md).
 *
 * Map: helpers that build key paths and error messages; typed getters
 * (integer ranges, booleans, strings, enums); one function per object
 * (`actions[i].match`, `rules[i]`, `proxy`, `egress`, the root); then the
 * queries used at run time (decide, apply_proxy).
 *
 * Every error message starts with the key path of the offending value,
 * e.g. "rules[0].protocol: expected \"any\", \"tcp\" or \"udp\"".
 */
#include "app/config.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/alloc.h"

#define PATH_MAX_LEN 128

/* ---- paths and errors --------------------------------------------------- */

/* Paths longer than the buffer (a very long unknown key) end in "...". */
static void path_done(char *out, int n)
{
    if (n < 0 || n >= PATH_MAX_LEN)
        memcpy(out + PATH_MAX_LEN - 4, "...", 4);
}

static void path_key(char *out, const char *base, const char *key)
{
    int n;

    if (base[0] == '\0')
        n = snprintf(out, PATH_MAX_LEN, "%s", key);
    else
        n = snprintf(out, PATH_MAX_LEN, "%s.%s", base, key);
    path_done(out, n);
}

static void path_index(char *out, const char *base, size_t i)
{
    path_done(out, snprintf(out, PATH_MAX_LEN, "%s[%zu]", base, i));
}

static int fail(nectar_error_t *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(nectar_error_t *err, const char *path, const char *fmt, ...)
{
    char reason[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    return nectar_error_set(err, NECTAR_ECONFIG, "%s: %s",
                            path[0] != '\0' ? path : "<root>", reason);
}

static int fail_nomem(nectar_error_t *err)
{
    return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
}

/* Every key of obj must be in `allowed` (NULL-terminated). */
static int check_keys(const json_t *obj, const char *path,
                      const char *const *allowed, nectar_error_t *err)
{
    json_t *o = (json_t *)obj;

    for (void *it = json_object_iter(o); it != NULL;
         it = json_object_iter_next(o, it)) {
        const char *key = json_object_iter_key(it);
        bool known = false;
        for (const char *const *a = allowed; *a != NULL && !known; a++)
            known = strcmp(*a, key) == 0;
        if (!known) {
            char p[PATH_MAX_LEN];
            path_key(p, path, key);
            return fail(err, p, "unknown key");
        }
    }
    return 0;
}

static int expect_object(const json_t *v, const char *path, nectar_error_t *err)
{
    return json_is_object(v) ? 0 : fail(err, path, "expected object");
}

/* ---- typed getters ------------------------------------------------------ */

static int get_uint(const json_t *v, const char *path, uint64_t lo, uint64_t hi,
                    uint64_t *out, nectar_error_t *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) < lo ||
        (uint64_t)json_integer_value(v) > hi)
        return fail(err, path, "expected integer %llu..%llu",
                    (unsigned long long)lo, (unsigned long long)hi);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_u32(const json_t *v, const char *path, uint32_t *out,
                   nectar_error_t *err)
{
    uint64_t x;
    int rc = get_uint(v, path, 0, UINT32_MAX, &x, err);

    if (rc == 0)
        *out = (uint32_t)x;
    return rc;
}

static int get_bool(const json_t *v, const char *path, bool *out,
                    nectar_error_t *err)
{
    if (!json_is_boolean(v))
        return fail(err, path, "expected true or false");
    *out = json_is_true(v);
    return 0;
}

/* A non-empty string without control characters; borrowed from v. */
static int get_text(const json_t *v, const char *path, const char **out,
                    nectar_error_t *err)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return fail(err, path, "expected non-empty string");
    const char *s = json_string_value(v);
    for (const char *c = s; *c != '\0'; c++) {
        if (iscntrl((unsigned char)*c))
            return fail(err, path, "control character in string");
    }
    *out = s;
    return 0;
}

static int get_dup(const json_t *v, const char *path, char **out,
                   nectar_error_t *err)
{
    const char *s;
    int rc = get_text(v, path, &s, err);

    if (rc != 0)
        return rc;
    *out = nectar_strdup(s);
    return *out != NULL ? 0 : fail_nomem(err);
}

static int get_action(const json_t *v, const char *path, nectar_action_t *out,
                      nectar_error_t *err)
{
    const char *s = json_string_value(v);

    if (s != NULL && strcmp(s, "intercept") == 0)
        *out = NECTAR_ACTION_INTERCEPT;
    else if (s != NULL && strcmp(s, "passthrough") == 0)
        *out = NECTAR_ACTION_PASSTHROUGH;
    else if (s != NULL && strcmp(s, "block") == 0)
        *out = NECTAR_ACTION_BLOCK;
    else
        return fail(err, path,
                    "expected \"intercept\", \"passthrough\" or \"block\"");
    return 0;
}

/* ---- lists ------------------------------------------------------------ */

/* Parses one array element (an object at `path`) into `elem`. */
typedef int (*elem_parse_fn)(const json_t *v, const char *path, void *elem,
                             nectar_error_t *err);

/*
 * Parse the array at key `key` into a new zeroed array of elem_size items.
 * *len counts every item touched, also a half-parsed one, so freeing the
 * config after a failure releases whatever was allocated.
 */
static int parse_list(const json_t *arr, const char *key, size_t elem_size,
                      void **items, size_t *len, elem_parse_fn fn,
                      nectar_error_t *err)
{
    char p[PATH_MAX_LEN];
    size_t n;

    if (!json_is_array(arr))
        return fail(err, key, "expected array");
    n = json_array_size(arr);
    if (n == 0)
        return 0;
    *items = nectar_calloc(n, elem_size);
    if (*items == NULL)
        return fail_nomem(err);
    for (size_t i = 0; i < n; i++) {
        *len = i + 1;
        path_index(p, key, i);
        int rc =
            fn(json_array_get(arr, i), p, (char *)*items + i * elem_size, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- actions ------------------------------------------------------------ */

static int parse_match(const json_t *obj, const char *path, struct app_match *m,
                       nectar_error_t *err)
{
    static const char *const keys[] = {"protocol", "remote_port", "remote_host",
                                       "app", NULL};
    char p[PATH_MAX_LEN];
    const json_t *v;
    int rc;

    m->remote_port = -1;
    if ((rc = expect_object(obj, path, err)) != 0 ||
        (rc = check_keys(obj, path, keys, err)) != 0)
        return rc;

    if ((v = json_object_get(obj, "protocol")) != NULL) {
        const char *s = json_string_value(v);
        path_key(p, path, "protocol");
        if (s != NULL && strcmp(s, "tcp") == 0)
            m->protocol = NECTAR_PROTO_TCP;
        else if (s != NULL && strcmp(s, "udp") == 0)
            m->protocol = NECTAR_PROTO_UDP;
        else
            return fail(err, p, "expected \"tcp\" or \"udp\"");
        m->has_protocol = true;
    }
    if ((v = json_object_get(obj, "remote_port")) != NULL) {
        uint64_t port;
        path_key(p, path, "remote_port");
        if ((rc = get_uint(v, p, 0, 65535, &port, err)) != 0)
            return rc;
        m->remote_port = (int)port;
    }
    if ((v = json_object_get(obj, "remote_host")) != NULL) {
        const char *s, *why = NULL;
        path_key(p, path, "remote_host");
        if ((rc = get_text(v, p, &s, err)) != 0)
            return rc;
        rc = nectar__app_host_pattern_parse(s, &m->remote_host, &why);
        if (rc == NECTAR_ENOMEM)
            return fail_nomem(err);
        if (rc != 0)
            return fail(err, p, "%s", why);
        m->has_remote_host = true;
    }
    if ((v = json_object_get(obj, "app")) != NULL) {
        path_key(p, path, "app");
        if ((rc = get_dup(v, p, &m->app, err)) != 0)
            return rc;
    }
    return 0;
}

static int parse_action(const json_t *obj, const char *path, void *elem,
                        nectar_error_t *err)
{
    struct app_action_rule *a = elem;
    static const char *const keys[] = {"match", "action", NULL};
    char p[PATH_MAX_LEN];
    const json_t *v;
    int rc;

    a->match.remote_port = -1;
    if ((rc = expect_object(obj, path, err)) != 0 ||
        (rc = check_keys(obj, path, keys, err)) != 0)
        return rc;
    path_key(p, path, "match");
    if ((v = json_object_get(obj, "match")) == NULL)
        return fail(err, p, "missing");
    if ((rc = parse_match(v, p, &a->match, err)) != 0)
        return rc;
    path_key(p, path, "action");
    if ((v = json_object_get(obj, "action")) == NULL)
        return fail(err, p, "missing");
    return get_action(v, p, &a->action, err);
}

static int parse_actions(const json_t *arr, struct app_config *cfg,
                         nectar_error_t *err)
{
    return parse_list(arr, "actions", sizeof(*cfg->actions),
                      (void **)&cfg->actions, &cfg->actions_len, parse_action,
                      err);
}

/* ---- rules -------------------------------------------------------------- */

/*
 * A network text is an IP literal, a CIDR ("10.0.0.0/8", split into the
 * network address and prefix as the spec's CIDR setter does) or a host
 * name.  *prefix is set only for the CIDR form; *family is 0 for names.
 */
static int parse_network(const json_t *v, const char *path, char **out,
                         int *prefix, int *family, nectar_error_t *err)
{
    struct app_cidr c;
    const char *s;
    char buf[64];
    int rc;

    if ((rc = get_text(v, path, &s, err)) != 0)
        return rc;
    *family = 0;
    if (nectar__app_cidr_parse(s, &c) == 0) {
        *family = c.family;
        if (strchr(s, '/') != NULL) {
            *prefix = (int)c.prefix;
            s = nectar__app_cidr_addr_text(&c, buf, sizeof(buf));
        }
    } else if (strchr(s, '/') != NULL || strchr(s, ':') != NULL ||
               strchr(s, ' ') != NULL) {
        return fail(err, path, "expected an IP address, CIDR or host name");
    }
    *out = nectar_strdup(s);
    return *out != NULL ? 0 : fail_nomem(err);
}

static int parse_prefix(const json_t *obj, const char *path, const char *key,
                        int family, int *prefix, nectar_error_t *err)
{
    char p[PATH_MAX_LEN];
    const json_t *v = json_object_get(obj, key);
    uint64_t x;
    int rc;

    if (v == NULL)
        return 0;
    path_key(p, path, key);
    if (*prefix >= 0)
        return fail(err, p, "the network is already a CIDR");
    if (family == 0)
        return fail(err, p, "needs an IP address as the network");
    rc = get_uint(v, p, 0, family == AF_INET ? 32 : 128, &x, err);
    if (rc == 0)
        *prefix = (int)x;
    return rc;
}

static int parse_rule(const json_t *obj, const char *path, void *elem,
                      nectar_error_t *err)
{
    nectar_rule_t *r = elem;
    static const char *const keys[] = {
        "remote_network", "remote_prefix", "remote_port", "local_network",
        "local_prefix",   "protocol",      "exclude",     NULL};
    char p[PATH_MAX_LEN];
    const json_t *v;
    int rc, rfam = 0, lfam = 0;
    char *text;

    r->remote_prefix = r->local_prefix = r->remote_port = -1;
    r->protocol = RAMA_RULE_PROTOCOL_ANY;
    if ((rc = expect_object(obj, path, err)) != 0 ||
        (rc = check_keys(obj, path, keys, err)) != 0)
        return rc;
    if ((v = json_object_get(obj, "remote_network")) != NULL) {
        path_key(p, path, "remote_network");
        rc = parse_network(v, p, &text, &r->remote_prefix, &rfam, err);
        if (rc != 0)
            return rc;
        r->remote_network = text;
    }
    if ((v = json_object_get(obj, "local_network")) != NULL) {
        path_key(p, path, "local_network");
        rc = parse_network(v, p, &text, &r->local_prefix, &lfam, err);
        if (rc != 0)
            return rc;
        r->local_network = text;
    }
    if ((rc = parse_prefix(obj, path, "remote_prefix", rfam, &r->remote_prefix,
                           err)) != 0 ||
        (rc = parse_prefix(obj, path, "local_prefix", lfam, &r->local_prefix,
                           err)) != 0)
        return rc;
    if ((v = json_object_get(obj, "remote_port")) != NULL) {
        uint64_t port;
        path_key(p, path, "remote_port");
        if ((rc = get_uint(v, p, 0, 65535, &port, err)) != 0)
            return rc;
        r->remote_port = (int)port;
    }
    if ((v = json_object_get(obj, "protocol")) != NULL) {
        const char *s = json_string_value(v);
        path_key(p, path, "protocol");
        if (s != NULL && strcmp(s, "any") == 0)
            r->protocol = RAMA_RULE_PROTOCOL_ANY;
        else if (s != NULL && strcmp(s, "tcp") == 0)
            r->protocol = RAMA_RULE_PROTOCOL_TCP;
        else if (s != NULL && strcmp(s, "udp") == 0)
            r->protocol = RAMA_RULE_PROTOCOL_UDP;
        else
            return fail(err, p, "expected \"any\", \"tcp\" or \"udp\"");
    }
    if ((v = json_object_get(obj, "exclude")) != NULL) {
        path_key(p, path, "exclude");
        return get_bool(v, p, &r->exclude, err);
    }
    return 0;
}

static int parse_rules(const json_t *arr, struct app_config *cfg,
                       nectar_error_t *err)
{
    cfg->has_rules = json_is_array(arr);
    return parse_list(arr, "rules", sizeof(*cfg->rules), (void **)&cfg->rules,
                      &cfg->rules_len, parse_rule, err);
}

/* ---- proxy -------------------------------------------------------------- */

/* Names as in RamaTransparentProxyConfig, indexed by enum app_proxy_field. */
static const char *const proxy_names[APP_PX_COUNT + 2] = {
    [APP_PX_WRITE_PUMP] = "tcp_write_pump_max_pending_bytes",
    [APP_PX_SOFT_CAP] = "flow_pressure_soft_cap",
    [APP_PX_LOW_WATER] = "flow_pressure_low_water",
    [APP_PX_IDLE_FLOOR] = "flow_pressure_idle_floor_ms",
    [APP_PX_HARD_CAP] = "tcp_start_in_flight_hard_cap",
    [APP_PX_START_SOFT_CAP] = "tcp_start_in_flight_soft_cap",
    [APP_PX_BREAKER_P95] = "tcp_start_latency_breaker_p95_ms",
    [APP_PX_BREAKER_CLOSE_P95] = "tcp_start_latency_breaker_close_p95_ms",
    [APP_PX_PRESSURE_TIMEOUT] = "tcp_pressure_connect_timeout_ms",
    [APP_PX_BREAKER_TIMEOUT] = "tcp_breaker_connect_timeout_ms",
    [APP_PX_REFUSAL_ACTION] = "flow_refusal_action",
    [APP_PX_COUNT] = "tunnel_remote_address",
    [APP_PX_COUNT + 1] = NULL,
};

static int parse_refusal(const json_t *v, const char *path, uint64_t *out,
                         nectar_error_t *err)
{
    const char *s = json_string_value(v);

    if (s != NULL && strcmp(s, "block") == 0)
        *out = 0;
    else if (s != NULL && strcmp(s, "passthrough") == 0)
        *out = 1;
    else if (json_is_integer(v) &&
             (json_integer_value(v) == 0 || json_integer_value(v) == 1))
        *out = (uint64_t)json_integer_value(v);
    else
        return fail(err, path, "expected 0, 1, \"block\" or \"passthrough\"");
    return 0;
}

static int parse_proxy_number(const json_t *v, const char *path, int field,
                              uint64_t *out, nectar_error_t *err)
{
    int rc;

    if (field == APP_PX_REFUSAL_ACTION)
        return parse_refusal(v, path, out, err);
    if (field != APP_PX_WRITE_PUMP)
        return get_uint(v, path, 0, UINT32_MAX, out, err);
    /* The spec's setter clamps instead of rejecting. */
    rc = get_uint(v, path, 0, INT64_MAX, out, err);
    if (rc != 0)
        return rc;
    if (*out < APP_WRITE_PUMP_MIN)
        *out = APP_WRITE_PUMP_MIN;
    if (*out > APP_WRITE_PUMP_MAX)
        *out = APP_WRITE_PUMP_MAX;
    return 0;
}

static int parse_proxy(const json_t *obj, struct app_config *cfg,
                       nectar_error_t *err)
{
    char p[PATH_MAX_LEN];
    const json_t *v;
    int rc;

    if ((rc = expect_object(obj, "proxy", err)) != 0 ||
        (rc = check_keys(obj, "proxy", proxy_names, err)) != 0)
        return rc;
    for (int f = 0; f < APP_PX_COUNT; f++) {
        if ((v = json_object_get(obj, proxy_names[f])) == NULL)
            continue;
        path_key(p, "proxy", proxy_names[f]);
        rc = parse_proxy_number(v, p, f, &cfg->proxy_value[f], err);
        if (rc != 0)
            return rc;
        cfg->proxy_set[f] = true;
    }
    if ((v = json_object_get(obj, "tunnel_remote_address")) != NULL)
        return get_dup(v, "proxy.tunnel_remote_address",
                       &cfg->tunnel_remote_address, err);
    return 0;
}

/* ---- egress ------------------------------------------------------------- */

/* Same defaults as nectar_egress_options_defaults (spec ne-engine §2.8);
 * kept here so the parser has no engine dependency. */
static void egress_defaults(RamaTcpEgressConnectOptions *o)
{
    memset(o, 0, sizeof(*o));
    o->parameters.preserve_original_meta_data = true;
    o->tcp_keepalive_enabled = true;
    o->tcp_no_delay = true;
}

/* A u32 option with a has_ flag; 0 leaves it unset where `zero_unset`. */
static int egress_u32(const json_t *obj, const char *key, bool zero_unset,
                      bool *has, uint32_t *value, nectar_error_t *err)
{
    char p[PATH_MAX_LEN];
    const json_t *v = json_object_get(obj, key);
    int rc;

    if (v == NULL)
        return 0;
    path_key(p, "egress", key);
    if ((rc = get_u32(v, p, value, err)) != 0)
        return rc;
    *has = !(zero_unset && *value == 0);
    return 0;
}

static int egress_bool(const json_t *obj, const char *key, bool *has,
                       bool *value, nectar_error_t *err)
{
    char p[PATH_MAX_LEN];
    const json_t *v = json_object_get(obj, key);
    int rc;

    if (v == NULL)
        return 0;
    path_key(p, "egress", key);
    if ((rc = get_bool(v, p, value, err)) != 0)
        return rc;
    if (has != NULL)
        *has = true;
    return 0;
}

static int parse_egress(const json_t *obj, struct app_config *cfg,
                        nectar_error_t *err)
{
    static const char *const keys[] = {"connect_timeout_ms",
                                       "linger_close_ms",
                                       "egress_eof_grace_ms",
                                       "tcp_no_delay",
                                       "keepalive",
                                       "keepalive_idle_secs",
                                       "keepalive_interval_secs",
                                       "keepalive_count",
                                       "maximum_segment_size",
                                       "fast_open",
                                       "preserve_original_meta_data",
                                       "allow_system_proxy",
                                       NULL};
    RamaTcpEgressConnectOptions *o = &cfg->egress;
    const json_t *v;
    int rc;

    if ((rc = expect_object(obj, "egress", err)) != 0 ||
        (rc = check_keys(obj, "egress", keys, err)) != 0)
        return rc;
    egress_defaults(o);
    cfg->has_egress = true;
    if ((rc = egress_u32(obj, "connect_timeout_ms", true,
                         &o->has_connect_timeout_ms, &o->connect_timeout_ms,
                         err)) != 0 ||
        (rc = egress_u32(obj, "linger_close_ms", false, &o->has_linger_close_ms,
                         &o->linger_close_ms, err)) != 0 ||
        (rc = egress_u32(obj, "egress_eof_grace_ms", false,
                         &o->has_egress_eof_grace_ms, &o->egress_eof_grace_ms,
                         err)) != 0 ||
        (rc = egress_u32(obj, "keepalive_idle_secs", false,
                         &o->has_tcp_keepalive_idle_secs,
                         &o->tcp_keepalive_idle_secs, err)) != 0 ||
        (rc = egress_u32(obj, "keepalive_interval_secs", false,
                         &o->has_tcp_keepalive_interval_secs,
                         &o->tcp_keepalive_interval_secs, err)) != 0 ||
        (rc = egress_u32(obj, "keepalive_count", false,
                         &o->has_tcp_keepalive_count, &o->tcp_keepalive_count,
                         err)) != 0)
        return rc;
    if ((v = json_object_get(obj, "maximum_segment_size")) != NULL) {
        uint64_t mss;
        if ((rc = get_uint(v, "egress.maximum_segment_size", 1, 65535, &mss,
                           err)) != 0)
            return rc;
        o->has_tcp_maximum_segment_size = true;
        o->tcp_maximum_segment_size = (uint32_t)mss;
    }
    if ((rc = egress_bool(obj, "tcp_no_delay", NULL, &o->tcp_no_delay, err)) !=
            0 ||
        (rc = egress_bool(obj, "keepalive", NULL, &o->tcp_keepalive_enabled,
                          err)) != 0 ||
        (rc = egress_bool(obj, "fast_open", &o->has_tcp_enable_fast_open,
                          &o->tcp_enable_fast_open, err)) != 0 ||
        (rc = egress_bool(obj, "preserve_original_meta_data", NULL,
                          &o->parameters.preserve_original_meta_data, err)) !=
            0)
        return rc;
    return egress_bool(obj, "allow_system_proxy", NULL,
                       &o->parameters.allow_system_proxy, err);
}

/* ---- root --------------------------------------------------------------- */

static bool all_space(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!isspace(p[i]))
            return false;
    }
    return true;
}

static int parse_root(const json_t *root, struct app_config *cfg,
                      nectar_error_t *err)
{
    static const char *const keys[] = {"default_action", "actions", "rules",
                                       "proxy",          "egress",  NULL};
    const json_t *v;
    int rc;

    if ((rc = expect_object(root, "", err)) != 0 ||
        (rc = check_keys(root, "", keys, err)) != 0)
        return rc;
    if ((v = json_object_get(root, "default_action")) != NULL &&
        (rc = get_action(v, "default_action", &cfg->default_action, err)) != 0)
        return rc;
    if ((v = json_object_get(root, "actions")) != NULL &&
        (rc = parse_actions(v, cfg, err)) != 0)
        return rc;
    if ((v = json_object_get(root, "rules")) != NULL &&
        (rc = parse_rules(v, cfg, err)) != 0)
        return rc;
    if ((v = json_object_get(root, "proxy")) != NULL &&
        (rc = parse_proxy(v, cfg, err)) != 0)
        return rc;
    if ((v = json_object_get(root, "egress")) != NULL)
        return parse_egress(v, cfg, err);
    return 0;
}

int nectar__app_config_parse(const uint8_t *json, size_t len,
                             struct app_config *cfg, nectar_error_t *err)
{
    json_error_t jerr;
    json_t *root;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    cfg->default_action = NECTAR_ACTION_INTERCEPT;
    if (json == NULL || len == 0 || all_space(json, len))
        return 0;
    root = json_loadb((const char *)json, len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return fail(err, "", "invalid JSON at line %d, column %d: %s",
                    jerr.line, jerr.column, jerr.text);
    rc = parse_root(root, cfg, err);
    json_decref(root);
    if (rc != 0)
        nectar__app_config_free(cfg);
    return rc;
}

void nectar__app_config_free(struct app_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->actions_len; i++) {
        nectar__app_host_pattern_free(&cfg->actions[i].match.remote_host);
        nectar_free(cfg->actions[i].match.app);
    }
    nectar_free(cfg->actions);
    for (size_t i = 0; i < cfg->rules_len; i++) {
        nectar_free((char *)cfg->rules[i].remote_network);
        nectar_free((char *)cfg->rules[i].local_network);
    }
    nectar_free(cfg->rules);
    nectar_free(cfg->tunnel_remote_address);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- queries ------------------------------------------------------------ */

nectar_action_t nectar__app_config_decide(const struct app_config *cfg,
                                          const nectar_flow_meta_t *meta)
{
    for (size_t i = 0; i < cfg->actions_len; i++) {
        if (nectar__app_match_flow(&cfg->actions[i].match, meta))
            return cfg->actions[i].action;
    }
    return cfg->default_action;
}

void nectar__app_config_apply_proxy(const struct app_config *cfg,
                                    nectar_proxy_config_t *out)
{
    const uint64_t *v = cfg->proxy_value;
    const bool *set = cfg->proxy_set;

    if (cfg->tunnel_remote_address != NULL)
        out->tunnel_remote_address = cfg->tunnel_remote_address;
    if (cfg->has_rules) {
        out->rules = cfg->rules;
        out->rules_len = cfg->rules_len;
    }
    if (set[APP_PX_WRITE_PUMP])
        out->tcp_write_pump_max_pending_bytes = (size_t)v[APP_PX_WRITE_PUMP];
    uint32_t *fields[APP_PX_COUNT] = {
        [APP_PX_SOFT_CAP] = &out->flow_pressure_soft_cap,
        [APP_PX_LOW_WATER] = &out->flow_pressure_low_water,
        [APP_PX_IDLE_FLOOR] = &out->flow_pressure_idle_floor_ms,
        [APP_PX_HARD_CAP] = &out->tcp_start_in_flight_hard_cap,
        [APP_PX_START_SOFT_CAP] = &out->tcp_start_in_flight_soft_cap,
        [APP_PX_BREAKER_P95] = &out->tcp_start_latency_breaker_p95_ms,
        [APP_PX_BREAKER_CLOSE_P95] =
            &out->tcp_start_latency_breaker_close_p95_ms,
        [APP_PX_PRESSURE_TIMEOUT] = &out->tcp_pressure_connect_timeout_ms,
        [APP_PX_BREAKER_TIMEOUT] = &out->tcp_breaker_connect_timeout_ms,
        [APP_PX_REFUSAL_ACTION] = &out->flow_refusal_action,
    };
    for (int f = 0; f < APP_PX_COUNT; f++) {
        if (set[f] && fields[f] != NULL)
            *fields[f] = (uint32_t)v[f];
    }
}

const char *nectar__app_action_name(nectar_action_t a)
{
    switch (a) {
    case NECTAR_ACTION_INTERCEPT:
        return "intercept";
    case NECTAR_ACTION_PASSTHROUGH:
        return "passthrough";
    case NECTAR_ACTION_BLOCK:
        return "block";
    }
    return "unknown";
}
