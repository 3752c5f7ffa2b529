/*
 * router.c - rama's `$selector` wire convention (xpc.md §5): the server
 * side router, the error envelope, the client side call/extract_result,
 * and decoding helpers that accept what the Swift coder sends.
 */
#include "ipc/ipc_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

#define KEY_SELECTOR  "$selector"
#define KEY_ARGUMENTS "$arguments"
#define KEY_RESULT    "$result"
#define KEY_ERROR     "$error"

struct route {
    char *selector;
    bool raw;
    nectar_ipc_route_cb typed;
    nectar_ipc_raw_route_cb raw_cb;
    void *ctx;
};

struct nectar_ipc_router {
    struct route *routes;
    size_t n, cap;
    nectar_ipc_raw_route_cb fallback;
    void *fallback_ctx;
};

nectar_ipc_router_t *nectar_ipc_router_new(void)
{
    return nectar_calloc(1, sizeof(nectar_ipc_router_t));
}

void nectar_ipc_router_free(nectar_ipc_router_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++)
        nectar_free(r->routes[i].selector);
    nectar_free(r->routes);
    nectar_free(r);
}

static struct route *find_route(const nectar_ipc_router_t *r,
                                const char *selector)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->routes[i].selector, selector) == 0)
            return &r->routes[i];
    }
    return NULL;
}

static int add_route(nectar_ipc_router_t *r, const char *selector,
                     const struct route *tmpl)
{
    if (r == NULL || selector == NULL)
        return NECTAR_EINVAL;
    struct route *existing = find_route(r, selector);
    if (existing != NULL) {
        char *keep = existing->selector;
        *existing = *tmpl;
        existing->selector = keep;
        return 0;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        struct route *np = nectar_realloc(r->routes, cap * sizeof(*np));
        if (np == NULL)
            return NECTAR_ENOMEM;
        r->routes = np;
        r->cap = cap;
    }
    char *sel = nectar_strdup(selector);
    if (sel == NULL)
        return NECTAR_ENOMEM;
    r->routes[r->n] = *tmpl;
    r->routes[r->n].selector = sel;
    r->n++;
    return 0;
}

int nectar_ipc_router_add(nectar_ipc_router_t *r, const char *selector,
                          nectar_ipc_route_cb cb, void *ctx)
{
    if (cb == NULL)
        return NECTAR_EINVAL;
    struct route t = {.typed = cb, .ctx = ctx};
    return add_route(r, selector, &t);
}

int nectar_ipc_router_add_raw(nectar_ipc_router_t *r, const char *selector,
                              nectar_ipc_raw_route_cb cb, void *ctx)
{
    if (cb == NULL)
        return NECTAR_EINVAL;
    struct route t = {.raw = true, .raw_cb = cb, .ctx = ctx};
    return add_route(r, selector, &t);
}

void nectar_ipc_router_set_fallback(nectar_ipc_router_t *r,
                                    nectar_ipc_raw_route_cb cb, void *ctx)
{
    if (r == NULL)
        return;
    r->fallback = cb;
    r->fallback_ctx = ctx;
}

nectar_ipc_obj_t *nectar_ipc_error_envelope(int64_t code, const char *message)
{
    nectar_ipc_obj_t *inner = nectar_ipc_dict();
    nectar_ipc_obj_t *env = nectar_ipc_dict();
    int rc = nectar_ipc_dict_set(inner, "code", nectar_ipc_int64(code), NULL);
    if (rc == 0)
        rc = nectar_ipc_dict_set(
            inner, "message", nectar_ipc_string(message ? message : ""), NULL);
    if (rc == 0)
        rc =
            nectar_ipc_dict_set(env, KEY_ERROR, nectar_ipc_retain(inner), NULL);
    nectar_ipc_release(inner);
    if (rc != 0) {
        nectar_ipc_release(env);
        return NULL;
    }
    return env;
}

/* A handler's error becomes HANDLER_FAILED with its message. */
static nectar_ipc_obj_t *handler_failed(int rc, const nectar_error_t *err)
{
    const char *msg = err->message[0] ? err->message : nectar_strerror(rc);
    return nectar_ipc_error_envelope(NECTAR_IPC_ERR_HANDLER_FAILED, msg);
}

static nectar_ipc_obj_t *run_raw(nectar_ipc_raw_route_cb cb, void *ctx,
                                 const nectar_ipc_obj_t *call)
{
    nectar_error_t err = {0};
    nectar_ipc_obj_t *reply = NULL;
    int rc = cb(ctx, call, &reply, &err);
    if (rc != 0) {
        nectar_ipc_release(reply);
        return handler_failed(rc, &err);
    }
    return reply;
}

