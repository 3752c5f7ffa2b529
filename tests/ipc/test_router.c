/* test_router.c - the `$selector` convention, the Swift coder decoding
 * rules, the control service and nectarctl. */
#include "ipc_tests.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#ifndef NECTARCTL_PATH
#define NECTARCTL_PATH "nectarctl"
#endif

/* ---- router ---------------------------------------------------------- */

static int route_double(void *ctx, const nectar_ipc_obj_t *arg,
                        nectar_ipc_obj_t **out, nectar_error_t *err)
{
    (void)ctx;
    int64_t v;
    int rc = nectar_ipc_get_int64(nectar_ipc_dict_get(arg, "value"), "value",
                                  &v, err);
    if (rc != 0)
        return rc;
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    nectar_ipc_dict_set(r, "doubled", nectar_ipc_int64(2 * v), NULL);
    *out = r;
    return 0;
}

static int route_unit(void *ctx, const nectar_ipc_obj_t *arg,
                      nectar_ipc_obj_t **out, nectar_error_t *err)
{
    (void)ctx;
    (void)arg;
    (void)err;
    *out = NULL;
    return 0;
}

static int raw_echo(void *ctx, const nectar_ipc_obj_t *call,
                    nectar_ipc_obj_t **reply, nectar_error_t *err)
{
    atomic_int *hits = ctx;
    (void)err;
    if (hits != NULL)
        atomic_fetch_add(hits, 1);
    *reply = nectar_ipc_copy(call);
    return 0;
}

static int raw_none(void *ctx, const nectar_ipc_obj_t *call,
                    nectar_ipc_obj_t **reply, nectar_error_t *err)
{
    (void)ctx;
    (void)call;
    (void)err;
    *reply = NULL;
    return 0;
}

static int raw_fail(void *ctx, const nectar_ipc_obj_t *call,
                    nectar_ipc_obj_t **reply, nectar_error_t *err)
{
    (void)ctx;
    (void)call;
    (void)reply;
    return nectar_error_set(err, NECTAR_EIO, "boom");
}

static void check_envelope(nectar_ipc_obj_t *reply, int64_t code,
                           const char *msg)
{
    nectar_ipc_remote_t rem;
    nectar_ipc_obj_t *res = NULL;
    CHECK_EQ(nectar_ipc_extract_result(reply, &res, &rem, NULL),
             NECTAR_IPC_EREMOTE);
    CHECK_EQ(rem.code, code);
    if (msg != NULL)
        CHECK_STR_EQ(rem.message, msg);
    /* Byte-level shape: only $error, holding int64 code + string. */
    CHECK_EQ(nectar_ipc_count(reply), 1);
    nectar_ipc_obj_t *env = nectar_ipc_dict_get(reply, "$error");
    CHECK_EQ(nectar_ipc_type(nectar_ipc_dict_get(env, "code")),
             NECTAR_IPC_INT64);
    CHECK_EQ(nectar_ipc_type(nectar_ipc_dict_get(env, "message")),
             NECTAR_IPC_STRING);
    nectar_ipc_release(reply);
}

static nectar_ipc_obj_t *call_with(const char *sel, nectar_ipc_obj_t *args)
{
    nectar_ipc_obj_t *c = nectar_ipc_dict();
    if (sel != NULL)
        nectar_ipc_dict_set(c, "$selector", nectar_ipc_string(sel), NULL);
    if (args != NULL)
        nectar_ipc_dict_set(c, "$arguments", args, NULL);
    return c;
}

