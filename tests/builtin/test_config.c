/* test_config.c - unit tests for src/app/config.c: defaults, every key,
 * every type error with its key path, clamping, rules, proxy overrides,
 * egress options, allocation failures. */
#include "app/config.h"
#include "common/alloc.h"
#include "harness/test.h"

static int parse(const char *json, struct app_config *cfg, nectar_error_t *err)
{
    memset(err, 0, sizeof(*err));
    return nectar__app_config_parse((const uint8_t *)json, strlen(json), cfg,
                                    err);
}

/* The config must be rejected with a message starting with `want`. */
static void expect_error(const char *json, const char *want)
{
    struct app_config cfg;
    nectar_error_t err;
    int rc = parse(json, &cfg, &err);

    if (rc != NECTAR_ECONFIG)
        NECTAR_FAIL_AT("%s: expected NECTAR_ECONFIG, got %d", json, rc);
    if (strncmp(err.message, want, strlen(want)) != 0)
        NECTAR_FAIL_AT("%s: message \"%s\" does not start with \"%s\"", json,
                       err.message, want);
    CHECK_EQ(err.code, NECTAR_ECONFIG);
    /* A failed parse leaves nothing to free. */
    CHECK(cfg.actions == NULL);
    CHECK(cfg.rules == NULL);
    CHECK(cfg.tunnel_remote_address == NULL);
}

static void test_defaults(void)
{
    const char *empties[] = {"", "  \n\t ", "{}"};
    struct app_config cfg;
    nectar_error_t err;

    CHECK_EQ(nectar__app_config_parse(NULL, 0, &cfg, &err), 0);
    CHECK_EQ(cfg.default_action, NECTAR_ACTION_INTERCEPT);
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        CHECK_EQ(parse(empties[i], &cfg, &err), 0);
        CHECK_EQ(cfg.default_action, NECTAR_ACTION_INTERCEPT);
        CHECK_EQ(cfg.actions_len, 0);
        CHECK(!cfg.has_rules);
        CHECK(!cfg.has_egress);
        for (int f = 0; f < APP_PX_COUNT; f++)
            CHECK(!cfg.proxy_set[f]);
        nectar__app_config_free(&cfg);
    }
    /* Applying an empty config leaves the engine defaults alone. */
    nectar_proxy_config_t px = {.tunnel_remote_address = "127.0.0.1",
                                .tcp_write_pump_max_pending_bytes = 262144,
                                .flow_pressure_soft_cap = 450};
    CHECK_EQ(parse("{}", &cfg, &err), 0);
    nectar__app_config_apply_proxy(&cfg, &px);
    CHECK_STR_EQ(px.tunnel_remote_address, "127.0.0.1");
    CHECK_EQ(px.tcp_write_pump_max_pending_bytes, 262144);
    CHECK_EQ(px.flow_pressure_soft_cap, 450);
    CHECK(px.rules == NULL);
    nectar__app_config_free(&cfg);
    nectar__app_config_free(NULL);
}

static void test_default_action(void)
{
    struct app_config cfg;
    nectar_error_t err;
    nectar_flow_meta_t meta = {.protocol = NECTAR_PROTO_TCP};

    CHECK_EQ(parse("{\"default_action\":\"block\"}", &cfg, &err), 0);
    CHECK_EQ(nectar__app_config_decide(&cfg, &meta), NECTAR_ACTION_BLOCK);
    nectar__app_config_free(&cfg);
    CHECK_EQ(parse("{\"default_action\":\"passthrough\"}", &cfg, &err), 0);
    CHECK_EQ(nectar__app_config_decide(&cfg, &meta), NECTAR_ACTION_PASSTHROUGH);
    nectar__app_config_free(&cfg);
    CHECK_EQ(parse("{\"default_action\":\"intercept\"}", &cfg, &err), 0);
    CHECK_EQ(nectar__app_config_decide(&cfg, &meta), NECTAR_ACTION_INTERCEPT);
    nectar__app_config_free(&cfg);
    expect_error("{\"default_action\":\"allow\"}",
                 "default_action: expected \"intercept\", \"passthrough\" or "
                 "\"block\"");
    expect_error("{\"default_action\":1}", "default_action: expected");
}

