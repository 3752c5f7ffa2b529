/*
 * handler.h - the C handler API: how an application decides flows and
 * serves intercepted ones.  The engine behind include/nectar/ne_abi.h calls
 * a handler through the vtable below; the built-in handler (configured by
 * the engine-config JSON, docs/config.md) is one such handler.
 *
 * Module-wide rules (exceptions are noted beside each function):
 *  - The handler `state` is shared by all engine threads: decide_*,
 *    app_message, sleep/wake may run concurrently on different threads.
 *  - Per-flow functions (nectar_tcp_flow_*, nectar_stream_*,
 *    nectar_udp_flow_*) may only be called on the flow's loop thread, i.e.
 *    from inside a service callback or a libuv callback on
 *    nectar_*_flow_loop().  They never block.
 *  - Buffers passed to callbacks are borrowed until the callback returns.
 *  - Errors are negative codes from nectar/error.h.
 *
 * Binding your handler to the exported ABI (macOS provider or any host
 * that only calls rama_transparent_proxy_*): call
 * nectar_register_handler() before the host creates the engine, e.g. from
 * an __attribute__((constructor)) function in your static library or at
 * the top of main().  Without a registration the built-in handler is used.
 * See examples/ and docs/handler.md.
 */
#ifndef NECTAR_HANDLER_H
#define NECTAR_HANDLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

#include "nectar/error.h"
#include "nectar/ne_abi.h"
#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- flow metadata ------------------------------------------------------ */

typedef enum nectar_protocol {
    NECTAR_PROTO_TCP = 1,
    NECTAR_PROTO_UDP = 2,
} nectar_protocol_t;

typedef enum nectar_action {
    NECTAR_ACTION_INTERCEPT = 1,
    NECTAR_ACTION_PASSTHROUGH = 2,
    NECTAR_ACTION_BLOCK = 3,
} nectar_action_t;

/* host == NULL means the endpoint is absent. */
typedef struct nectar_endpoint {
    const char *host; /* IP literal or domain name, NUL-terminated */
    uint16_t port;
} nectar_endpoint_t;

/*
 * Decoded flow metadata (spec ne-engine §1.2.5 and §2.4).  Built by the
 * engine, immutable, owned by the engine and valid for the whole flow
 * (until the service's destroy runs).  Strings are NUL-terminated, trimmed,
 * valid UTF-8, or NULL when absent.
 */
typedef struct nectar_flow_meta {
    uint64_t flow_id;          /* process-wide, starts at 1, never 0 */
    nectar_protocol_t protocol;
    uint64_t opened_at_ms;     /* monotonic clock, start of the decision */
    nectar_endpoint_t remote;  /* intended remote */
    nectar_endpoint_t local;
    const char *signing_identifier;
    const char *bundle_identifier;
    const char *remote_hostname;
    const char *interface_name;
    bool has_audit_token;
    uint8_t audit_token[32];
    bool has_pid;
    int32_t pid;
    bool has_interface_index;
    uint32_t interface_index;
    bool has_interface_type;
    uint8_t interface_type;    /* 0 cellular 1 loopback 2 other 3 wifi 4 wired */
    bool has_is_bound;
    bool is_bound;
} nectar_flow_meta_t;

/* ---- proxy config (what get_config returns) ----------------------------- */

typedef struct nectar_rule {
    const char *remote_network; /* NULL = any */
    int remote_prefix;          /* -1 = unset */
    int remote_port;            /* -1 = unset, else 0..65535 */
    const char *local_network;  /* NULL = any */
    int local_prefix;           /* -1 = unset */
    int protocol;               /* RAMA_RULE_PROTOCOL_ANY/TCP/UDP */
    bool exclude;
} nectar_rule_t;

/* Field meanings and defaults: spec ne-engine §6.1 (same names as
 * RamaTransparentProxyConfig).  Strings and the rules array are borrowed
 * until proxy_config returns; the engine copies them. */
