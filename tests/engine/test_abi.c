/*
 * test_abi.c - the rama ABI surface: struct layouts (compiled against the
 * public header), every NULL case, proxy config defaults/clamping/free,
 * metadata decoding, decisions with deadlines, app messages, initialize,
 * options validation, handler registration, sleep/wake.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/support.h"
#include "harness/test.h"

/* ---- layouts ------------------------------------------------------------- */

#define OFF(type, field, want) CHECK_EQ(offsetof(type, field), want)

static void test_layouts(void)
{
    CHECK_EQ(sizeof(RamaBytesView), 16);
    CHECK_EQ(sizeof(RamaBytesOwned), 24);
    CHECK_EQ(sizeof(RamaBytesOwnedView), 32);
    OFF(RamaBytesOwnedView, owner, 16);
    OFF(RamaBytesOwnedView, release, 24);
    CHECK_EQ(sizeof(RamaTcpDeliverStatus), 1);
    CHECK_EQ(sizeof(RamaPromoteConfirmStatus), 1);
    CHECK_EQ(sizeof(RamaTransparentProxyFlowAction), 4);
    CHECK_EQ(RAMA_TCP_DELIVER_ACCEPTED, 0);
    CHECK_EQ(RAMA_TCP_DELIVER_PAUSED, 1);
    CHECK_EQ(RAMA_TCP_DELIVER_CLOSED, 2);
    CHECK_EQ(RAMA_FLOW_ACTION_INTERCEPT, 1);
    CHECK_EQ(RAMA_FLOW_ACTION_PASSTHROUGH, 2);
    CHECK_EQ(RAMA_FLOW_ACTION_BLOCKED, 3);

    CHECK_EQ(sizeof(RamaTransparentProxyTcpSessionResult), 16);
    OFF(RamaTransparentProxyTcpSessionResult, session, 8);
    OFF(RamaTransparentProxyUdpSessionResult, session, 8);

    CHECK_EQ(sizeof(RamaTransparentProxyFlowEndpoint), 24);
    OFF(RamaTransparentProxyFlowEndpoint, port, 16);
    CHECK_EQ(sizeof(RamaTransparentProxyFlowMeta), 160);
    OFF(RamaTransparentProxyFlowMeta, remote_endpoint, 8);
    OFF(RamaTransparentProxyFlowMeta, local_endpoint, 32);
    OFF(RamaTransparentProxyFlowMeta, source_app_signing_identifier_utf8, 56);
    OFF(RamaTransparentProxyFlowMeta, source_app_bundle_identifier_utf8, 72);
    OFF(RamaTransparentProxyFlowMeta, source_app_audit_token_bytes, 88);
    OFF(RamaTransparentProxyFlowMeta, source_app_audit_token_bytes_len, 96);
    OFF(RamaTransparentProxyFlowMeta, source_app_pid, 104);
    OFF(RamaTransparentProxyFlowMeta, source_app_pid_is_set, 108);
    OFF(RamaTransparentProxyFlowMeta, remote_hostname_utf8, 112);
    OFF(RamaTransparentProxyFlowMeta, local_interface_name_utf8, 128);
    OFF(RamaTransparentProxyFlowMeta, local_interface_index, 144);
    OFF(RamaTransparentProxyFlowMeta, local_interface_index_is_set, 148);
    OFF(RamaTransparentProxyFlowMeta, local_interface_type, 149);
    OFF(RamaTransparentProxyFlowMeta, local_interface_type_is_set, 150);
    OFF(RamaTransparentProxyFlowMeta, is_bound, 151);
    OFF(RamaTransparentProxyFlowMeta, is_bound_is_set, 152);

    CHECK_EQ(sizeof(RamaTransparentProxyNetworkRule), 56);
    OFF(RamaTransparentProxyNetworkRule, remote_prefix, 16);
    OFF(RamaTransparentProxyNetworkRule, remote_prefix_is_set, 17);
    OFF(RamaTransparentProxyNetworkRule, remote_port, 18);
    OFF(RamaTransparentProxyNetworkRule, remote_port_is_set, 20);
    OFF(RamaTransparentProxyNetworkRule, local_network_utf8, 24);
    OFF(RamaTransparentProxyNetworkRule, local_prefix, 40);
    OFF(RamaTransparentProxyNetworkRule, local_prefix_is_set, 41);
    OFF(RamaTransparentProxyNetworkRule, protocol, 44);
    OFF(RamaTransparentProxyNetworkRule, exclude, 48);

    CHECK_EQ(sizeof(RamaTransparentProxyConfig), 80);
    OFF(RamaTransparentProxyConfig, rules, 16);
    OFF(RamaTransparentProxyConfig, rules_len, 24);
    OFF(RamaTransparentProxyConfig, tcp_write_pump_max_pending_bytes, 32);
    OFF(RamaTransparentProxyConfig, flow_pressure_soft_cap, 40);
    OFF(RamaTransparentProxyConfig, flow_pressure_low_water, 44);
    OFF(RamaTransparentProxyConfig, flow_pressure_idle_floor_ms, 48);
    OFF(RamaTransparentProxyConfig, tcp_start_in_flight_hard_cap, 52);
    OFF(RamaTransparentProxyConfig, tcp_start_in_flight_soft_cap, 56);
    OFF(RamaTransparentProxyConfig, tcp_start_latency_breaker_p95_ms, 60);
    OFF(RamaTransparentProxyConfig, tcp_start_latency_breaker_close_p95_ms, 64);
    OFF(RamaTransparentProxyConfig, tcp_pressure_connect_timeout_ms, 68);
    OFF(RamaTransparentProxyConfig, tcp_breaker_connect_timeout_ms, 72);
    OFF(RamaTransparentProxyConfig, flow_refusal_action, 76);

    CHECK_EQ(sizeof(RamaTransparentProxyInitConfig), 48);
    OFF(RamaTransparentProxyInitConfig, app_group_dir_utf8, 16);
    OFF(RamaTransparentProxyInitConfig, bundle_identifier_utf8, 32);

    CHECK_EQ(sizeof(RamaUdpPeerView), 32);
    OFF(RamaUdpPeerView, host_utf8, 8);
    OFF(RamaUdpPeerView, host_utf8_len, 16);
    OFF(RamaUdpPeerView, port, 24);
    OFF(RamaUdpPeerView, scope_id, 28);

    CHECK_EQ(sizeof(RamaNwEgressParameters), 11);
    OFF(RamaNwEgressParameters, prohibited_interface_types_mask, 8);
    OFF(RamaNwEgressParameters, preserve_original_meta_data, 9);
    OFF(RamaNwEgressParameters, allow_system_proxy, 10);
    CHECK_EQ(sizeof(RamaTcpEgressConnectOptions), 92);
    OFF(RamaTcpEgressConnectOptions, has_connect_timeout_ms, 11);
    OFF(RamaTcpEgressConnectOptions, connect_timeout_ms, 12);
    OFF(RamaTcpEgressConnectOptions, has_linger_close_ms, 16);
    OFF(RamaTcpEgressConnectOptions, linger_close_ms, 20);
    OFF(RamaTcpEgressConnectOptions, has_egress_eof_grace_ms, 24);
    OFF(RamaTcpEgressConnectOptions, egress_eof_grace_ms, 28);
    OFF(RamaTcpEgressConnectOptions, tcp_keepalive_enabled, 32);
    OFF(RamaTcpEgressConnectOptions, has_tcp_keepalive_idle_secs, 33);
    OFF(RamaTcpEgressConnectOptions, tcp_keepalive_idle_secs, 36);
    OFF(RamaTcpEgressConnectOptions, tcp_keepalive_interval_secs, 44);
    OFF(RamaTcpEgressConnectOptions, tcp_keepalive_count, 52);
    OFF(RamaTcpEgressConnectOptions, tcp_no_delay, 56);
    OFF(RamaTcpEgressConnectOptions, has_tcp_no_push, 57);
    OFF(RamaTcpEgressConnectOptions, tcp_disable_ack_stretching, 64);
    OFF(RamaTcpEgressConnectOptions, tcp_disable_ecn, 68);
    OFF(RamaTcpEgressConnectOptions, has_tcp_maximum_segment_size, 69);
    OFF(RamaTcpEgressConnectOptions, tcp_maximum_segment_size, 72);
    OFF(RamaTcpEgressConnectOptions, tcp_connection_drop_time_secs, 80);
    OFF(RamaTcpEgressConnectOptions, tcp_persist_timeout_secs, 88);

    CHECK_EQ(sizeof(RamaTransparentProxyTcpSessionCallbacks), 32);
    OFF(RamaTransparentProxyTcpSessionCallbacks, on_server_closed, 16);
    OFF(RamaTransparentProxyTcpSessionCallbacks, on_client_read_demand, 24);
    CHECK_EQ(sizeof(RamaTransparentProxyUdpSessionCallbacks), 32);
    OFF(RamaTransparentProxyUdpSessionCallbacks, on_client_read_demand, 16);
    OFF(RamaTransparentProxyUdpSessionCallbacks, on_server_closed, 24);
    CHECK_EQ(sizeof(RamaTransparentProxyTcpEgressCallbacks), 32);
    OFF(RamaTransparentProxyTcpEgressCallbacks, on_close_egress, 16);
    CHECK_EQ(sizeof(RamaTransparentProxyTcpPromoteCallbacks), 16);
    OFF(RamaTransparentProxyTcpPromoteCallbacks, on_promote_request, 8);
}

