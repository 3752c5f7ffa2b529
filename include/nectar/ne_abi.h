/*
 * ne_abi.h - the rama Apple Network Extension transparent-proxy C ABI.
 *
 * This header is a link contract: names, field order, sizes and offsets are
 * those of rama's `rama_apple_ne_ffi.h`, so the unchanged Swift provider
 * (RamaAppleNetworkExtension) can drive libnectar.  nectar's own naming
 * conventions do not apply here.  Semantics: docs/engine.md and
 * shared/spec/ne-engine.md.
 *
 * Threading, in one rule: engine functions may be called from any thread
 * concurrently, except that _engine_stop/_engine_free consume the pointer;
 * calls on one session are never concurrent (single owner).  Callbacks run
 * on engine threads, never inside a host call, except UDP read demand which
 * may fire inside rama_transparent_proxy_udp_session_on_client_datagram.
 * After _tcp_session_cancel, _tcp_session_free, _udp_session_on_client_close
 * or _udp_session_free returns, no callback of that session runs.
 *
 * Only 64-bit (LP64) targets are supported, as upstream.
 */
#ifndef NECTAR_NE_ABI_H
#define NECTAR_NE_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- opaque handles ---------------------------------------------------- */

typedef struct RamaTransparentProxyEngine RamaTransparentProxyEngine;
typedef struct RamaTransparentProxyTcpSession RamaTransparentProxyTcpSession;
typedef struct RamaTransparentProxyUdpSession RamaTransparentProxyUdpSession;

/* ---- byte buffers ------------------------------------------------------ */

/* Borrowed bytes; ptr == NULL or len == 0 is the empty slice. */
typedef struct RamaBytesView {
    const uint8_t *ptr;
    size_t len;
} RamaBytesView;

/* Engine-allocated bytes; release exactly once with rama_owned_bytes_free.
 * Empty is {NULL, 0, 0}. */
typedef struct RamaBytesOwned {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} RamaBytesOwned;

/* Caller bytes with ownership transfer: release(owner) runs exactly once,
 * from any thread, iff the _owned call returned ACCEPTED. */
typedef struct RamaBytesOwnedView {
    const uint8_t *ptr;
    size_t len;
    void *owner;
    void (*release)(void *owner);
} RamaBytesOwnedView;

/* ---- enumerations ------------------------------------------------------ */

typedef enum RamaTransparentProxyFlowProtocol {
    RAMA_FLOW_PROTOCOL_TCP = 1,
    RAMA_FLOW_PROTOCOL_UDP = 2,
} RamaTransparentProxyFlowProtocol;

typedef enum RamaTransparentProxyFlowAction {
    RAMA_FLOW_ACTION_INTERCEPT = 1,
    RAMA_FLOW_ACTION_PASSTHROUGH = 2,
    RAMA_FLOW_ACTION_BLOCKED = 3,
} RamaTransparentProxyFlowAction;

typedef enum RamaTransparentProxyRuleProtocol {
    RAMA_RULE_PROTOCOL_ANY = 0,
    RAMA_RULE_PROTOCOL_TCP = 1,
    RAMA_RULE_PROTOCOL_UDP = 2,
} RamaTransparentProxyRuleProtocol;

/* One byte wide (C23/clang fixed underlying type is not portable to C17,
 * so the type is a uint8_t and the values are an anonymous enum). */
typedef uint8_t RamaTcpDeliverStatus;
enum {
    RAMA_TCP_DELIVER_ACCEPTED = 0,
    RAMA_TCP_DELIVER_PAUSED = 1,
    RAMA_TCP_DELIVER_CLOSED = 2,
};

typedef uint8_t RamaPromoteConfirmStatus;
#define RAMA_PROMOTE_CONFIRM_OK ((RamaPromoteConfirmStatus)0)
#define RAMA_PROMOTE_CONFIRM_FAILED ((RamaPromoteConfirmStatus)1)

