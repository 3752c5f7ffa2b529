/*
 * config.c - the `host` object of a `nectar run` config file.
 *
 * The file is the engine's JSON object with one extra member, "host".  The
 * host member is taken out here and checked field by field; the rest is
 * re-serialised and handed to the engine untouched.  Every error names the
 * file and the field, e.g. "cfg.json: host.tcp_port: expected 1..65535".
 */
#include "host/linux/linux_host.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "nectar/ipc.h"

void nectar__linux_config_defaults(nectar_linux_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->tcp_port = 15001;
    cfg->udp_port = 15001;
    cfg->fwmark = 0x6e63;
    cfg->bypass_mark = 0x6e64;
    cfg->bypass_gid = 28260;
    cfg->route_table = 28259;
    cfg->rule_priority = 28259;
    cfg->capture_forward = true;
    cfg->capture_local = false;
    cfg->sticky_passthrough = true;
    cfg->sticky_timeout_s = 300;
    cfg->udp_idle_timeout_ms = 60000;
    cfg->loops = 2;
    cfg->process_identity = true;
    cfg->log_flows = true;
    cfg->control = true;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        nectar_free(list[i]);
    nectar_free(list);
}

void nectar__linux_config_free(nectar_linux_config_t *cfg)
{
    if (cfg == NULL)
        return;
    nectar_free(cfg->engine_json);
    free_list(cfg->interfaces, cfg->n_interfaces);
    free_list(cfg->cgroups, cfg->n_cgroups);
    nectar_free(cfg->control_service);
    memset(cfg, 0, sizeof(*cfg));
}

/* Field readers: each returns 0 or sets *err naming path and key. */
struct ctx {
    const char *path;
    nectar_error_t *err;
};

static int bad(struct ctx *c, const char *key, const char *why)
{
    return nectar_error_set(c->err, NECTAR_ECONFIG, "%s: host.%s: %s",
                            c->path, key, why);
}

static int get_uint(struct ctx *c, json_t *host, const char *key,
                    uint64_t min, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(host, key);
    if (v == NULL)
        return 1; /* absent: keep the default */
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max) {
        char why[96];
        snprintf(why, sizeof(why), "expected an integer %llu..%llu",
                 (unsigned long long)min, (unsigned long long)max);
        return bad(c, key, why);
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int read_u16(struct ctx *c, json_t *host, const char *key,
                    uint16_t min, uint16_t *field)
{
    uint64_t v;
    int rc = get_uint(c, host, key, min, 65535, &v);
    if (rc == 0)
        *field = (uint16_t)v;
    return rc < 0 ? rc : 0;
}

static int read_u32(struct ctx *c, json_t *host, const char *key,
                    uint32_t min, uint32_t max, uint32_t *field)
{
    uint64_t v;
    int rc = get_uint(c, host, key, min, max, &v);
    if (rc == 0)
        *field = (uint32_t)v;
    return rc < 0 ? rc : 0;
}

static int read_bool(struct ctx *c, json_t *host, const char *key,
                     bool *field)
{
    json_t *v = json_object_get(host, key);
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v))
        return bad(c, key, "expected true or false");
    *field = json_is_true(v);
    return 0;
}

/* A list of short names: interfaces (IFNAMSIZ) or cgroup paths.  Quotes
 * and backslashes are refused because the names go into nft text. */
static int read_names(struct ctx *c, json_t *host, const char *key,
                      size_t maxlen, char ***list, size_t *n)
{
    json_t *v = json_object_get(host, key);
    if (v == NULL)
        return 0;
    if (!json_is_array(v))
        return bad(c, key, "expected an array of strings");
    size_t count = json_array_size(v);
    char **out = nectar_calloc(count ? count : 1, sizeof(char *));
    if (out == NULL)
        return nectar_error_set(c->err, NECTAR_ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
        json_t *s = json_array_get(v, i);
        const char *t = json_string_value(s);
        size_t len = t ? strlen(t) : 0;
        if (t == NULL || len == 0 || len >= maxlen ||
            strpbrk(t, "\"\\\n\t ") != NULL) {
            free_list(out, i);
            char why[96];
            snprintf(why, sizeof(why),
                     "[%zu]: expected a name of 1..%zu characters without "
                     "quotes or spaces", i, maxlen - 1);
            return bad(c, key, why);
        }
        out[i] = nectar_strdup(t);
        if (out[i] == NULL) {
            free_list(out, i);
            return nectar_error_set(c->err, NECTAR_ENOMEM, "out of memory");
        }
    }
    *list = out;
    *n = count;
    return 0;
}