/* ---- NULL cases ---------------------------------------------------------- */

static void test_null_cases(void)
{
    RamaBytesView v = {(const uint8_t *)"x", 1};
    RamaBytesOwnedView ov = {(const uint8_t *)"x", 1, NULL, NULL};
    RamaTransparentProxyTcpSessionCallbacks tc = {0};
    RamaTransparentProxyUdpSessionCallbacks uc = {0};
    RamaTransparentProxyTcpEgressCallbacks ec = {0};
    RamaTransparentProxyTcpPromoteCallbacks pc = {0};
    RamaTcpEgressConnectOptions opts;
    RamaUdpPeerView peer = {0};
    RamaBytesOwned none = {NULL, 0, 0}, r;
    RamaTransparentProxyTcpSessionResult tr;
    RamaTransparentProxyUdpSessionResult ur;

    rama_transparent_proxy_engine_free(NULL);
    rama_transparent_proxy_engine_stop(NULL, 0);
    CHECK(rama_transparent_proxy_get_config(NULL) == NULL);
    rama_transparent_proxy_config_free(NULL);
    r = rama_transparent_proxy_engine_handle_app_message(NULL, v);
    CHECK(r.ptr == NULL && r.len == 0 && r.cap == 0);
    rama_transparent_proxy_engine_notify_system_sleep(NULL);
    rama_transparent_proxy_engine_notify_system_wake(NULL);
    rama_owned_bytes_free(none);

    tr = rama_transparent_proxy_engine_new_tcp_session(NULL, NULL, tc);
    CHECK_EQ(tr.action, RAMA_FLOW_ACTION_PASSTHROUGH);
    CHECK(tr.session == NULL);
    ur = rama_transparent_proxy_engine_new_udp_session(NULL, NULL, uc);
    CHECK_EQ(ur.action, RAMA_FLOW_ACTION_PASSTHROUGH);
    CHECK(ur.session == NULL);

    rama_transparent_proxy_tcp_session_free(NULL);
    rama_transparent_proxy_tcp_session_cancel(NULL);
    CHECK(!rama_transparent_proxy_tcp_session_get_egress_connect_options(
        NULL, &opts));
    rama_transparent_proxy_tcp_session_activate(NULL, ec);
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_client_bytes(NULL, v),
             RAMA_TCP_DELIVER_CLOSED);
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_client_bytes_owned(NULL, ov),
             RAMA_TCP_DELIVER_CLOSED);
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_egress_bytes(NULL, v),
             RAMA_TCP_DELIVER_CLOSED);
    CHECK_EQ(rama_transparent_proxy_tcp_session_on_egress_bytes_owned(NULL, ov),
             RAMA_TCP_DELIVER_CLOSED);
    rama_transparent_proxy_tcp_session_on_client_eof(NULL);
    rama_transparent_proxy_tcp_session_on_egress_eof(NULL);
    rama_transparent_proxy_tcp_session_on_egress_error(NULL);
    rama_transparent_proxy_tcp_session_signal_server_drain(NULL);
    rama_transparent_proxy_tcp_session_signal_egress_drain(NULL);
    rama_transparent_proxy_tcp_session_register_promote_callbacks(NULL, pc);
    rama_transparent_proxy_tcp_session_confirm_promoted(NULL, 0, NULL, 0);

    rama_transparent_proxy_udp_session_free(NULL);
    rama_transparent_proxy_udp_session_activate(NULL);
    rama_transparent_proxy_udp_session_on_client_datagram(NULL, v, peer);
    rama_transparent_proxy_udp_session_on_client_close(NULL);

    /* handler.h accessors tolerate NULL too. */
    CHECK(nectar_tcp_flow_loop(NULL) == NULL);
    CHECK(nectar_tcp_flow_meta(NULL) == NULL);
    CHECK(nectar_tcp_flow_ingress(NULL) == NULL);
    CHECK(nectar_stream_flow(NULL) == NULL);
    CHECK_EQ(nectar_stream_write(NULL, NULL, 0, NULL, NULL), NECTAR_EINVAL);
    CHECK_EQ(nectar_stream_read_start(NULL, NULL, NULL), NECTAR_EINVAL);
    CHECK_EQ(nectar_tcp_flow_promote(NULL, NULL, NULL), NECTAR_EINVAL);
    CHECK_EQ(nectar_udp_flow_send(NULL, NULL, 0, NULL), NECTAR_EINVAL);
    CHECK(nectar_engine_ctx_config(NULL, NULL) == NULL);
    CHECK(nectar_engine_ctx_loop(NULL) == NULL);
    CHECK_EQ(nectar_engine_ctx_post(NULL, NULL, NULL), NECTAR_EINVAL);
    nectar_proxy_config_defaults(NULL);
    nectar_egress_options_defaults(NULL);
    nectar_engine_options_defaults(NULL);
}

