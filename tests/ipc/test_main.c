/* test_main.c - the test list of tests/ipc and shared helpers. */
#include "ipc_tests.h"

#include <stdatomic.h>

static const nectar_test_t tests[] = {
    {"types_roundtrip", test_types_roundtrip},
    {"string_rules", test_string_rules},
    {"depth_limits", test_depth_limits},
    {"size_limits", test_size_limits},
    {"decode_garbage", test_decode_garbage},
    {"copy_equal_json", test_copy_equal_json},
    {"frozen_rules", test_frozen_rules},
    {"alloc_failures", test_alloc_failures},
    {"echo_roundtrip", test_echo_roundtrip},
    {"fire_and_forget", test_fire_and_forget},
    {"fd_passing", test_fd_passing},
    {"hostile_input", test_hostile_input},
    {"hostile_random", test_hostile_random},
    {"peer_requirement_uid", test_peer_requirement_uid},
    {"requirement_kinds", test_requirement_kinds},
    {"timeout_and_cancel", test_timeout_and_cancel},
    {"interrupted_reconnect", test_interrupted_reconnect},
    {"cancel_invalidates", test_cancel_invalidates},
    {"concurrent_100x1000", test_concurrent_100x1000},
    {"concurrent_small", test_concurrent_small},
    {"socket_activation", test_socket_activation},
    /* Not a CTest: the child exec'd by socket_activation. */
    {"_activation_child", test_activation_child},
    {"_nobody_child", test_nobody_child},
    {"path_socket", test_path_socket},
    {"no_listener", test_no_listener},
    {"shared_connection", test_shared_connection},
    {"direct_reconnect", test_direct_reconnect},
    {"peer_not_reading", test_peer_not_reading},
    {"path_in_use", test_path_in_use},
    {"activation_fallback", test_activation_fallback},
    {"soak", test_soak},
    {"pending_bound", test_pending_bound},
    {"router_convention", test_router_convention},
    {"router_over_wire", test_router_over_wire},
    {"swift_coder_rules", test_swift_coder_rules},
    {"control_routes", test_control_routes},
    {"nectarctl", test_nectarctl},
    {"protocol_doc_example", test_protocol_doc_example},
    {NULL, NULL},
};

const char *ipc_test_name(const char *tag)
{
    static char buf[8][96];
    static atomic_int slot;
    char *b = buf[atomic_fetch_add(&slot, 1) % 8];
    snprintf(b, 96, "nectar-test.%d.%s", (int)getpid(), tag);
    return b;
}

static void echo_on_message(nectar_ipc_conn_t *conn, nectar_ipc_message_t *m,
                            void *ctx)
{
    struct echo_server *s = ctx;
    (void)conn;
    atomic_fetch_add(&s->messages, 1);
    if (!nectar_ipc_message_expects_reply(m)) {
        nectar_ipc_message_release(m);
        return;
    }
    nectar_ipc_obj_t *reply = nectar_ipc_copy(nectar_ipc_message_body(m));
    nectar_ipc_dict_set(reply, "echo", nectar_ipc_bool(true), NULL);
    nectar_ipc_message_reply(m, reply, NULL);
    nectar_ipc_release(reply);
}

static void echo_on_event(nectar_ipc_conn_t *c, nectar_ipc_event_t ev,
                          const char *reason, void *ctx)
{
    struct echo_server *s = ctx;
    (void)c;
    (void)ev;
    (void)reason;
    atomic_fetch_add(&s->events, 1);
}

static void echo_on_peer(nectar_ipc_listener_t *l, nectar_ipc_conn_t *c,
                         void *ctx)
{
    struct echo_server *s = ctx;
    (void)l;
    (void)c;
    atomic_fetch_add(&s->peers, 1);
}

void echo_start(struct echo_server *s, const char *name,
                const nectar_ipc_requirement_t *req)
{
    atomic_init(&s->messages, 0);
    atomic_init(&s->events, 0);
    atomic_init(&s->peers, 0);
    nectar_ipc_listener_config_t cfg = {
        .service_name = name,
        .requirement = req,
        .on_message = echo_on_message,
        .on_event = echo_on_event,
        .on_peer = echo_on_peer,
        .ctx = s,
    };
    nectar_error_t err = {0};
    int rc = nectar_ipc_listen(&cfg, &s->ls, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("listen %s: %s", name, err.message);
}

void echo_stop(struct echo_server *s)
{
    nectar_ipc_listener_close(s->ls);
    s->ls = NULL;
}

nectar_ipc_conn_t *client_new(const char *name)
{
    nectar_ipc_client_config_t cfg = {.service_name = name};
    nectar_ipc_conn_t *c = NULL;
    CHECK_EQ(nectar_ipc_connect(&cfg, &c, NULL), 0);
    return c;
}

nectar_ipc_obj_t *echo_value(nectar_ipc_conn_t *c, nectar_ipc_obj_t *v)
{
    nectar_ipc_obj_t *msg = nectar_ipc_dict();
    CHECK_EQ(nectar_ipc_dict_set(msg, "k", v, NULL), 0);
    nectar_ipc_obj_t *reply = NULL;
    nectar_error_t err = {0};
    int rc = nectar_ipc_send_sync(c, msg, 5000, &reply, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("send_sync: %d %s", rc, err.message);
    nectar_ipc_release(msg);
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(reply, "echo")));
    nectar_ipc_obj_t *k = nectar_ipc_retain(nectar_ipc_dict_get(reply, "k"));
    nectar_ipc_release(reply);
    return k;
}

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
