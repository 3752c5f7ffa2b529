/*
 * control.c - the control service of `nectar run`: the slots of
 * nectar_control_ops_t (include/nectar/ipc.h) for a running Linux host.
 *
 * status and flows read the host core (counters, the live-flow registry);
 * message goes to the engine's app-message handler.  The settings, CA and
 * key-log routes belong to an application: when the engine config selects
 * `"app": "example"` they are the example's own slots
 * (nectar_example_control_ops); the built-in handler has none, so they
 * answer with a clear "not supported" error.
 *
 * Threads: start/stop on the front thread; slots on the IPC listener's
 * thread.  Nothing here is mutable after start, so slots need no lock.
 */
#include "host/linux/linux_host.h"

#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "host/core/host.h"
#include "nectar/example.h"
#include "nectar/ipc.h"
#include "nectar/log.h"

#define TAG "linux-host"

#ifndef NECTAR_VERSION_TEXT
#define NECTAR_VERSION_TEXT "unknown"
#endif

static const char builtin_refusal[] =
    "not supported by the built-in handler (set \"app\": \"example\" in "
    "the engine config)";

struct nectar_linux_control {
    nectar_host_t *host;
    bool example;          /* the engine runs the example application */
    uint64_t started_ms;   /* CLOCK_MONOTONIC */
    nectar_control_ops_t app_ops; /* the example's slots, when example */
    nectar_control_t *service;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- status and flows ---------------------------------------------------- */

static int ctl_status(void *ctx, nectar_control_status_t *out)
{
    struct nectar_linux_control *c = ctx;
    nectar_host_stats_t s;
    nectar__host_stats(c->host, &s);
    out->version = NECTAR_VERSION_TEXT;
    out->uptime_ms = mono_ms() - c->started_ms;
    out->tcp_flows = s.tcp_live;
    out->udp_flows = s.udp_live;
    out->total_flows = s.tcp_total + s.udp_total;
    out->tls_keylog = c->example && nectar_example_get_tls_keylog();
    out->handler = c->example ? "example" : "builtin";
    out->intercepted = s.intercepted;
    out->passthrough = s.passthrough;
    out->blocked = s.blocked;
    out->promoted = s.promoted;
    return 0;
}

struct flow_relay {
    nectar_control_flow_emit emit;
    void *emit_ctx;
};

/* Runs under the core's registry lock: only copies into the reply. */
static void relay_flow(void *ctx, const nectar_host_flow_info_t *f)
{
    struct flow_relay *r = ctx;
    nectar_control_flow_t out = {
        .id = f->id,
        .protocol = f->protocol == IPPROTO_TCP ? "tcp" : "udp",
        .app = f->app,
        .destination = f->remote,
        /* "in" is what came back from the destination (a download),
         * "out" what the client sent towards it. */
        .bytes_in = f->bytes_s2c,
        .bytes_out = f->bytes_c2s,
        .age_ms = f->age_ms,
    };
    r->emit(r->emit_ctx, &out);
}

static int ctl_list_flows(void *ctx, nectar_control_flow_emit emit,
                          void *emit_ctx)
{
    struct nectar_linux_control *c = ctx;
    struct flow_relay r = {emit, emit_ctx};
    nectar__host_flows(c->host, relay_flow, &r);
    return 0;
}

/* ---- app messages -------------------------------------------------------- */

/* The engine's reply is copied so that free_bytes needs one allocator
 * only (the example's buffers are nectar_malloc'd too, example.h). */
static int ctl_app_message(void *ctx, const uint8_t *msg, size_t len,
                           uint8_t **reply, size_t *reply_len,
                           nectar_error_t *err)
{
    struct nectar_linux_control *c = ctx;
    RamaBytesOwned r;
    if (nectar__host_app_message(c->host, msg, len, &r) != 0)
        return nectar_error_set(err, NECTAR_ESTATE,
                                "the engine is stopping");
    if (r.ptr == NULL || r.len == 0) {
        rama_owned_bytes_free(r);
        return 0; /* the handler has no reply */
    }
    uint8_t *copy = nectar_malloc(r.len);
    if (copy != NULL)
        memcpy(copy, r.ptr, r.len);
    size_t n = r.len;
    rama_owned_bytes_free(r);
    if (copy == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    *reply = copy;
    *reply_len = n;
    return 0;
}

static void ctl_free_bytes(void *ctx, uint8_t *p)
{
    (void)ctx;
    nectar_free(p);
}

/* ---- application routes -------------------------------------------------- */

static int ctl_update_settings(void *ctx, const nectar_control_settings_t *s,
                               nectar_error_t *err)
{
    struct nectar_linux_control *c = ctx;
    if (!c->example)
        return nectar_error_set(err, NECTAR_ENOTSUP, "settings: %s",
                                builtin_refusal);
    return c->app_ops.update_settings(c->app_ops.ctx, s, err);
}

/* One CA operation: the example's slot, or the refusal in-band. */
static void ca_call(struct nectar_linux_control *c,
                    void (*op)(void *, nectar_control_ca_result_t *),
                    nectar_control_ca_result_t *res)
{
    if (c->example && op != NULL) {
        op(c->app_ops.ctx, res);
        return;
    }
    res->ok = false;
    snprintf(res->error, sizeof(res->error), "CA management: %s",
             builtin_refusal);
}

static void ctl_install_ca(void *ctx, nectar_control_ca_result_t *res)
{
    struct nectar_linux_control *c = ctx;
    ca_call(c, c->app_ops.install_root_ca, res);
}

static void ctl_uninstall_ca(void *ctx, nectar_control_ca_result_t *res)
{
    struct nectar_linux_control *c = ctx;
    ca_call(c, c->app_ops.uninstall_root_ca, res);
}

static void ctl_rotate_ca(void *ctx, nectar_control_ca_result_t *res)
{
    struct nectar_linux_control *c = ctx;
    ca_call(c, c->app_ops.rotate_root_ca, res);
}

/* The keylog routes carry no error field: without the example the toggle
 * stays off and the reply says so (enabled: false). */
static bool ctl_set_keylog(void *ctx, bool enabled)
{
    struct nectar_linux_control *c = ctx;
    if (!c->example || c->app_ops.set_tls_keylog == NULL)
        return false;
    return c->app_ops.set_tls_keylog(c->app_ops.ctx, enabled);
}

static bool ctl_get_keylog(void *ctx)
{
    struct nectar_linux_control *c = ctx;
    if (!c->example || c->app_ops.get_tls_keylog == NULL)
        return false;
    return c->app_ops.get_tls_keylog(c->app_ops.ctx);
}

/* ---- start / stop -------------------------------------------------------- */

/* Does the engine JSON select the example application? */
static bool selects_example(const nectar_linux_config_t *cfg)
{
    if (cfg->engine_json == NULL)
        return false;
    json_t *root = json_loadb(cfg->engine_json, cfg->engine_json_len, 0, NULL);
    const char *app = json_string_value(json_object_get(root, "app"));
    bool yes = app != NULL && strcmp(app, "example") == 0;
    json_decref(root);
    return yes;
}

int nectar__linux_control_start(const nectar_linux_config_t *cfg,
                                struct nectar_host *host,
                                nectar_linux_control_t **out,
                                nectar_error_t *err)
{
    *out = NULL;
    if (!cfg->control)
        return 0;
    struct nectar_linux_control *c = nectar_calloc(1, sizeof(*c));
    if (c == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    c->host = host;
    c->example = selects_example(cfg);
    c->started_ms = mono_ms();
    if (c->example)
        nectar_example_control_ops(&c->app_ops);
    nectar_control_ops_t ops = {
        .ctx = c,
        .update_settings = ctl_update_settings,
        .install_root_ca = ctl_install_ca,
        .uninstall_root_ca = ctl_uninstall_ca,
        .rotate_root_ca = ctl_rotate_ca,
        .set_tls_keylog = ctl_set_keylog,
        .get_tls_keylog = ctl_get_keylog,
        .status = ctl_status,
        .list_flows = ctl_list_flows,
        .app_message = ctl_app_message,
        .free_bytes = ctl_free_bytes,
    };
    const char *name = cfg->control_service ? cfg->control_service
                                            : NECTAR_CONTROL_SERVICE_DEFAULT;
    nectar_error_t e = {0};
    int rc = nectar_control_start(name, NULL, &ops, &c->service, &e);
    if (rc != 0) {
        nectar_free(c);
        return nectar_error_set(err, rc,
                                "control service %s: %s (see host.control "
                                "and host.control_service)",
                                name, e.message);
    }
    nectar_log(NECTAR_LOG_INFO, TAG, "control service on %s (handler %s)",
               name, c->example ? "example" : "builtin");
    *out = c;
    return 0;
}

void nectar__linux_control_stop(nectar_linux_control_t *c)
{
    if (c == NULL)
        return;
    nectar_control_stop(c->service);
    nectar_free(c);
}
