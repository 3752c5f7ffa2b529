/*
 * test_example.c - the example handler's pure parts and control API:
 * domain lists, the admission limiter, the merged engine config, live
 * settings updates, CA rotation and the key log toggle on a real engine.
 */
#include <jansson.h>
#include <stdlib.h>

#include "example/admission.h"
#include "example/config.h"
#include "example/domains.h"
#include "example/socks5.h"
#include "harness/test.h"
#include "nectar/ca.h"
#include "nectar/example.h"
#include "nectar/handler.h"
#include "nectar/ipc.h"
#include "nectar/keychain.h"
#include "nectar/vault.h"
#include "tcp_stream.h"

static void domains(void)
{
    const char *names[] = {"Exact.Test.", "*.wild.test", "bad name", "",
                           "*.",          "a..b"};
    ex_domains_t *d = ex_domains_new(names, 6);
    CHECK_EQ(ex_domains_count(d), 2); /* invalid names dropped silently */
    CHECK(ex_domains_match(d, "exact.test"));
    CHECK(ex_domains_match(d, "EXACT.test."));
    CHECK(!ex_domains_match(d, "sub.exact.test"));
    CHECK(ex_domains_match(d, "wild.test")); /* *.x covers x itself */
    CHECK(ex_domains_match(d, "a.b.wild.test"));
    CHECK(!ex_domains_match(d, "notwild.test"));
    CHECK(!ex_domains_match(d, NULL));
    CHECK(!ex_domains_match(d, "bad name"));
    ex_domains_free(d);
}

static void admission(void)
{
    ex_admission_t *a = ex_admission_new(8, 0);
    CHECK_EQ(ex_admission_app_host_limit(a), 16); /* clamp(8/32, 16, 64) */
    ex_permit_t p[10];
    /* Non-web ports share 25 % of the global limit: 2 of 8. */
    CHECK_EQ(ex_admission_try(a, 22, NULL, NULL, &p[0]), EX_ADMIT);
    CHECK_EQ(ex_admission_try(a, 22, NULL, NULL, &p[1]), EX_ADMIT);
    CHECK_EQ(ex_admission_try(a, 22, NULL, NULL, &p[2]), EX_REJECT_NONWEB);
    for (int i = 2; i < 8; i++)
        CHECK_EQ(ex_admission_try(a, 443, "app", "h", &p[i]), EX_ADMIT);
    CHECK_EQ(ex_admission_try(a, 443, NULL, NULL, &p[8]), EX_REJECT_GLOBAL);
    ex_admission_release(a, &p[0]);
    ex_admission_release(a, &p[0]); /* idempotent */
    CHECK_EQ(ex_admission_in_use(a), 7);
    CHECK_EQ(ex_admission_try(a, 22, NULL, NULL, &p[0]), EX_ADMIT);
    for (int i = 0; i < 8; i++)
        ex_admission_release(a, &p[i]);
    CHECK_EQ(ex_admission_in_use(a), 0);
    ex_admission_free(a);
    /* Per app+host, counted only with both known. */
    a = ex_admission_new(100000, 2);
    CHECK_EQ(ex_admission_global_limit(a), 100000);
    CHECK_EQ(ex_admission_try(a, 443, "app", "h", &p[0]), EX_ADMIT);
    CHECK_EQ(ex_admission_try(a, 443, "app", "h", &p[1]), EX_ADMIT);
    CHECK_EQ(ex_admission_try(a, 443, "app", "h", &p[2]), EX_REJECT_APPHOST);
    CHECK_EQ(ex_admission_try(a, 443, "app", "other", &p[2]), EX_ADMIT);
    CHECK_EQ(ex_admission_try(a, 443, NULL, "h", &p[3]), EX_ADMIT);
    ex_admission_release(a, &p[0]);
    CHECK_EQ(ex_admission_try(a, 443, "app", "h", &p[0]), EX_ADMIT);
    for (int i = 0; i < 4; i++)
        ex_admission_release(a, &p[i]);
    ex_admission_free(a);
    /* Defaults: max(cpus * 128, 2048). */
    a = ex_admission_new(0, 0);
    CHECK_GE(ex_admission_global_limit(a), 2048);
    ex_admission_free(a);
}

static int parse(const char *json, struct ex_config *c, nectar_error_t *e)
{
    return ex_config_parse((const uint8_t *)json, strlen(json), c, e);
}

