/*
 * control.c - the daemon's control service: the routes of rama's
 * transparent-proxy demo (secrets-and-example.md §5.6, xpc.md §7) plus
 * status, flows and message, served by a router over an IPC listener.
 * The daemon supplies a nectar_control_ops_t; this file only translates
 * between wire dictionaries and those callbacks.
 */
#include "ipc/ipc_int.h"

#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"

struct nectar_control {
    nectar_control_ops_t ops;
    nectar_ipc_router_t *router;
    nectar_ipc_listener_t *listener;
};

/* ---- reply building -------------------------------------------------- */

/* Sets key to val in d; failures surface as a NULL reply below. */
static bool put(nectar_ipc_obj_t *d, const char *key, nectar_ipc_obj_t *val)
{
    return nectar_ipc_dict_set(d, key, val, NULL) == 0;
}

/* DER as standard base64 string, or null when absent. */
static nectar_ipc_obj_t *b64_or_null(const uint8_t *der, size_t len)
{
    if (der == NULL)
        return nectar_ipc_null();
    struct ipc_buf b = {0};
    nectar__ipc_base64(&b, der, len);
    nectar__ipc_buf_put(&b, "", 1);
    nectar_ipc_obj_t *s = b.oom ? NULL : nectar_ipc_string((char *)b.p);
    nectar__ipc_buf_free(&b);
    return s;
}

static int finish(nectar_ipc_obj_t *reply, bool ok, nectar_ipc_obj_t **out,
                  nectar_error_t *err)
{
    if (!ok) {
        nectar_ipc_release(reply);
        return nectar_error_set(err, NECTAR_ENOMEM,
                                "control: cannot build reply");
    }
    *out = reply;
    return 0;
}

/* Every request is a struct, so a dictionary (Swift sends {} for
 * RamaXpcEmpty); anything else fails like a serde struct would. */
static int want_dict(const nectar_ipc_obj_t *arg, nectar_error_t *err)
{
    if (nectar_ipc_type(arg) != NECTAR_IPC_DICT || arg == NULL)
        return nectar_error_set(err, NECTAR_ETYPE,
                                "control: request must be a dictionary, "
                                "got %s",
                                nectar_ipc_type_name(nectar_ipc_type(arg)));
    return 0;
}

/* ---- updateSettings:withReply: --------------------------------------- */

static int parse_domains(const nectar_ipc_obj_t *v, const char ***out,
                         size_t *n, nectar_error_t *err)
{
    if (nectar_ipc_type(v) != NECTAR_IPC_ARRAY)
        return nectar_error_set(err, NECTAR_ETYPE,
                                "exclude_domains: expected an array");
    size_t count = nectar_ipc_count(v);
    const char **list = nectar_calloc(count + 1, sizeof(*list));
    if (list == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
        int rc = nectar_ipc_get_string(nectar_ipc_array_get(v, i),
                                       "exclude_domains[]", &list[i], err);
        if (rc != 0) {
            nectar_free(list);
            return rc;
        }
    }
    *out = list;
    *n = count;
    return 0;
}

static int parse_settings(const nectar_ipc_obj_t *arg,
                          nectar_control_settings_t *s, nectar_error_t *err)
{
    memset(s, 0, sizeof(*s));
    nectar_ipc_obj_t *v = nectar_ipc_field(arg, "html_badge_enabled");
    int rc = 0;
    if (v != NULL) {
        s->has_html_badge_enabled = true;
        rc = nectar_ipc_get_bool(v, "html_badge_enabled",
                                 &s->html_badge_enabled, err);
    }
    v = nectar_ipc_field(arg, "html_badge_label");
    if (rc == 0 && v != NULL) {
        rc = nectar_ipc_get_string(v, "html_badge_label", &s->html_badge_label,
                                   err);
        /* An empty label keeps the current one, as in rama's demo. */
        if (rc == 0 && s->html_badge_label[0] == '\0')
            s->html_badge_label = NULL;
    }
    v = nectar_ipc_field(arg, "exclude_domains");
    if (rc == 0 && v != NULL) {
        const char **list = NULL;
        rc = parse_domains(v, &list, &s->n_exclude_domains, err);
        s->exclude_domains = list;
        s->has_exclude_domains = rc == 0;
    }
    return rc;
}