void test_router_convention(void)
{
    nectar_ipc_router_t *r = nectar_ipc_router_new();
    atomic_int raw_hits = 0, fb_hits = 0;
    CHECK_EQ(nectar_ipc_router_add(r, "ping:withReply:", route_double, NULL),
             0);
    CHECK_EQ(nectar_ipc_router_add(r, "unit", route_unit, NULL), 0);
    CHECK_EQ(nectar_ipc_router_add_raw(r, "raw", raw_echo, &raw_hits), 0);
    CHECK_EQ(nectar_ipc_router_add_raw(r, "none", raw_none, NULL), 0);
    CHECK_EQ(nectar_ipc_router_add_raw(r, "fail", raw_fail, NULL), 0);

    /* Call shape: both keys, arguments = [arg]. */
    nectar_ipc_obj_t *arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "value", nectar_ipc_int64(21), NULL);
    nectar_ipc_obj_t *call = nectar_ipc_call_build("ping:withReply:", arg);
    CHECK_EQ(nectar_ipc_count(call), 2);
    CHECK_STR_EQ(
        nectar_ipc_string_ptr(nectar_ipc_dict_get(call, "$selector"), NULL),
        "ping:withReply:");
    CHECK_EQ(nectar_ipc_count(nectar_ipc_dict_get(call, "$arguments")), 1);
    nectar_ipc_obj_t *reply = nectar_ipc_router_handle(r, call);
    nectar_ipc_obj_t *res = NULL;
    CHECK_EQ(nectar_ipc_extract_result(reply, &res, NULL, NULL), 0);
    CHECK_EQ(nectar_ipc_int64_value(nectar_ipc_dict_get(res, "doubled")), 42);
    CHECK_EQ(nectar_ipc_count(reply), 1);
    nectar_ipc_release(res);
    nectar_ipc_release(reply);
    nectar_ipc_release(call);
    nectar_ipc_release(arg);

    /* RamaXpcEmpty: a NULL arg becomes {}. */
    call = nectar_ipc_call_build("unit", NULL);
    nectar_ipc_obj_t *a0 =
        nectar_ipc_array_get(nectar_ipc_dict_get(call, "$arguments"), 0);
    CHECK_EQ(nectar_ipc_type(a0), NECTAR_IPC_DICT);
    CHECK_EQ(nectar_ipc_count(a0), 0);
    /* Unit response: $result is null. */
    reply = nectar_ipc_router_handle(r, call);
    CHECK_EQ(nectar_ipc_extract_result(reply, &res, NULL, NULL), 0);
    CHECK_EQ(nectar_ipc_type(res), NECTAR_IPC_NULL);
    CHECK(res != NULL);
    nectar_ipc_release(res);
    nectar_ipc_release(reply);
    nectar_ipc_release(call);

    /* Raw route sees the whole call and its reply passes unchanged. */
    call = call_with("raw", nectar_ipc_array());
    nectar_ipc_dict_set(call, "extra", nectar_ipc_int64(1), NULL);
    reply = nectar_ipc_router_handle(r, call);
    CHECK(nectar_ipc_equal(reply, call));
    CHECK_EQ(atomic_load(&raw_hits), 1);
    nectar_ipc_release(reply);
    nectar_ipc_release(call);
    call = call_with("none", nectar_ipc_array());
    CHECK(nectar_ipc_router_handle(r, call) == NULL);
    nectar_ipc_release(call);

    /* Errors: 1 unknown selector, 2 invalid message, 3 handler failed. */
    call = call_with("nope:", nectar_ipc_array());
    check_envelope(nectar_ipc_router_handle(r, call), 1,
                   "XpcMessageRouter: no route registered for selector "
                   "'nope:'");
    nectar_ipc_obj_t *null = nectar_ipc_null();
    check_envelope(nectar_ipc_router_handle(r, null), 2,
                   "XpcMessageRouter: expected a Dictionary");
    nectar_ipc_release(null);
    nectar_ipc_obj_t *nosel = call_with(NULL, nectar_ipc_array());
    check_envelope(nectar_ipc_router_handle(r, nosel), 2,
                   "XpcMessageRouter: missing or non-string '$selector'");
    nectar_ipc_release(nosel);
    nectar_ipc_obj_t *intsel = nectar_ipc_dict();
    nectar_ipc_dict_set(intsel, "$selector", nectar_ipc_int64(1), NULL);
    check_envelope(nectar_ipc_router_handle(r, intsel), 2, NULL);
    nectar_ipc_release(intsel);
    nectar_ipc_obj_t *noargs = call_with("ping:withReply:", NULL);
    check_envelope(nectar_ipc_router_handle(r, noargs), 3, NULL);
    nectar_ipc_release(noargs);
    nectar_ipc_obj_t *badarg =
        call_with("ping:withReply:", nectar_ipc_array()); /* arg = null */
    check_envelope(nectar_ipc_router_handle(r, badarg), 3, NULL);
    nectar_ipc_release(badarg);
    nectar_ipc_obj_t *fail = call_with("fail", nectar_ipc_array());
    check_envelope(nectar_ipc_router_handle(r, fail), 3, "boom");
    nectar_ipc_release(fail);

    /* Fallback: used for unknown selectors only. */
    nectar_ipc_router_set_fallback(r, raw_echo, &fb_hits);
    reply = nectar_ipc_router_handle(r, call);
    CHECK(nectar_ipc_equal(reply, call));
    CHECK_EQ(atomic_load(&fb_hits), 1);
    nectar_ipc_release(reply);
    nectar_ipc_release(call);
    call = nectar_ipc_call_build("unit", NULL);
    nectar_ipc_release(nectar_ipc_router_handle(r, call));
    CHECK_EQ(atomic_load(&fb_hits), 1);
    nectar_ipc_release(call);
    nectar_ipc_router_free(r);

    /* extract_result tolerance: uint64 codes saturate, odd types give 0
     * and "", no $result is InvalidMessage. */
    nectar_ipc_obj_t *env = nectar_ipc_dict(), *inner = nectar_ipc_dict();
    nectar_ipc_dict_set(inner, "code", nectar_ipc_uint64(UINT64_MAX), NULL);
    nectar_ipc_dict_set(inner, "message", nectar_ipc_int64(5), NULL);
    nectar_ipc_dict_set(env, "$error", inner, NULL);
    nectar_ipc_remote_t rem;
    CHECK_EQ(nectar_ipc_extract_result(env, &res, &rem, NULL),
             NECTAR_IPC_EREMOTE);
    CHECK_EQ(rem.code, INT64_MAX);
    CHECK_STR_EQ(rem.message, "");
    nectar_ipc_release(env);
    nectar_ipc_obj_t *empty = nectar_ipc_dict();
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ipc_extract_result(empty, &res, NULL, &err), NECTAR_EPARSE);
    CHECK_STR_EQ(err.message, "router reply: missing '$result' key");
    nectar_ipc_release(empty);
    nectar_ipc_obj_t *i = nectar_ipc_int64(1);
    CHECK_EQ(nectar_ipc_extract_result(i, &res, NULL, &err), NECTAR_EPARSE);
    nectar_ipc_release(i);
    /* error_envelope(3, "boom") extracts as Remote{3, "boom"}. */
    check_envelope(nectar_ipc_error_envelope(3, "boom"), 3, "boom");
}

