/*
 * test_rules.c - the Linux host's config parser and nftables rule
 * generation, no root needed: what a given engine rule list and host
 * config turn into, and every config error naming its path and field.
 */
#include <stdbool.h>

#include "harness/test.h"
#include "host/linux/linux_host.h"

static nectar_linux_config_t cfg_from(const char *json)
{
    nectar_linux_config_t c;
    nectar_error_t err = {0};
    int rc = nectar__linux_config_parse(json, strlen(json), "t.json", &c,
                                        &err);
    if (rc != 0)
        fprintf(stderr, "parse: %s\n", err.message);
    CHECK_EQ(rc, 0);
    return c;
}

static void config_error(const char *json, const char *want)
{
    nectar_linux_config_t c;
    nectar_error_t err = {0};
    CHECK_EQ(nectar__linux_config_parse(json, strlen(json), "t.json", &c,
                                        &err),
             NECTAR_ECONFIG);
    if (strstr(err.message, want) == NULL)
        NECTAR_FAIL_AT("error \"%s\" lacks \"%s\"", err.message, want);
    CHECK(c.engine_json == NULL);
}

static void config_defaults(void)
{
    nectar_linux_config_t c = cfg_from("{}");
    CHECK_EQ(c.tcp_port, 15001);
    CHECK_EQ(c.udp_port, 15001);
    CHECK_EQ(c.fwmark, 0x6e63);
    CHECK_EQ(c.bypass_mark, 0x6e64);
    CHECK(c.capture_forward);
    CHECK(!c.capture_local);
    CHECK(c.sticky_passthrough);
    CHECK_EQ(c.udp_idle_timeout_ms, 60000);
    CHECK_STR_EQ(c.engine_json, "{}");
    nectar__linux_config_free(&c);
}

static void config_host_members(void)
{
    nectar_linux_config_t c = cfg_from(
        "{\"default_action\": \"intercept\", \"host\": {\"tcp_port\": 9000,"
        " \"udp_port\": 0, \"interfaces\": [\"eth0\", \"wg0\"],"
        " \"capture_local\": true, \"cgroups\": [\"system.slice/a.service\"],"
        " \"sticky_passthrough\": false, \"route_table\": 100,"
        " \"fwmark\": 7, \"bypass_mark\": 8, \"loops\": 4}}");
    CHECK_EQ(c.tcp_port, 9000);
    CHECK_EQ(c.udp_port, 0);
    CHECK_EQ(c.n_interfaces, 2);
    CHECK_STR_EQ(c.interfaces[1], "wg0");
    CHECK_EQ(c.n_cgroups, 1);
    CHECK(!c.sticky_passthrough);
    CHECK_EQ(c.route_table, 100);
    CHECK_EQ(c.loops, 4);
    /* The engine sees its own keys only. */
    CHECK_STR_EQ(c.engine_json, "{\"default_action\":\"intercept\"}");
    nectar__linux_config_free(&c);
}

static void config_errors(void)
{
    config_error("{\"host\": {\"tcp_port\": 0}}", "t.json: host.tcp_port");
    config_error("{\"host\": {\"tcp_port\": 70000}}", "1..65535");
    config_error("{\"host\": {\"tcp_port\": \"80\"}}", "host.tcp_port");
    config_error("{\"host\": {\"tcp_prot\": 80}}", "host.tcp_prot: unknown");
    config_error("{\"host\": {\"capture_local\": 1}}", "true or false");
    config_error("{\"host\": {\"interfaces\": [\"a\\\"b\"]}}",
                 "host.interfaces: [0]");
    config_error("{\"host\": {\"interfaces\": \"eth0\"}}", "array");
    config_error("{\"host\": {\"fwmark\": 5, \"bypass_mark\": 5}}",
                 "must differ");
    config_error("{\"host\": {\"route_table\": 254}}", "kernel's own");
    config_error("{\"host\": {\"cgroups\": [\"x\"]}}", "capture_local");
    config_error("{\"host\": {\"capture_forward\": false}}",
                 "nothing would be intercepted");
    config_error("{\"host\": 3}", "host: expected an object");
    config_error("[1]", "expected a JSON object");
    config_error("{\"host\": {", "t.json:1:");
    nectar_linux_config_t c;
    nectar_error_t err = {0};
    CHECK_EQ(nectar__linux_config_load("/nonexistent/cfg.json", &c, &err),
             NECTAR_ECONFIG);
    CHECK(strstr(err.message, "/nonexistent/cfg.json") != NULL);
}