static int route_update_settings(void *ctx, const nectar_ipc_obj_t *arg,
                                 nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    nectar_control_settings_t s;
    int rc = want_dict(arg, err);
    if (rc == 0)
        rc = parse_settings(arg, &s, err);
    if (rc != 0)
        return rc;
    nectar_error_t op_err = {0};
    int op_rc = c->ops.update_settings
                    ? c->ops.update_settings(c->ops.ctx, &s, &op_err)
                    : nectar_error_set(&op_err, NECTAR_ENOTSUP,
                                       "settings are not supported");
    nectar_free((void *)s.exclude_domains);
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    bool ok = put(r, "ok", nectar_ipc_bool(op_rc == 0));
    if (op_rc != 0)
        ok = ok && put(r, "error", nectar_ipc_string(op_err.message));
    return finish(r, ok, out, err);
}

/* ---- CA routes ------------------------------------------------------- */

typedef void (*ca_op)(void *ctx, nectar_control_ca_result_t *res);

static void ca_run(struct nectar_control *c, ca_op op,
                   nectar_control_ca_result_t *res)
{
    memset(res, 0, sizeof(*res));
    if (op == NULL) {
        snprintf(res->error, sizeof(res->error),
                 "CA management is not available in this daemon");
        return;
    }
    op(c->ops.ctx, res);
}

static void ca_free(struct nectar_control *c, nectar_control_ca_result_t *r)
{
    if (c->ops.free_bytes == NULL)
        return;
    if (r->cert_der != NULL)
        c->ops.free_bytes(c->ops.ctx, r->cert_der);
    if (r->previous_der != NULL)
        c->ops.free_bytes(c->ops.ctx, r->previous_der);
}

static nectar_ipc_obj_t *error_or_null(const nectar_control_ca_result_t *r)
{
    if (r->ok)
        return nectar_ipc_null();
    return nectar_ipc_string(r->error[0] ? r->error : "unknown error");
}

static int ca_install_like(struct nectar_control *c, ca_op op,
                           const nectar_ipc_obj_t *arg, nectar_ipc_obj_t **out,
                           nectar_error_t *err)
{
    int rc = want_dict(arg, err);
    if (rc != 0)
        return rc;
    nectar_control_ca_result_t res;
    ca_run(c, op, &res);
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    bool ok =
        put(r, "ok", nectar_ipc_bool(res.ok)) &&
        put(r, "error", error_or_null(&res)) &&
        put(r, "cert_der_b64", b64_or_null(res.cert_der, res.cert_der_len));
    ca_free(c, &res);
    return finish(r, ok, out, err);
}

static int route_install_ca(void *ctx, const nectar_ipc_obj_t *arg,
                            nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    return ca_install_like(c, c->ops.install_root_ca, arg, out, err);
}

static int route_uninstall_ca(void *ctx, const nectar_ipc_obj_t *arg,
                              nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    return ca_install_like(c, c->ops.uninstall_root_ca, arg, out, err);
}

static int route_rotate_ca(void *ctx, const nectar_ipc_obj_t *arg,
                           nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    int rc = want_dict(arg, err);
    if (rc != 0)
        return rc;
    nectar_control_ca_result_t res;
    ca_run(c, c->ops.rotate_root_ca, &res);
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    bool ok =
        put(r, "ok", nectar_ipc_bool(res.ok)) &&
        put(r, "error", error_or_null(&res)) &&
        put(r, "previous_cert_der_b64",
            b64_or_null(res.previous_der, res.previous_der_len)) &&
        put(r, "new_cert_der_b64", b64_or_null(res.cert_der, res.cert_der_len));
    ca_free(c, &res);
    return finish(r, ok, out, err);
}

/* ---- keylog ---------------------------------------------------------- */

static int keylog_reply(bool enabled, nectar_ipc_obj_t **out,
                        nectar_error_t *err)
{
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    return finish(r, put(r, "enabled", nectar_ipc_bool(enabled)), out, err);
}

static int route_set_keylog(void *ctx, const nectar_ipc_obj_t *arg,
                            nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    bool want = false;
    int rc = want_dict(arg, err);
    if (rc == 0)
        rc = nectar_ipc_get_bool(nectar_ipc_dict_get(arg, "enabled"), "enabled",
                                 &want, err);
    if (rc != 0)
        return rc;
    bool now =
        c->ops.set_tls_keylog ? c->ops.set_tls_keylog(c->ops.ctx, want) : false;
    return keylog_reply(now, out, err);
}

