/* test_match.c - unit tests for src/app/match.c: IP literals, CIDR
 * containment (IPv4, IPv6, mapped), exact vs suffix names, globs, and a
 * whole `match` object against flow metadata. */
#include <arpa/inet.h>
#include <sys/socket.h>

#include "app/match.h"
#include "harness/test.h"

static bool host_matches(const char *pattern, const char *host)
{
    struct app_host_pattern p;
    const char *why = NULL;

    if (nectar__app_host_pattern_parse(pattern, &p, &why) != 0)
        NECTAR_FAIL_AT("pattern %s rejected: %s", pattern, why);
    bool m = nectar__app_host_pattern_match(&p, host);
    nectar__app_host_pattern_free(&p);
    return m;
}

static void test_ip_parse(void)
{
    int fam;
    uint8_t a[16];

    CHECK(nectar__app_ip_parse("10.1.2.3", &fam, a));
    CHECK_EQ(fam, AF_INET);
    CHECK_EQ(a[0], 10);
    CHECK_EQ(a[3], 3);
    CHECK(nectar__app_ip_parse("2001:db8::1", &fam, a));
    CHECK_EQ(fam, AF_INET6);
    CHECK_EQ(a[0], 0x20);
    CHECK_EQ(a[15], 1);
    CHECK(nectar__app_ip_parse("[::1]", &fam, a));
    CHECK_EQ(fam, AF_INET6);
    CHECK(nectar__app_ip_parse("fe80::1%eth0", &fam, a));
    CHECK_EQ(fam, AF_INET6);
    CHECK_EQ(a[0], 0xfe);
    /* Mapped addresses fold to IPv4 so they meet IPv4 rules. */
    CHECK(nectar__app_ip_parse("::ffff:192.168.1.9", &fam, a));
    CHECK_EQ(fam, AF_INET);
    CHECK_EQ(a[0], 192);
    CHECK_EQ(a[3], 9);
    CHECK(!nectar__app_ip_parse("example.com", &fam, a));
    CHECK(!nectar__app_ip_parse("", &fam, a));
    CHECK(!nectar__app_ip_parse(NULL, &fam, a));
    CHECK(!nectar__app_ip_parse("1.2.3.4.5", &fam, a));
    CHECK(!nectar__app_ip_parse("[::1", &fam, a));
    CHECK(!nectar__app_ip_parse("256.1.1.1", &fam, a));
}

static void test_cidr_parse(void)
{
    struct app_cidr c;
    char buf[64];

    CHECK_EQ(nectar__app_cidr_parse("10.1.2.3/8", &c), 0);
    CHECK_EQ(c.family, AF_INET);
    CHECK_EQ(c.prefix, 8);
    /* Host bits are dropped, as the spec's CIDR setter does. */
    CHECK_STR_EQ(nectar__app_cidr_addr_text(&c, buf, sizeof(buf)), "10.0.0.0");
    CHECK_EQ(nectar__app_cidr_parse("2001:db8:ffff::1/33", &c), 0);
    CHECK_EQ(c.prefix, 33);
    CHECK_STR_EQ(nectar__app_cidr_addr_text(&c, buf, sizeof(buf)),
                 "2001:db8:8000::");
    CHECK_EQ(nectar__app_cidr_parse("1.2.3.4", &c), 0);
    CHECK_EQ(c.prefix, 32);
    CHECK_EQ(nectar__app_cidr_parse("::1", &c), 0);
    CHECK_EQ(c.prefix, 128);
    CHECK_EQ(nectar__app_cidr_parse("0.0.0.0/0", &c), 0);
    CHECK_EQ(c.prefix, 0);
    CHECK_EQ(nectar__app_cidr_parse("10.0.0.0/33", &c), NECTAR_EINVAL);
    CHECK_EQ(nectar__app_cidr_parse("::/129", &c), NECTAR_EINVAL);
    CHECK_EQ(nectar__app_cidr_parse("10.0.0.0/", &c), NECTAR_EINVAL);
    CHECK_EQ(nectar__app_cidr_parse("10.0.0.0/-1", &c), NECTAR_EINVAL);
    CHECK_EQ(nectar__app_cidr_parse("10.0.0.0/8x", &c), NECTAR_EINVAL);
    CHECK_EQ(nectar__app_cidr_parse("10.0.0.0/0008", &c), NECTAR_EINVAL);
    CHECK_EQ(nectar__app_cidr_parse("host/8", &c), NECTAR_EINVAL);
    CHECK_EQ(nectar__app_cidr_parse("::ffff:0:0/96", &c), NECTAR_EINVAL);
}