/* ---- rules -------------------------------------------------------------- */

/* host.control / host.control_service, and the name clash with the
 * example's own control service (xpc_service_name). */
static void config_control(void)
{
    nectar_linux_config_t c = cfg_from("{}");
    CHECK(c.control);
    CHECK(c.control_service == NULL); /* the IPC default name */
    nectar__linux_config_free(&c);
    c = cfg_from("{\"host\": {\"control\": false,"
                 " \"control_service\": \"org.example.ctl\"}}");
    CHECK(!c.control);
    CHECK_STR_EQ(c.control_service, "org.example.ctl");
    nectar__linux_config_free(&c);
    /* Distinct names, or the daemon's service off: no clash. */
    c = cfg_from("{\"app\": \"example\", \"xpc_service_name\": \"a.b\"}");
    CHECK_STR_EQ(c.engine_json,
                 "{\"app\":\"example\",\"xpc_service_name\":\"a.b\"}");
    nectar__linux_config_free(&c);
    c = cfg_from("{\"xpc_service_name\": \"org.nectar.control\","
                 " \"host\": {\"control\": false}}");
    nectar__linux_config_free(&c);
    config_error("{\"host\": {\"control\": \"yes\"}}",
                 "host.control: expected true or false");
    config_error("{\"host\": {\"control_service\": \"\"}}",
                 "host.control_service: expected a service name");
    config_error("{\"host\": {\"control_service\": 5}}",
                 "host.control_service");
    config_error("{\"xpc_service_name\": \"org.nectar.control\"}",
                 "host.control_service: same name as the engine's "
                 "xpc_service_name");
    config_error("{\"xpc_service_name\": \"x.y\","
                 " \"host\": {\"control_service\": \"x.y\"}}",
                 "pick another name");
}

static RamaTransparentProxyNetworkRule rule(const char *remote, int rprefix,
                                            int port, const char *local,
                                            int lprefix, uint32_t proto,
                                            bool exclude)
{
    RamaTransparentProxyNetworkRule r;
    memset(&r, 0, sizeof(r));
    r.remote_network_utf8 = remote;
    r.remote_network_utf8_len = remote ? strlen(remote) : 0;
    r.remote_prefix = (uint8_t)(rprefix < 0 ? 0 : rprefix);
    r.remote_prefix_is_set = rprefix >= 0;
    r.remote_port = (uint16_t)(port < 0 ? 0 : port);
    r.remote_port_is_set = port >= 0;
    r.local_network_utf8 = local;
    r.local_network_utf8_len = local ? strlen(local) : 0;
    r.local_prefix = (uint8_t)(lprefix < 0 ? 0 : lprefix);
    r.local_prefix_is_set = lprefix >= 0;
    r.protocol = proto;
    r.exclude = exclude;
    return r;
}

static nectar_linux_ruleset_t build(const RamaTransparentProxyNetworkRule *rs,
                                    size_t n, const char *cfgjson)
{
    nectar_linux_config_t c = cfg_from(cfgjson);
    nectar_linux_ruleset_t out;
    CHECK_EQ(nectar__linux_rules_build(rs, n, &c, &out), 0);
    nectar__linux_config_free(&c);
    return out;
}

static int count(const char *hay, const char *needle)
{
    int k = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        k++;
    return k;
}

#define HAS(rs, s)                                                           \
    do {                                                                     \
        if (strstr((rs).nft, (s)) == NULL)                                   \
            NECTAR_FAIL_AT("ruleset lacks \"%s\":\n%s", (s), (rs).nft);      \
    } while (0)
#define LACKS(rs, s)                                                         \
    do {                                                                     \
        if (strstr((rs).nft, (s)) != NULL)                                   \
            NECTAR_FAIL_AT("ruleset has \"%s\":\n%s", (s), (rs).nft);        \
    } while (0)