static int route_get_keylog(void *ctx, const nectar_ipc_obj_t *arg,
                            nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    int rc = want_dict(arg, err);
    if (rc != 0)
        return rc;
    bool now =
        c->ops.get_tls_keylog ? c->ops.get_tls_keylog(c->ops.ctx) : false;
    return keylog_reply(now, out, err);
}

/* ---- status, flows, message ------------------------------------------ */

static int route_status(void *ctx, const nectar_ipc_obj_t *arg,
                        nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    int rc = want_dict(arg, err);
    if (rc != 0)
        return rc;
    nectar_control_status_t st = {0};
    if (c->ops.status == NULL)
        return nectar_error_set(err, NECTAR_ENOTSUP, "status not available");
    rc = c->ops.status(c->ops.ctx, &st);
    if (rc != 0)
        return nectar_error_set(err, rc, "status failed: %s",
                                nectar_strerror(rc));
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    bool ok =
        put(r, "version", nectar_ipc_string(st.version ? st.version : "")) &&
        put(r, "uptime_ms", nectar_ipc_uint64(st.uptime_ms)) &&
        put(r, "tcp_flows", nectar_ipc_uint64(st.tcp_flows)) &&
        put(r, "udp_flows", nectar_ipc_uint64(st.udp_flows)) &&
        put(r, "total_flows", nectar_ipc_uint64(st.total_flows)) &&
        put(r, "tls_keylog", nectar_ipc_bool(st.tls_keylog));
    if (ok && st.handler != NULL)
        ok = put(r, "handler", nectar_ipc_string(st.handler)) &&
             put(r, "intercepted", nectar_ipc_uint64(st.intercepted)) &&
             put(r, "passthrough", nectar_ipc_uint64(st.passthrough)) &&
             put(r, "blocked", nectar_ipc_uint64(st.blocked)) &&
             put(r, "promoted", nectar_ipc_uint64(st.promoted));
    return finish(r, ok, out, err);
}

struct flow_acc {
    nectar_ipc_obj_t *list;
    bool ok;
};

static nectar_ipc_obj_t *str_or_null(const char *s)
{
    return s ? nectar_ipc_string(s) : nectar_ipc_null();
}

static void flow_emit(void *ctx, const nectar_control_flow_t *f)
{
    struct flow_acc *acc = ctx;
    nectar_ipc_obj_t *d = nectar_ipc_dict();
    bool ok = put(d, "id", nectar_ipc_uint64(f->id)) &&
              put(d, "protocol", str_or_null(f->protocol)) &&
              put(d, "app", str_or_null(f->app)) &&
              put(d, "destination", str_or_null(f->destination)) &&
              put(d, "bytes_in", nectar_ipc_uint64(f->bytes_in)) &&
              put(d, "bytes_out", nectar_ipc_uint64(f->bytes_out)) &&
              put(d, "age_ms", nectar_ipc_uint64(f->age_ms));
    if (!ok) {
        nectar_ipc_release(d);
        acc->ok = false;
        return;
    }
    if (nectar_ipc_array_append(acc->list, d, NULL) != 0)
        acc->ok = false;
}

static int route_flows(void *ctx, const nectar_ipc_obj_t *arg,
                       nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    int rc = want_dict(arg, err);
    if (rc != 0)
        return rc;
    if (c->ops.list_flows == NULL)
        return nectar_error_set(err, NECTAR_ENOTSUP,
                                "flow listing not available");
    struct flow_acc acc = {.list = nectar_ipc_array(), .ok = true};
    rc = c->ops.list_flows(c->ops.ctx, flow_emit, &acc);
    if (rc != 0 || !acc.ok) {
        nectar_ipc_release(acc.list);
        return nectar_error_set(err, rc ? rc : NECTAR_ENOMEM,
                                "listing flows failed");
    }
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    return finish(r, put(r, "flows", acc.list), out, err);
}