static void test_actions_first_match_wins(void)
{
    const char *json =
        "{\"default_action\":\"passthrough\",\"actions\":["
        " {\"match\":{\"protocol\":\"udp\",\"remote_port\":53},"
        "  \"action\":\"passthrough\"},"
        " {\"match\":{\"protocol\":\"udp\"},\"action\":\"block\"},"
        " {\"match\":{\"remote_host\":\".example.com\"},"
        "  \"action\":\"block\"},"
        " {\"match\":{\"remote_host\":\"10.0.0.0/8\",\"app\":\"com.acme.*\"},"
        "  \"action\":\"intercept\"},"
        " {\"match\":{\"remote_host\":\"2001:db8::/32\"},"
        "  \"action\":\"intercept\"},"
        " {\"match\":{},\"action\":\"block\"}"
        "]}";
    struct app_config cfg;
    nectar_error_t err;

    CHECK_EQ(parse(json, &cfg, &err), 0);
    CHECK_EQ(cfg.actions_len, 6);
    nectar_flow_meta_t m = {.protocol = NECTAR_PROTO_UDP,
                            .remote = {"9.9.9.9", 53}};
    CHECK_EQ(nectar__app_config_decide(&cfg, &m), NECTAR_ACTION_PASSTHROUGH);
    m.remote.port = 54;
    CHECK_EQ(nectar__app_config_decide(&cfg, &m), NECTAR_ACTION_BLOCK);
    m.protocol = NECTAR_PROTO_TCP;
    m.remote = (nectar_endpoint_t){"10.1.1.1", 443};
    m.signing_identifier = "com.acme.agent";
    CHECK_EQ(nectar__app_config_decide(&cfg, &m), NECTAR_ACTION_INTERCEPT);
    /* Same host but an app outside the glob: falls to the catch-all. */
    m.signing_identifier = "com.other";
    CHECK_EQ(nectar__app_config_decide(&cfg, &m), NECTAR_ACTION_BLOCK);
    m.remote = (nectar_endpoint_t){"2001:db8::7", 443};
    CHECK_EQ(nectar__app_config_decide(&cfg, &m), NECTAR_ACTION_INTERCEPT);
    m.remote_hostname = "www.example.com";
    CHECK_EQ(nectar__app_config_decide(&cfg, &m), NECTAR_ACTION_BLOCK);
    nectar__app_config_free(&cfg);
}

static void test_action_errors(void)
{
    expect_error("{\"actions\":{}}", "actions: expected array");
    expect_error("{\"actions\":[1]}", "actions[0]: expected object");
    expect_error("{\"actions\":[{\"action\":\"block\"}]}",
                 "actions[0].match: missing");
    expect_error("{\"actions\":[{\"match\":{}}]}",
                 "actions[0].action: missing");
    expect_error("{\"actions\":[{\"match\":{},\"action\":\"drop\"}]}",
                 "actions[0].action: expected \"intercept\"");
    expect_error("{\"actions\":[{\"match\":[],\"action\":\"block\"}]}",
                 "actions[0].match: expected object");
    expect_error("{\"actions\":[{\"match\":{},\"action\":\"block\","
                 "\"why\":1}]}",
                 "actions[0].why: unknown key");
    expect_error("{\"actions\":[{\"match\":{},\"action\":\"block\"},"
                 "{\"match\":{},\"action\":\"block\"},"
                 "{\"match\":{\"remote_port\":70000},\"action\":\"block\"}]}",
                 "actions[2].match.remote_port: expected integer 0..65535");
    expect_error("{\"actions\":[{\"match\":{\"remote_port\":\"443\"},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.remote_port: expected integer 0..65535");
    expect_error("{\"actions\":[{\"match\":{\"remote_port\":-1},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.remote_port: expected integer 0..65535");
    expect_error("{\"actions\":[{\"match\":{\"remote_port\":1.5},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.remote_port: expected integer 0..65535");
    expect_error("{\"actions\":[{\"match\":{\"protocol\":\"icmp\"},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.protocol: expected \"tcp\" or \"udp\"");
    expect_error("{\"actions\":[{\"match\":{\"remote_host\":5},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.remote_host: expected non-empty string");
    expect_error("{\"actions\":[{\"match\":{\"remote_host\":\"10.0.0.0/99\"},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.remote_host: expected a CIDR");
    expect_error("{\"actions\":[{\"match\":{\"remote_host\":\"a b\"},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.remote_host: expected a host name");
    expect_error("{\"actions\":[{\"match\":{\"app\":\"\"},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.app: expected non-empty string");
    expect_error("{\"actions\":[{\"match\":{\"app\":\"a\\nb\"},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.app: control character");
    expect_error("{\"actions\":[{\"match\":{\"port\":1},"
                 "\"action\":\"block\"}]}",
                 "actions[0].match.port: unknown key");
}

