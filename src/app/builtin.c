/*
 * builtin.c - the built-in handler: nectar_builtin_handler(), configured by
 * the engine-config JSON (docs/config.md).  Decides each flow from the
 * `actions` list, serves intercepted flows with the plain TCP and UDP
 * relays, answers ping/stats app messages and returns the configured
 * proxy rules and tuning.
 *
 * The handler state is immutable after create except the atomic stats, so
 * every slot may run concurrently on any engine thread.
 */
#include <jansson.h>
#include <string.h>

#include "app/config.h"
#include "app/message.h"
#include "app/stats.h"
#include "common/alloc.h"
#include "nectar/example.h"
#include "nectar/handler.h"
#include "nectar/log.h"
#include "services/relay.h"
#include "services/udp_relay.h"

#define LOG_TAG "builtin"

struct builtin {
    struct app_config cfg;
    struct app_stats stats;
    /* `"app": "example"` in the config: every slot forwards to that
     * application's handler (include/nectar/example.h). */
    const nectar_handler_vtable_t *app;
    void *app_state;
};

/* The application named by the config's top-level "app" key: NULL for
 * none (the built-in handler itself), else its vtable; an unknown name
 * fails with NECTAR_ECONFIG. */
static int builtin_select_app(const uint8_t *json, size_t len,
                              const nectar_handler_vtable_t **app,
                              nectar_error_t *err)
{
    *app = NULL;
    if (json == NULL || len == 0)
        return 0;
    json_t *root = json_loadb((const char *)json, len, 0, NULL);
    json_t *v = json_is_object(root) ? json_object_get(root, "app") : NULL;
    int rc = 0;
    if (v != NULL && json_is_string(v) &&
        strcmp(json_string_value(v), "example") == 0)
        *app = nectar_example_handler();
    else if (v != NULL)
        rc = nectar_error_set(err, NECTAR_ECONFIG, "app: expected \"example\"");
    json_decref(root);
    return rc;
}

static int builtin_create_app(nectar_engine_ctx_t *ctx, struct builtin *b,
                              nectar_error_t *err)
{
    int rc = b->app->create(ctx, &b->app_state, err);
    if (rc != 0)
        b->app = NULL;
    return rc;
}