/* ---- session results --------------------------------------------------- */

typedef struct RamaTransparentProxyTcpSessionResult {
    RamaTransparentProxyFlowAction action;
    RamaTransparentProxyTcpSession *session; /* non-NULL iff INTERCEPT */
} RamaTransparentProxyTcpSessionResult;

typedef struct RamaTransparentProxyUdpSessionResult {
    RamaTransparentProxyFlowAction action;
    RamaTransparentProxyUdpSession *session; /* non-NULL iff INTERCEPT */
} RamaTransparentProxyUdpSessionResult;

/* ---- flow metadata (caller -> engine, borrowed for the call) ----------- */

typedef struct RamaTransparentProxyFlowEndpoint {
    const char *host_utf8;
    size_t host_utf8_len;
    uint16_t port; /* 0 = endpoint absent */
} RamaTransparentProxyFlowEndpoint;

typedef struct RamaTransparentProxyFlowMeta {
    uint32_t protocol;
    RamaTransparentProxyFlowEndpoint remote_endpoint;
    RamaTransparentProxyFlowEndpoint local_endpoint;
    const char *source_app_signing_identifier_utf8;
    size_t source_app_signing_identifier_utf8_len;
    const char *source_app_bundle_identifier_utf8;
    size_t source_app_bundle_identifier_utf8_len;
    const uint8_t *source_app_audit_token_bytes;
    size_t source_app_audit_token_bytes_len;
    int32_t source_app_pid;
    bool source_app_pid_is_set;
    const char *remote_hostname_utf8;
    size_t remote_hostname_utf8_len;
    const char *local_interface_name_utf8;
    size_t local_interface_name_utf8_len;
    uint32_t local_interface_index;
    bool local_interface_index_is_set;
    uint8_t local_interface_type;
    bool local_interface_type_is_set;
    bool is_bound;
    bool is_bound_is_set;
} RamaTransparentProxyFlowMeta;

/* ---- network rules and proxy config (engine -> caller) ---------------- */

typedef struct RamaTransparentProxyNetworkRule {
    const char *remote_network_utf8;
    size_t remote_network_utf8_len;
    uint8_t remote_prefix;
    bool remote_prefix_is_set;
    uint16_t remote_port;
    bool remote_port_is_set;
    const char *local_network_utf8;
    size_t local_network_utf8_len;
    uint8_t local_prefix;
    bool local_prefix_is_set;
    uint32_t protocol; /* RamaTransparentProxyRuleProtocol */
    bool exclude;
} RamaTransparentProxyNetworkRule;

typedef struct RamaTransparentProxyConfig {
    const char *tunnel_remote_address_utf8;
    size_t tunnel_remote_address_utf8_len;
    const RamaTransparentProxyNetworkRule *rules;
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
    uint32_t flow_refusal_action; /* 0 block (fail closed), 1 passthrough */
} RamaTransparentProxyConfig;

/* ---- init config (caller -> engine, borrowed for the call) ------------- */

typedef struct RamaTransparentProxyInitConfig {
    const char *storage_dir_utf8;
    size_t storage_dir_utf8_len;
    const char *app_group_dir_utf8;
    size_t app_group_dir_utf8_len;
    const char *bundle_identifier_utf8;
    size_t bundle_identifier_utf8_len;
} RamaTransparentProxyInitConfig;

/* ---- UDP peer (both directions, by value, borrowed for the call) ------- */

typedef struct RamaUdpPeerView {
    bool present;
    const uint8_t *host_utf8; /* numeric IP literal, never a %zone suffix */
    size_t host_utf8_len;
    uint16_t port;            /* host byte order */
    uint32_t scope_id;        /* IPv6 zone as interface index; 0 = none */
} RamaUdpPeerView;

/* ---- egress connect options (engine -> caller, TCP only) -------------- */