static nectar_ipc_obj_t *run_typed(const struct route *rt,
                                   const nectar_ipc_obj_t *call)
{
    nectar_ipc_obj_t *args = nectar_ipc_dict_get(call, KEY_ARGUMENTS);
    if (nectar_ipc_type(args) != NECTAR_IPC_ARRAY || args == NULL)
        return nectar_ipc_error_envelope(
            NECTAR_IPC_ERR_HANDLER_FAILED,
            "invalid xpc message: missing or non-array '$arguments'");
    nectar_ipc_obj_t *null_arg = NULL;
    const nectar_ipc_obj_t *arg = nectar_ipc_array_get(args, 0);
    if (arg == NULL)
        arg = null_arg = nectar_ipc_null();
    nectar_error_t err = {0};
    nectar_ipc_obj_t *result = NULL;
    int rc = rt->typed(rt->ctx, arg, &result, &err);
    nectar_ipc_release(null_arg);
    if (rc != 0) {
        nectar_ipc_release(result);
        return handler_failed(rc, &err);
    }
    if (result == NULL)
        result = nectar_ipc_null();
    nectar_ipc_obj_t *reply = nectar_ipc_dict();
    if (nectar_ipc_dict_set(reply, KEY_RESULT, result, &err) != 0) {
        nectar_ipc_release(reply);
        return handler_failed(NECTAR_ENOMEM, &err);
    }
    return reply;
}

nectar_ipc_obj_t *nectar_ipc_router_handle(const nectar_ipc_router_t *r,
                                           const nectar_ipc_obj_t *call)
{
    if (nectar_ipc_type(call) != NECTAR_IPC_DICT || call == NULL)
        return nectar_ipc_error_envelope(
            NECTAR_IPC_ERR_INVALID_MESSAGE,
            "XpcMessageRouter: expected a Dictionary");
    const char *sel =
        nectar_ipc_string_ptr(nectar_ipc_dict_get(call, KEY_SELECTOR), NULL);
    if (sel == NULL)
        return nectar_ipc_error_envelope(
            NECTAR_IPC_ERR_INVALID_MESSAGE,
            "XpcMessageRouter: missing or non-string '$selector'");
    const struct route *rt = r ? find_route(r, sel) : NULL;
    if (rt != NULL)
        return rt->raw ? run_raw(rt->raw_cb, rt->ctx, call)
                       : run_typed(rt, call);
    if (r != NULL && r->fallback != NULL)
        return run_raw(r->fallback, r->fallback_ctx, call);
    char msg[300];
    snprintf(msg, sizeof(msg),
             "XpcMessageRouter: no route registered for selector '%s'", sel);
    return nectar_ipc_error_envelope(NECTAR_IPC_ERR_UNKNOWN_SELECTOR, msg);
}

void nectar_ipc_router_on_message(nectar_ipc_conn_t *conn,
                                  nectar_ipc_message_t *msg, void *router)
{
    (void)conn;
    nectar_ipc_obj_t *reply =
        nectar_ipc_router_handle(router, nectar_ipc_message_body(msg));
    if (reply != NULL && nectar_ipc_message_expects_reply(msg))
        nectar_ipc_message_reply(msg, reply, NULL);
    else
        nectar_ipc_message_release(msg);
    nectar_ipc_release(reply);
}

/* ---- client side ----------------------------------------------------- */

nectar_ipc_obj_t *nectar_ipc_call_build(const char *selector,
                                        const nectar_ipc_obj_t *arg)
{
    if (selector == NULL)
        return NULL;
    nectar_ipc_obj_t *call = nectar_ipc_dict();
    nectar_ipc_obj_t *args = nectar_ipc_array();
    nectar_ipc_obj_t *a =
        arg ? nectar_ipc_retain((nectar_ipc_obj_t *)arg) : nectar_ipc_dict();
    int rc = nectar_ipc_array_append(args, a, NULL);
    if (rc == 0)
        rc = nectar_ipc_dict_set(call, KEY_SELECTOR,
                                 nectar_ipc_string(selector), NULL);
    if (rc == 0)
        rc = nectar_ipc_dict_set(call, KEY_ARGUMENTS, nectar_ipc_retain(args),
                                 NULL);
    nectar_ipc_release(args);
    if (rc != 0) {
        nectar_ipc_release(call);
        return NULL;
    }
    return call;
}

/* rama's envelope parser: int64 or uint64 code (saturating), else 0;
 * non-string message gives "". */
