/*
 * support.h - shared pieces of the engine tests: a configurable test
 * handler (decisions, a relay TCP service written against handler.h
 * streams, an echo UDP service) and helpers to build flow metadata.
 */
#ifndef NECTAR_TESTS_ENGINE_SUPPORT_H
#define NECTAR_TESTS_ENGINE_SUPPORT_H

#include <pthread.h>
#include <stdatomic.h>

#include "nectar/handler.h"

/* What the test handler does; set fields before nectar_engine_new. */
struct th_config {
    nectar_action_t tcp_action; /* default INTERCEPT */
    nectar_action_t udp_action; /* default INTERCEPT */
    int decide_delay_ms;        /* complete the decision late, from a thread */
    bool never_decide;          /* never complete (deadline path) */
    bool give_options;          /* egress_options returns true */
    int app_delay_ms;           /* reply late */
    /* TCP relay: promote once this many client bytes were relayed
     * (0 = never). */
    uint64_t promote_after;
    bool relay_no_read; /* start, but never read (backpressure) */
    /* UDP echo: stop receiving, then finish, after this many datagrams
     * (0 = never). */
    int udp_finish_after;
    /* Edits the proxy config (NULL: keep the defaults). */
    void (*proxy_config)(nectar_proxy_config_t *cfg);
};

struct th_stats {
    atomic_int svc_created;
    atomic_int svc_started;
    atomic_int svc_cancelled;
    atomic_int svc_destroyed;
    atomic_int promote_results;
    atomic_int last_promote_status;
    atomic_int sleeps;
    atomic_int wakes;
    atomic_int handler_destroyed;
    atomic_int udp_received;
    atomic_int udp_zero_len;
    atomic_int late_destroyed;
    atomic_size_t config_len; /* engine-config bytes seen at create */
    atomic_int decisions;
    atomic_int ctx_posts; /* jobs run through nectar_engine_ctx_post */
};

extern struct th_config th_cfg;
extern struct th_stats th_stats;
extern const nectar_handler_vtable_t th_vtable;

void th_reset(void);

/* Completes (block) every decision held back by never_decide. */
void th_release_parked(void);

/* Options with short timeouts suitable for tests. */
void th_options(nectar_engine_options_t *o);

/* Creates an engine with th_vtable; aborts the test on failure. */
RamaTransparentProxyEngine *th_engine(const nectar_engine_options_t *o);

/* Metadata for 203.0.113.7:port (TCP or UDP). */
RamaTransparentProxyFlowMeta th_meta(uint32_t proto, uint16_t port);

/* Deterministic pseudo-random bytes. */
void th_fill(uint8_t *buf, size_t len, uint32_t seed);

void th_sleep_ms(int ms);

#endif
