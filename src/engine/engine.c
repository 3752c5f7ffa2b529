/*
 * engine.c - the engine object: handler registration, options, creation
 * (nectar_engine_new), the engine-level ABI (initialize, stop/free, app
 * messages, sleep/wake, owned bytes) and the handler's engine context.
 *
 * An engine owns: the handler state, a copy of the engine-config bytes,
 * and a runtime (engine threads, runtime.c).  Every entry point except
 * stop/free may run concurrently; the only mutable engine field is
 * `stopping`, so no engine-wide lock is needed (spec §7.5).
 */
#include <string.h>

#include "common/alloc.h"
#include "engine/internal.h"
#include "nectar/log.h"

/* ---- process-wide registration (set once, before engines exist) ---------- */

static const nectar_handler_vtable_t *registered_vt;
static nectar_engine_options_t registered_opts;
static bool registered_has_opts;
static nectar_init_fn registered_init;

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static bool init_done;
static bool init_result;
static char *init_storage_dir;

NECTAR_API void nectar_engine_options_defaults(nectar_engine_options_t *o)
{
    if (o == NULL)
        return;
    memset(o, 0, sizeof(*o));
    o->decision_deadline_ms = 3000;
    o->deadline_action = NECTAR_ACTION_BLOCK;
    o->app_message_deadline_ms = 0;
    o->tcp_channel_capacity = 8;
    o->udp_channel_capacity = 32;
    o->tcp_idle_timeout_ms = 900000;
    o->paused_drain_max_wait_ms = 60000;
    o->udp_idle_timeout_ms = 60000;
    o->udp_max_lifetime_ms = 900000;
    o->stop_drain_max_wait_ms = 5000;
    o->threads = 2;
}

int nectar__options_resolve(const nectar_engine_options_t *in,
                            nectar_engine_options_t *out, nectar_error_t *err)
{
    if (in == NULL) {
        nectar_engine_options_defaults(out);
        return 0;
    }
    *out = *in;
    if (in->tcp_channel_capacity == 0 || in->udp_channel_capacity == 0)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "engine options: channel capacity must "
                                "be at least 1");
    if (in->deadline_action != NECTAR_ACTION_BLOCK &&
        in->deadline_action != NECTAR_ACTION_PASSTHROUGH)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "engine options: deadline_action must be "
                                "BLOCK or PASSTHROUGH");
    /* "Not disableable" knobs fall back to their defaults. */
    if (out->decision_deadline_ms == 0)
        out->decision_deadline_ms = 3000;
    if (out->paused_drain_max_wait_ms == 0)
        out->paused_drain_max_wait_ms = 60000;
    if (out->stop_drain_max_wait_ms == 0)
        out->stop_drain_max_wait_ms = 5000;
    if (out->threads == 0)
        out->threads = 2;
    if (out->threads > 64)
        out->threads = 64;
    return 0;
}

static int vt_check(const nectar_handler_vtable_t *vt, nectar_error_t *err)
{
    if (vt == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "handler: NULL vtable");
    if (vt->version != NECTAR_HANDLER_VERSION)
        return nectar_error_set(
            err, NECTAR_EINVAL, "handler %s: version %u, expected %u",
            vt->name ? vt->name : "?", vt->version, NECTAR_HANDLER_VERSION);
    if (vt->create == NULL || vt->proxy_config == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "handler %s: create and proxy_config are "
                                "required",
                                vt->name ? vt->name : "?");
    return 0;
}

NECTAR_API int nectar_register_handler(const nectar_handler_vtable_t *vt,
                                       const nectar_engine_options_t *opts)
{
    nectar_engine_options_t resolved;
    nectar_error_t err;
    int rc;

    if (vt == NULL) {
        registered_vt = NULL;
        registered_has_opts = false;
        return 0;
    }
    rc = vt_check(vt, &err);
    if (rc == 0)
        rc = nectar__options_resolve(opts, &resolved, &err);
    if (rc != 0) {
        nectar_log(NECTAR_LOG_ERROR, NE_TAG, "register handler: %s",
                   err.message);
        return rc;
    }
    registered_vt = vt;
    registered_opts = resolved;
    registered_has_opts = opts != NULL;
    return 0;
}

/* Used by abi_default.c: the registered handler and options, or NULL. */
const nectar_handler_vtable_t *
nectar__registered_handler(const nectar_engine_options_t **opts)
{
    *opts = registered_has_opts ? &registered_opts : NULL;
    return registered_vt;
}

NECTAR_API void nectar_register_init(nectar_init_fn fn)
{
    pthread_mutex_lock(&init_mu);
    registered_init = fn;
    pthread_mutex_unlock(&init_mu);
}