/* control_service: an IPC service name (docs/ipc.md): an abstract name,
 * or a path starting with '/'. */
static int read_service(struct ctx *c, json_t *host, char **out)
{
    json_t *v = json_object_get(host, "control_service");
    if (v == NULL || json_is_null(v))
        return 0;
    const char *t = json_string_value(v);
    size_t len = t ? strlen(t) : 0;
    if (t == NULL || len == 0 || len > 100)
        return bad(c, "control_service",
                   "expected a service name of 1..100 characters");
    *out = nectar_strdup(t);
    if (*out == NULL)
        return nectar_error_set(c->err, NECTAR_ENOMEM, "out of memory");
    return 0;
}

static const char *const known_keys[] = {
    "tcp_port", "udp_port", "fwmark", "bypass_mark", "bypass_gid",
    "route_table",
    "rule_priority", "interfaces", "capture_forward", "capture_local",
    "cgroups", "connect_timeout_ms", "sticky_passthrough",
    "sticky_timeout_s", "udp_idle_timeout_ms", "loops", "process_identity",
    "log_flows", "control", "control_service", NULL,
};

static int check_known(struct ctx *c, json_t *host)
{
    const char *key;
    json_t *v;
    json_object_foreach(host, key, v)
    {
        int ok = 0;
        for (size_t i = 0; known_keys[i] != NULL; i++)
            ok |= strcmp(key, known_keys[i]) == 0;
        if (!ok)
            return bad(c, key, "unknown key (a typo?)");
    }
    return 0;
}

static int read_host(struct ctx *c, json_t *host, nectar_linux_config_t *cfg)
{
    int rc = check_known(c, host);
    if (rc == 0)
        rc = read_u16(c, host, "tcp_port", 1, &cfg->tcp_port);
    if (rc == 0)
        rc = read_u16(c, host, "udp_port", 0, &cfg->udp_port);
    if (rc == 0)
        rc = read_u32(c, host, "fwmark", 1, UINT32_MAX, &cfg->fwmark);
    if (rc == 0)
        rc = read_u32(c, host, "bypass_mark", 1, UINT32_MAX,
                      &cfg->bypass_mark);
    if (rc == 0)
        rc = read_u32(c, host, "bypass_gid", 0, 0xfffffffe,
                      &cfg->bypass_gid);
    if (rc == 0)
        rc = read_u32(c, host, "route_table", 1, UINT32_MAX - 1,
                      &cfg->route_table);
    if (rc == 0)
        rc = read_u32(c, host, "rule_priority", 1, 32765,
                      &cfg->rule_priority);
    if (rc == 0)
        rc = read_names(c, host, "interfaces", 16, &cfg->interfaces,
                        &cfg->n_interfaces);
    if (rc == 0)
        rc = read_bool(c, host, "capture_forward", &cfg->capture_forward);
    if (rc == 0)
        rc = read_bool(c, host, "capture_local", &cfg->capture_local);
    if (rc == 0)
        rc = read_names(c, host, "cgroups", 256, &cfg->cgroups,
                        &cfg->n_cgroups);
    if (rc == 0)
        rc = read_u32(c, host, "connect_timeout_ms", 0, 600000,
                      &cfg->connect_timeout_ms);
    if (rc == 0)
        rc = read_bool(c, host, "sticky_passthrough",
                       &cfg->sticky_passthrough);
    if (rc == 0)
        rc = read_u32(c, host, "sticky_timeout_s", 1, 86400,
                      &cfg->sticky_timeout_s);
    if (rc == 0)
        rc = read_u32(c, host, "udp_idle_timeout_ms", 0, 3600000,
                      &cfg->udp_idle_timeout_ms);
    uint32_t loops = cfg->loops;
    if (rc == 0)
        rc = read_u32(c, host, "loops", 1, 64, &loops);
    cfg->loops = loops;
    if (rc == 0)
        rc = read_bool(c, host, "process_identity", &cfg->process_identity);
    if (rc == 0)
        rc = read_bool(c, host, "log_flows", &cfg->log_flows);
    if (rc == 0)
        rc = read_bool(c, host, "control", &cfg->control);
    if (rc == 0)
        rc = read_service(c, host, &cfg->control_service);
    return rc;
}

