/*
 * host.h - the internal contract between a host front (src/host/sim,
 * src/host/linux) and the shared host core (src/host/core).
 *
 * The core is the C counterpart of rama's Swift provider core
 * (shared/spec/ne-host.md): it drives an engine only through the rama ABI
 * (include/nectar/ne_abi.h), exactly as the Swift provider does.  A front
 * only produces flows: it accepts client TCP sockets (or receives client
 * UDP datagrams), works out the remote endpoint and the metadata, and hands
 * them over.  The core does the rest: the decision, egress connect first,
 * session activate, the four TCP pumps with PAUSED/replay, demand and drain,
 * half-close, linger, teardown (cancel, then free, then release contexts),
 * UDP sessions, the promote cutover and passthrough forwarding.
 *
 * Threads and ownership, module-wide:
 *  - The core runs `loops` libuv loops on its own threads.  Every flow lives
 *    on one loop; every mutation of a flow, its sockets and its timers
 *    happens there.  Engine callbacks (engine threads) only copy bytes into a
 *    write pump or post an event to the flow's loop and return; the core
 *    never calls into a session from inside one of its callbacks (except
 *    confirm_promoted, which is never needed synchronously here either).
 *  - nectar__host_* functions are callable from any thread unless noted.
 *    They never run hooks synchronously, except where noted.
 *  - Hooks run on a core loop thread (noted per hook) and must not block.
 *  - Errors are negative nectar codes (nectar/error.h); on error the object
 *    is unchanged and no hook fires for the failed call.
 */
#ifndef NECTAR_HOST_CORE_HOST_H
#define NECTAR_HOST_CORE_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "nectar/error.h"
#include "nectar/ne_abi.h"

typedef struct nectar_host nectar_host_t;
typedef struct nectar_host_udp nectar_host_udp_t;

/* ---- flow metadata supplied by the front -------------------------------- */

/*
 * What the front knows about a new flow.  Everything is borrowed for the
 * duration of the call that takes it.  Socket addresses are AF_INET or
 * AF_INET6 (IPv4-mapped IPv6 is reported as IPv4).
 */
typedef struct nectar_host_flow_meta {
    /* The intended remote (Linux: original destination).  Required for
     * TCP; for UDP it is the flow's initial remote. */
    const struct sockaddr *remote;
    /* The client's own address (Linux: getpeername), or NULL. */
    const struct sockaddr *local;
    const char *remote_hostname;    /* NULL when unknown */
    const char *signing_identifier; /* e.g. executable path, or NULL */
    const char *bundle_identifier;  /* e.g. systemd unit, or NULL */
    const char *interface_name;     /* ingress interface, or NULL */
    uint32_t interface_index;       /* 0 = unknown */
    int32_t pid;                    /* < 0 = unknown */
} nectar_host_flow_meta_t;

/* Outcome of a new flow (also reported when the flow closes). */
typedef enum nectar_host_decision {
    NECTAR_HOST_INTERCEPT = 1,   /* the engine serves the flow */
    NECTAR_HOST_PASSTHROUGH = 2, /* forwarded directly, engine not involved */
    NECTAR_HOST_BLOCKED = 3,     /* client closed with a reset */
} nectar_host_decision_t;

/* One line of accounting per flow, given to hooks.flow_closed. */
typedef struct nectar_host_flow_report {
    uint64_t id;          /* core flow id, process-wide, from 1 */
    int protocol;         /* IPPROTO_TCP or IPPROTO_UDP */
    nectar_host_decision_t decision;
    bool promoted;        /* TCP: the engine handed the flow back */
    uint64_t bytes_c2s;   /* TCP: bytes written to the remote; UDP: client
                             datagram bytes handed to the engine */
    uint64_t bytes_s2c;   /* TCP: bytes written to the client; UDP: bytes
                             sent to the client */
    uint64_t duration_ms;
    int error;            /* 0 clean, else the nectar code that ended it */
    const char *reason;   /* short static text: "closed", "connect-failed",
                             "connect-timeout", "reset", "stopped", ... */
    const char *remote;   /* "host:port" text, borrowed for the hook call */
    /* The source application, from the flow's metadata (every flow; NULL
     * when unknown), borrowed for the hook call. */
    const char *app_signing; /* meta.signing_identifier (executable) */
    const char *app_bundle;  /* meta.bundle_identifier (unit, cgroup) */
    int32_t pid;             /* meta.pid; < 0 = unknown */
    /* TCP: the last stretch was forwarded by the front (hooks.tcp_direct);
     * bytes_c2s / bytes_s2c include what the front moved. */
    bool forwarded_by_front;
} nectar_host_flow_report_t;

/* ---- direct forwarding by the front (hooks.tcp_direct) ------------------ */

/* A flow handed to the front; opaque, ends with nectar__host_tcp_direct_done. */
typedef struct nectar_host_direct nectar_host_direct_t;