typedef struct RamaNwEgressParameters {
    bool has_service_class;
    uint8_t service_class;
    bool has_multipath_service_type;
    uint8_t multipath_service_type;
    bool has_required_interface_type;
    uint8_t required_interface_type;
    bool has_attribution;
    uint8_t attribution;
    uint8_t prohibited_interface_types_mask;
    bool preserve_original_meta_data;
    bool allow_system_proxy;
} RamaNwEgressParameters;

typedef struct RamaTcpEgressConnectOptions {
    RamaNwEgressParameters parameters;
    bool has_connect_timeout_ms;
    uint32_t connect_timeout_ms;
    bool has_linger_close_ms;
    uint32_t linger_close_ms;
    bool has_egress_eof_grace_ms;
    uint32_t egress_eof_grace_ms;
    bool tcp_keepalive_enabled;
    bool has_tcp_keepalive_idle_secs;
    uint32_t tcp_keepalive_idle_secs;
    bool has_tcp_keepalive_interval_secs;
    uint32_t tcp_keepalive_interval_secs;
    bool has_tcp_keepalive_count;
    uint32_t tcp_keepalive_count;
    bool tcp_no_delay;
    bool has_tcp_no_push;
    bool tcp_no_push;
    bool has_tcp_no_options;
    bool tcp_no_options;
    bool has_tcp_retransmit_fin_drop;
    bool tcp_retransmit_fin_drop;
    bool has_tcp_disable_ack_stretching;
    bool tcp_disable_ack_stretching;
    bool has_tcp_enable_fast_open;
    bool tcp_enable_fast_open;
    bool has_tcp_disable_ecn;
    bool tcp_disable_ecn;
    bool has_tcp_maximum_segment_size;
    uint32_t tcp_maximum_segment_size;
    bool has_tcp_connection_drop_time_secs;
    uint32_t tcp_connection_drop_time_secs;
    bool has_tcp_persist_timeout_secs;
    uint32_t tcp_persist_timeout_secs;
} RamaTcpEgressConnectOptions;

/* ---- callbacks (engine -> caller, on engine threads) ------------------- */

typedef RamaTcpDeliverStatus (*RamaTcpServerBytesFn)(void *ctx,
                                                     RamaBytesView bytes);
typedef void (*RamaTcpServerClosedFn)(void *ctx);
typedef void (*RamaTcpClientReadDemandFn)(void *ctx);
typedef RamaTcpDeliverStatus (*RamaTcpEgressWriteFn)(void *ctx,
                                                     RamaBytesView bytes);
typedef void (*RamaTcpEgressCloseFn)(void *ctx);
typedef void (*RamaTcpEgressReadDemandFn)(void *ctx);
typedef void (*RamaTcpPromoteRequestFn)(void *ctx);
typedef void (*RamaUdpServerDatagramFn)(void *ctx, RamaBytesView bytes,
                                        RamaUdpPeerView peer);
typedef void (*RamaUdpClientReadDemandFn)(void *ctx);
typedef void (*RamaUdpServerClosedFn)(void *ctx);

typedef struct RamaTransparentProxyTcpSessionCallbacks {
    void *context;
    RamaTcpServerBytesFn on_server_bytes;
    RamaTcpServerClosedFn on_server_closed;
    RamaTcpClientReadDemandFn on_client_read_demand;
} RamaTransparentProxyTcpSessionCallbacks;

/* Field order differs from TCP: demand before closed. */
typedef struct RamaTransparentProxyUdpSessionCallbacks {
    void *context;
    RamaUdpServerDatagramFn on_server_datagram;
    RamaUdpClientReadDemandFn on_client_read_demand;
    RamaUdpServerClosedFn on_server_closed;
} RamaTransparentProxyUdpSessionCallbacks;

typedef struct RamaTransparentProxyTcpEgressCallbacks {
    void *context;
    RamaTcpEgressWriteFn on_write_to_egress;
    RamaTcpEgressCloseFn on_close_egress;
    RamaTcpEgressReadDemandFn on_egress_read_demand;
} RamaTransparentProxyTcpEgressCallbacks;