void test_router_over_wire(void)
{
    const char *name = ipc_test_name("router");
    nectar_ipc_router_t *r = nectar_ipc_router_new();
    nectar_ipc_router_add(r, "double:withReply:", route_double, NULL);
    nectar_ipc_router_add_raw(r, "fail", raw_fail, NULL);
    nectar_ipc_listener_config_t cfg = {.service_name = name,
                                        .on_message =
                                            nectar_ipc_router_on_message,
                                        .ctx = r};
    nectar_ipc_listener_t *ls = NULL;
    CHECK_EQ(nectar_ipc_listen(&cfg, &ls, NULL), 0);
    nectar_ipc_conn_t *c = client_new(name);
    nectar_ipc_remote_t rem;
    nectar_ipc_obj_t *res = NULL;
    CHECK_EQ(nectar_ipc_call(c, "unknown:", NULL, 3000, &res, &rem, NULL),
             NECTAR_IPC_EREMOTE);
    CHECK_EQ(rem.code, 1);
    CHECK_EQ(nectar_ipc_call(c, "fail", NULL, 3000, &res, &rem, NULL),
             NECTAR_IPC_EREMOTE);
    CHECK_EQ(rem.code, 3);
    /* A Swift client sends `UInt64`-typed numbers: accepted too. */
    nectar_ipc_obj_t *arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "value", nectar_ipc_uint64(21), NULL);
    CHECK_EQ(
        nectar_ipc_call(c, "double:withReply:", arg, 3000, &res, &rem, NULL),
        0);
    CHECK_EQ(nectar_ipc_int64_value(nectar_ipc_dict_get(res, "doubled")), 42);
    nectar_ipc_release(res);
    nectar_ipc_release(arg);
    nectar_ipc_conn_release(c);
    nectar_ipc_listener_close(ls);
    nectar_ipc_router_free(r);
}