/* One direction of a handed-off flow (c2s: client -> egress). */
typedef struct nectar_host_direct_dir {
    /* Carryover: bytes the core read from the source but never delivered
     * (promote: the engine had not taken them).  Write them to the
     * destination before any byte read from the source.  Borrowed for the
     * hook call.  Empty for passthrough. */
    const uint8_t *carry;
    size_t carry_len;
    /* The source already ended: after the carryover, shut the
     * destination's write side (FIN); read nothing more from the source. */
    bool eof;
    /* With eof: the source ended with this error (a reset from the
     * server); after the carryover, reset both sockets.  0 otherwise. */
    int error;
    /* The direction is over already (the engine finished it and the core
     * sent the FIN): move nothing; the front may shut the destination's
     * write side again, which is harmless. */
    bool done;
} nectar_host_direct_dir_t;

typedef struct nectar_host_direct_info {
    uint64_t flow_id;
    bool promoted;   /* false: passthrough */
    int client_fd;   /* connected, non-blocking, close-on-exec */
    int egress_fd;   /* connected, non-blocking, close-on-exec */
    nectar_host_direct_dir_t c2s, s2c;
    const struct sockaddr *remote; /* borrowed for the call */
} nectar_host_direct_info_t;

/* ---- hooks: what the front supplies ------------------------------------- */

typedef struct nectar_host_hooks {
    void *ctx;

    /*
     * Create the egress TCP socket for a flow going to `remote`.  Return a
     * non-blocking, close-on-exec stream socket fd, or a negative code (the
     * flow is then rejected like a failed connect).  The core owns the fd
     * afterwards and applies the connect options itself
     * (nectar__host_apply_egress_options) before connecting.  The Linux host
     * sets SO_MARK here so the egress is never re-intercepted.  NULL = a
     * plain socket().  Runs on the flow's loop thread.
     */
    int (*egress_socket)(void *ctx, const struct sockaddr *remote);

    /*
     * Send one engine datagram to the UDP client behind flow_ctx (the value
     * given to nectar__host_udp_open); `source` is the address the reply
     * came from (NULL when the engine gave none and no peer was cached).
     * Return 0, or a negative code: NECTAR_EAGAIN drops this datagram
     * (the socket is full; UDP is lossy); anything else ends the flow.
     * Required for UDP.  Runs on the flow's loop thread.
     */
    int (*udp_send)(void *ctx, void *flow_ctx, const uint8_t *buf, size_t len,
                    const struct sockaddr *source);

    /*
     * The core ended the UDP flow (idle, engine closed it, send error, host
     * stop).  The front must forget flow_ctx's association and then call
     * nectar__host_udp_release.  Also called after nectar__host_udp_close.
     * Runs on the flow's loop thread, exactly once per opened UDP flow.
     */
    void (*udp_closed)(void *ctx, void *flow_ctx);

    /* A flow ended (every decision, TCP and UDP).  Optional.  Runs on a
     * core loop thread, or on the front's calling thread for flows that
     * never reach a loop (blocked TCP; UDP not intercepted, reported at
     * open).  `r` is borrowed for the call. */
    void (*flow_closed)(void *ctx, const nectar_host_flow_report_t *r);

    /*
     * Forward a TCP flow without the core (optional; NULL = the core's own
     * libuv forwarder, tcp_forward.c).  Called for a passthrough flow once
     * its egress connected, and for a promoted flow once the engine
     * finished both directions and every byte it queued reached the
     * sockets (so the carryover in `info` follows the engine's tail and
     * nothing is lost or sent twice).  The core has stopped all I/O on
     * both sockets and closed its own descriptors; info->client_fd and
     * info->egress_fd are duplicates that the hook owns from the call on,
     * in every case (it closes them on error too).
     * Return 0 when the front took the flow: it must then call
     * nectar__host_tcp_direct_done(d, ...) exactly once, from any thread,
     * possibly before the hook returns.  A negative code ends the flow
     * with that error (reason "direct-failed").  The flow stays registered
     * (live counts, host stop) until done is called; the core applies no
     * idle or drain timers to it meanwhile.  At host stop a flow still
     * with the front is reported "stopped" with the bytes known so far;
     * its later done is accepted and ignored, so the front may end its
     * forwarder after nectar__host_stop.  Runs on the flow's loop thread;
     * must not block.
     */
    int (*tcp_direct)(void *ctx, nectar_host_direct_t *d,
                      const nectar_host_direct_info_t *info);
} nectar_host_hooks_t;

/* ---- options ------------------------------------------------------------ */

/*
 * Host knobs (shared/spec/ne-host.md §9).  Zero means "the default" for
 * every field; the write-pump cap and the refusal action come from the
 * engine's proxy config (rama_transparent_proxy_get_config) unless set
 * here.
 */