typedef struct RamaTransparentProxyTcpPromoteCallbacks {
    void *context;
    RamaTcpPromoteRequestFn on_promote_request;
} RamaTransparentProxyTcpPromoteCallbacks;

/* ---- functions ---------------------------------------------------------- */

NECTAR_API bool rama_transparent_proxy_initialize(
    const RamaTransparentProxyInitConfig *config);

NECTAR_API RamaTransparentProxyEngine *rama_transparent_proxy_engine_new(void);
NECTAR_API RamaTransparentProxyEngine *
rama_transparent_proxy_engine_new_with_config(RamaBytesView engine_config);
NECTAR_API void
rama_transparent_proxy_engine_free(RamaTransparentProxyEngine *engine);
NECTAR_API void
rama_transparent_proxy_engine_stop(RamaTransparentProxyEngine *engine,
                                   int32_t reason);

NECTAR_API RamaTransparentProxyConfig *
rama_transparent_proxy_get_config(RamaTransparentProxyEngine *engine);
NECTAR_API void
rama_transparent_proxy_config_free(RamaTransparentProxyConfig *config);

NECTAR_API RamaBytesOwned rama_transparent_proxy_engine_handle_app_message(
    RamaTransparentProxyEngine *engine, RamaBytesView message);
NECTAR_API void rama_transparent_proxy_engine_notify_system_sleep(
    RamaTransparentProxyEngine *engine);
NECTAR_API void rama_transparent_proxy_engine_notify_system_wake(
    RamaTransparentProxyEngine *engine);

NECTAR_API void rama_owned_bytes_free(RamaBytesOwned bytes);

NECTAR_API RamaTransparentProxyTcpSessionResult
rama_transparent_proxy_engine_new_tcp_session(
    RamaTransparentProxyEngine *engine,
    const RamaTransparentProxyFlowMeta *meta,
    RamaTransparentProxyTcpSessionCallbacks callbacks);
NECTAR_API void rama_transparent_proxy_tcp_session_free(
    RamaTransparentProxyTcpSession *session);
NECTAR_API void rama_transparent_proxy_tcp_session_cancel(
    RamaTransparentProxyTcpSession *session);
NECTAR_API bool rama_transparent_proxy_tcp_session_get_egress_connect_options(
    RamaTransparentProxyTcpSession *session,
    RamaTcpEgressConnectOptions *out_options);
NECTAR_API void rama_transparent_proxy_tcp_session_activate(
    RamaTransparentProxyTcpSession *session,
    RamaTransparentProxyTcpEgressCallbacks callbacks);
NECTAR_API RamaTcpDeliverStatus rama_transparent_proxy_tcp_session_on_client_bytes(
    RamaTransparentProxyTcpSession *session, RamaBytesView bytes);
NECTAR_API RamaTcpDeliverStatus
rama_transparent_proxy_tcp_session_on_client_bytes_owned(
    RamaTransparentProxyTcpSession *session, RamaBytesOwnedView bytes);
NECTAR_API void rama_transparent_proxy_tcp_session_on_client_eof(
    RamaTransparentProxyTcpSession *session);
NECTAR_API RamaTcpDeliverStatus rama_transparent_proxy_tcp_session_on_egress_bytes(
    RamaTransparentProxyTcpSession *session, RamaBytesView bytes);
NECTAR_API RamaTcpDeliverStatus
rama_transparent_proxy_tcp_session_on_egress_bytes_owned(
    RamaTransparentProxyTcpSession *session, RamaBytesOwnedView bytes);
NECTAR_API void rama_transparent_proxy_tcp_session_on_egress_eof(
    RamaTransparentProxyTcpSession *session);
NECTAR_API void rama_transparent_proxy_tcp_session_on_egress_error(
    RamaTransparentProxyTcpSession *session);