static int route_message(void *ctx, const nectar_ipc_obj_t *arg,
                         nectar_ipc_obj_t **out, nectar_error_t *err)
{
    struct nectar_control *c = ctx;
    int rc = want_dict(arg, err);
    if (rc != 0)
        return rc;
    nectar_ipc_obj_t *m = nectar_ipc_dict_get(arg, "message");
    size_t len = 0;
    const void *p = nectar_ipc_data_ptr(m, &len);
    if (nectar_ipc_type(m) == NECTAR_IPC_STRING)
        p = nectar_ipc_string_ptr(m, &len);
    else if (nectar_ipc_type(m) != NECTAR_IPC_DATA || m == NULL)
        return nectar_error_set(err, NECTAR_ETYPE,
                                "message: expected data or string");
    if (c->ops.app_message == NULL)
        return nectar_error_set(err, NECTAR_ENOTSUP,
                                "app messages not available");
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    rc = c->ops.app_message(c->ops.ctx, p, len, &reply, &reply_len, err);
    if (rc != 0)
        return rc;
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    nectar_ipc_obj_t *v =
        reply ? nectar_ipc_data(reply, reply_len) : nectar_ipc_null();
    if (reply != NULL && c->ops.free_bytes != NULL)
        c->ops.free_bytes(c->ops.ctx, reply);
    return finish(r, put(r, "reply", v), out, err);
}

/* ---- service --------------------------------------------------------- */

static const struct {
    const char *selector;
    nectar_ipc_route_cb cb;
} routes[] = {
    {"updateSettings:withReply:", route_update_settings},
    {"installRootCA:withReply:", route_install_ca},
    {"uninstallRootCA:withReply:", route_uninstall_ca},
    {"rotateRootCA:withReply:", route_rotate_ca},
    {"setTlsKeylog:withReply:", route_set_keylog},
    {"getTlsKeylog:withReply:", route_get_keylog},
    {"status:withReply:", route_status},
    {"flows:withReply:", route_flows},
    {"message:withReply:", route_message},
};

/* Root, or members of group "nectar" when that group exists. */
static void default_requirement(nectar_ipc_requirement_t *req)
{
    memset(req, 0, sizeof(*req));
    struct group gr, *res = NULL;
    char buf[4096];
    if (getgrnam_r(NECTAR_CONTROL_GROUP, &gr, buf, sizeof(buf), &res) == 0 &&
        res != NULL) {
        req->flags = NECTAR_IPC_REQ_OR_ROOT | NECTAR_IPC_REQ_GID;
        req->gid = res->gr_gid;
    } else {
        req->flags = NECTAR_IPC_REQ_UID;
        req->uid = 0;
    }
}

int nectar_control_start(const char *service_name,
                         const nectar_ipc_requirement_t *req,
                         const nectar_control_ops_t *ops,
                         nectar_control_t **out, nectar_error_t *err)
{
    if (ops == NULL || out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "control: ops and out are required");
    *out = NULL;
    struct nectar_control *c = nectar_calloc(1, sizeof(*c));
    if (c == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    c->ops = *ops;
    c->router = nectar_ipc_router_new();
    int rc = c->router ? 0 : NECTAR_ENOMEM;
    for (size_t i = 0; rc == 0 && i < sizeof(routes) / sizeof(routes[0]); i++)
        rc = nectar_ipc_router_add(c->router, routes[i].selector, routes[i].cb,
                                   c);
    if (rc != 0) {
        nectar_control_stop(c);
        return nectar_error_set(err, rc, "control: out of memory");
    }
    nectar_ipc_requirement_t def;
    if (req == NULL) {
        default_requirement(&def);
        req = &def;
    }
    nectar_ipc_listener_config_t cfg = {
        .service_name =
            service_name ? service_name : NECTAR_CONTROL_SERVICE_DEFAULT,
        .requirement = req,
        .on_message = nectar_ipc_router_on_message,
        .ctx = c->router,
        .flags = NECTAR_IPC_LISTEN_SOCKET_ACTIVATION,
    };
    rc = nectar_ipc_listen(&cfg, &c->listener, err);
    if (rc != 0) {
        nectar_control_stop(c);
        return rc;
    }
    *out = c;
    return 0;
}

void nectar_control_stop(nectar_control_t *c)
{
    if (c == NULL)
        return;
    nectar_ipc_listener_close(c->listener);
    nectar_ipc_router_free(c->router);
    nectar_free(c);
}

const nectar_ipc_router_t *nectar_control_router(const nectar_control_t *c)
{
    return c ? c->router : NULL;
}