typedef struct nectar_proxy_config {
    const char *tunnel_remote_address;
    const nectar_rule_t *rules;
    size_t rules_len;
    size_t tcp_write_pump_max_pending_bytes;
    uint32_t flow_pressure_soft_cap;
    uint32_t flow_pressure_low_water;
    uint32_t flow_pressure_idle_floor_ms;
    uint32_t tcp_start_in_flight_hard_cap;
    uint32_t tcp_start_in_flight_soft_cap;
    uint32_t tcp_start_latency_breaker_p95_ms;
    uint32_t tcp_start_latency_breaker_close_p95_ms;
    uint32_t tcp_pressure_connect_timeout_ms;
    uint32_t tcp_breaker_connect_timeout_ms;
    uint32_t flow_refusal_action;
} nectar_proxy_config_t;

/* Fills *cfg with the spec defaults (one include-all rule, 256 KiB ...). */
NECTAR_API void nectar_proxy_config_defaults(nectar_proxy_config_t *cfg);

/* Fills *opts with the spec's handler defaults: keepalive on, no-delay on,
 * preserve_original_meta_data on, everything else unset. */
NECTAR_API void nectar_egress_options_defaults(RamaTcpEgressConnectOptions *o);

/* ---- streams (the two halves of an intercepted TCP flow) ---------------- */

typedef struct nectar_stream nectar_stream_t;
typedef struct nectar_tcp_flow nectar_tcp_flow_t;
typedef struct nectar_udp_flow nectar_udp_flow_t;

/*
 * Read callback.  nread > 0: `buf` holds nread bytes (borrowed until
 * return).  nread == NECTAR_EOF: the peer finished writing (ingress: the app
 * half-closed; egress: the remote did).  nread == NECTAR_ECONNRESET: the
 * egress read failed (after every queued byte was delivered).  Any other
 * negative value: the stream ended for that reason.  After EOF or an error
 * the callback is not called again.
 */
typedef void (*nectar_stream_read_cb)(nectar_stream_t *s, ssize_t nread,
                                      const uint8_t *buf, void *data);

/* Write completion: 0 when the host accepted every byte, NECTAR_EPIPE when
 * the host closed that side (CLOSED), NECTAR_ETIMEDOUT when the host stayed
 * PAUSED past the paused-drain backstop (60 s), NECTAR_ECANCELED when the
 * flow was cancelled with the write still queued. */
typedef void (*nectar_stream_write_cb)(nectar_stream_t *s, int status,
                                       void *data);

/* Start delivering bytes to cb.  Reading is flow control: while stopped,
 * the engine's queue fills and the host is told PAUSED.  Returns 0 or
 * NECTAR_ECLOSED after EOF/error was delivered. */
NECTAR_API int nectar_stream_read_start(nectar_stream_t *s,
                                        nectar_stream_read_cb cb, void *data);
NECTAR_API int nectar_stream_read_stop(nectar_stream_t *s);

/*
 * Queue one all-or-nothing write of len bytes.  `buf` is borrowed until cb
 * runs (the engine does not copy it).  Writes complete in FIFO order.
 * len == 0 completes with status 0.  cb runs on the flow loop, never inside
 * this call.  Returns 0, or NECTAR_ECLOSED after shutdown (cb not called).
 */
NECTAR_API int nectar_stream_write(nectar_stream_t *s, const uint8_t *buf,
                                   size_t len, nectar_stream_write_cb cb,
                                   void *data);

/* Bytes queued by nectar_stream_write and not yet accepted by the host. */
NECTAR_API size_t nectar_stream_write_queue_size(const nectar_stream_t *s);

/* Close the write half once queued writes complete: fires on_server_closed
 * (ingress) or on_close_egress (egress) at most once.  Idempotent. */
NECTAR_API int nectar_stream_shutdown(nectar_stream_t *s);

/* Bytes this stream has read / had accepted by the host. */
NECTAR_API uint64_t nectar_stream_bytes_read(const nectar_stream_t *s);
NECTAR_API uint64_t nectar_stream_bytes_written(const nectar_stream_t *s);

