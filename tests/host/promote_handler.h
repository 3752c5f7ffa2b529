/* promote_handler.h - a relay test handler that promotes after N client
 * bytes (see promote_handler.c). */
#ifndef NECTAR_TESTS_HOST_PROMOTE_HANDLER_H
#define NECTAR_TESTS_HOST_PROMOTE_HANDLER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/handler.h"

/* Cutover outcomes seen by the relay (status 0 / other). */
extern atomic_int promote_ok, promote_failed;

/* A new engine whose TCP flows relay and request promotion after
 * `threshold` client->server bytes; pump_cap (0 = default) is the host
 * write-pump budget its proxy config asks for.  NULL on failure. */
RamaTransparentProxyEngine *promote_engine_new(uint64_t threshold,
                                               size_t pump_cap);

#endif