typedef struct nectar_host_options {
    unsigned loops;                   /* core loop threads; default 2 */
    size_t tcp_write_pump_max_pending_bytes; /* default: engine config */
    int flow_refusal_action;          /* -1/0: engine config; 1 passthrough,
                                         2 block */
    uint32_t connect_timeout_ms;      /* 10000 unless the session says */
    uint32_t linger_close_ms;         /* 5000 unless the session says */
    uint32_t egress_eof_grace_ms;     /* 2000 unless the session says */
    uint32_t udp_idle_timeout_ms;     /* 60000; UINT32_MAX disables */
    uint32_t stop_wait_ms;            /* bound on flow teardown at stop; 5000 */
    uint32_t maintenance_ms;          /* watchdog/telemetry tick; 60000 */
    uint32_t promoted_idle_ms;        /* promoted idle reaper; 900000,
                                         UINT32_MAX disables */
} nectar_host_options_t;

/* Live counters, a snapshot. */
typedef struct nectar_host_stats {
    uint64_t tcp_live, udp_live;
    uint64_t tcp_total, udp_total;
    uint64_t intercepted, passthrough, blocked;
    uint64_t promoted;
    uint64_t bytes_c2s, bytes_s2c; /* of closed flows */
    uint64_t pump_paused;   /* PAUSED returned to the engine by a write pump */
    uint64_t engine_paused; /* PAUSED returned by the engine to a read pump */
    uint64_t tcp_starts_in_flight; /* admission tokens held */
    uint64_t admission_rejected;   /* TCP starts shed by admission */
    uint64_t evicted;              /* flows ended by the pressure reaper */
    uint64_t direct_front;         /* TCP flows handed to hooks.tcp_direct */
    bool breaker_open;
} nectar_host_stats_t;

/* ---- the host object ---------------------------------------------------- */

/*
 * Create a host core around `engine` and start its loop threads.  The core
 * takes ownership of `engine` on success (it stops it in
 * nectar__host_stop); on failure the caller keeps it.  hooks is copied;
 * opts may be NULL.  Reads the engine's proxy config once.  Sets SIGPIPE
 * to ignored if it still has its default disposition (socket writes to a
 * vanished peer must not kill the process).
 * Returns 0 or NECTAR_EINVAL / NECTAR_ENOMEM / a -errno from thread or
 * loop creation, described in *err.
 */
int nectar__host_new(RamaTransparentProxyEngine *engine,
                     const nectar_host_hooks_t *hooks,
                     const nectar_host_options_t *opts, nectar_host_t **out,
                     nectar_error_t *err);

/*
 * Tear every live flow down (session cancel, sockets closed, reports
 * delivered), wait for it (bounded by stop_wait_ms), stop the engine with
 * `reason`, join the loop threads.  New flows are refused (blocked) from
 * the moment it starts.  Idempotent.  Must not be called from a hook.
 * Blocks.
 */
void nectar__host_stop(nectar_host_t *h, int32_t reason);

/* Stop (reason 0) if not stopped, then free.  NULL is a no-op. */
void nectar__host_free(nectar_host_t *h);

void nectar__host_stats(nectar_host_t *h, nectar_host_stats_t *out);

/* One live flow, a snapshot for listings (nectar__host_flows).  Strings
 * are borrowed for the callback only. */
typedef struct nectar_host_flow_info {
    uint64_t id;
    int protocol;         /* IPPROTO_TCP or IPPROTO_UDP */
    nectar_host_decision_t decision;
    const char *app;      /* TCP: bundle id, else signing id, else "pid:N";
                             NULL for UDP or when unknown */
    const char *remote;   /* "host:port" */
    uint64_t bytes_c2s;   /* so far; same meaning as in the flow report */
    uint64_t bytes_s2c;
    uint64_t age_ms;
} nectar_host_flow_info_t;

typedef void (*nectar_host_flow_cb)(void *ctx,
                                    const nectar_host_flow_info_t *f);

/*
 * Calls cb once per live (registered) flow.  It runs under the core's
 * registry lock, which keeps every listed flow alive: cb must be quick and
 * must not call any nectar__host_* function.  Any thread.  Returns the
 * number of flows listed.
 */
size_t nectar__host_flows(nectar_host_t *h, nectar_host_flow_cb cb,
                          void *ctx);

/*
 * Hand an app message to the engine
 * (rama_transparent_proxy_engine_handle_app_message) unless the host has
 * stopped.  The reply is the caller's: free it with rama_owned_bytes_free.
 * Returns 0, or NECTAR_ESTATE after stop.  Any thread.
 */
int nectar__host_app_message(nectar_host_t *h, const uint8_t *msg,
                             size_t len, RamaBytesOwned *reply);