static bool parse_envelope(const nectar_ipc_obj_t *reply,
                           nectar_ipc_remote_t *remote)
{
    nectar_ipc_obj_t *env = nectar_ipc_dict_get(reply, KEY_ERROR);
    if (nectar_ipc_type(env) != NECTAR_IPC_DICT || env == NULL)
        return false;
    if (remote == NULL)
        return true;
    nectar_ipc_obj_t *code = nectar_ipc_dict_get(env, "code");
    remote->code = 0;
    if (nectar_ipc_type(code) == NECTAR_IPC_INT64 && code != NULL) {
        remote->code = nectar_ipc_int64_value(code);
    } else if (nectar_ipc_type(code) == NECTAR_IPC_UINT64) {
        uint64_t u = nectar_ipc_uint64_value(code);
        remote->code = u > INT64_MAX ? INT64_MAX : (int64_t)u;
    }
    const char *m =
        nectar_ipc_string_ptr(nectar_ipc_dict_get(env, "message"), NULL);
    snprintf(remote->message, sizeof(remote->message), "%s", m ? m : "");
    return true;
}

int nectar_ipc_extract_result(const nectar_ipc_obj_t *reply,
                              nectar_ipc_obj_t **result,
                              nectar_ipc_remote_t *remote, nectar_error_t *err)
{
    if (result != NULL)
        *result = NULL;
    nectar_ipc_remote_t tmp;
    nectar_ipc_remote_t *rem = remote ? remote : &tmp;
    if (parse_envelope(reply, rem))
        return nectar_error_set(err, NECTAR_IPC_EREMOTE,
                                "remote error %lld: %s", (long long)rem->code,
                                rem->message);
    if (nectar_ipc_type(reply) != NECTAR_IPC_DICT || reply == NULL)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "router reply: expected a Dictionary");
    nectar_ipc_obj_t *res = nectar_ipc_dict_get(reply, KEY_RESULT);
    if (res == NULL)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "router reply: missing '$result' key");
    if (result != NULL)
        *result = nectar_ipc_retain(res);
    return 0;
}