static void test_rules(void)
{
    const char *json =
        "{\"rules\":["
        " {},"
        " {\"remote_network\":\"10.9.8.7/8\",\"protocol\":\"tcp\","
        "  \"exclude\":true},"
        " {\"remote_network\":\"2001:db8::\",\"remote_prefix\":32,"
        "  \"remote_port\":443,\"local_network\":\"192.168.0.0\","
        "  \"local_prefix\":16,\"protocol\":\"udp\",\"exclude\":false},"
        " {\"remote_network\":\"example.com\",\"remote_port\":0,"
        "  \"protocol\":\"any\"}"
        "]}";
    struct app_config cfg;
    nectar_error_t err;

    CHECK_EQ(parse(json, &cfg, &err), 0);
    CHECK(cfg.has_rules);
    CHECK_EQ(cfg.rules_len, 4);
    const nectar_rule_t *r = cfg.rules;
    CHECK(r[0].remote_network == NULL);
    CHECK_EQ(r[0].remote_prefix, -1);
    CHECK_EQ(r[0].remote_port, -1);
    CHECK(r[0].local_network == NULL);
    CHECK_EQ(r[0].local_prefix, -1);
    CHECK_EQ(r[0].protocol, RAMA_RULE_PROTOCOL_ANY);
    CHECK(!r[0].exclude);
    /* A CIDR network is split into its address and prefix. */
    CHECK_STR_EQ(r[1].remote_network, "10.0.0.0");
    CHECK_EQ(r[1].remote_prefix, 8);
    CHECK_EQ(r[1].protocol, RAMA_RULE_PROTOCOL_TCP);
    CHECK(r[1].exclude);
    CHECK_STR_EQ(r[2].remote_network, "2001:db8::");
    CHECK_EQ(r[2].remote_prefix, 32);
    CHECK_EQ(r[2].remote_port, 443);
    CHECK_STR_EQ(r[2].local_network, "192.168.0.0");
    CHECK_EQ(r[2].local_prefix, 16);
    CHECK_EQ(r[2].protocol, RAMA_RULE_PROTOCOL_UDP);
    CHECK(!r[2].exclude);
    CHECK_STR_EQ(r[3].remote_network, "example.com");
    CHECK_EQ(r[3].remote_port, 0);

    nectar_proxy_config_t px = {0};
    nectar__app_config_apply_proxy(&cfg, &px);
    CHECK(px.rules == cfg.rules);
    CHECK_EQ(px.rules_len, 4);
    nectar__app_config_free(&cfg);

    /* An explicit empty list means "no rules", not the default. */
    CHECK_EQ(parse("{\"rules\":[]}", &cfg, &err), 0);
    CHECK(cfg.has_rules);
    px.rules_len = 1;
    nectar__app_config_apply_proxy(&cfg, &px);
    CHECK(px.rules == NULL);
    CHECK_EQ(px.rules_len, 0);
    nectar__app_config_free(&cfg);
}