static void config(void)
{
    struct ex_config c;
    nectar_error_t e;
    CHECK_EQ(ex_config_parse(NULL, 0, &c, &e), 0);
    CHECK(c.badge_enabled);
    CHECK_STR_EQ(c.badge_label, "proxied by nectar");
    CHECK_EQ(ex_domains_count(c.exclude), 26);
    CHECK(c.peek_s == 8.0);
    CHECK(c.no_delay);
    ex_config_free(&c);
    CHECK_EQ(parse("{\"app\":\"example\",\"html_badge_label\":\"hi\","
                   "\"peek_duration_s\":0.1,\"exclude_domains\":[\"a.test\"],"
                   "\"udp_blocked_endpoints\":[\"1.2.3.4:53\",\"[::1]:9\"],"
                   "\"udp_passthrough_ports\":[443],"
                   "\"default_action\":\"passthrough\",\"tcp_no_delay\":false,"
                   "\"tcp_connect_timeout_ms\":2000,\"container_signing_"
                   "identifier\":null}",
                   &c, &e),
             0);
    CHECK_STR_EQ(c.badge_label, "hi");
    CHECK(c.peek_s == 0.5); /* the minimum */
    CHECK_EQ(ex_domains_count(c.exclude), 1);
    CHECK_STR_EQ(c.udp_blocked[1], "[::1]:9");
    CHECK_EQ(c.udp_passthrough_ports[0], 443);
    CHECK_EQ(c.connect_timeout_ms, 2000);
    CHECK(!c.no_delay);
    CHECK_EQ(c.engine.default_action, NECTAR_ACTION_PASSTHROUGH);
    ex_config_free(&c);
    CHECK_EQ(parse("{\"bogus\":1}", &c, &e), NECTAR_ECONFIG);
    ex_config_free(&c);
    CHECK_EQ(parse("{\"html_badge_enabled\":\"yes\"}", &c, &e), NECTAR_ECONFIG);
    CHECK(strstr(e.message, "html_badge_enabled") != NULL);
    ex_config_free(&c);
    CHECK_EQ(parse("{\"udp_blocked_endpoints\":[\"nope\"]}", &c, &e),
             NECTAR_ECONFIG);
    ex_config_free(&c);
    CHECK_EQ(parse("{\"app\":\"other\"}", &c, &e), NECTAR_ECONFIG);
    ex_config_free(&c);
    CHECK_EQ(parse("[1]", &c, &e), NECTAR_ECONFIG);
    ex_config_free(&c);
}

static void control_api(void)
{
    nectar_error_t e;
    CHECK_EQ(nectar_example_update_settings("{}", 2, &e), NECTAR_ESTATE);
    CHECK(nectar_example_ca_pem() == NULL);
    char *cert, *key;
    test_make_ca("control ca", &cert, &key);
    json_t *cfg =
        json_pack("{s:s, s:s}", "ca_cert_pem", cert, "ca_key_pem", key);
    char *json = json_dumps(cfg, JSON_COMPACT);
    json_decref(cfg);
    nectar_error_t err;
    RamaTransparentProxyEngine *eng =
        nectar_engine_new(nectar_example_handler(), NULL, (const uint8_t *)json,
                          strlen(json), &err);
    CHECK(eng != NULL);
    char *pem = nectar_example_ca_pem();
    CHECK_STR_EQ(pem, cert);
    nectar_example_free(pem);
    CHECK_EQ(nectar_example_update_settings(
                 "{\"html_badge_enabled\":false,\"exclude_domains\":[\"x\"]}",
                 52, &e),
             0);
    CHECK_EQ(
        nectar_example_update_settings("{\"html_badge_enabled\":1}", 24, &e),
        NECTAR_ECONFIG);
    CHECK(!nectar_example_get_tls_keylog());
    CHECK(nectar_example_set_tls_keylog(true));
    CHECK(nectar_example_get_tls_keylog());
    uint8_t *der, *prev, *der2;
    size_t der_len, prev_len, der2_len;
    CHECK_EQ(nectar_example_ca_install(&der, &der_len, &e), 0);
    CHECK_EQ(nectar_example_ca_rotate(&der2, &der2_len, &prev, &prev_len, &e),
             0);
    CHECK_EQ(prev_len, der_len);
    CHECK_MEM_EQ(prev, der, der_len);
    CHECK(der2_len != der_len || memcmp(der2, der, der_len) != 0);
    pem = nectar_example_ca_pem();
    CHECK(strcmp(pem, cert) != 0); /* new flows use the new CA */
    nectar_example_free(pem);
    nectar_example_free(der);
    nectar_example_free(der2);
    nectar_example_free(prev);
    rama_transparent_proxy_engine_stop(eng, 0); /* stops and frees */
    CHECK(nectar_example_ca_pem() == NULL);
    free(json);
    free(cert);
    free(key);
}

