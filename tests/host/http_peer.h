/* http_peer.h - tiny HTTP origin for the curl tests (http_peer.c). */
#ifndef NECTAR_TESTS_HOST_HTTP_PEER_H
#define NECTAR_TESTS_HOST_HTTP_PEER_H

#include <stdint.h>

#define HTTP_GET_SEED 7u
#define HTTP_PUT_SEED 9u

struct http_peer;
struct http_peer *http_peer_start(uint64_t size, uint16_t *port);
void http_peer_stop(struct http_peer *p);

#endif