/* ---- proxy config -------------------------------------------------------- */

static void cfg_clamp_low(nectar_proxy_config_t *c)
{
    static const nectar_rule_t rules[2] = {
        {"10.0.0.0", 8, 443, NULL, -1, RAMA_RULE_PROTOCOL_TCP, true},
        {NULL, 300, -1, "192.168.1.0", 24, 77, false},
    };
    c->tcp_write_pump_max_pending_bytes = 0;
    c->rules = rules;
    c->rules_len = 2;
    c->flow_refusal_action = 1;
}

static void cfg_clamp_high(nectar_proxy_config_t *c)
{
    c->tcp_write_pump_max_pending_bytes = (size_t)100 << 20;
    c->rules = NULL;
    c->rules_len = 0;
    c->tunnel_remote_address = "";
}

static void test_config(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    RamaTransparentProxyConfig *c;

    th_reset();
    th_options(&o);
    e = th_engine(&o);
    c = rama_transparent_proxy_get_config(e);
    CHECK(c != NULL);
    CHECK_EQ(c->tunnel_remote_address_utf8_len, 9);
    CHECK_MEM_EQ(c->tunnel_remote_address_utf8, "127.0.0.1", 9);
    CHECK_EQ(c->rules_len, 1);
    CHECK(c->rules[0].remote_network_utf8 == NULL);
    CHECK(!c->rules[0].remote_prefix_is_set);
    CHECK(!c->rules[0].remote_port_is_set);
    CHECK(!c->rules[0].local_prefix_is_set);
    CHECK_EQ(c->rules[0].protocol, RAMA_RULE_PROTOCOL_ANY);
    CHECK(!c->rules[0].exclude);
    CHECK_EQ(c->tcp_write_pump_max_pending_bytes, 262144);
    CHECK_EQ(c->flow_pressure_soft_cap, 450);
    CHECK_EQ(c->flow_pressure_low_water, 350);
    CHECK_EQ(c->flow_pressure_idle_floor_ms, 120000);
    CHECK_EQ(c->tcp_start_in_flight_hard_cap, 128);
    CHECK_EQ(c->tcp_start_in_flight_soft_cap, 64);
    CHECK_EQ(c->tcp_start_latency_breaker_p95_ms, 1500);
    CHECK_EQ(c->tcp_start_latency_breaker_close_p95_ms, 500);
    CHECK_EQ(c->tcp_pressure_connect_timeout_ms, 5000);
    CHECK_EQ(c->tcp_breaker_connect_timeout_ms, 3000);
    CHECK_EQ(c->flow_refusal_action, 0);
    rama_transparent_proxy_config_free(c);

    th_cfg.proxy_config = cfg_clamp_low;
    c = rama_transparent_proxy_get_config(e);
    CHECK_EQ(c->tcp_write_pump_max_pending_bytes, 1);
    CHECK_EQ(c->rules_len, 2);
    CHECK_EQ(c->rules[0].remote_network_utf8_len, 8);
    CHECK_MEM_EQ(c->rules[0].remote_network_utf8, "10.0.0.0", 8);
    CHECK(c->rules[0].remote_prefix_is_set);
    CHECK_EQ(c->rules[0].remote_prefix, 8);
    CHECK(c->rules[0].remote_port_is_set);
    CHECK_EQ(c->rules[0].remote_port, 443);
    CHECK_EQ(c->rules[0].protocol, RAMA_RULE_PROTOCOL_TCP);
    CHECK(c->rules[0].exclude);
    CHECK(!c->rules[1].remote_prefix_is_set); /* 300 is not a prefix */
    CHECK(c->rules[1].local_prefix_is_set);
    CHECK_EQ(c->rules[1].protocol, RAMA_RULE_PROTOCOL_ANY); /* 77 unknown */
    CHECK_EQ(c->flow_refusal_action, 1);
    rama_transparent_proxy_config_free(c);

    th_cfg.proxy_config = cfg_clamp_high;
    c = rama_transparent_proxy_get_config(e);
    CHECK_EQ(c->tcp_write_pump_max_pending_bytes, 8u << 20);
    CHECK(c->rules == NULL);
    CHECK_EQ(c->rules_len, 0);
    CHECK(c->tunnel_remote_address_utf8 == NULL);
    rama_transparent_proxy_config_free(c);
    rama_transparent_proxy_engine_stop(e, 0);

    {
        RamaTcpEgressConnectOptions eo;
        memset(&eo, 0xff, sizeof(eo));
        nectar_egress_options_defaults(&eo);
        CHECK(eo.tcp_keepalive_enabled && eo.tcp_no_delay);
        CHECK(eo.parameters.preserve_original_meta_data);
        CHECK(!eo.parameters.allow_system_proxy);
        CHECK(!eo.has_connect_timeout_ms && eo.connect_timeout_ms == 0);
    }
}