static void socks5_framing(void)
{
    const uint8_t method[] = {5, 0};
    CHECK_EQ(socks5_method_reply(method, 1), 0);
    CHECK_EQ(socks5_method_reply(method, 2), 2);
    CHECK_EQ(socks5_method_reply((const uint8_t *)"\x04", 1), -1);
    const uint8_t auth[] = {1, 2, 'u', 's', 3, 'p', 'w', 'd'};
    for (size_t i = 0; i < sizeof(auth); i++)
        CHECK_EQ(socks5_auth_request(auth, i), 0);
    CHECK_EQ(socks5_auth_request(auth, sizeof(auth)), 8);
    const uint8_t req[] = {5, 1, 0, 3, 4, 'h', 'o', 's', 't', 0x01, 0xbb};
    uint8_t cmd = 0;
    uint16_t port = 0;
    char host[256];
    for (size_t i = 0; i < sizeof(req); i++)
        CHECK_EQ(socks5_request(req, i, &cmd, host, sizeof(host), &port), 0);
    CHECK_EQ(socks5_request(req, sizeof(req), &cmd, host, sizeof(host), &port),
             11);
    CHECK_STR_EQ(host, "host");
    CHECK_EQ(port, 443);
    CHECK_EQ(cmd, SOCKS5_CMD_CONNECT);
    const uint8_t v6[] = {5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0,
                          0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80};
    CHECK_EQ(socks5_request(v6, sizeof(v6), &cmd, host, sizeof(host), &port),
             22);
    CHECK_STR_EQ(host, "::1");
    const uint8_t rep[] = {5, 0, 0, 1, 127, 0, 0, 1, 0, 80, 'x'};
    uint8_t r = 9;
    CHECK_EQ(socks5_reply(rep, sizeof(rep), &r), 10); /* data may follow */
    CHECK_EQ(r, 0);
    const uint8_t bad[] = {5, 0, 1, 1};
    CHECK_EQ(socks5_reply(bad, sizeof(bad), &r), -1); /* RSV must be 0 */
    const uint8_t badtype[] = {5, 0, 0, 9};
    CHECK_EQ(socks5_reply(badtype, sizeof(badtype), &r), -1);
}

static RamaTransparentProxyEngine *engine_with(const char *json)
{
    nectar_error_t err;
    return nectar_engine_new(nectar_example_handler(), NULL,
                             (const uint8_t *)json, strlen(json), &err);
}

static nectar_ipc_obj_t *call(nectar_ipc_conn_t *c, const char *sel,
                              nectar_ipc_obj_t *arg)
{
    nectar_ipc_obj_t *res = NULL;
    nectar_ipc_remote_t remote;
    nectar_error_t err;
    int rc = nectar_ipc_call(c, sel, arg, 5000, &res, &remote, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("%s: %s", sel, err.message);
    nectar_ipc_release(arg);
    return res;
}

/* The example binds the control routes itself from the engine config, and
 * refuses to bind without a required peer (fail closed). */
static void control_routes(void)
{
    char name[64], json[256];
    snprintf(name, sizeof(name), "nectar-example-test-%d", (int)getpid());
    snprintf(json, sizeof(json),
             "{\"xpc_service_name\":\"%s\","
             "\"container_signing_identifier\":\"uid:%u\"}",
             name, (unsigned)getuid());
    RamaTransparentProxyEngine *eng = engine_with(json);
    CHECK(eng != NULL);
    nectar_ipc_client_config_t cfg = {.service_name = name};
    nectar_ipc_conn_t *c = NULL;
    nectar_error_t err;
    CHECK_EQ(nectar_ipc_connect(&cfg, &c, &err), 0);
    nectar_ipc_obj_t *arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "enabled", nectar_ipc_bool(true), &err);
    nectar_ipc_obj_t *r = call(c, "setTlsKeylog:withReply:", arg);
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(r, "enabled")));
    nectar_ipc_release(r);
    CHECK(nectar_example_get_tls_keylog());
    arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "html_badge_label", nectar_ipc_string("hi"), &err);
    r = call(c, "updateSettings:withReply:", arg);
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(r, "ok")));
    nectar_ipc_release(r);
    char *before = nectar_example_ca_pem();
    r = call(c, "rotateRootCA:withReply:", nectar_ipc_dict());
    CHECK(nectar_ipc_bool_value(nectar_ipc_dict_get(r, "ok")));
    nectar_ipc_release(r);
    char *after = nectar_example_ca_pem();
    CHECK(strcmp(before, after) != 0);
    nectar_example_free(before);
    nectar_example_free(after);
    nectar_ipc_conn_release(c);
    rama_transparent_proxy_engine_stop(eng, 0);

    /* No required peer: nothing listens on the name. */
    snprintf(json, sizeof(json), "{\"xpc_service_name\":\"%s\"}", name);
    eng = engine_with(json);
    CHECK(eng != NULL); /* the engine still starts */
    CHECK_EQ(nectar_ipc_connect(&cfg, &c, &err), 0);
    nectar_ipc_obj_t *res = NULL;
    nectar_ipc_remote_t remote;
    CHECK_NE(nectar_ipc_call(c, "getTlsKeylog:withReply:", NULL, 2000, &res,
                             &remote, &err),
             0);
    nectar_ipc_conn_release(c);
    rama_transparent_proxy_engine_stop(eng, 0);
}