void test_swift_coder_rules(void)
{
    nectar_error_t err = {0};
    int64_t i;
    uint64_t u;
    double d;
    bool b;
    nectar_ipc_obj_t *v = nectar_ipc_uint64(256);
    CHECK_EQ(nectar_ipc_get_int64(v, "x", &i, NULL), 0);
    CHECK_EQ(i, 256);
    nectar_ipc_release(v);
    v = nectar_ipc_uint64(UINT64_MAX);
    CHECK_EQ(nectar_ipc_get_int64(v, "x", &i, &err), NECTAR_ETYPE);
    CHECK_EQ(nectar_ipc_get_double(v, "x", &d, NULL), 0);
    nectar_ipc_release(v);
    v = nectar_ipc_int64(-1);
    CHECK_EQ(nectar_ipc_get_uint64(v, "x", &u, &err), NECTAR_ETYPE);
    CHECK_EQ(nectar_ipc_get_bool(v, "x", &b, &err), NECTAR_ETYPE);
    CHECK(strstr(err.message, "x: expected bool, got int64") != NULL);
    nectar_ipc_release(v);
    v = nectar_ipc_int64(7);
    CHECK_EQ(nectar_ipc_get_uint64(v, "x", &u, NULL), 0);
    CHECK_EQ(u, 7);
    CHECK_EQ(nectar_ipc_get_double(v, "x", &d, NULL), 0);
    nectar_ipc_release(v);
    /* UUID from a UUID, 16-byte data, or its string form; not null. */
    uint8_t want[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
                        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    uint8_t got[16];
    nectar_ipc_obj_t *forms[] = {
        nectar_ipc_uuid(want), nectar_ipc_data(want, 16),
        nectar_ipc_string("12345678-9ABC-DEF0-0123-456789abcdef")};
    for (int k = 0; k < 3; k++) {
        memset(got, 0, sizeof(got));
        CHECK_EQ(nectar_ipc_get_uuid(forms[k], "id", got, NULL), 0);
        CHECK_MEM_EQ(got, want, 16);
        nectar_ipc_release(forms[k]);
    }
    v = nectar_ipc_null();
    CHECK_EQ(nectar_ipc_get_uuid(v, "id", got, &err), NECTAR_ETYPE);
    CHECK(strstr(err.message, "uuid") != NULL);
    nectar_ipc_release(v);
    /* Dates: DATE as is; a Swift-style DOUBLE counts from 2001. */
    int64_t ns = 0;
    v = nectar_ipc_date(-1);
    CHECK_EQ(nectar_ipc_get_date(v, "t", &ns, NULL), 0);
    CHECK_EQ(ns, -1);
    nectar_ipc_release(v);
    v = nectar_ipc_double(0.25);
    CHECK_EQ(nectar_ipc_get_date(v, "t", &ns, NULL), 0);
    CHECK_EQ(ns, 978307200250000000LL);
    nectar_ipc_release(v);
    v = nectar_ipc_double(1e30);
    CHECK_EQ(nectar_ipc_get_date(v, "t", &ns, &err), NECTAR_ELIMIT);
    nectar_ipc_release(v);
    v = nectar_ipc_int64(5); /* a plain integer is not a date */
    CHECK_EQ(nectar_ipc_get_date(v, "t", &ns, &err), NECTAR_ETYPE);
    nectar_ipc_release(v);
    /* Data: DATA only (a UUID is not data). */
    const void *dp = NULL;
    size_t dlen = 0;
    v = nectar_ipc_data("ab", 2);
    CHECK_EQ(nectar_ipc_get_data(v, "d", &dp, &dlen, NULL), 0);
    CHECK_EQ(dlen, 2);
    nectar_ipc_release(v);
    v = nectar_ipc_uuid(want);
    CHECK_EQ(nectar_ipc_get_data(v, "d", &dp, &dlen, &err), NECTAR_ETYPE);
    nectar_ipc_release(v);
    /* String enums, and rama's one-key dictionary form. */
    static const char *const kinds[] = {"tcp", "udp"};
    size_t idx = 9;
    v = nectar_ipc_string("udp");
    CHECK_EQ(nectar_ipc_get_enum(v, "k", kinds, 2, &idx, NULL), 0);
    CHECK_EQ(idx, 1);
    nectar_ipc_release(v);
    v = nectar_ipc_dict();
    nectar_ipc_dict_set(v, "tcp", nectar_ipc_null(), NULL);
    CHECK_EQ(nectar_ipc_get_enum(v, "k", kinds, 2, &idx, NULL), 0);
    CHECK_EQ(idx, 0);
    nectar_ipc_release(v);
    v = nectar_ipc_string("sctp");
    CHECK_EQ(nectar_ipc_get_enum(v, "k", kinds, 2, &idx, &err), NECTAR_ETYPE);
    CHECK(strstr(err.message, "unknown variant 'sctp'") != NULL);
    nectar_ipc_release(v);

    /* Optional fields: missing and null both read as absent. */
    nectar_ipc_obj_t *dct = nectar_ipc_dict();
    nectar_ipc_dict_set(dct, "n", nectar_ipc_null(), NULL);
    nectar_ipc_dict_set(dct, "s", nectar_ipc_string("v"), NULL);
    CHECK(nectar_ipc_field(dct, "n") == NULL);
    CHECK(nectar_ipc_field(dct, "missing") == NULL);
    CHECK(nectar_ipc_field(dct, "s") != NULL);
    nectar_ipc_release(dct);
}

/* ---- control service ------------------------------------------------- */

/* Written on the control thread, read by the test: under lock. */
struct fake_daemon {
    pthread_mutex_t lock;
    int settings_calls;
    bool badge;
    char label[64];
    char domains[128];
    bool keylog;
};

static int fake_update(void *ctx, const nectar_control_settings_t *s,
                       nectar_error_t *err)
{
    struct fake_daemon *d = ctx;
    (void)err;
    pthread_mutex_lock(&d->lock);
    d->settings_calls++;
    if (s->has_html_badge_enabled)
        d->badge = s->html_badge_enabled;
    if (s->html_badge_label != NULL)
        snprintf(d->label, sizeof(d->label), "%s", s->html_badge_label);
    if (s->has_exclude_domains) {
        size_t used = 0;
        d->domains[0] = '\0';
        for (size_t i = 0; i < s->n_exclude_domains; i++) {
            int n = snprintf(d->domains + used, sizeof(d->domains) - used,
                             "%s;", s->exclude_domains[i]);
            if (n < 0 || (size_t)n >= sizeof(d->domains) - used)
                break;
            used += (size_t)n;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return 0;
}

/* A consistent copy of what the fake daemon was told. */
static struct fake_daemon snap(struct fake_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    struct fake_daemon c = *d;
    pthread_mutex_unlock(&d->lock);
    return c;
}

static uint8_t *bytes(const char *s)
{
    return (uint8_t *)strdup(s);
}

static void fake_install(void *ctx, nectar_control_ca_result_t *res)
{
    (void)ctx;
    res->ok = true;
    res->cert_der = bytes("\x01\x02\x03");
    res->cert_der_len = 3;
}

static void fake_uninstall(void *ctx, nectar_control_ca_result_t *res)
{
    (void)ctx;
    res->ok = true; /* nothing stored: cert stays NULL */
}

static void fake_rotate(void *ctx, nectar_control_ca_result_t *res)
{
    (void)ctx;
    res->ok = false;
    snprintf(res->error, sizeof(res->error), "keychain locked");
}

static bool fake_set_keylog(void *ctx, bool on)
{
    struct fake_daemon *d = ctx;
    pthread_mutex_lock(&d->lock);
    d->keylog = on;
    pthread_mutex_unlock(&d->lock);
    return on;
}

static bool fake_get_keylog(void *ctx)
{
    return snap(ctx).keylog;
}

static int fake_status(void *ctx, nectar_control_status_t *st)
{
    st->version = "test-1.0";
    st->uptime_ms = 1500;
    st->tcp_flows = 2;
    st->udp_flows = 1;
    st->total_flows = 10;
    st->tls_keylog = snap(ctx).keylog;
    return 0;
}

static int fake_flows(void *ctx, nectar_control_flow_emit emit, void *ectx)
{
    (void)ctx;
    nectar_control_flow_t f = {.id = 7,
                               .protocol = "tcp",
                               .app = "/usr/bin/curl",
                               .destination = "example.com:443",
                               .bytes_in = 100,
                               .bytes_out = 20,
                               .age_ms = 2500};
    emit(ectx, &f);
    f.id = 8;
    f.protocol = "udp";
    f.app = NULL;
    f.destination = "1.1.1.1:53";
    emit(ectx, &f);
    return 0;
}

static int fake_message(void *ctx, const uint8_t *msg, size_t len,
                        uint8_t **reply, size_t *reply_len, nectar_error_t *err)
{
    (void)ctx;
    (void)err;
    char *r = malloc(len + 8);
    memcpy(r, "pong:", 5);
    memcpy(r + 5, msg, len);
    *reply = (uint8_t *)r;
    *reply_len = len + 5;
    return 0;
}

static void fake_free(void *ctx, uint8_t *p)
{
    (void)ctx;
    free(p);
}

static nectar_control_t *fake_control(const char *name, struct fake_daemon *d,
                                      const nectar_ipc_requirement_t *req)
{
    nectar_control_ops_t ops = {
        .ctx = d,
        .update_settings = fake_update,
        .install_root_ca = fake_install,
        .uninstall_root_ca = fake_uninstall,
        .rotate_root_ca = fake_rotate,
        .set_tls_keylog = fake_set_keylog,
        .get_tls_keylog = fake_get_keylog,
        .status = fake_status,
        .list_flows = fake_flows,
        .app_message = fake_message,
        .free_bytes = fake_free,
    };
    nectar_ipc_requirement_t same_uid = {.flags = NECTAR_IPC_REQ_UID,
                                         .uid = getuid()};
    nectar_control_t *c = NULL;
    nectar_error_t err = {0};
    if (nectar_control_start(name, req ? req : &same_uid, &ops, &c, &err) != 0)
        NECTAR_FAIL_AT("control start: %s", err.message);
    return c;
}

static nectar_ipc_obj_t *ctl_call(nectar_ipc_conn_t *c, const char *sel,
                                  nectar_ipc_obj_t *arg)
{
    nectar_ipc_obj_t *res = NULL;
    nectar_error_t err = {0};
    int rc = nectar_ipc_call(c, sel, arg, 3000, &res, NULL, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("%s: %d %s", sel, rc, err.message);
    nectar_ipc_release(arg);
    return res;
}

static const char *sfield(const nectar_ipc_obj_t *d, const char *k)
{
    return nectar_ipc_string_ptr(nectar_ipc_dict_get(d, k), NULL);
}

void test_control_routes(void)
{
    const char *name = ipc_test_name("control");
    struct fake_daemon d = {.lock = PTHREAD_MUTEX_INITIALIZER};
    nectar_control_t *ctl = fake_control(name, &d, NULL);
    nectar_ipc_conn_t *c = client_new(name);

    nectar_ipc_obj_t *arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "html_badge_enabled", nectar_ipc_bool(true), NULL);
    nectar_ipc_dict_set(arg, "html_badge_label", nectar_ipc_string(""), NULL);
    nectar_ipc_obj_t *doms = nectar_ipc_array();
    nectar_ipc_array_append(doms, nectar_ipc_string("a.com"), NULL);
    nectar_ipc_array_append(doms, nectar_ipc_string("b.org"), NULL);
    nectar_ipc_dict_set(arg, "exclude_domains", doms, NULL);
    nectar_ipc_obj_t *r = ctl_call(c, "updateSettings:withReply:", arg);
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(r, "ok")));
    struct fake_daemon seen = snap(&d);
    CHECK_EQ(seen.settings_calls, 1);
    CHECK(seen.badge);
    CHECK_STR_EQ(seen.label, ""); /* empty label kept the old one */
    CHECK_STR_EQ(seen.domains, "a.com;b.org;");
    nectar_ipc_release(r);

    r = ctl_call(c, "installRootCA:withReply:", NULL);
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(r, "ok")));
    CHECK_EQ(nectar_ipc_type(nectar_ipc_dict_get(r, "error")), NECTAR_IPC_NULL);
    CHECK_STR_EQ(sfield(r, "cert_der_b64"), "AQID");
    nectar_ipc_release(r);
    r = ctl_call(c, "uninstallRootCA:withReply:", NULL);
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(r, "ok")));
    CHECK_EQ(nectar_ipc_type(nectar_ipc_dict_get(r, "cert_der_b64")),
             NECTAR_IPC_NULL);
    CHECK(nectar_ipc_dict_get(r, "cert_der_b64") != NULL);
    nectar_ipc_release(r);
    r = ctl_call(c, "rotateRootCA:withReply:", NULL);
    CHECK(!nectar_ipc_bool_value(nectar_ipc_dict_get(r, "ok")));
    CHECK_STR_EQ(sfield(r, "error"), "keychain locked");
    CHECK(nectar_ipc_dict_get(r, "previous_cert_der_b64") != NULL);
    CHECK(nectar_ipc_dict_get(r, "new_cert_der_b64") != NULL);
    nectar_ipc_release(r);

    arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "enabled", nectar_ipc_bool(true), NULL);
    r = ctl_call(c, "setTlsKeylog:withReply:", arg);
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(r, "enabled")));
    nectar_ipc_release(r);
    r = ctl_call(c, "getTlsKeylog:withReply:", NULL);
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(r, "enabled")));
    nectar_ipc_release(r);

    r = ctl_call(c, "status:withReply:", NULL);
    CHECK_STR_EQ(sfield(r, "version"), "test-1.0");
    CHECK_EQ(nectar_ipc_uint64_value(nectar_ipc_dict_get(r, "tcp_flows")), 2);
    nectar_ipc_release(r);
    r = ctl_call(c, "flows:withReply:", NULL);
    nectar_ipc_obj_t *fl = nectar_ipc_dict_get(r, "flows");
    CHECK_EQ(nectar_ipc_count(fl), 2);
    CHECK_STR_EQ(sfield(nectar_ipc_array_get(fl, 0), "destination"),
                 "example.com:443");
    CHECK_EQ(nectar_ipc_type(
                 nectar_ipc_dict_get(nectar_ipc_array_get(fl, 1), "app")),
             NECTAR_IPC_NULL);
    nectar_ipc_release(r);
    arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "message", nectar_ipc_string("hi"), NULL);
    r = ctl_call(c, "message:withReply:", arg);
    size_t len = 0;
    const void *p = nectar_ipc_data_ptr(nectar_ipc_dict_get(r, "reply"), &len);
    CHECK_EQ(len, 7);
    CHECK_MEM_EQ(p, "pong:hi", 7);
    nectar_ipc_release(r);

    /* A request that is not a struct: HANDLER_FAILED (3). */
    nectar_ipc_obj_t *bad = nectar_ipc_int64(1), *res = NULL;
    nectar_ipc_remote_t rem;
    CHECK_EQ(nectar_ipc_call(c, "getTlsKeylog:withReply:", bad, 3000, &res,
                             &rem, NULL),
             NECTAR_IPC_EREMOTE);
    CHECK_EQ(rem.code, 3);
    nectar_ipc_release(bad);
    nectar_ipc_conn_release(c);
    nectar_control_stop(ctl);
}