/* ---- TCP flows ---------------------------------------------------------- */

/*
 * A TCP service serves one intercepted flow.  All callbacks run on the
 * flow's loop thread.
 *  start:   the egress is connected and activated; begin reading/writing.
 *  cancel:  the flow is being torn down by the engine (session cancel,
 *           engine stop, idle backstop); `reason` is a NECTAR_* code.  Stop
 *           using the flow; after cancel returns the engine finishes it.
 *  destroy: last call, exactly once per service the handler handed over,
 *           whether or not start ran.  Free svc here.
 */
typedef struct nectar_tcp_service {
    void (*start)(void *svc, nectar_tcp_flow_t *flow);
    void (*cancel)(void *svc, nectar_tcp_flow_t *flow, int reason);
    void (*destroy)(void *svc);
} nectar_tcp_service_t;

NECTAR_API uv_loop_t *nectar_tcp_flow_loop(nectar_tcp_flow_t *flow);
NECTAR_API const nectar_flow_meta_t *
nectar_tcp_flow_meta(const nectar_tcp_flow_t *flow);
/* The app side: read = bytes the app sent; write = bytes to the app. */
NECTAR_API nectar_stream_t *nectar_tcp_flow_ingress(nectar_tcp_flow_t *flow);
/* The remote side: read = bytes from the remote; write = to the remote. */
NECTAR_API nectar_stream_t *nectar_tcp_flow_egress(nectar_tcp_flow_t *flow);
NECTAR_API nectar_tcp_flow_t *nectar_stream_flow(nectar_stream_t *s);

/* The service is done: both write halves are shut down if not yet,
 * queued reads are dropped, and destroy runs (on this loop, after the
 * current callback returns).  Writes still queued complete with
 * NECTAR_ECANCELED before destroy, so finish after the last write's
 * callback to keep its bytes.  No flow call is allowed afterwards. */
NECTAR_API void nectar_tcp_flow_finish(nectar_tcp_flow_t *flow);

/*
 * Promote (spec ne-engine §4): hand the flow back to the host for a direct
 * splice.  cb runs once on the flow loop with 0 (the host confirmed: both
 * read sides now report EOF after the engine's queued tail is drained and
 * flushed), NECTAR_ENOTSUP (no promote callback registered),
 * NECTAR_EIO (host confirmed FAILED; the flow continues in-process),
 * or NECTAR_ECANCELED (engine shutting down / session cancelled).  The
 * result is cached: a second call reports the same result.
 */
typedef void (*nectar_promote_cb)(nectar_tcp_flow_t *flow, int status,
                                  void *data);
NECTAR_API int nectar_tcp_flow_promote(nectar_tcp_flow_t *flow,
                                       nectar_promote_cb cb, void *data);

/* ---- UDP flows ---------------------------------------------------------- */

/*
 * UDP service: one per intercepted UDP flow; callbacks on the flow loop.
 * The service owns its egress sockets (create them on
 * nectar_udp_flow_loop()).  Same start/cancel/destroy contract as TCP.
 */
typedef struct nectar_udp_service {
    void (*start)(void *svc, nectar_udp_flow_t *flow);
    void (*cancel)(void *svc, nectar_udp_flow_t *flow, int reason);
    void (*destroy)(void *svc);
} nectar_udp_service_t;

/* nread >= 0: one datagram (zero-length datagrams are real);
 * peer = the destination the app addressed, NULL when unattributed.
 * nread == NECTAR_EOF: reserved; today the app side closing (host
 * on_client_close/free) cancels the service instead (cancel runs with
 * NECTAR_ECANCELED), as in the reference engine. */
typedef void (*nectar_udp_recv_cb)(nectar_udp_flow_t *flow, ssize_t nread,
                                   const uint8_t *buf,
                                   const struct sockaddr *peer, void *data);