/* With keychain_dir and no CA PEMs, the example stores its CA in the
 * keychain with the key sealed by the vault (the vault key blob is stored,
 * the key item is an envelope, not PEM), and a restart loads the same CA.
 * Rotation replaces it, still sealed. */
static void keychain_ca_sealed(void)
{
    char dir[] = "/tmp/nectar-ex-kc-XXXXXX", json[256], key_path[300];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(key_path, sizeof(key_path), "%s/host.key", dir);
    setenv("NECTAR_VAULT", "software", 1);
    snprintf(json, sizeof(json), "{\"keychain_dir\":\"%s\"}", dir);
    RamaTransparentProxyEngine *eng = engine_with(json);
    CHECK(eng != NULL);
    char *first = nectar_example_ca_pem();
    CHECK(first != NULL);
    rama_transparent_proxy_engine_stop(eng, 0);

    nectar_vault_options_t vo = {.backend = "software",
                                 .host_key_path = key_path};
    nectar_vault_t *v = NULL;
    nectar_keychain_t *kc = NULL;
    nectar_error_t err;
    CHECK_EQ(nectar_vault_open(&vo, &v, &err), 0);
    nectar_keychain_options_t ko = {.dir = dir, .vault = v};
    CHECK_EQ(nectar_keychain_open(&ko, &kc, &err), 0);
    uint8_t *data = NULL;
    size_t len = 0;
    CHECK_EQ(nectar_keychain_load(kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                  NECTAR_CA_ACCOUNT, &data, &len, &err),
             0);
    nectar_secret_free(data);
    CHECK_EQ(nectar_keychain_load(kc, NECTAR_CA_SERVICE_KEY,
                                  NECTAR_CA_ACCOUNT, &data, &len, &err),
             0);
    CHECK(len > 0);
    CHECK(memmem(data, len, "PRIVATE KEY", 11) == NULL); /* sealed */
    nectar_secret_free(data);
    nectar_keychain_close(kc);
    nectar_vault_close(v);

    eng = engine_with(json);
    CHECK(eng != NULL);
    char *again = nectar_example_ca_pem();
    CHECK_STR_EQ(again, first); /* loaded, not re-created */
    uint8_t *der = NULL, *prev = NULL;
    size_t der_len = 0, prev_len = 0;
    CHECK_EQ(nectar_example_ca_rotate(&der, &der_len, &prev, &prev_len, &err),
             0);
    CHECK(der_len > 0 && prev_len > 0);
    CHECK(der_len != prev_len || memcmp(der, prev, der_len) != 0);
    nectar_example_free(der);
    nectar_example_free(prev);
    char *rotated = nectar_example_ca_pem();
    CHECK(strcmp(rotated, first) != 0);
    nectar_example_free(rotated);
    rama_transparent_proxy_engine_stop(eng, 0);
    nectar_example_free(first);
    nectar_example_free(again);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK_EQ(system(cmd), 0);
}

static const nectar_test_t tests[] = {
    {"domains", domains},
    {"admission", admission},
    {"config", config},
    {"control_api", control_api},
    {"socks5_framing", socks5_framing},
    {"control_routes", control_routes},
    {"keychain_ca_sealed", keychain_ca_sealed},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