NECTAR_API void rama_transparent_proxy_tcp_session_signal_server_drain(
    RamaTransparentProxyTcpSession *session);
NECTAR_API void rama_transparent_proxy_tcp_session_signal_egress_drain(
    RamaTransparentProxyTcpSession *session);
NECTAR_API void rama_transparent_proxy_tcp_session_register_promote_callbacks(
    RamaTransparentProxyTcpSession *session,
    RamaTransparentProxyTcpPromoteCallbacks callbacks);
NECTAR_API void rama_transparent_proxy_tcp_session_confirm_promoted(
    RamaTransparentProxyTcpSession *session, RamaPromoteConfirmStatus status,
    const char *reason_ptr, size_t reason_len);

NECTAR_API RamaTransparentProxyUdpSessionResult
rama_transparent_proxy_engine_new_udp_session(
    RamaTransparentProxyEngine *engine,
    const RamaTransparentProxyFlowMeta *meta,
    RamaTransparentProxyUdpSessionCallbacks callbacks);
NECTAR_API void rama_transparent_proxy_udp_session_free(
    RamaTransparentProxyUdpSession *session);
NECTAR_API void rama_transparent_proxy_udp_session_activate(
    RamaTransparentProxyUdpSession *session);
NECTAR_API void rama_transparent_proxy_udp_session_on_client_datagram(
    RamaTransparentProxyUdpSession *session, RamaBytesView bytes,
    RamaUdpPeerView peer);
NECTAR_API void rama_transparent_proxy_udp_session_on_client_close(
    RamaTransparentProxyUdpSession *session);

/* ---- layout pins (LP64) ------------------------------------------------- */

#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(RamaBytesView) == 16, "RamaBytesView");
_Static_assert(sizeof(RamaBytesOwned) == 24, "RamaBytesOwned");
_Static_assert(sizeof(RamaBytesOwnedView) == 32, "RamaBytesOwnedView");
_Static_assert(sizeof(RamaTransparentProxyFlowEndpoint) == 24, "endpoint");
_Static_assert(sizeof(RamaTransparentProxyFlowMeta) == 160, "meta");
_Static_assert(offsetof(RamaTransparentProxyFlowMeta, remote_endpoint) == 8,
               "meta.remote_endpoint");
_Static_assert(offsetof(RamaTransparentProxyFlowMeta, source_app_pid) == 104,
               "meta.source_app_pid");
_Static_assert(offsetof(RamaTransparentProxyFlowMeta, remote_hostname_utf8) ==
                   112,
               "meta.remote_hostname");
_Static_assert(offsetof(RamaTransparentProxyFlowMeta,
                        local_interface_name_utf8) == 128,
               "meta.local_interface_name");
_Static_assert(offsetof(RamaTransparentProxyFlowMeta, local_interface_index) ==
                   144,
               "meta.local_interface_index");
_Static_assert(offsetof(RamaTransparentProxyFlowMeta, is_bound) == 151,
               "meta.is_bound");
_Static_assert(sizeof(RamaTransparentProxyNetworkRule) == 56, "rule");
_Static_assert(offsetof(RamaTransparentProxyNetworkRule,
                        local_network_utf8) == 24,
               "rule.local_network");
_Static_assert(offsetof(RamaTransparentProxyNetworkRule, protocol) == 44,
               "rule.protocol");
_Static_assert(sizeof(RamaTransparentProxyConfig) == 80, "config");
_Static_assert(offsetof(RamaTransparentProxyConfig, flow_pressure_soft_cap) ==
                   40,
               "config.flow_pressure_soft_cap");
_Static_assert(offsetof(RamaTransparentProxyConfig,
                        tcp_breaker_connect_timeout_ms) == 72,
               "config.tcp_breaker_connect_timeout_ms");
_Static_assert(offsetof(RamaTransparentProxyConfig, flow_refusal_action) == 76,
               "config.flow_refusal_action");