static void rules_match_all(void)
{
    nectar_linux_ruleset_t rs = build(NULL, 0, "{}");
    CHECK_EQ(rs.included, 1);
    HAS(rs, "table inet nectar {");
    HAS(rs, "meta nfproto ipv4 meta l4proto tcp tproxy ip to :15001 meta "
            "mark set 0x6e63 accept");
    HAS(rs, "meta nfproto ipv6 meta l4proto udp tproxy ip6 to :15001");
    HAS(rs, "meta mark 0x6e64 return");
    /* flows nectar already serves return to it before the sticky sets */
    HAS(rs, "meta nfproto ipv6 meta l4proto udp socket transparent 1 tproxy "
            "ip6 to :15001");
    CHECK_LT(strstr(rs.nft, "udp socket transparent 1") - rs.nft,
             strstr(rs.nft, "@sticky4") - rs.nft);
    HAS(rs, "fib daddr type { local, broadcast, multicast } return");
    HAS(rs, "ct mark 0x6e64 return");
    HAS(rs, "ct state new ip daddr . meta l4proto . th dport @sticky4 ct mark "
            "set 0x6e64 return");
    HAS(rs, "timeout 300s");
    LACKS(rs, "chain output");
    /* the bypass mark is checked before any capture */
    CHECK_LT(strstr(rs.nft, "0x6e64 return") - rs.nft,
             strstr(rs.nft, "tproxy") - rs.nft);
    nectar__linux_ruleset_free(&rs);
}

static void rules_port_only_both_families(void)
{
    RamaTransparentProxyNetworkRule r[] = {
        rule(NULL, -1, 443, NULL, -1, RAMA_RULE_PROTOCOL_TCP, true),
        rule(NULL, -1, -1, NULL, -1, RAMA_RULE_PROTOCOL_ANY, false),
    };
    nectar_linux_ruleset_t rs = build(r, 2, "{}");
    CHECK_EQ(rs.excluded, 1);
    HAS(rs, "meta nfproto ipv4 meta l4proto tcp th dport 443 return");
    HAS(rs, "meta nfproto ipv6 meta l4proto tcp th dport 443 return");
    LACKS(rs, "meta l4proto udp th dport 443");
    /* excludes come before includes */
    CHECK_LT(strstr(rs.nft, "th dport 443 return") - rs.nft,
             strstr(rs.nft, "meta nfproto ipv4 meta l4proto tcp tproxy") -
                 rs.nft);
    nectar__linux_ruleset_free(&rs);
}

static void rules_networks(void)
{
    RamaTransparentProxyNetworkRule r[] = {
        rule("10.1.2.3", 8, -1, NULL, -1, 0, true),
        rule("2001:db8::1", -1, 53, "fd00::", 8, RAMA_RULE_PROTOCOL_UDP,
             false),
        rule("192.0.2.7", -1, -1, NULL, -1, RAMA_RULE_PROTOCOL_TCP, false),
        rule("fe80::1%eth0", 10, -1, NULL, -1, 0, true),
    };
    nectar_linux_ruleset_t rs = build(r, 4, "{}");
    CHECK_EQ(rs.invalid, 0);
    HAS(rs, "meta nfproto ipv4 meta l4proto tcp ip daddr 10.0.0.0/8 return");
    HAS(rs, "meta nfproto ipv4 meta l4proto udp ip daddr 10.0.0.0/8 return");
    LACKS(rs, "meta nfproto ipv6 meta l4proto tcp ip6 daddr 10.");
    HAS(rs, "meta nfproto ipv6 meta l4proto udp ip6 daddr 2001:db8::1/128 "
            "th dport 53 ip6 saddr fd00::/8 tproxy ip6 to :15001");
    HAS(rs, "ip daddr 192.0.2.7/32 tproxy ip to :15001");
    HAS(rs, "ip6 daddr fe80::/10 return");
    nectar__linux_ruleset_free(&rs);
}