/* ---- metadata ------------------------------------------------------------ */

static void test_meta_decode(void)
{
    RamaTransparentProxyFlowMeta raw;
    struct ne_meta *m;
    bool unknown;
    uint8_t token[32] = {1};
    const char bad_utf8[] = "a\xff";

    memset(&raw, 0, sizeof(raw));
    raw.protocol = RAMA_FLOW_PROTOCOL_TCP;
    raw.remote_endpoint =
        (RamaTransparentProxyFlowEndpoint){"  example.com ", 14, 443};
    raw.local_endpoint = (RamaTransparentProxyFlowEndpoint){"10.0.0.1", 8, 0};
    raw.source_app_signing_identifier_utf8 = " com.example.app\n";
    raw.source_app_signing_identifier_utf8_len = 17;
    raw.source_app_bundle_identifier_utf8 = "   ";
    raw.source_app_bundle_identifier_utf8_len = 3;
    raw.remote_hostname_utf8 = bad_utf8;
    raw.remote_hostname_utf8_len = 2;
    raw.local_interface_name_utf8 = "en0";
    raw.local_interface_name_utf8_len = 0; /* len 0: absent */
    raw.source_app_audit_token_bytes = token;
    raw.source_app_audit_token_bytes_len = 31; /* wrong size: absent */
    raw.local_interface_index = 4;
    raw.local_interface_index_is_set = true;
    raw.local_interface_type = 5; /* unknown code: absent */
    raw.local_interface_type_is_set = true;
    raw.is_bound = true;
    raw.is_bound_is_set = true;

    m = nectar__meta_decode(&raw, NECTAR_PROTO_UDP, &unknown);
    CHECK(!unknown);
    CHECK_EQ(m->m.protocol, NECTAR_PROTO_TCP);
    CHECK_NE(m->m.flow_id, 0);
    CHECK_STR_EQ(m->m.remote.host, "example.com");
    CHECK_EQ(m->m.remote.port, 443);
    CHECK(m->m.local.host == NULL); /* port 0 */
    CHECK_STR_EQ(m->m.signing_identifier, "com.example.app");
    CHECK(m->m.bundle_identifier == NULL);
    CHECK(m->m.remote_hostname == NULL);
    CHECK(m->m.interface_name == NULL);
    CHECK(!m->m.has_audit_token);
    CHECK(!m->m.has_pid);
    CHECK(m->m.has_interface_index && m->m.interface_index == 4);
    CHECK(!m->m.has_interface_type);
    CHECK(m->m.has_is_bound && m->m.is_bound);
    uint64_t first = m->m.flow_id;
    nectar__meta_unref(m);

    raw.remote_endpoint =
        (RamaTransparentProxyFlowEndpoint){"not a host!", 11, 80};
    raw.local_endpoint = (RamaTransparentProxyFlowEndpoint){"[::1]", 5, 8080};
    raw.source_app_audit_token_bytes_len = 32;
    raw.source_app_pid = 77;
    raw.source_app_pid_is_set = true;
    raw.local_interface_type = 3;
    raw.protocol = 9;
    m = nectar__meta_decode(&raw, NECTAR_PROTO_TCP, &unknown);
    CHECK(unknown);
    CHECK_GT(m->m.flow_id, first);
    CHECK(m->m.remote.host == NULL);
    CHECK_STR_EQ(m->m.local.host, "[::1]");
    CHECK(m->m.has_audit_token);
    CHECK_EQ(m->m.audit_token[0], 1);
    CHECK(m->m.has_pid && m->m.pid == 77);
    CHECK(m->m.has_interface_type && m->m.interface_type == 3);
    nectar__meta_unref(m);

    m = nectar__meta_decode(NULL, NECTAR_PROTO_UDP, &unknown);
    CHECK(!unknown);
    CHECK_EQ(m->m.protocol, NECTAR_PROTO_UDP);
    CHECK(m->m.remote.host == NULL);
    nectar__meta_unref(m);

    CHECK(nectar__utf8_valid((const uint8_t *)"h\xc3\xa9", 3));
    CHECK(!nectar__utf8_valid((const uint8_t *)"\xc0\xaf", 2)); /* overlong */
    CHECK(!nectar__utf8_valid((const uint8_t *)"\xed\xa0\x80", 3)); /* surr. */
    CHECK(!nectar__utf8_valid((const uint8_t *)"\xe2\x82", 2));     /* short */
}

