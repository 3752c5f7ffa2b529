/*
 * sim.h - the in-process sim host: emulates the Swift provider over real
 * loopback sockets.  It listens on one address, treats every accepted TCP
 * connection (and every UDP client address) as an intercepted app flow
 * whose remote endpoint is one fixed target, and feeds the flows through
 * the host core (src/host/core/host.h) into an engine.  Used by tests and
 * benchmarks as a library, and by apps/nectar-sim.
 *
 * Threads: start/stop/port/stats from any thread (not from a hook); the sim
 * runs one listener thread plus the core's loop threads.  on_flow_closed
 * runs on a core loop thread or on the listener thread.
 */
#ifndef NECTAR_HOST_SIM_SIM_H
#define NECTAR_HOST_SIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "host/core/host.h"
#include "nectar/error.h"
#include "nectar/ne_abi.h"

typedef struct nectar_sim nectar_sim_t;

typedef struct nectar_sim_options {
    const char *listen; /* "127.0.0.1:0", "[::1]:8080"; port 0 = any */
    const char *target; /* where every flow goes, e.g. "127.0.0.1:80" */
    bool tcp;           /* listen for TCP (default when neither is set) */
    bool udp;           /* listen for UDP on the same address */
    /* Engine: either an engine the sim takes over (ownership passes on
     * success), or the engine-config JSON for
     * rama_transparent_proxy_engine_new_with_config (NULL/0 = defaults). */
    RamaTransparentProxyEngine *engine;
    const uint8_t *config;
    size_t config_len;
    nectar_host_options_t host; /* zero = defaults */
    /* Optional: each flow's report when it ends. */
    void (*on_flow_closed)(void *ctx, const nectar_host_flow_report_t *r);
    void *ctx;
    /* Optional: hooks.tcp_direct for the core, called with ctx (tests
     * plug a front-side forwarder in here; NULL = the core forwards). */
    int (*tcp_direct)(void *ctx, nectar_host_direct_t *d,
                      const nectar_host_direct_info_t *info);
} nectar_sim_options_t;

/*
 * Create the engine (unless given), the host core and the listener, and
 * start serving.  Returns 0 and *out, or a negative code described in
 * *err (bad address, bind failure, engine creation failure).  On failure
 * a given engine stays with the caller.
 */
int nectar_sim_start(const nectar_sim_options_t *opts, nectar_sim_t **out,
                     nectar_error_t *err);

/* The bound listen address (with the real port). */
void nectar_sim_listen_addr(const nectar_sim_t *s, struct sockaddr_storage *out);
uint16_t nectar_sim_port(const nectar_sim_t *s);

/* The host core behind the sim (valid until nectar_sim_stop). */
nectar_host_t *nectar_sim_host(nectar_sim_t *s);

/* Counters of the host core. */
void nectar_sim_stats(nectar_sim_t *s, nectar_host_stats_t *out);

/* Stop listening, tear every flow down, stop the engine, free.  Blocks
 * (bounded by the host's stop_wait_ms).  NULL is a no-op. */
void nectar_sim_stop(nectar_sim_t *s);

/* Parse "1.2.3.4:80" or "[::1]:80" (numeric only).  Returns 0 or
 * NECTAR_EINVAL. */
int nectar_sim_parse_addr(const char *text, struct sockaddr_storage *out);

#endif
