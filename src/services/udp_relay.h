/*
 * udp_relay.h - the UDP relay service (spec ne-engine §2.3): one
 * unconnected socket per address family, bound lazily to 0.0.0.0:0 /
 * [::]:0 with a 64 KiB receive buffer; every datagram from the app goes to
 * the peer it addressed (or the flow's initial remote endpoint when
 * unattributed); every datagram received goes back to the app with its
 * real source.  A send error ends the flow; a receive error drops only
 * that family's socket (the next datagram for it opens a new one).
 *
 * Threading: svc_udp_relay_new from any thread; callbacks on the flow loop.
 */
#ifndef NECTAR_SERVICES_UDP_RELAY_H
#define NECTAR_SERVICES_UDP_RELAY_H

#include "nectar/handler.h"
#include "services/counters.h"

/* SO_RCVBUF of each relay socket, and the largest datagram relayed. */
#define SVC_UDP_RELAY_RCVBUF (64 * 1024)

extern const nectar_udp_service_t svc_udp_relay_service;

/* A relay service object for nectar_decision_intercept_udp.  counters (may
 * be NULL) must outlive it.  Returns NULL when out of memory. */
void *svc_udp_relay_new(struct svc_counters *counters);

#endif