NECTAR_API uv_loop_t *nectar_udp_flow_loop(nectar_udp_flow_t *flow);
NECTAR_API const nectar_flow_meta_t *
nectar_udp_flow_meta(const nectar_udp_flow_t *flow);
NECTAR_API int nectar_udp_flow_recv_start(nectar_udp_flow_t *flow,
                                          nectar_udp_recv_cb cb, void *data);
NECTAR_API int nectar_udp_flow_recv_stop(nectar_udp_flow_t *flow);
/* Deliver one datagram to the app, `source` = the real sender (NULL: no
 * attribution).  Synchronous; no back-pressure.  Returns 0 or
 * NECTAR_ECLOSED. */
NECTAR_API int nectar_udp_flow_send(nectar_udp_flow_t *flow,
                                    const uint8_t *buf, size_t len,
                                    const struct sockaddr *source);
NECTAR_API void nectar_udp_flow_finish(nectar_udp_flow_t *flow);

/* ---- decisions ---------------------------------------------------------- */

/*
 * A pending decision.  The handler completes it exactly once, from any
 * thread, inside decide_* or later.  The engine waits on the host's
 * calling thread until completion or the decision deadline (default 3 s,
 * then BLOCKED).  A completion after the deadline is discarded: the
 * service's destroy is called and nothing else happens.
 */
typedef struct nectar_decision nectar_decision_t;

NECTAR_API void nectar_decision_passthrough(nectar_decision_t *d);
NECTAR_API void nectar_decision_block(nectar_decision_t *d);
/* Ownership of svc passes to the engine (destroy is always called). */
NECTAR_API void nectar_decision_intercept_tcp(nectar_decision_t *d,
                                              const nectar_tcp_service_t *vt,
                                              void *svc);
NECTAR_API void nectar_decision_intercept_udp(nectar_decision_t *d,
                                              const nectar_udp_service_t *vt,
                                              void *svc);

/* A pending app-message reply; complete exactly once from any thread.
 * len == 0 means "no reply".  Bytes are copied. */
typedef struct nectar_reply nectar_reply_t;
NECTAR_API void nectar_reply_send(nectar_reply_t *r, const uint8_t *buf,
                                  size_t len);

/* ---- the handler -------------------------------------------------------- */

typedef struct nectar_engine_ctx nectar_engine_ctx_t;

/* The engine-config bytes (NULL/0 when none).  Valid for the engine's
 * life.  Never holds secrets: hosts log it. */
NECTAR_API const uint8_t *nectar_engine_ctx_config(const nectar_engine_ctx_t *c,
                                                   size_t *len);
/* storage dir from rama_transparent_proxy_initialize, or NULL. */
NECTAR_API const char *nectar_engine_ctx_storage_dir(const nectar_engine_ctx_t *c);
/* A loop owned by the engine for handler-wide work (timers, IPC); runs on
 * an engine thread until engine stop.  Touch it only from that thread:
 * get there with nectar_engine_ctx_post.  The handler's destroy runs on
 * it too, so handles created there can be closed there. */
NECTAR_API uv_loop_t *nectar_engine_ctx_loop(nectar_engine_ctx_t *c);

/* Any thread (also inside create): run fn(arg) soon on the context loop's
 * thread.  Returns 0, NECTAR_ENOMEM, or NECTAR_ECLOSED once the engine is
 * stopping (fn is then not called).  Posts run in FIFO order and all run
 * before destroy. */
NECTAR_API int nectar_engine_ctx_post(nectar_engine_ctx_t *c,
                                      void (*fn)(void *arg), void *arg);

#define NECTAR_HANDLER_VERSION 1

/*
 * Every slot but create and proxy_config may be NULL (the default noted).
 *  create:        on the engine-creating thread, may block.  Returns 0 and
 *                 sets *state, or an error (engine_new* then returns NULL).
 *  destroy:       after engine stop, once, on the context loop's thread
 *                 (every flow is gone by then).
 *  proxy_config:  cfg arrives filled with defaults; edit it.  Any thread.
 *  egress_options: TCP only, before decide_tcp; return true to supply
 *                 options (default: none).
 *  decide_tcp/udp: complete d (default: passthrough).
 *  app_message:   complete r (default: no reply).
 *  system_sleep/wake: brief notifications; no flow is quiesced.
 */