static void test_cidr_contains(void)
{
    CHECK(host_matches("10.0.0.0/8", "10.255.1.1"));
    CHECK(!host_matches("10.0.0.0/8", "11.0.0.1"));
    CHECK(host_matches("192.168.4.0/22", "192.168.7.255"));
    CHECK(!host_matches("192.168.4.0/22", "192.168.8.0"));
    CHECK(host_matches("0.0.0.0/0", "203.0.113.7"));
    CHECK(!host_matches("0.0.0.0/0", "::1")); /* family must agree */
    CHECK(host_matches("1.2.3.4", "1.2.3.4"));
    CHECK(!host_matches("1.2.3.4", "1.2.3.5"));
    /* IPv6, including prefixes that end mid-byte. */
    CHECK(host_matches("2001:db8::/32", "2001:db8:1234::5"));
    CHECK(!host_matches("2001:db8::/32", "2001:db9::5"));
    CHECK(host_matches("fc00::/7", "fd12::1"));
    CHECK(!host_matches("fc00::/7", "fe00::1"));
    CHECK(host_matches("::1", "0:0:0:0:0:0:0:1"));
    CHECK(host_matches("::1/128", "[::1]"));
    CHECK(host_matches("fe80::/10", "fe80::1%eth0"));
    CHECK(host_matches("::/0", "2001:db8::1"));
    CHECK(!host_matches("::/0", "10.0.0.1"));
    /* A mapped address meets IPv4 rules. */
    CHECK(host_matches("127.0.0.0/8", "::ffff:127.0.0.1"));
    /* A CIDR never matches a name. */
    CHECK(!host_matches("10.0.0.0/8", "10.example.com"));
}

static void test_names(void)
{
    CHECK(host_matches("example.com", "example.com"));
    CHECK(host_matches("example.com", "EXAMPLE.com."));
    CHECK(host_matches("Example.COM", "example.com"));
    CHECK(!host_matches("example.com", "www.example.com"));
    CHECK(!host_matches("example.com", "example.co"));
    /* Suffix: the name itself and every subdomain, never a lookalike. */
    CHECK(host_matches(".example.com", "example.com"));
    CHECK(host_matches(".example.com", "www.example.com"));
    CHECK(host_matches(".example.com", "a.b.EXAMPLE.com."));
    CHECK(!host_matches(".example.com", "badexample.com"));
    CHECK(!host_matches(".example.com", "example.com.evil"));
    CHECK(!host_matches(".example.com", "com"));
    CHECK(!host_matches("example.com", ""));
    CHECK(!host_matches("example.com", NULL));
    CHECK(nectar__app_name_suffix("com", "example.com"));
    CHECK(!nectar__app_name_suffix("", "example.com"));
    CHECK(!nectar__app_name_equal(".", "."));
}

static void test_host_pattern_errors(void)
{
    struct app_host_pattern p;
    const char *why = NULL;

    CHECK_EQ(nectar__app_host_pattern_parse("", &p, &why), NECTAR_EINVAL);
    CHECK(why != NULL);
    why = NULL;
    CHECK_EQ(nectar__app_host_pattern_parse("10.0.0.0/40", &p, &why),
             NECTAR_EINVAL);
    CHECK(strstr(why, "CIDR") != NULL);
    CHECK_EQ(nectar__app_host_pattern_parse("fe80::zz", &p, &why),
             NECTAR_EINVAL);
    CHECK_EQ(nectar__app_host_pattern_parse("*.example.com", &p, &why),
             NECTAR_EINVAL);
    CHECK_EQ(nectar__app_host_pattern_parse("..example.com", &p, &why),
             NECTAR_EINVAL);
    CHECK_EQ(nectar__app_host_pattern_parse("exa mple.com", &p, &why),
             NECTAR_EINVAL);
    CHECK_EQ(nectar__app_host_pattern_parse(".", &p, &why), NECTAR_EINVAL);
}