/* ---- decisions ----------------------------------------------------------- */

static RamaTransparentProxyFlowAction
tcp_decision(RamaTransparentProxyEngine *e, uint32_t proto, bool *has_session)
{
    RamaTransparentProxyFlowMeta m = th_meta(proto, 443);
    RamaTransparentProxyTcpSessionCallbacks cbs = {0};
    RamaTransparentProxyTcpSessionResult r =
        rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
    *has_session = r.session != NULL;
    rama_transparent_proxy_tcp_session_free(r.session);
    return r.action;
}

static int destroyed_ge(void *arg)
{
    return atomic_load(&th_stats.svc_destroyed) >= *(int *)arg;
}

static void test_decisions(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    bool has;
    uint64_t t0;
    int one = 1;

    th_reset();
    th_options(&o);
    o.decision_deadline_ms = 150;
    e = th_engine(&o);

    th_cfg.tcp_action = NECTAR_ACTION_PASSTHROUGH;
    CHECK_EQ(tcp_decision(e, RAMA_FLOW_PROTOCOL_TCP, &has),
             RAMA_FLOW_ACTION_PASSTHROUGH);
    CHECK(!has);
    th_cfg.tcp_action = NECTAR_ACTION_BLOCK;
    CHECK_EQ(tcp_decision(e, RAMA_FLOW_PROTOCOL_TCP, &has),
             RAMA_FLOW_ACTION_BLOCKED);
    CHECK(!has);
    th_cfg.tcp_action = NECTAR_ACTION_INTERCEPT;
    CHECK_EQ(tcp_decision(e, RAMA_FLOW_PROTOCOL_TCP, &has),
             RAMA_FLOW_ACTION_INTERCEPT);
    CHECK(has);

    /* Unknown protocol: PASSTHROUGH without asking the handler. */
    int before = atomic_load(&th_stats.decisions);
    CHECK_EQ(tcp_decision(e, 7, &has), RAMA_FLOW_ACTION_PASSTHROUGH);
    CHECK(!has);
    CHECK_EQ(atomic_load(&th_stats.decisions), before);

    /* The deadline: BLOCKED, bounded. */
    th_cfg.never_decide = true;
    t0 = nectar_test_now_ms();
    CHECK_EQ(tcp_decision(e, RAMA_FLOW_PROTOCOL_TCP, &has),
             RAMA_FLOW_ACTION_BLOCKED);
    CHECK(!has);
    CHECK_GE(nectar_test_now_ms() - t0, 140);
    CHECK_LT(nectar_test_now_ms() - t0, 1000);
    th_cfg.never_decide = false;
    th_release_parked(); /* a very late completion: discarded */

    /* A late intercept is discarded: its service is destroyed, unstarted. */
    atomic_store(&th_stats.svc_destroyed, 0);
    atomic_store(&th_stats.svc_started, 0);
    th_cfg.decide_delay_ms = 400;
    CHECK_EQ(tcp_decision(e, RAMA_FLOW_PROTOCOL_TCP, &has),
             RAMA_FLOW_ACTION_BLOCKED);
    CHECK(nectar_test_poll(destroyed_ge, &one, 3000));
    CHECK_EQ(atomic_load(&th_stats.svc_started), 0);
    th_cfg.decide_delay_ms = 0;

    th_cfg.decide_delay_ms = 0;
    rama_transparent_proxy_engine_stop(e, 0);

    /* A decision completed from another thread in time is used (a roomy
     * deadline: thread start-up on a loaded machine is not the point). */
    th_reset();
    th_options(&o);
    o.decision_deadline_ms = 5000;
    e = th_engine(&o);
    th_cfg.decide_delay_ms = 20;
    CHECK_EQ(tcp_decision(e, RAMA_FLOW_PROTOCOL_TCP, &has),
             RAMA_FLOW_ACTION_INTERCEPT);
    CHECK(has);
    rama_transparent_proxy_engine_stop(e, 0);

    /* deadline_action PASSTHROUGH. */
    th_reset();
    th_options(&o);
    o.decision_deadline_ms = 50;
    o.deadline_action = NECTAR_ACTION_PASSTHROUGH;
    e = th_engine(&o);
    th_cfg.never_decide = true;
    CHECK_EQ(tcp_decision(e, RAMA_FLOW_PROTOCOL_TCP, &has),
             RAMA_FLOW_ACTION_PASSTHROUGH);
    rama_transparent_proxy_engine_stop(e, 0);
    th_release_parked();
}