/* ---- nectarctl -------------------------------------------------------- */

/* Runs nectarctl with args; returns its exit status, output in out. */
static int ctl_run(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", NECTARCTL_PATH, args);
    FILE *f = popen(cmd, "r");
    CHECK(f != NULL);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool pred_refuse(const nectar_ipc_peer_t *p, void *ctx)
{
    (void)p;
    (void)ctx;
    return false;
}

void test_nectarctl(void)
{
    const char *name = ipc_test_name("ctl");
    struct fake_daemon d = {.lock = PTHREAD_MUTEX_INITIALIZER};
    nectar_control_t *ctl = fake_control(name, &d, NULL);
    char out[8192], args[512];

    snprintf(args, sizeof(args), "--service %s status", name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 0);
    CHECK(strstr(out, "nectar daemon test-1.0") != NULL);
    CHECK(strstr(out, "2 tcp, 1 udp") != NULL);

    snprintf(args, sizeof(args), "--service %s flows", name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 0);
    CHECK(strstr(out, "example.com:443") != NULL);
    CHECK(strstr(out, "/usr/bin/curl") != NULL);
    snprintf(args, sizeof(args), "--service %s flows --json", name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 0);
    CHECK(strstr(out, "\"destination\":\"1.1.1.1:53\"") != NULL);

    snprintf(args, sizeof(args), "--service %s message '{\"op\":\"ping\"}'",
             name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 0);
    CHECK(strstr(out, "pong:{\"op\":\"ping\"}") != NULL);

    snprintf(args, sizeof(args), "--service %s ca install", name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 0);
    CHECK(strstr(out, "AQID") != NULL);
    snprintf(args, sizeof(args), "--service %s ca rotate", name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 1);
    CHECK(strstr(out, "keychain locked") != NULL);

    snprintf(args, sizeof(args),
             "--service %s settings set html_badge_enabled=true "
             "html_badge_label=hello exclude_domains=x.io,y.io",
             name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 0);
    struct fake_daemon seen = snap(&d);
    CHECK(seen.badge);
    CHECK_STR_EQ(seen.label, "hello");
    CHECK_STR_EQ(seen.domains, "x.io;y.io;");
    snprintf(args, sizeof(args), "--service %s settings set bogus=1", name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 2);
    snprintf(args, sizeof(args), "--service %s keylog on", name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 0);
    CHECK(strstr(out, "tls keylog: on") != NULL);
    nectar_control_stop(ctl);

    /* Daemon absent: a clear message and exit 3. */
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 3);
    CHECK(strstr(out, "cannot reach the nectar daemon") != NULL);

    /* Daemon refuses this caller: exit 4. */
    nectar_ipc_requirement_t no = {.flags = NECTAR_IPC_REQ_PREDICATE,
                                   .predicate = pred_refuse};
    ctl = fake_control(name, &d, &no);
    snprintf(args, sizeof(args), "--service %s status", name);
    CHECK_EQ(ctl_run(args, out, sizeof(out)), 4);
    CHECK(strstr(out, "refused this caller") != NULL);
    nectar_control_stop(ctl);
}