int nectar_ipc_call(nectar_ipc_conn_t *conn, const char *selector,
                    const nectar_ipc_obj_t *arg, uint32_t timeout_ms,
                    nectar_ipc_obj_t **result, nectar_ipc_remote_t *remote,
                    nectar_error_t *err)
{
    if (result != NULL)
        *result = NULL;
    nectar_ipc_obj_t *call = nectar_ipc_call_build(selector, arg);
    if (call == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ipc: cannot build call (bad selector or "
                                "out of memory)");
    nectar_ipc_obj_t *reply = NULL;
    int rc = nectar_ipc_send_sync(conn, call, timeout_ms, &reply, err);
    nectar_ipc_release(call);
    if (rc != 0)
        return rc;
    rc = nectar_ipc_extract_result(reply, result, remote, err);
    nectar_ipc_release(reply);
    return rc;
}

/* ---- decoding helpers (Swift coder acceptance rules) ------------------ */

nectar_ipc_obj_t *nectar_ipc_field(const nectar_ipc_obj_t *dict,
                                   const char *key)
{
    nectar_ipc_obj_t *v = nectar_ipc_dict_get(dict, key);
    if (v == NULL || nectar_ipc_type(v) == NECTAR_IPC_NULL)
        return NULL;
    return v;
}

static int mismatch(const nectar_ipc_obj_t *v, const char *what,
                    const char *want, nectar_error_t *err)
{
    return nectar_error_set(
        err, NECTAR_ETYPE, "%s: expected %s, got %s", what ? what : "value",
        want, v ? nectar_ipc_type_name(nectar_ipc_type(v)) : "nothing");
}

int nectar_ipc_get_bool(const nectar_ipc_obj_t *v, const char *what, bool *out,
                        nectar_error_t *err)
{
    if (v == NULL || nectar_ipc_type(v) != NECTAR_IPC_BOOL)
        return mismatch(v, what, "bool", err);
    *out = nectar_ipc_bool_value(v);
    return 0;
}

int nectar_ipc_get_int64(const nectar_ipc_obj_t *v, const char *what,
                         int64_t *out, nectar_error_t *err)
{
    if (v != NULL && nectar_ipc_type(v) == NECTAR_IPC_INT64) {
        *out = nectar_ipc_int64_value(v);
        return 0;
    }
    if (nectar_ipc_type(v) == NECTAR_IPC_UINT64 &&
        nectar_ipc_uint64_value(v) <= INT64_MAX) {
        *out = (int64_t)nectar_ipc_uint64_value(v);
        return 0;
    }
    return mismatch(v, what, "int64 (or a uint64 that fits)", err);
}

int nectar_ipc_get_uint64(const nectar_ipc_obj_t *v, const char *what,
                          uint64_t *out, nectar_error_t *err)
{
    if (nectar_ipc_type(v) == NECTAR_IPC_UINT64) {
        *out = nectar_ipc_uint64_value(v);
        return 0;
    }
    if (v != NULL && nectar_ipc_type(v) == NECTAR_IPC_INT64 &&
        nectar_ipc_int64_value(v) >= 0) {
        *out = (uint64_t)nectar_ipc_int64_value(v);
        return 0;
    }
    return mismatch(v, what, "uint64 (or a non-negative int64)", err);
}

int nectar_ipc_get_double(const nectar_ipc_obj_t *v, const char *what,
                          double *out, nectar_error_t *err)
{
    switch (v ? nectar_ipc_type(v) : NECTAR_IPC_NULL) {
    case NECTAR_IPC_DOUBLE:
        *out = nectar_ipc_double_value(v);
        return 0;
    case NECTAR_IPC_INT64:
        *out = (double)nectar_ipc_int64_value(v);
        return 0;
    case NECTAR_IPC_UINT64:
        *out = (double)nectar_ipc_uint64_value(v);
        return 0;
    default:
        return mismatch(v, what, "a number", err);
    }
}

int nectar_ipc_get_string(const nectar_ipc_obj_t *v, const char *what,
                          const char **out, nectar_error_t *err)
{
    const char *s = nectar_ipc_string_ptr(v, NULL);
    if (s == NULL)
        return mismatch(v, what, "string", err);
    *out = s;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 8-4-4-4-12 hex form, as UUID(uuidString:) accepts. */
static bool parse_uuid_string(const char *s, size_t len, uint8_t out[16])
{
    if (len != 36)
        return false;
    size_t o = 0;
    for (size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
            i++;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[o++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return o == 16;
}

int nectar_ipc_get_uuid(const nectar_ipc_obj_t *v, const char *what,
                        uint8_t out[16], nectar_error_t *err)
{
    size_t dlen = 0, slen = 0;
    const uint8_t *u = nectar_ipc_uuid_bytes(v);
    const void *d = nectar_ipc_data_ptr(v, &dlen);
    const char *s = nectar_ipc_string_ptr(v, &slen);
    if (u != NULL) {
        memcpy(out, u, 16);
        return 0;
    }
    if (d != NULL && dlen == 16) {
        memcpy(out, d, 16);
        return 0;
    }
    if (s != NULL && parse_uuid_string(s, slen, out))
        return 0;
    return mismatch(v, what, "uuid", err);
}

/* Seconds between 1970-01-01 and Swift's reference date, 2001-01-01. */
#define SWIFT_REFERENCE_EPOCH 978307200.0

int nectar_ipc_get_date(const nectar_ipc_obj_t *v, const char *what,
                        int64_t *ns, nectar_error_t *err)
{
    if (v != NULL && nectar_ipc_type(v) == NECTAR_IPC_DATE) {
        *ns = nectar_ipc_date_value(v);
        return 0;
    }
    if (nectar_ipc_type(v) != NECTAR_IPC_DOUBLE || v == NULL)
        return mismatch(v, what, "date", err);
    double x = (nectar_ipc_double_value(v) + SWIFT_REFERENCE_EPOCH) * 1e9;
    /* 2^63 as a double; the comparison also rejects NaN. */
    if (!(x > -9223372036854775808.0 && x < 9223372036854775808.0))
        return nectar_error_set(err, NECTAR_ELIMIT,
                                "%s: date outside the int64 nanosecond range",
                                what ? what : "value");
    *ns = (int64_t)(x < 0 ? x - 0.5 : x + 0.5); /* round half away */
    return 0;
}

int nectar_ipc_get_data(const nectar_ipc_obj_t *v, const char *what,
                        const void **p, size_t *len, nectar_error_t *err)
{
    if (v == NULL || nectar_ipc_type(v) != NECTAR_IPC_DATA)
        return mismatch(v, what, "data", err);
    *p = nectar_ipc_data_ptr(v, len);
    return 0;
}

int nectar_ipc_get_enum(const nectar_ipc_obj_t *v, const char *what,
                        const char *const *names, size_t n, size_t *index,
                        nectar_error_t *err)
{
    const char *s = nectar_ipc_string_ptr(v, NULL);
    if (s == NULL && nectar_ipc_type(v) == NECTAR_IPC_DICT &&
        nectar_ipc_count(v) == 1)
        s = nectar_ipc_dict_key_at(v, 0);
    if (s == NULL)
        return mismatch(v, what, "an enum string", err);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], s) == 0) {
            *index = i;
            return 0;
        }
    }
    return nectar_error_set(err, NECTAR_ETYPE, "%s: unknown variant '%s'",
                            what ? what : "value", s);
}