static int builtin_create(nectar_engine_ctx_t *ctx, void **state,
                          nectar_error_t *err)
{
    nectar_error_t local = {0};
    size_t len = 0;
    const uint8_t *json = nectar_engine_ctx_config(ctx, &len);
    struct builtin *b = nectar_calloc(1, sizeof(*b));
    int rc;

    if (b == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    rc = builtin_select_app(json, len, &b->app, &local);
    if (rc == 0 && b->app != NULL) {
        rc = builtin_create_app(ctx, b, err);
        if (rc != 0)
            nectar_free(b);
        else
            *state = b;
        return rc;
    }
    if (rc == 0)
        rc = nectar__app_config_parse(json, len, &b->cfg, &local);
    if (rc != 0) {
        nectar_log(NECTAR_LOG_ERROR, LOG_TAG, "engine config rejected: %s",
                   local.message);
        nectar_error_set(err, rc, "engine config: %s", local.message);
        nectar_free(b);
        return rc;
    }
    nectar_log(NECTAR_LOG_DEBUG, LOG_TAG,
               "config: default %s, %zu actions, %zu rules",
               nectar__app_action_name(b->cfg.default_action),
               b->cfg.actions_len, b->cfg.rules_len);
    *state = b;
    return 0;
}

static void builtin_destroy(void *state)
{
    struct builtin *b = state;

    if (b->app != NULL && b->app->destroy != NULL)
        b->app->destroy(b->app_state);
    nectar__app_config_free(&b->cfg);
    nectar_free(b);
}

static void builtin_proxy_config(void *state, nectar_proxy_config_t *cfg)
{
    const struct builtin *b = state;

    if (b->app != NULL) {
        b->app->proxy_config(b->app_state, cfg);
        return;
    }
    nectar__app_config_apply_proxy(&((struct builtin *)state)->cfg, cfg);
}

static bool builtin_egress_options(void *state, const nectar_flow_meta_t *meta,
                                   RamaTcpEgressConnectOptions *out)
{
    const struct builtin *b = state;

    if (b->app != NULL)
        return b->app->egress_options != NULL &&
               b->app->egress_options(b->app_state, meta, out);
    if (!b->cfg.has_egress)
        return false;
    *out = b->cfg.egress;
    return true;
}

/* Settle d with `action`; an intercept whose service cannot be allocated
 * blocks, the engine's own fail-safe outcome. */
static void builtin_decide(struct builtin *b, const nectar_flow_meta_t *meta,
                           nectar_decision_t *d)
{
    nectar_action_t action = nectar__app_config_decide(&b->cfg, meta);
    void *svc = NULL;

    if (action == NECTAR_ACTION_INTERCEPT) {
        svc = meta->protocol == NECTAR_PROTO_UDP
                  ? svc_udp_relay_new(&b->stats.udp)
                  : svc_tcp_relay_new(&b->stats.tcp);
        if (svc == NULL) {
            nectar_log(NECTAR_LOG_WARN, LOG_TAG,
                       "flow %llu: no memory for a relay; blocking",
                       (unsigned long long)meta->flow_id);
            action = NECTAR_ACTION_BLOCK;
        }
    }
    nectar__app_stats_decision(&b->stats, action);
    nectar_log(NECTAR_LOG_DEBUG, LOG_TAG, "flow %llu %s %s:%u: %s",
               (unsigned long long)meta->flow_id,
               meta->protocol == NECTAR_PROTO_UDP ? "udp" : "tcp",
               meta->remote.host != NULL ? meta->remote.host : "?",
               meta->remote.port, nectar__app_action_name(action));
    switch (action) {
    case NECTAR_ACTION_INTERCEPT:
        if (meta->protocol == NECTAR_PROTO_UDP)
            nectar_decision_intercept_udp(d, &svc_udp_relay_service, svc);
        else
            nectar_decision_intercept_tcp(d, &svc_tcp_relay_service, svc);
        break;
    case NECTAR_ACTION_PASSTHROUGH:
        nectar_decision_passthrough(d);
        break;
    case NECTAR_ACTION_BLOCK:
        nectar_decision_block(d);
        break;
    }
}

static void builtin_decide_tcp(void *state, const nectar_flow_meta_t *meta,
                               nectar_decision_t *d)
{
    const struct builtin *b = state;

    if (b->app != NULL && b->app->decide_tcp != NULL)
        b->app->decide_tcp(b->app_state, meta, d);
    else if (b->app != NULL)
        nectar_decision_passthrough(d);
    else
        builtin_decide(state, meta, d);
}

static void builtin_decide_udp(void *state, const nectar_flow_meta_t *meta,
                               nectar_decision_t *d)
{
    const struct builtin *b = state;

    if (b->app != NULL && b->app->decide_udp != NULL)
        b->app->decide_udp(b->app_state, meta, d);
    else if (b->app != NULL)
        nectar_decision_passthrough(d);
    else
        builtin_decide(state, meta, d);
}

static void builtin_app_message(void *state, const uint8_t *msg, size_t len,
                                nectar_reply_t *r)
{
    const struct builtin *b = state;
    uint8_t *out = NULL;
    size_t out_len = 0;

    if (b->app != NULL) {
        if (b->app->app_message != NULL)
            b->app->app_message(b->app_state, msg, len, r);
        else
            nectar_reply_send(r, NULL, 0);
        return;
    }
    if (nectar__app_message_reply(msg, len, &b->stats, &out, &out_len) != 0)
        nectar_log(NECTAR_LOG_WARN, LOG_TAG, "app message: out of memory");
    nectar_reply_send(r, out, out_len);
    nectar_free(out);
}

static void builtin_sleep(void *state)
{
    const struct builtin *b = state;

    if (b->app != NULL && b->app->system_sleep != NULL)
        b->app->system_sleep(b->app_state);
}

static void builtin_wake(void *state)
{
    const struct builtin *b = state;

    if (b->app != NULL && b->app->system_wake != NULL)
        b->app->system_wake(b->app_state);
}

static const nectar_handler_vtable_t builtin_vtable = {
    .version = NECTAR_HANDLER_VERSION,
    .name = "builtin",
    .create = builtin_create,
    .destroy = builtin_destroy,
    .proxy_config = builtin_proxy_config,
    .egress_options = builtin_egress_options,
    .decide_tcp = builtin_decide_tcp,
    .decide_udp = builtin_decide_udp,
    .app_message = builtin_app_message,
    .system_sleep = builtin_sleep,
    .system_wake = builtin_wake,
};

const nectar_handler_vtable_t *nectar_builtin_handler(void)
{
    return &builtin_vtable;
}