/* ---- the annotated example of docs/ipc-protocol.md, byte for byte ---- */

void test_protocol_doc_example(void)
{
    const char *name = ipc_test_name("doc");
    struct fake_daemon d = {.lock = PTHREAD_MUTEX_INITIALIZER};
    nectar_control_t *ctl = fake_control(name, &d, NULL);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path + 1, name, strlen(name));
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    CHECK_EQ(connect(fd, (struct sockaddr *)&sa,
                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                                 strlen(name))),
             0);
    static const uint8_t verdict[] = {0x4e, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00,
                                      0x0b, 0,    0,    0,    0,    0,    0,
                                      0,    0,    0xa1, 0x68, 'a',  'c',  'c',
                                      'e',  'p',  't',  'e',  'd',  0xf5};
    static const uint8_t request[] = {
        0x4e, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x30, 0,   0,   0,   0,   0,
        0,    0,    1,    0xa2, 0x6a, '$',  'a',  'r',  'g', 'u', 'm', 'e', 'n',
        't',  's',  0x81, 0xa0, 0x69, '$',  's',  'e',  'l', 'e', 'c', 't', 'o',
        'r',  0x77, 'g',  'e',  't',  'T',  'l',  's',  'K', 'e', 'y', 'l', 'o',
        'g',  ':',  'w',  'i',  't',  'h',  'R',  'e',  'p', 'l', 'y', ':'};
    static const uint8_t reply[] = {
        0x4e, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x13, 0,   0,   0,   0,
        0,    0,    0,    1,    0xa1, 0x67, '$',  'r',  'e', 's', 'u', 'l',
        't',  0xa1, 0x67, 'e',  'n',  'a',  'b',  'l',  'e', 'd', 0xf4};
    uint8_t buf[256];
    CHECK_EQ(recv(fd, buf, sizeof(buf), 0), sizeof(verdict));
    CHECK_MEM_EQ(buf, verdict, sizeof(verdict));
    CHECK_EQ(send(fd, request, sizeof(request), MSG_NOSIGNAL), sizeof(request));
    CHECK_EQ(recv(fd, buf, sizeof(buf), 0), sizeof(reply));
    CHECK_MEM_EQ(buf, reply, sizeof(reply));
    close(fd);
    nectar_control_stop(ctl);
}
