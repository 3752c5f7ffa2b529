/* ipc_tests.h - shared helpers and the test functions of tests/ipc. */
#ifndef NECTAR_TESTS_IPC_H
#define NECTAR_TESTS_IPC_H

#include "common/alloc.h"
#include "harness/test.h"
#include "ipc/ipc_int.h"
#include "nectar/ipc.h"

/* A unique abstract service name for this process and tag. */
const char *ipc_test_name(const char *tag);

/* Echo listener: replies to a request with its own body plus
 * {"echo": true}; counts every message delivered (atomic). */
struct echo_server {
    nectar_ipc_listener_t *ls;
    atomic_int messages;
    atomic_int events;
    atomic_int peers;
};
void echo_start(struct echo_server *s, const char *name,
                const nectar_ipc_requirement_t *req);
void echo_stop(struct echo_server *s);
nectar_ipc_conn_t *client_new(const char *name);
/* send_sync of {"k": v} (v consumed) and returns the echoed "k". */
nectar_ipc_obj_t *echo_value(nectar_ipc_conn_t *c, nectar_ipc_obj_t *v);

/* test_object.c */
void test_types_roundtrip(void);
void test_string_rules(void);
void test_depth_limits(void);
void test_size_limits(void);
void test_decode_garbage(void);
void test_copy_equal_json(void);
void test_frozen_rules(void);
void test_alloc_failures(void);

/* test_transport.c */
void test_echo_roundtrip(void);
void test_fire_and_forget(void);
void test_fd_passing(void);
void test_hostile_input(void);
void test_hostile_random(void);
void test_peer_requirement_uid(void);
void test_nobody_child(void);
void test_requirement_kinds(void);
void test_timeout_and_cancel(void);
void test_interrupted_reconnect(void);
void test_cancel_invalidates(void);
void test_concurrent_100x1000(void);
void test_concurrent_small(void);
void test_socket_activation(void);
void test_activation_child(void);
void test_path_socket(void);
void test_no_listener(void);
void test_shared_connection(void);
void test_direct_reconnect(void);
void test_peer_not_reading(void);
void test_path_in_use(void);
void test_activation_fallback(void);
void test_soak(void);
void test_pending_bound(void);

/* test_router.c */
void test_router_convention(void);
void test_router_over_wire(void);
void test_swift_coder_rules(void);
void test_control_routes(void);
void test_nectarctl(void);
void test_protocol_doc_example(void);

#endif