typedef struct nectar_handler_vtable {
    unsigned version; /* NECTAR_HANDLER_VERSION */
    const char *name;
    int (*create)(nectar_engine_ctx_t *ctx, void **state, nectar_error_t *err);
    void (*destroy)(void *state);
    void (*proxy_config)(void *state, nectar_proxy_config_t *cfg);
    bool (*egress_options)(void *state, const nectar_flow_meta_t *meta,
                           RamaTcpEgressConnectOptions *out);
    void (*decide_tcp)(void *state, const nectar_flow_meta_t *meta,
                       nectar_decision_t *d);
    void (*decide_udp)(void *state, const nectar_flow_meta_t *meta,
                       nectar_decision_t *d);
    void (*app_message)(void *state, const uint8_t *msg, size_t len,
                        nectar_reply_t *r);
    void (*system_sleep)(void *state);
    void (*system_wake)(void *state);
} nectar_handler_vtable_t;

/* Engine builder knobs (spec ne-engine §2.7, §3.12, §5, §6.5).  Zero
 * capacities are rejected by nectar_engine_new. */
typedef struct nectar_engine_options {
    uint32_t decision_deadline_ms;      /* 3000 */
    nectar_action_t deadline_action;    /* BLOCK (also for failures) */
    uint32_t app_message_deadline_ms;   /* 0 = decision deadline */
    uint32_t tcp_channel_capacity;      /* 8 chunks */
    uint32_t udp_channel_capacity;      /* 32 datagrams */
    uint32_t tcp_idle_timeout_ms;       /* 900000; 0 disables */
    uint32_t paused_drain_max_wait_ms;  /* 60000; 0 means 60000 */
    uint32_t udp_idle_timeout_ms;       /* 60000 */
    uint32_t udp_max_lifetime_ms;       /* 900000 */
    uint32_t stop_drain_max_wait_ms;    /* 5000 */
    uint32_t threads;                   /* engine loops; 0 = 2 */
} nectar_engine_options_t;

NECTAR_API void nectar_engine_options_defaults(nectar_engine_options_t *o);

/*
 * Make vt (with opts, NULL = defaults) the handler of engines created from
 * now on through rama_transparent_proxy_engine_new*.  Call once, before
 * the host creates an engine, from one thread.  vt must stay valid for the
 * process lifetime.  Returns 0 or NECTAR_EINVAL (bad version, missing
 * create/proxy_config).  vt == NULL restores the built-in handler.
 */
NECTAR_API int nectar_register_handler(const nectar_handler_vtable_t *vt,
                                       const nectar_engine_options_t *opts);

/* The init hook run by rama_transparent_proxy_initialize; default: record
 * the storage dir once and return true. */
typedef bool (*nectar_init_fn)(const char *storage_dir,
                               const char *app_group_dir,
                               const char *bundle_identifier);
NECTAR_API void nectar_register_init(nectar_init_fn fn);

/* Create an engine with an explicit handler (hosts that link libnectar
 * directly).  config may be NULL/0.  Returns NULL on failure (logged, and
 * described in *err when err != NULL).  Free with
 * rama_transparent_proxy_engine_stop/_free. */
NECTAR_API RamaTransparentProxyEngine *
nectar_engine_new(const nectar_handler_vtable_t *vt,
                  const nectar_engine_options_t *opts, const uint8_t *config,
                  size_t config_len, nectar_error_t *err);

/* The built-in handler (docs/config.md). */
NECTAR_API const nectar_handler_vtable_t *nectar_builtin_handler(void);

#ifdef __cplusplus
}
#endif
#endif /* NECTAR_HANDLER_H */