NECTAR_API bool
rama_transparent_proxy_initialize(const RamaTransparentProxyInitConfig *config)
{
    char *storage = NULL, *group = NULL, *bundle = NULL;
    bool result;

    if (config != NULL) {
        storage = nectar__utf8_dup_trimmed(config->storage_dir_utf8,
                                           config->storage_dir_utf8_len);
        group = nectar__utf8_dup_trimmed(config->app_group_dir_utf8,
                                         config->app_group_dir_utf8_len);
        bundle = nectar__utf8_dup_trimmed(config->bundle_identifier_utf8,
                                          config->bundle_identifier_utf8_len);
    }
    pthread_mutex_lock(&init_mu);
    if (registered_init != NULL) {
        /* An application hook owns idempotency itself (spec §10.1). */
        result = registered_init(storage, group, bundle);
    } else if (init_done) {
        result = init_result;
    } else {
        init_done = true;
        init_result = true;
        result = true;
    }
    /* Either way the storage dir is remembered once (first caller wins)
     * for nectar_engine_ctx_storage_dir. */
    if (init_storage_dir == NULL && storage != NULL) {
        init_storage_dir = storage;
        storage = NULL;
    }
    pthread_mutex_unlock(&init_mu);
    nectar_free(storage);
    nectar_free(group);
    nectar_free(bundle);
    return result;
}

/* ---- engine context ------------------------------------------------------ */