_Static_assert(sizeof(RamaTransparentProxyInitConfig) == 48, "init config");
_Static_assert(offsetof(RamaTransparentProxyInitConfig,
                        bundle_identifier_utf8) == 32,
               "init.bundle_identifier");
_Static_assert(sizeof(RamaTransparentProxyTcpSessionResult) == 16, "tcp result");
_Static_assert(sizeof(RamaTransparentProxyUdpSessionResult) == 16, "udp result");
_Static_assert(sizeof(RamaTransparentProxyTcpSessionCallbacks) == 32, "tcp cbs");
_Static_assert(sizeof(RamaTransparentProxyUdpSessionCallbacks) == 32, "udp cbs");
_Static_assert(sizeof(RamaTransparentProxyTcpEgressCallbacks) == 32, "egress cbs");
_Static_assert(sizeof(RamaTransparentProxyTcpPromoteCallbacks) == 16,
               "promote cbs");
_Static_assert(offsetof(RamaTransparentProxyTcpSessionResult, session) == 8,
               "result.session");
#endif

_Static_assert(sizeof(RamaTcpDeliverStatus) == 1, "RamaTcpDeliverStatus");
_Static_assert(sizeof(RamaPromoteConfirmStatus) == 1, "RamaPromoteConfirmStatus");
_Static_assert(sizeof(RamaUdpPeerView) == 32, "RamaUdpPeerView");
_Static_assert(offsetof(RamaUdpPeerView, host_utf8) == 8, "peer.host");
_Static_assert(offsetof(RamaUdpPeerView, host_utf8_len) == 16, "peer.len");
_Static_assert(offsetof(RamaUdpPeerView, port) == 24, "peer.port");
_Static_assert(offsetof(RamaUdpPeerView, scope_id) == 28, "peer.scope_id");
_Static_assert(sizeof(RamaNwEgressParameters) == 11, "RamaNwEgressParameters");
_Static_assert(offsetof(RamaNwEgressParameters,
                        prohibited_interface_types_mask) == 8,
               "params.mask");
_Static_assert(sizeof(RamaTcpEgressConnectOptions) == 92, "connect options");
_Static_assert(offsetof(RamaTcpEgressConnectOptions, has_connect_timeout_ms) ==
                   11,
               "opts.has_connect_timeout_ms");
_Static_assert(offsetof(RamaTcpEgressConnectOptions, connect_timeout_ms) == 12,
               "opts.connect_timeout_ms");
_Static_assert(offsetof(RamaTcpEgressConnectOptions, linger_close_ms) == 20,
               "opts.linger_close_ms");
_Static_assert(offsetof(RamaTcpEgressConnectOptions, egress_eof_grace_ms) == 28,
               "opts.egress_eof_grace_ms");
_Static_assert(offsetof(RamaTcpEgressConnectOptions, tcp_keepalive_count) == 52,
               "opts.tcp_keepalive_count");
_Static_assert(offsetof(RamaTcpEgressConnectOptions, tcp_no_delay) == 56,
               "opts.tcp_no_delay");
_Static_assert(offsetof(RamaTcpEgressConnectOptions, tcp_disable_ecn) == 68,
               "opts.tcp_disable_ecn");
_Static_assert(offsetof(RamaTcpEgressConnectOptions,
                        tcp_maximum_segment_size) == 72,
               "opts.tcp_maximum_segment_size");
_Static_assert(offsetof(RamaTcpEgressConnectOptions,
                        tcp_connection_drop_time_secs) == 80,
               "opts.tcp_connection_drop_time_secs");
_Static_assert(offsetof(RamaTcpEgressConnectOptions,
                        tcp_persist_timeout_secs) == 88,
               "opts.tcp_persist_timeout_secs");

#ifdef __cplusplus
}
#endif
#endif /* NECTAR_NE_ABI_H */