/* ---- app messages -------------------------------------------------------- */

static void test_app_messages(void)
{
    nectar_engine_options_t o;
    RamaTransparentProxyEngine *e;
    RamaBytesView msg = {(const uint8_t *)"{\"op\":\"ping\"}", 13};
    RamaBytesView empty = {NULL, 4};
    RamaBytesOwned r;
    uint64_t t0;

    th_reset();
    th_options(&o);
    o.app_message_deadline_ms = 100;
    e = th_engine(&o);
    r = rama_transparent_proxy_engine_handle_app_message(e, msg);
    CHECK_EQ(r.len, 13);
    CHECK_GE(r.cap, r.len);
    CHECK_MEM_EQ(r.ptr, msg.ptr, 13);
    rama_owned_bytes_free(r);
    r = rama_transparent_proxy_engine_handle_app_message(e, empty);
    CHECK(r.ptr == NULL && r.len == 0 && r.cap == 0);
    th_cfg.app_delay_ms = 1000;
    t0 = nectar_test_now_ms();
    r = rama_transparent_proxy_engine_handle_app_message(e, msg);
    CHECK(r.ptr == NULL && r.len == 0);
    CHECK_GE(nectar_test_now_ms() - t0, 90);
    CHECK_LT(nectar_test_now_ms() - t0, 900);
    th_sleep_ms(1100); /* the late reply lands on an expired request */
    rama_transparent_proxy_engine_stop(e, 0);
}