static void test_rule_errors(void)
{
    expect_error("{\"rules\":{}}", "rules: expected array");
    expect_error("{\"rules\":[\"any\"]}", "rules[0]: expected object");
    expect_error("{\"rules\":[{},{\"remote_network\":3}]}",
                 "rules[1].remote_network: expected non-empty string");
    expect_error("{\"rules\":[{\"remote_network\":\"10.0.0.0/40\"}]}",
                 "rules[0].remote_network: expected an IP address, CIDR or "
                 "host name");
    expect_error("{\"rules\":[{\"remote_network\":\"10.0.0.0\","
                 "\"remote_prefix\":33}]}",
                 "rules[0].remote_prefix: expected integer 0..32");
    expect_error("{\"rules\":[{\"remote_network\":\"::\","
                 "\"remote_prefix\":129}]}",
                 "rules[0].remote_prefix: expected integer 0..128");
    expect_error("{\"rules\":[{\"remote_prefix\":8}]}",
                 "rules[0].remote_prefix: needs an IP address");
    expect_error("{\"rules\":[{\"remote_network\":\"example.com\","
                 "\"remote_prefix\":8}]}",
                 "rules[0].remote_prefix: needs an IP address");
    expect_error("{\"rules\":[{\"remote_network\":\"10.0.0.0/8\","
                 "\"remote_prefix\":8}]}",
                 "rules[0].remote_prefix: the network is already a CIDR");
    expect_error("{\"rules\":[{\"local_network\":\"10.0.0.0\","
                 "\"local_prefix\":\"8\"}]}",
                 "rules[0].local_prefix: expected integer 0..32");
    expect_error("{\"rules\":[{\"remote_port\":65536}]}",
                 "rules[0].remote_port: expected integer 0..65535");
    expect_error("{\"rules\":[{\"protocol\":\"sctp\"}]}",
                 "rules[0].protocol: expected \"any\", \"tcp\" or \"udp\"");
    expect_error("{\"rules\":[{\"exclude\":\"yes\"}]}",
                 "rules[0].exclude: expected true or false");
    expect_error("{\"rules\":[{\"include\":true}]}",
                 "rules[0].include: unknown key");
}

static void test_proxy(void)
{
    const char *json =
        "{\"proxy\":{\"tunnel_remote_address\":\"10.255.0.1\","
        "\"tcp_write_pump_max_pending_bytes\":65536,"
        "\"flow_pressure_soft_cap\":1,\"flow_pressure_low_water\":2,"
        "\"flow_pressure_idle_floor_ms\":3,"
        "\"tcp_start_in_flight_hard_cap\":4,"
        "\"tcp_start_in_flight_soft_cap\":5,"
        "\"tcp_start_latency_breaker_p95_ms\":6,"
        "\"tcp_start_latency_breaker_close_p95_ms\":7,"
        "\"tcp_pressure_connect_timeout_ms\":8,"
        "\"tcp_breaker_connect_timeout_ms\":4294967295,"
        "\"flow_refusal_action\":1}}";
    struct app_config cfg;
    nectar_error_t err;
    nectar_proxy_config_t px = {0};

    CHECK_EQ(parse(json, &cfg, &err), 0);
    nectar__app_config_apply_proxy(&cfg, &px);
    CHECK_STR_EQ(px.tunnel_remote_address, "10.255.0.1");
    CHECK_EQ(px.tcp_write_pump_max_pending_bytes, 65536);
    CHECK_EQ(px.flow_pressure_soft_cap, 1);
    CHECK_EQ(px.flow_pressure_low_water, 2);
    CHECK_EQ(px.flow_pressure_idle_floor_ms, 3);
    CHECK_EQ(px.tcp_start_in_flight_hard_cap, 4);
    CHECK_EQ(px.tcp_start_in_flight_soft_cap, 5);
    CHECK_EQ(px.tcp_start_latency_breaker_p95_ms, 6);
    CHECK_EQ(px.tcp_start_latency_breaker_close_p95_ms, 7);
    CHECK_EQ(px.tcp_pressure_connect_timeout_ms, 8);
    CHECK_EQ(px.tcp_breaker_connect_timeout_ms, 4294967295u);
    CHECK_EQ(px.flow_refusal_action, 1);
    CHECK(px.rules == NULL); /* no `rules` key: untouched */
    nectar__app_config_free(&cfg);

    /* Only the given fields change. */
    nectar_proxy_config_t px2 = {.flow_pressure_soft_cap = 450,
                                 .flow_refusal_action = 1};
    CHECK_EQ(
        parse("{\"proxy\":{\"flow_refusal_action\":\"block\"}}", &cfg, &err),
        0);
    nectar__app_config_apply_proxy(&cfg, &px2);
    CHECK_EQ(px2.flow_refusal_action, 0);
    CHECK_EQ(px2.flow_pressure_soft_cap, 450);
    nectar__app_config_free(&cfg);
}

static size_t pump_for(const char *value)
{
    char json[128];
    struct app_config cfg;
    nectar_error_t err;
    nectar_proxy_config_t px = {0};

    snprintf(json, sizeof(json),
             "{\"proxy\":{\"tcp_write_pump_max_pending_bytes\":%s}}", value);
    CHECK_EQ(parse(json, &cfg, &err), 0);
    nectar__app_config_apply_proxy(&cfg, &px);
    nectar__app_config_free(&cfg);
    return px.tcp_write_pump_max_pending_bytes;
}

