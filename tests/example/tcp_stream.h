/*
 * tcp_stream.h - test helper: an svc_stream_t over a libuv TCP handle, so
 * the TLS layer and interception can be tested over real sockets without
 * the engine.  Also a tiny synchronous listener/connector.
 */
#ifndef NECTAR_TESTS_EXAMPLE_TCP_STREAM_H
#define NECTAR_TESTS_EXAMPLE_TCP_STREAM_H

#include <uv.h>

#include "services/stream.h"

/* Takes ownership of an initialised, connected tcp handle (allocated
 * with malloc; freed on close). */
svc_stream_t *test_tcp_stream(uv_tcp_t *tcp);

typedef void (*test_accept_cb)(svc_stream_t *s, void *data);
typedef void (*test_connect_cb)(svc_stream_t *s, int status, void *data);

/* Listen on 127.0.0.1:0; returns the port.  cb gets each accepted
 * stream.  The listener is closed by test_listen_close. */
int test_listen(uv_loop_t *loop, uv_tcp_t *srv, test_accept_cb cb, void *data);
void test_listen_close(uv_tcp_t *srv);
void test_connect(uv_loop_t *loop, int port, test_connect_cb cb, void *data);

/* Self-signed P-256 CA as PEM strings (malloc'd). */
void test_make_ca(const char *cn, char **cert_pem, char **key_pem);

#endif