/* ---- initialize, options, registration, sleep/wake ----------------------- */

static int hook_calls;
static bool init_hook(const char *storage, const char *group,
                      const char *bundle)
{
    hook_calls++;
    CHECK_STR_EQ(storage, "/tmp/x");
    CHECK(group == NULL);
    CHECK_STR_EQ(bundle, "org.example");
    return hook_calls == 1;
}

static void test_initialize(void)
{
    RamaTransparentProxyInitConfig c = {" /tmp/x ",    8, "", 0,
                                        "org.example", 11};

    CHECK(rama_transparent_proxy_initialize(NULL));
    CHECK(rama_transparent_proxy_initialize(&c)); /* idempotent: first wins */
    CHECK_STR_EQ(nectar_engine_ctx_storage_dir(NULL), "/tmp/x");
    nectar_register_init(init_hook);
    CHECK(rama_transparent_proxy_initialize(&c));
    CHECK(!rama_transparent_proxy_initialize(&c));
    CHECK_EQ(hook_calls, 2);
    nectar_register_init(NULL);
}

static void test_options_and_registration(void)
{
    nectar_engine_options_t o;
    nectar_handler_vtable_t bad = th_vtable;
    nectar_error_t err;
    RamaTransparentProxyEngine *e;
    static const uint8_t cfg[] = "{\"k\":1}";

    th_reset();
    nectar_engine_options_defaults(&o);
    CHECK_EQ(o.decision_deadline_ms, 3000);
    CHECK_EQ(o.deadline_action, NECTAR_ACTION_BLOCK);
    CHECK_EQ(o.tcp_channel_capacity, 8);
    CHECK_EQ(o.udp_channel_capacity, 32);
    CHECK_EQ(o.tcp_idle_timeout_ms, 900000);
    CHECK_EQ(o.paused_drain_max_wait_ms, 60000);
    CHECK_EQ(o.udp_idle_timeout_ms, 60000);
    CHECK_EQ(o.udp_max_lifetime_ms, 900000);
    CHECK_EQ(o.stop_drain_max_wait_ms, 5000);
    CHECK_EQ(o.threads, 2);

    o.tcp_channel_capacity = 0;
    CHECK(nectar_engine_new(&th_vtable, &o, NULL, 0, &err) == NULL);
    CHECK_EQ(err.code, NECTAR_EINVAL);
    CHECK_EQ(nectar_register_handler(&th_vtable, &o), NECTAR_EINVAL);
    nectar_engine_options_defaults(&o);
    o.udp_channel_capacity = 0;
    CHECK(nectar_engine_new(&th_vtable, &o, NULL, 0, &err) == NULL);
    bad.version = 99;
    CHECK(nectar_engine_new(&bad, NULL, NULL, 0, &err) == NULL);
    CHECK_EQ(err.code, NECTAR_EINVAL);
    CHECK_EQ(nectar_register_handler(&bad, NULL), NECTAR_EINVAL);
    bad = th_vtable;
    bad.proxy_config = NULL;
    CHECK(nectar_engine_new(&bad, NULL, NULL, 0, NULL) == NULL);

    /* The registered handler backs the plain ABI constructors. */
    th_options(&o);
    o.threads = 1;
    CHECK_EQ(nectar_register_handler(&th_vtable, &o), 0);
    e = rama_transparent_proxy_engine_new_with_config(
        (RamaBytesView){cfg, sizeof(cfg) - 1});
    CHECK(e != NULL);
    CHECK_EQ(atomic_load(&th_stats.config_len), sizeof(cfg) - 1);
    rama_transparent_proxy_engine_notify_system_sleep(e);
    rama_transparent_proxy_engine_notify_system_wake(e);
    rama_transparent_proxy_engine_free(e);
    /* Hooks are drained by stop. */
    CHECK_EQ(atomic_load(&th_stats.sleeps), 1);
    CHECK_EQ(atomic_load(&th_stats.wakes), 1);
    CHECK_EQ(atomic_load(&th_stats.handler_destroyed), 1);
    CHECK_EQ(atomic_load(&th_stats.ctx_posts), 1); /* ran before destroy */
    e = rama_transparent_proxy_engine_new();
    CHECK(e != NULL);
    CHECK_EQ(atomic_load(&th_stats.config_len), 0);
    rama_transparent_proxy_engine_stop(e, 0);
    CHECK_EQ(nectar_register_handler(NULL, NULL), 0);
}

static const nectar_test_t tests[] = {
    {"layouts", test_layouts},
    {"null_cases", test_null_cases},
    {"config", test_config},
    {"meta_decode", test_meta_decode},
    {"decisions", test_decisions},
    {"app_messages", test_app_messages},
    {"initialize", test_initialize},
    {"options_and_registration", test_options_and_registration},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