/* The example binds its own control service on xpc_service_name; both on
 * one name would make the second bind fail at start, so refuse it here. */
static int check_service_clash(struct ctx *c, json_t *root,
                               const nectar_linux_config_t *cfg)
{
    const char *ex = json_string_value(json_object_get(root,
                                                       "xpc_service_name"));
    const char *ours = cfg->control_service ? cfg->control_service
                                            : NECTAR_CONTROL_SERVICE_DEFAULT;
    if (!cfg->control || ex == NULL || strcmp(ex, ours) != 0)
        return 0;
    return bad(c, "control_service",
               "same name as the engine's xpc_service_name (the example "
               "serves that one itself): pick another name or set "
               "host.control to false");
}

static int check_whole(struct ctx *c, const nectar_linux_config_t *cfg)
{
    if (cfg->fwmark == cfg->bypass_mark)
        return bad(c, "bypass_mark", "must differ from fwmark");
    if (!cfg->capture_forward && !cfg->capture_local)
        return bad(c, "capture_forward",
                   "capture_forward and capture_local are both false: "
                   "nothing would be intercepted");
    /* 253..255 are the kernel's default, main and local tables. */
    if (cfg->route_table >= 253 && cfg->route_table <= 255)
        return bad(c, "route_table", "253..255 are the kernel's own tables");
    if (cfg->n_cgroups > 0 && !cfg->capture_local)
        return bad(c, "cgroups", "needs capture_local: true");
    return 0;
}

int nectar__linux_config_parse(const char *text, size_t len, const char *path,
                               nectar_linux_config_t *cfg,
                               nectar_error_t *err)
{
    nectar__linux_config_defaults(cfg);
    struct ctx c = {path, err};
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (root == NULL)
        return nectar_error_set(err, NECTAR_ECONFIG, "%s:%d:%d: %s", path,
                                jerr.line, jerr.column, jerr.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = nectar_error_set(err, NECTAR_ECONFIG,
                              "%s: expected a JSON object at the top", path);
        goto out;
    }
    json_t *host = json_object_get(root, "host");
    if (host != NULL && !json_is_object(host)) {
        rc = nectar_error_set(err, NECTAR_ECONFIG,
                              "%s: host: expected an object", path);
        goto out;
    }
    if (host != NULL)
        rc = read_host(&c, host, cfg);
    if (rc == 0)
        rc = check_whole(&c, cfg);
    if (rc == 0)
        rc = check_service_clash(&c, root, cfg);
    if (rc != 0)
        goto out;
    json_object_del(root, "host");
    char *engine = json_dumps(root, JSON_COMPACT);
    if (engine == NULL) {
        rc = nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
        goto out;
    }
    cfg->engine_json = nectar_strdup(engine);
    cfg->engine_json_len = strlen(engine);
    free(engine); /* jansson's allocation; checksrc: allow */
    if (cfg->engine_json == NULL)
        rc = nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
out:
    json_decref(root);
    if (rc != 0)
        nectar__linux_config_free(cfg);
    return rc;
}

int nectar__linux_config_load(const char *path, nectar_linux_config_t *cfg,
                              nectar_error_t *err)
{
    nectar__linux_config_defaults(cfg);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return nectar_error_set(err, NECTAR_ECONFIG, "%s: %s", path,
                                strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = nectar_malloc(cap);
    int rc = buf ? 0 : NECTAR_ENOMEM;
    while (rc == 0) {
        if (len == cap) {
            if (cap >= (16u << 20)) {
                rc = nectar_error_set(err, NECTAR_ECONFIG,
                                      "%s: larger than 16 MiB", path);
                break;
            }
            char *nb = nectar_realloc(buf, cap * 2);
            if (nb == NULL) {
                rc = NECTAR_ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = nectar_error_set(err, NECTAR_ECONFIG, "%s: read error", path);
    fclose(f);
    if (rc == NECTAR_ENOMEM)
        nectar_error_set(err, rc, "out of memory");
    if (rc == 0)
        rc = nectar__linux_config_parse(buf, len, path, cfg, err);
    nectar_free(buf);
    return rc;
}