NECTAR_API const uint8_t *nectar_engine_ctx_config(const nectar_engine_ctx_t *c,
                                                   size_t *len)
{
    if (c == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = c->engine->config_len;
    return c->engine->config;
}

NECTAR_API const char *
nectar_engine_ctx_storage_dir(const nectar_engine_ctx_t *c)
{
    const char *dir;

    (void)c;
    pthread_mutex_lock(&init_mu);
    dir = init_storage_dir;
    pthread_mutex_unlock(&init_mu);
    return dir;
}

NECTAR_API uv_loop_t *nectar_engine_ctx_loop(nectar_engine_ctx_t *c)
{
    if (c == NULL)
        return NULL;
    return &c->engine->rt->loops[0].uv;
}

NECTAR_API int nectar_engine_ctx_post(nectar_engine_ctx_t *c,
                                      void (*fn)(void *arg), void *arg)
{
    if (c == NULL || fn == NULL)
        return NECTAR_EINVAL;
    if (atomic_load(&c->engine->stopping))
        return NECTAR_ECLOSED;
    /* A closed loop (only during stop) refuses the job. */
    return nectar__loop_post(&c->engine->rt->loops[0], fn, arg);
}

/* ---- creation ------------------------------------------------------------ */

static void engine_free_mem(RamaTransparentProxyEngine *e)
{
    if (e->rt != NULL)
        nectar__rt_unref(e->rt);
    nectar_free(e->config);
    nectar_free(e);
}

static void handler_destroy_job(void *arg)
{
    RamaTransparentProxyEngine *e = arg;

    if (e->vt->destroy != NULL)
        e->vt->destroy(e->state);
    e->state = NULL;
}

NECTAR_API RamaTransparentProxyEngine *
nectar_engine_new(const nectar_handler_vtable_t *vt,
                  const nectar_engine_options_t *opts, const uint8_t *config,
                  size_t config_len, nectar_error_t *err)
{
    RamaTransparentProxyEngine *e;
    nectar_error_t local;
    int rc;

    if (err == NULL)
        err = &local;
    memset(err, 0, sizeof(*err));
    if (vt_check(vt, err) != 0)
        goto log_fail;
    e = nectar_calloc(1, sizeof(*e));
    if (e == NULL) {
        nectar_error_set(err, NECTAR_ENOMEM, "engine: out of memory");
        goto log_fail;
    }
    e->vt = vt;
    e->ctx.engine = e;
    atomic_init(&e->stopping, false);
    if (nectar__options_resolve(opts, &e->opts, err) != 0)
        goto fail;
    if (config != NULL && config_len > 0) {
        e->config = nectar_memdup(config, config_len);
        if (e->config == NULL) {
            nectar_error_set(err, NECTAR_ENOMEM, "engine: out of memory");
            goto fail;
        }
        e->config_len = config_len;
    }
    rc = nectar__rt_new(e->opts.threads, &e->rt);
    if (rc != 0) {
        nectar_error_set(err, rc, "engine: cannot start engine threads: %s",
                         nectar_strerror(rc));
        goto fail;
    }
    rc = vt->create(&e->ctx, &e->state, err);
    if (rc != 0) {
        if (err->code == 0)
            nectar_error_set(err, rc, "handler %s: create failed: %s",
                             vt->name ? vt->name : "?", nectar_strerror(rc));
        nectar__rt_stop(e->rt, e->opts.stop_drain_max_wait_ms, NULL, NULL);
        goto fail;
    }
    nectar_log(NECTAR_LOG_DEBUG, NE_TAG,
               "engine created (handler %s, %u "
               "threads)",
               vt->name ? vt->name : "?", e->opts.threads);
    return e;
fail:
    engine_free_mem(e);
log_fail:
    nectar_log(NECTAR_LOG_ERROR, NE_TAG,
               "transparent proxy engine build error: %s", err->message);
    return NULL;
}

/* ---- stop / free --------------------------------------------------------- */

/* Engines abandoned by a wedged stop.  They are kept on purpose (a wedged
 * thread may still touch them), and this list keeps them reachable, so the
 * leak is deliberate and visible, not lost memory (LeakSanitizer agrees). */
struct abandoned_engine {
    RamaTransparentProxyEngine *engine;
    struct abandoned_engine *next;
};
static struct abandoned_engine *abandoned_head;
static pthread_mutex_t abandoned_mu = PTHREAD_MUTEX_INITIALIZER;

static void keep_abandoned(RamaTransparentProxyEngine *engine)
{
    struct abandoned_engine *a = nectar_malloc(sizeof(*a));
    if (a == NULL)
        return; /* still leaked, just not listed */
    a->engine = engine;
    pthread_mutex_lock(&abandoned_mu);
    a->next = abandoned_head;
    abandoned_head = a;
    pthread_mutex_unlock(&abandoned_mu);
}

NECTAR_API void
rama_transparent_proxy_engine_stop(RamaTransparentProxyEngine *engine,
                                   int32_t reason)
{
    uint64_t t0;
    bool clean;

    if (engine == NULL)
        return;
    if (atomic_exchange(&engine->stopping, true))
        return;
    t0 = nectar__now_ms();
    nectar_log(NECTAR_LOG_INFO, NE_TAG,
               "transparent proxy engine stopping (reason %d)", (int)reason);
    clean = nectar__rt_stop(engine->rt, engine->opts.stop_drain_max_wait_ms,
                            handler_destroy_job, engine);
    nectar_log(NECTAR_LOG_INFO, NE_TAG,
               "transparent proxy engine stopped in %llu ms%s",
               (unsigned long long)(nectar__now_ms() - t0),
               clean ? "" : " (wedged)");
    if (!clean) {
        /* A wedged engine thread may still run queued jobs (the handler's
         * destroy among them) once it returns from foreign code, so the
         * engine and handler are leaked rather than freed under it. */
        nectar_log(NECTAR_LOG_ERROR, NE_TAG,
                   "engine and handler leaked by a wedged stop");
        keep_abandoned(engine);
        return;
    }
    engine_free_mem(engine);
}

NECTAR_API void
rama_transparent_proxy_engine_free(RamaTransparentProxyEngine *engine)
{
    rama_transparent_proxy_engine_stop(engine, 0);
}

/* ---- messages and notifications ------------------------------------------ */

NECTAR_API RamaBytesOwned rama_transparent_proxy_engine_handle_app_message(
    RamaTransparentProxyEngine *engine, RamaBytesView message)
{
    RamaBytesOwned none = {NULL, 0, 0};
    const uint8_t *p = message.ptr;
    size_t len = message.len;

    if (engine == NULL || atomic_load(&engine->stopping))
        return none;
    if (p == NULL)
        len = 0;
    return nectar__app_message(engine, len ? p : NULL, len);
}

static void sleep_job(void *arg)
{
    RamaTransparentProxyEngine *e = arg;
    if (e->vt->system_sleep != NULL)
        e->vt->system_sleep(e->state);
}

static void wake_job(void *arg)
{
    RamaTransparentProxyEngine *e = arg;
    if (e->vt->system_wake != NULL)
        e->vt->system_wake(e->state);
}

NECTAR_API void rama_transparent_proxy_engine_notify_system_sleep(
    RamaTransparentProxyEngine *engine)
{
    if (engine == NULL || atomic_load(&engine->stopping))
        return;
    /* Detached on the engine-context loop; stop drains it (jobs run before
     * the loop closes). */
    nectar__loop_post(&engine->rt->loops[0], sleep_job, engine);
}

NECTAR_API void rama_transparent_proxy_engine_notify_system_wake(
    RamaTransparentProxyEngine *engine)
{
    if (engine == NULL || atomic_load(&engine->stopping))
        return;
    nectar__loop_post(&engine->rt->loops[0], wake_job, engine);
}

NECTAR_API void rama_owned_bytes_free(RamaBytesOwned bytes)
{
    if (bytes.ptr == NULL || bytes.cap == 0)
        return;
    if (bytes.len > bytes.cap)
        nectar_log(NECTAR_LOG_ERROR, NE_TAG,
                   "rama_owned_bytes_free: len %zu > cap %zu", bytes.len,
                   bytes.cap);
    nectar_free(bytes.ptr);
}

/* ---- session constructors ------------------------------------------------ */

/* Shared front of both constructors: decode, decide.  Returns the meta
 * (caller unrefs) or NULL with *action set. */
static struct ne_meta *front(RamaTransparentProxyEngine *e,
                             const RamaTransparentProxyFlowMeta *raw,
                             nectar_protocol_t proto,
                             RamaTransparentProxyFlowAction *action)
{
    struct ne_meta *meta;
    bool unknown;

    *action = RAMA_FLOW_ACTION_PASSTHROUGH;
    if (e == NULL)
        return NULL;
    meta = nectar__meta_decode(raw, proto, &unknown);
    if (meta == NULL) {
        *action = e->opts.deadline_action == NECTAR_ACTION_PASSTHROUGH
                      ? RAMA_FLOW_ACTION_PASSTHROUGH
                      : RAMA_FLOW_ACTION_BLOCKED;
        return NULL;
    }
    if (unknown) {
        nectar_log(NECTAR_LOG_WARN, NE_TAG,
                   "flow %llu: unknown protocol %u; passthrough",
                   (unsigned long long)meta->m.flow_id,
                   (unsigned)raw->protocol);
        nectar__meta_unref(meta);
        return NULL;
    }
    if (atomic_load(&e->stopping)) {
        nectar_log(NECTAR_LOG_ERROR, NE_TAG, "new session after stop");
        nectar__meta_unref(meta);
        return NULL;
    }
    return meta;
}

static RamaTransparentProxyFlowAction to_rama(nectar_action_t a)
{
    switch (a) {
    case NECTAR_ACTION_INTERCEPT:
        return RAMA_FLOW_ACTION_INTERCEPT;
    case NECTAR_ACTION_PASSTHROUGH:
        return RAMA_FLOW_ACTION_PASSTHROUGH;
    default:
        return RAMA_FLOW_ACTION_BLOCKED;
    }
}

NECTAR_API RamaTransparentProxyTcpSessionResult
rama_transparent_proxy_engine_new_tcp_session(
    RamaTransparentProxyEngine *engine,
    const RamaTransparentProxyFlowMeta *meta,
    RamaTransparentProxyTcpSessionCallbacks callbacks)
{
    RamaTransparentProxyTcpSessionResult res = {RAMA_FLOW_ACTION_PASSTHROUGH,
                                                NULL};
    RamaTcpEgressConnectOptions opts;
    bool has_opts = false;
    struct ne_verdict v;
    struct ne_meta *m = front(engine, meta, NECTAR_PROTO_TCP, &res.action);

    if (m == NULL)
        return res;
    if (engine->vt->egress_options != NULL) {
        nectar_egress_options_defaults(&opts);
        has_opts = engine->vt->egress_options(engine->state, &m->m, &opts);
    }
    nectar__decide(engine, m, &v);
    res.action = to_rama(v.action);
    if (v.action == NECTAR_ACTION_INTERCEPT) {
        struct nectar_tcp_flow *f =
            nectar__tcp_new(engine, m, &v, callbacks, has_opts ? &opts : NULL);
        if (f == NULL) {
            v.tcp_vt->destroy(v.svc);
            res.action = to_rama(engine->opts.deadline_action);
        }
        res.session = (RamaTransparentProxyTcpSession *)f;
    }
    nectar__meta_unref(m);
    return res;
}

NECTAR_API RamaTransparentProxyUdpSessionResult
rama_transparent_proxy_engine_new_udp_session(
    RamaTransparentProxyEngine *engine,
    const RamaTransparentProxyFlowMeta *meta,
    RamaTransparentProxyUdpSessionCallbacks callbacks)
{
    RamaTransparentProxyUdpSessionResult res = {RAMA_FLOW_ACTION_PASSTHROUGH,
                                                NULL};
    struct ne_verdict v;
    struct ne_meta *m = front(engine, meta, NECTAR_PROTO_UDP, &res.action);

    if (m == NULL)
        return res;
    nectar__decide(engine, m, &v);
    res.action = to_rama(v.action);
    if (v.action == NECTAR_ACTION_INTERCEPT) {
        struct nectar_udp_flow *f = nectar__udp_new(engine, m, &v, callbacks);
        if (f == NULL) {
            v.udp_vt->destroy(v.svc);
            res.action = to_rama(engine->opts.deadline_action);
        }
        res.session = (RamaTransparentProxyUdpSession *)f;
    }
    nectar__meta_unref(m);
    return res;
}