static void test_glob(void)
{
    CHECK(nectar__app_glob("com.apple.*", "com.apple.curl"));
    CHECK(nectar__app_glob("com.apple.*", "com.apple."));
    CHECK(!nectar__app_glob("com.apple.*", "com.apple"));
    CHECK(nectar__app_glob("*", ""));
    CHECK(nectar__app_glob("*", "anything"));
    CHECK(nectar__app_glob("*.curl", "com.apple.curl"));
    CHECK(!nectar__app_glob("*.curl", "com.apple.curly"));
    CHECK(nectar__app_glob("a*b*c", "aXXbYYbc"));
    CHECK(!nectar__app_glob("a*b*c", "aXXbYYbcd"));
    CHECK(nectar__app_glob("**x", "x"));
    CHECK(nectar__app_glob("exact", "exact"));
    CHECK(!nectar__app_glob("exact", "Exact")); /* case-sensitive */
    CHECK(!nectar__app_glob("exact", "exactly"));
    CHECK(!nectar__app_glob("a*", NULL));
    /* Backtracking must stay linear-ish: a pathological case finishes. */
    char text[4001];
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    CHECK(!nectar__app_glob("*a*a*a*a*a*a*a*b", text));
}

static nectar_flow_meta_t meta_tcp(const char *host, uint16_t port,
                                   const char *hostname, const char *app)
{
    nectar_flow_meta_t m = {0};

    m.flow_id = 1;
    m.protocol = NECTAR_PROTO_TCP;
    m.remote.host = host;
    m.remote.port = port;
    m.remote_hostname = hostname;
    m.signing_identifier = app;
    return m;
}

static void test_match_flow(void)
{
    struct app_match m = {.remote_port = -1};
    const char *why;
    nectar_flow_meta_t meta =
        meta_tcp("93.184.216.34", 443, "example.com", "com.apple.curl");

    /* Empty match holds for everything. */
    CHECK(nectar__app_match_flow(&m, &meta));
    m.has_protocol = true;
    m.protocol = NECTAR_PROTO_UDP;
    CHECK(!nectar__app_match_flow(&m, &meta));
    m.protocol = NECTAR_PROTO_TCP;
    CHECK(nectar__app_match_flow(&m, &meta));
    m.remote_port = 80;
    CHECK(!nectar__app_match_flow(&m, &meta));
    m.remote_port = 443;
    CHECK(nectar__app_match_flow(&m, &meta));

    /* remote_host is tried against the hostname and the endpoint host. */
    CHECK_EQ(
        nectar__app_host_pattern_parse(".example.com", &m.remote_host, &why),
        0);
    m.has_remote_host = true;
    CHECK(nectar__app_match_flow(&m, &meta));
    meta.remote_hostname = NULL;
    CHECK(!nectar__app_match_flow(&m, &meta));
    nectar__app_host_pattern_free(&m.remote_host);
    CHECK_EQ(
        nectar__app_host_pattern_parse("93.184.0.0/16", &m.remote_host, &why),
        0);
    CHECK(nectar__app_match_flow(&m, &meta));
    meta.remote_hostname = "10.0.0.1"; /* a literal hostname also counts */
    meta.remote.host = "8.8.8.8";
    CHECK(!nectar__app_match_flow(&m, &meta));
    meta.remote_hostname = "93.184.1.1";
    CHECK(nectar__app_match_flow(&m, &meta));
    nectar__app_host_pattern_free(&m.remote_host);
    m.has_remote_host = false;

    /* app: absent identifier never matches, even "*". */
    m.app = "com.apple.*";
    CHECK(nectar__app_match_flow(&m, &meta));
    meta.signing_identifier = "org.mozilla.firefox";
    CHECK(!nectar__app_match_flow(&m, &meta));
    m.app = "*";
    meta.signing_identifier = NULL;
    CHECK(!nectar__app_match_flow(&m, &meta));
    m.app = NULL;

    /* remote_port needs a remote endpoint. */
    meta.remote.host = NULL;
    CHECK(!nectar__app_match_flow(&m, &meta));
}

static const nectar_test_t tests[] = {
    {"ip_parse", test_ip_parse},
    {"cidr_parse", test_cidr_parse},
    {"cidr_contains", test_cidr_contains},
    {"names", test_names},
    {"host_pattern_errors", test_host_pattern_errors},
    {"glob", test_glob},
    {"match_flow", test_match_flow},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