/*
 * System sleep / wake (ne-host §2.6, §2.7).  Sleep: resets the TCP overload
 * state and tells the engine; no flow is torn down.  Wake: tells the
 * engine and drops every TCP flow that has not reached ready (its connect
 * cannot be trusted across a sleep).  Any thread; never blocks on flows.
 */
void nectar__host_system_sleep(nectar_host_t *h);
void nectar__host_system_wake(nectar_host_t *h);

/* The effective write-pump cap (bytes), as read from the engine config. */
size_t nectar__host_write_pump_cap(const nectar_host_t *h);

/* ---- TCP ---------------------------------------------------------------- */

/*
 * Hand an accepted client socket to the core.  Always takes ownership of
 * client_fd (closed on every error path).  Asks the engine for a decision
 * on the calling thread (this may block up to the engine's decision
 * deadline, as handleNewFlow does), then:
 *  - INTERCEPT: the flow is registered; egress connect, activate and the
 *    pumps follow on a core loop.  No byte is read from client_fd before
 *    the egress is connected.
 *  - PASSTHROUGH: the core connects to meta->remote itself and forwards
 *    both ways without the engine (or, with hooks.tcp_direct, hands the
 *    connected pair to the front).
 *  - BLOCKED (also fail-closed refusal, or host stopping): client_fd is
 *    closed with a reset; flow_closed runs on this thread.
 * *decision (optional) receives the outcome.  Returns 0, or NECTAR_EINVAL
 * (bad meta) / NECTAR_ENOMEM.
 */
int nectar__host_tcp_accept(nectar_host_t *h, int client_fd,
                            const nectar_host_flow_meta_t *meta,
                            nectar_host_decision_t *decision);

/*
 * The front finished a flow it took in hooks.tcp_direct: c2s / s2c bytes it
 * wrote to the egress / client (carryover included), 0 or the negative
 * code that ended it.  Exactly once per accepted hand-off; any thread;
 * never blocks; d is invalid afterwards.  Also valid after
 * nectar__host_stop and nectar__host_free: a flow the stop reported holds
 * only itself (d keeps it alive) and touches the host no more.
 */
void nectar__host_tcp_direct_done(nectar_host_direct_t *d, uint64_t c2s,
                                  uint64_t s2c, int error);

/* ---- UDP ---------------------------------------------------------------- */

/*
 * A new UDP flow (the front decides what one is: one client address, one
 * 5-tuple, ...).  Asks the engine on the calling thread.  On INTERCEPT
 * returns the flow in *out (the front holds one reference, dropped with
 * nectar__host_udp_release) and from then on hooks.udp_send / udp_closed
 * are called with flow_ctx.  On PASSTHROUGH or BLOCKED *out is NULL and no
 * hook ever sees flow_ctx (a front may then forward or drop the datagrams
 * itself).  Returns 0, NECTAR_EINVAL or NECTAR_ENOMEM.
 */
int nectar__host_udp_open(nectar_host_t *h, const nectar_host_flow_meta_t *meta,
                          void *flow_ctx, nectar_host_decision_t *decision,
                          nectar_host_udp_t **out);

/*
 * One datagram from the client, addressed to `dest` (the peer; NULL when
 * unknown).  Borrowed for the call; zero-length datagrams are forwarded.
 * Lossy like UDP: dropped when the engine's queue is full or the flow has
 * ended.  Any thread, but calls for one flow must not overlap.
 */
void nectar__host_udp_deliver(nectar_host_udp_t *u, const uint8_t *buf,
                              size_t len, const struct sockaddr *dest);

/* The client side went away: end the flow (udp_closed follows). */
void nectar__host_udp_close(nectar_host_udp_t *u);

/* Drop the front's reference.  After this the front must not use u. */
void nectar__host_udp_release(nectar_host_udp_t *u);

/* ---- helpers shared with fronts ----------------------------------------- */

/*
 * Apply the egress connect options to a TCP socket the way the Swift host
 * maps them onto NWParameters (ne-host §4.3, Linux mapping): keepalive on
 * unless disabled, idle/interval/count default 15 s / 5 s / 3; TCP_NODELAY
 * unless tcp_no_delay is false; TCP_CORK for no-push; TCP_MAXSEG;
 * TCP_FASTOPEN_CONNECT; TCP_USER_TIMEOUT from the drop time.  opts == NULL
 * means "no options" (all defaults).  Options the kernel refuses are
 * logged at debug and skipped, never fatal.  Returns how many were set.
 */
int nectar__host_apply_egress_options(int fd,
                                      const RamaTcpEgressConnectOptions *opts);

/* "1.2.3.4:80" / "[::1]:80" into buf (NUL-terminated); returns buf. */
char *nectar__host_addr_text(const struct sockaddr *sa, char *buf, size_t n);

#endif /* NECTAR_HOST_CORE_HOST_H */
