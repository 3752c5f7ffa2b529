/*
 * relay.h - the plain TCP relay service (bytes unchanged both ways,
 * half-close preserved), built on svc_relay (stream.h) over the flow's
 * ingress and egress streams, plus svc_relay extras.
 *
 * Threading: svc_tcp_relay_new from any thread (typically inside a
 * decision); the service callbacks run on the flow loop (handler.h).
 */
#ifndef NECTAR_SERVICES_RELAY_H
#define NECTAR_SERVICES_RELAY_H

#include <stdatomic.h>

#include "nectar/handler.h"
#include "services/counters.h"
#include "services/stream.h"

/* Bytes a relay direction may have written and not yet completed before
 * it stops reading its source (flow control towards the host). */
#define SVC_RELAY_MAX_PENDING (256u * 1024u)

/* The service vtable to pass with svc_tcp_relay_new()'s object to
 * nectar_decision_intercept_tcp. */
extern const nectar_tcp_service_t svc_tcp_relay_service;

/* A relay service object.  counters (may be NULL) must outlive it; it is
 * counted as opened/live now and no longer live in destroy.  Returns NULL
 * when out of memory. */
void *svc_tcp_relay_new(struct svc_counters *counters);

/* Add each completed write's length to *a_to_b / *b_to_a (either may be
 * NULL), from the relay's loop. */
void svc_relay_set_counters(svc_relay_t *r, atomic_uint_least64_t *a_to_b,
                            atomic_uint_least64_t *b_to_a);

#endif