static void rules_invalid_skipped(void)
{
    RamaTransparentProxyNetworkRule r[] = {
        rule("example.com", -1, 443, NULL, -1, 0, true),
        rule("10.0.0.0/8", -1, -1, NULL, -1, 0, true),
        rule("10.0.0.1", 33, -1, NULL, -1, 0, true),
        rule("10.0.0.1", -1, -1, "fd00::1", -1, 0, false),
        rule("::1", 129, -1, NULL, -1, 0, false),
        rule(NULL, -1, -1, NULL, -1, RAMA_RULE_PROTOCOL_TCP, false),
    };
    nectar_linux_ruleset_t rs = build(r, 6, "{}");
    CHECK_EQ(rs.invalid, 5);
    CHECK_EQ(rs.excluded, 0);
    CHECK_EQ(rs.included, 1);
    /* "exclude port 443" never becomes "exclude everything" */
    LACKS(rs, "meta nfproto ipv4 meta l4proto tcp return");
    LACKS(rs, "meta nfproto ipv4 meta l4proto udp return");
    LACKS(rs, "example");
    CHECK_EQ(count(rs.nft, "l4proto tcp tproxy"), 2); /* tcp v4 + v6 */
    CHECK_EQ(count(rs.nft, "l4proto udp tproxy"), 0);
    nectar__linux_ruleset_free(&rs);
}

static void rules_host_options(void)
{
    nectar_linux_ruleset_t rs = build(
        NULL, 0,
        "{\"host\": {\"udp_port\": 0, \"interfaces\": [\"veth0\", \"lo\"],"
        " \"capture_local\": true, \"cgroups\": [\"/system.slice/x.service\"],"
        " \"sticky_passthrough\": false, \"tcp_port\": 4000}}");
    LACKS(rs, "l4proto udp tproxy");
    LACKS(rs, "sticky");
    HAS(rs, "iifname != { \"veth0\", \"lo\" } return");
    HAS(rs, "chain output {");
    HAS(rs, "type route hook output priority mangle");
    HAS(rs, "meta skgid 28260 return");
    HAS(rs, "socket cgroupv2 level 2 \"system.slice/x.service\" goto "
            "local_capture");
    HAS(rs, "meta nfproto ipv4 meta l4proto tcp meta mark set 0x6e63\n");
    /* Packets rerouted by output are diverted before the interface
     * filter, which would otherwise drop them (they arrive on lo). */
    HAS(rs, "meta mark 0x6e63 meta nfproto ipv6 meta l4proto tcp tproxy ip6 "
            "to :4000");
    CHECK_LT(strstr(rs.nft, "meta mark 0x6e63 meta nfproto") - rs.nft,
             strstr(rs.nft, "iifname") - rs.nft);
    nectar__linux_ruleset_free(&rs);

    rs = build(NULL, 0,
               "{\"host\": {\"capture_forward\": false, \"capture_local\": "
               "true}}");
    LACKS(rs, "fib daddr type { local, broadcast, multicast } return\n\t\tip "
              "daddr . meta l4proto . th dport @sticky4 return\n\t\tmeta "
              "nfproto ipv4 meta l4proto tcp tproxy");
    HAS(rs, "\t\treturn\n\t}\n\tchain output");
    nectar__linux_ruleset_free(&rs);
}

static void routes_text(void)
{
    nectar_linux_config_t c = cfg_from("{}");
    char buf[512];
    nectar__linux_routes_text(&c, buf, sizeof(buf));
    CHECK(strstr(buf, "ip -4 rule add fwmark 0x6e63 lookup 28259 pref "
                      "28259") != NULL);
    CHECK(strstr(buf, "ip -6 route add local ::/0 dev lo table 28259") !=
          NULL);
    nectar__linux_config_free(&c);
}

static const nectar_test_t tests[] = {
    {"config_defaults", config_defaults},
    {"config_host_members", config_host_members},
    {"config_errors", config_errors},
    {"config_control", config_control},
    {"rules_match_all", rules_match_all},
    {"rules_port_only_both_families", rules_port_only_both_families},
    {"rules_networks", rules_networks},
    {"rules_invalid_skipped", rules_invalid_skipped},
    {"rules_host_options", rules_host_options},
    {"routes_text", routes_text},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