static void test_write_pump_clamp(void)
{
    CHECK_EQ(pump_for("0"), 1);
    CHECK_EQ(pump_for("1"), 1);
    CHECK_EQ(pump_for("8388608"), 8388608);
    CHECK_EQ(pump_for("8388609"), 8388608);
    CHECK_EQ(pump_for("9223372036854775807"), 8388608);
    expect_error("{\"proxy\":{\"tcp_write_pump_max_pending_bytes\":-1}}",
                 "proxy.tcp_write_pump_max_pending_bytes: expected integer");
}

static void test_proxy_errors(void)
{
    expect_error("{\"proxy\":[]}", "proxy: expected object");
    expect_error("{\"proxy\":{\"flow_pressure_soft_cap\":4294967296}}",
                 "proxy.flow_pressure_soft_cap: expected integer "
                 "0..4294967295");
    expect_error("{\"proxy\":{\"flow_pressure_low_water\":-5}}",
                 "proxy.flow_pressure_low_water: expected integer");
    expect_error("{\"proxy\":{\"tcp_breaker_connect_timeout_ms\":true}}",
                 "proxy.tcp_breaker_connect_timeout_ms: expected integer");
    expect_error("{\"proxy\":{\"flow_refusal_action\":2}}",
                 "proxy.flow_refusal_action: expected 0, 1");
    expect_error("{\"proxy\":{\"tunnel_remote_address\":\"\"}}",
                 "proxy.tunnel_remote_address: expected non-empty string");
    expect_error("{\"proxy\":{\"tunnel_remote_address\":null}}",
                 "proxy.tunnel_remote_address: expected non-empty string");
    expect_error("{\"proxy\":{\"rules\":[]}}", "proxy.rules: unknown key");
}

static void test_egress(void)
{
    const char *json =
        "{\"egress\":{\"connect_timeout_ms\":2500,\"linger_close_ms\":100,"
        "\"egress_eof_grace_ms\":0,\"tcp_no_delay\":false,"
        "\"keepalive\":true,\"keepalive_idle_secs\":30,"
        "\"keepalive_interval_secs\":10,\"keepalive_count\":4,"
        "\"maximum_segment_size\":1200,\"fast_open\":true,"
        "\"preserve_original_meta_data\":false,"
        "\"allow_system_proxy\":true}}";
    struct app_config cfg;
    nectar_error_t err;

    CHECK_EQ(parse(json, &cfg, &err), 0);
    CHECK(cfg.has_egress);
    const RamaTcpEgressConnectOptions *o = &cfg.egress;
    CHECK(o->has_connect_timeout_ms);
    CHECK_EQ(o->connect_timeout_ms, 2500);
    CHECK(o->has_linger_close_ms);
    CHECK_EQ(o->linger_close_ms, 100);
    CHECK(o->has_egress_eof_grace_ms);
    CHECK_EQ(o->egress_eof_grace_ms, 0);
    CHECK(!o->tcp_no_delay);
    CHECK(o->tcp_keepalive_enabled);
    CHECK(o->has_tcp_keepalive_idle_secs);
    CHECK_EQ(o->tcp_keepalive_idle_secs, 30);
    CHECK(o->has_tcp_keepalive_interval_secs);
    CHECK_EQ(o->tcp_keepalive_interval_secs, 10);
    CHECK(o->has_tcp_keepalive_count);
    CHECK_EQ(o->tcp_keepalive_count, 4);
    CHECK(o->has_tcp_maximum_segment_size);
    CHECK_EQ(o->tcp_maximum_segment_size, 1200);
    CHECK(o->has_tcp_enable_fast_open);
    CHECK(o->tcp_enable_fast_open);
    CHECK(!o->parameters.preserve_original_meta_data);
    CHECK(o->parameters.allow_system_proxy);
    CHECK(!o->has_tcp_no_push);
    nectar__app_config_free(&cfg);

    /* An empty egress object gives the spec defaults; 0 ms = unset. */
    CHECK_EQ(parse("{\"egress\":{\"connect_timeout_ms\":0}}", &cfg, &err), 0);
    CHECK(cfg.has_egress);
    CHECK(!cfg.egress.has_connect_timeout_ms);
    CHECK(cfg.egress.tcp_keepalive_enabled);
    CHECK(cfg.egress.tcp_no_delay);
    CHECK(cfg.egress.parameters.preserve_original_meta_data);
    CHECK(!cfg.egress.parameters.allow_system_proxy);
    CHECK(!cfg.egress.has_tcp_keepalive_idle_secs);
    nectar__app_config_free(&cfg);

    expect_error("{\"egress\":1}", "egress: expected object");
    expect_error("{\"egress\":{\"connect_timeout_ms\":-1}}",
                 "egress.connect_timeout_ms: expected integer 0..4294967295");
    expect_error("{\"egress\":{\"tcp_no_delay\":1}}",
                 "egress.tcp_no_delay: expected true or false");
    expect_error("{\"egress\":{\"maximum_segment_size\":0}}",
                 "egress.maximum_segment_size: expected integer 1..65535");
    expect_error("{\"egress\":{\"keepalive_count\":\"3\"}}",
                 "egress.keepalive_count: expected integer");
    expect_error("{\"egress\":{\"fast_open\":null}}",
                 "egress.fast_open: expected true or false");
    expect_error("{\"egress\":{\"nagle\":false}}", "egress.nagle: unknown key");
}

static void test_root_errors(void)
{
    expect_error("{", "<root>: invalid JSON at line 1");
    expect_error("{\"default_action\":\"block\",}", "<root>: invalid JSON");
    expect_error("[]", "<root>: expected object");
    expect_error("42", "<root>: expected object");
    expect_error("null", "<root>: expected object");
    expect_error("\"x\"", "<root>: expected object");
    expect_error("{\"engine\":{}}", "engine: unknown key");
    expect_error("{\"html_badge_enabled\":true}",
                 "html_badge_enabled: unknown key");
    expect_error("{\"default_action\":\"block\",\"default_action\":\"block\"}",
                 "<root>: invalid JSON");
    /* Trailing garbage after the object. */
    expect_error("{} x", "<root>: invalid JSON");
    /* A NUL inside the bytes. */
    struct app_config cfg;
    nectar_error_t err = {0};
    CHECK_EQ(nectar__app_config_parse((const uint8_t *)"{}\0{}", 5, &cfg, &err),
             NECTAR_ECONFIG);
    /* Over-long unknown keys still give a bounded, marked path. */
    char json[600];
    char key[400];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    snprintf(json, sizeof(json), "{\"%s\":1}", key);
    CHECK_EQ(parse(json, &cfg, &err), NECTAR_ECONFIG);
    CHECK(strstr(err.message, "...") != NULL);
}

static void test_alloc_failures(void)
{
    const char *json =
        "{\"actions\":[{\"match\":{\"remote_host\":\".a.com\",\"app\":\"x*\"},"
        "\"action\":\"block\"},{\"match\":{},\"action\":\"intercept\"}],"
        "\"rules\":[{\"remote_network\":\"10.0.0.0/8\",\"local_network\":"
        "\"h.example\"}],\"proxy\":{\"tunnel_remote_address\":\"1.1.1.1\"}}";
    struct app_config cfg;
    nectar_error_t err;
    int failures = 0;

    /* Fail each nectar allocation in turn: every run either succeeds or
     * reports ENOMEM, and (under ASan) leaks nothing. */
    for (long n = 0; n < 64; n++) {
        nectar__alloc_fail_after(n);
        int rc = parse(json, &cfg, &err);
        nectar__alloc_fail_after(-1);
        if (rc == 0) {
            nectar__app_config_free(&cfg);
            break;
        }
        CHECK_EQ(rc, NECTAR_ENOMEM);
        failures++;
    }
    CHECK_GT(failures, 4);
}

static const nectar_test_t tests[] = {
    {"defaults", test_defaults},
    {"default_action", test_default_action},
    {"actions_first_match_wins", test_actions_first_match_wins},
    {"action_errors", test_action_errors},
    {"rules", test_rules},
    {"rule_errors", test_rule_errors},
    {"proxy", test_proxy},
    {"write_pump_clamp", test_write_pump_clamp},
    {"proxy_errors", test_proxy_errors},
    {"egress", test_egress},
    {"root_errors", test_root_errors},
    {"alloc_failures", test_alloc_failures},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
