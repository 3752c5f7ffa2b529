/*
 * handler.c - the example application's handler (spec §5.2): engine
 * config, decisions (domain/address rules, UDP overrides, admission), the
 * live settings snapshot and the control API of nectar/example.h.
 *
 * Map: live snapshot; CA; create/destroy; decisions; vtable; control API.
 */
#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/message.h"
#include "common/alloc.h"
#include "example/example_int.h"
#include "nectar/ca.h"
#include "nectar/example.h"
#include "nectar/keychain.h"
#include "nectar/log.h"
#include "nectar/vault.h"
#include "services/udp_relay.h"

#define UDP_E2E_WINDOW_MS (10u * 60u * 1000u)

/* The example engine the control API acts on (the newest alive). */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ex_state *g_current;

uint64_t ex_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- live snapshot ------------------------------------------------------ */

static void live_free(struct ex_live *l)
{
    nectar_free(l->badge_label);
    ex_domains_free(l->exclude);
    tls_mitm_unref(l->mitm);
    nectar_free(l->hijack_host);
    nectar_free(l);
}

void ex_live_put(struct ex_live *l)
{
    if (l != NULL && atomic_fetch_sub(&l->refs, 1) == 1)
        live_free(l);
}

struct ex_live *ex_live_get(struct ex_state *ex)
{
    pthread_mutex_lock(&ex->mu);
    struct ex_live *l = ex->live;
    atomic_fetch_add(&l->refs, 1);
    pthread_mutex_unlock(&ex->mu);
    return l;
}

/* A new snapshot: badge and exclusions copied from `from` (or the config
 * when NULL), then overridden by u (may be NULL); mitm referenced. */
static struct ex_live *live_new(struct ex_state *ex, const struct ex_live *from,
                                const struct ex_settings_update *u,
                                tls_mitm_t *mitm)
{
    struct ex_live *l = nectar_calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    atomic_init(&l->refs, 1);
    l->badge_enabled = from ? from->badge_enabled : ex->cfg.badge_enabled;
    if (u != NULL && u->has_badge_enabled)
        l->badge_enabled = u->badge_enabled;
    const char *label = from ? from->badge_label : ex->cfg.badge_label;
    if (u != NULL && u->badge_label != NULL)
        label = u->badge_label;
    l->badge_label = nectar_strdup(label);
    const ex_domains_t *src = from ? from->exclude : ex->cfg.exclude;
    if (u != NULL && u->has_exclude)
        src = u->exclude;
    const char **names =
        nectar_calloc(ex_domains_count(src) + 1, sizeof(*names));
    if (names != NULL) {
        for (size_t i = 0; i < ex_domains_count(src); i++)
            names[i] = ex_domains_get(src, i);
        l->exclude = ex_domains_new(names, ex_domains_count(src));
        nectar_free(names);
    }
    l->hijack_host = nectar_strdup(ex->cfg.hijack_host);
    l->mitm = mitm != NULL ? tls_mitm_ref(mitm) : NULL;
    snprintf(l->observed_value, sizeof(l->observed_value), "seen-by-%ld",
             (long)getpid());
    if (l->badge_label == NULL || l->exclude == NULL ||
        l->hijack_host == NULL) {
        live_free(l);
        return NULL;
    }
    return l;
}

/* Replaces the snapshot (takes the reference of l). */
static void live_swap(struct ex_state *ex, struct ex_live *l)
{
    pthread_mutex_lock(&ex->mu);
    struct ex_live *old = ex->live;
    ex->live = l;
    pthread_mutex_unlock(&ex->mu);
    ex_live_put(old);
}

/* ---- CA ------------------------------------------------------------------ */

static int mitm_from_pem(struct ex_state *ex, const char *cert, const char *key,
                         tls_mitm_t **out, nectar_error_t *err)
{
    tls_ca_t *ca = NULL;
    int rc = tls_ca_from_pem(cert, key, ex->cfg.leaf_cache_size, &ca, err);
    if (rc != 0)
        return rc;
    tls_mitm_opts_t o;
    tls_mitm_opts_defaults(&o);
    o.trust = ex->trust;
    o.upstream_ca_file = ex->cfg.upstream_ca_file;
    o.upstream_insecure = ex->cfg.upstream_insecure;
    o.trust_cache_size = ex->cfg.trust_cache_size;
    o.trust_cache_ttl_ms = ex->cfg.trust_cache_ttl_ms;
    rc = tls_mitm_new(ca, ex->keylog, &o, out, err);
    tls_ca_unref(ca);
    return rc;
}

static void set_ca_pems(struct ex_state *ex, char *cert, char *key)
{
    pthread_mutex_lock(&ex->mu);
    char *old_cert = ex->ca_cert_pem, *old_key = ex->ca_key_pem;
    ex->ca_cert_pem = cert;
    ex->ca_key_pem = key;
    pthread_mutex_unlock(&ex->mu);
    if (old_key != NULL)
        nectar_wipe(old_key, strlen(old_key));
    nectar_free(old_cert);
    nectar_free(old_key);
}

/* Copies of two secret PEMs into nectar_malloc'd strings (and frees the
 * originals with nectar_secret_free). */
static int take_pems(char *cert_in, char *key_in, char **cert, char **key,
                     nectar_error_t *err)
{
    *cert = nectar_strdup(cert_in);
    *key = nectar_strdup(key_in);
    nectar_secret_free(cert_in);
    nectar_secret_free(key_in);
    if (*cert == NULL || *key == NULL) {
        nectar_free(*cert);
        nectar_free(*key);
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    }
    return 0;
}

/* The vault that seals the stored CA's key (issue: the key is encrypted
 * by the vault before it is stored).  A store directory from the config
 * keeps its software host key beside it, as `nectar --store DIR` does. */
static int open_vault(const struct ex_state *ex, nectar_vault_t **v,
                      nectar_error_t *err)
{
    char path[4096];
    nectar_vault_options_t vo = {0};
    if (ex->cfg.keychain_dir != NULL) {
        /* A truncated path would silently name another key file. */
        if (snprintf(path, sizeof(path), "%s/host.key",
                     ex->cfg.keychain_dir) >= (int)sizeof(path))
            return nectar_error_set(err, NECTAR_EINVAL,
                                    "keychain_dir is too long");
        vo.host_key_path = path;
    }
    return nectar_vault_open(&vo, v, err);
}

/* The stored CA (created and stored when there is none), through the
 * keychain and sealed by the vault; false when either cannot be opened
 * here (e.g. not root). */
static bool keychain_ca(struct ex_state *ex, char **cert, char **key)
{
    nectar_vault_t *v = NULL;
    nectar_keychain_t *kc = NULL;
    nectar_error_t err = {0};
    char *c = NULL, *k = NULL;
    if (open_vault(ex, &v, &err) != 0)
        goto fail;
    nectar_keychain_options_t o = {.dir = ex->cfg.keychain_dir, .vault = v};
    if (nectar_keychain_open(&o, &kc, &err) != 0 ||
        nectar_ca_load_or_create(kc, v, &c, &k, &err) != 0)
        goto fail;
    if (take_pems(c, k, cert, key, &err) != 0)
        goto fail;
    ex->keychain = kc;
    ex->vault = v;
    return true;
fail:
    nectar_log(NECTAR_LOG_WARN, EX_TAG, "keychain CA unavailable: %s",
               err.message);
    nectar_keychain_close(kc);
    nectar_vault_close(v);
    return false;
}

/* The CA at start (spec §2.3): both PEMs from the config skip the
 * keychain; else the keychain's CA; else one generated in memory for this
 * run only (logged). */
static int load_ca(struct ex_state *ex, tls_mitm_t **mitm, nectar_error_t *err)
{
    char *cert = NULL, *key = NULL;
    if (ex->cfg.ca_cert_pem != NULL && ex->cfg.ca_key_pem != NULL) {
        cert = nectar_strdup(ex->cfg.ca_cert_pem);
        key = nectar_strdup(ex->cfg.ca_key_pem);
        if (cert == NULL || key == NULL) {
            nectar_free(cert);
            nectar_free(key);
            return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
        }
    } else if (!keychain_ca(ex, &cert, &key)) {
        char *c = NULL, *k = NULL;
        int rc = nectar_ca_generate(&c, &k, err);
        if (rc == 0)
            rc = take_pems(c, k, &cert, &key, err);
        if (rc != 0)
            return rc;
        nectar_log(NECTAR_LOG_WARN, EX_TAG,
                   "no ca_cert_pem/ca_key_pem and no keychain: using a CA "
                   "generated for this run only");
    }
    int rc = mitm_from_pem(ex, cert, key, mitm, err);
    if (rc != 0) {
        nectar_wipe(key, strlen(key));
        nectar_free(cert);
        nectar_free(key);
        return rc;
    }
    set_ca_pems(ex, cert, key);
    return 0;
}

/* The key log sink: the configured file, else hourly files under
 * <storage>/keylog kept 8 hours (spec §5.6), else a toggle writing
 * nothing. */
static tls_keylog_t *make_keylog(const struct ex_state *ex)
{
    bool on = ex->cfg.tls_keylog;
    if (ex->cfg.tls_keylog_file != NULL)
        return tls_keylog_new(ex->cfg.tls_keylog_file, on);
    if (ex->storage_dir == NULL)
        return tls_keylog_new(NULL, on);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/keylog", ex->storage_dir);
    return tls_keylog_new_rotating(dir, 8, on);
}

/* ---- create / destroy ---------------------------------------------------- */

int nectar__example_control_bind(struct ex_state *ex);
void nectar__example_control_unbind(struct ex_state *ex);

static void state_free(struct ex_state *ex)
{
    ex_live_put(ex->live);
    set_ca_pems(ex, NULL, NULL);
    ex_admission_free(ex->adm);
    tls_keylog_free(ex->keylog);
    nectar_keychain_close(ex->keychain);
    nectar_vault_close(ex->vault);
    X509_STORE_free(ex->trust);
    ex_config_free(&ex->cfg);
    nectar_free(ex->storage_dir);
    pthread_mutex_destroy(&ex->mu);
    nectar_free(ex);
}

static int state_init(struct ex_state *ex, nectar_error_t *err)
{
    ex->adm = ex_admission_new(ex->cfg.admission_global,
                               ex->cfg.admission_per_app_host);
    ex->keylog = make_keylog(ex);
    if (ex->adm == NULL || ex->keylog == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    int rc = tls_trust_store_new(ex->cfg.upstream_ca_file, &ex->trust, err);
    if (rc != 0)
        return rc;
    tls_mitm_t *mitm = NULL;
    rc = load_ca(ex, &mitm, err);
    if (rc != 0)
        return rc;
    ex->live = live_new(ex, NULL, NULL, mitm);
    tls_mitm_unref(mitm);
    if (ex->live == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    return 0;
}

static int ex_create(nectar_engine_ctx_t *ctx, void **state,
                     nectar_error_t *err)
{
    size_t len = 0;
    const uint8_t *json = nectar_engine_ctx_config(ctx, &len);
    struct ex_state *ex = nectar_calloc(1, sizeof(*ex));
    if (ex == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    pthread_mutex_init(&ex->mu, NULL);
    ex->created_ms = ex_now_ms();
    const char *dir = nectar_engine_ctx_storage_dir(ctx);
    ex->storage_dir = dir ? nectar_strdup(dir) : NULL;
    nectar_error_t local = {0};
    int rc = ex_config_parse(json, len, &ex->cfg, &local);
    if (rc == 0)
        rc = state_init(ex, &local);
    if (rc != 0) {
        nectar_log(NECTAR_LOG_ERROR, EX_TAG, "engine config rejected: %s",
                   local.message);
        nectar_error_set(err, rc, "example: %s", local.message);
        state_free(ex);
        return rc;
    }
    nectar_log(NECTAR_LOG_INFO, EX_TAG,
               "example ready: badge %s (\"%s\"), %zu excluded domains, "
               "peek %.1f s, admission %u global / %u per app+host",
               ex->cfg.badge_enabled ? "on" : "off", ex->cfg.badge_label,
               ex_domains_count(ex->cfg.exclude), ex->cfg.peek_s,
               ex_admission_global_limit(ex->adm),
               ex_admission_app_host_limit(ex->adm));
    nectar__example_control_bind(ex);
    pthread_mutex_lock(&g_mu);
    g_current = ex;
    pthread_mutex_unlock(&g_mu);
    *state = ex;
    return 0;
}

static void ex_destroy(void *state)
{
    struct ex_state *ex = state;
    pthread_mutex_lock(&g_mu);
    if (g_current == ex)
        g_current = NULL;
    pthread_mutex_unlock(&g_mu);
    nectar__example_control_unbind(ex);
    state_free(ex);
}

/* ---- decisions ----------------------------------------------------------- */

/* Spec §5.2: LOCAL scopes except loopback never reach the provider. */
static const nectar_rule_t default_rules[] = {
    {"10.0.0.0", 8, -1, NULL, -1, RAMA_RULE_PROTOCOL_ANY, true},
    {"172.16.0.0", 12, -1, NULL, -1, RAMA_RULE_PROTOCOL_ANY, true},
    {"192.168.0.0", 16, -1, NULL, -1, RAMA_RULE_PROTOCOL_ANY, true},
    {"169.254.0.0", 16, -1, NULL, -1, RAMA_RULE_PROTOCOL_ANY, true},
    {"100.64.0.0", 10, -1, NULL, -1, RAMA_RULE_PROTOCOL_ANY, true},
    {"fc00::", 7, -1, NULL, -1, RAMA_RULE_PROTOCOL_ANY, true},
    {"fe80::", 10, -1, NULL, -1, RAMA_RULE_PROTOCOL_ANY, true},
    {NULL, -1, -1, NULL, -1, RAMA_RULE_PROTOCOL_TCP, false},
    {NULL, -1, -1, NULL, -1, RAMA_RULE_PROTOCOL_UDP, false},
};

static void ex_proxy_config(void *state, nectar_proxy_config_t *cfg)
{
    struct ex_state *ex = state;
    nectar__app_config_apply_proxy(&ex->cfg.engine, cfg);
    if (!ex->cfg.engine.has_rules) {
        cfg->rules = default_rules;
        cfg->rules_len = sizeof(default_rules) / sizeof(default_rules[0]);
    }
}

static bool ex_egress_options(void *state, const nectar_flow_meta_t *meta,
                              RamaTcpEgressConnectOptions *out)
{
    struct ex_state *ex = state;
    (void)meta;
    if (ex->cfg.engine.has_egress)
        *out = ex->cfg.engine.egress;
    else
        nectar_egress_options_defaults(out);
    if (ex->cfg.connect_timeout_ms > 0) {
        out->has_connect_timeout_ms = true;
        out->connect_timeout_ms = ex->cfg.connect_timeout_ms;
    }
    out->tcp_no_delay = ex->cfg.no_delay;
    out->has_tcp_disable_ack_stretching = true;
    out->tcp_disable_ack_stretching = true;
    return true;
}

/* Private (RFC 1918, link-local, CGNAT, ULA) and not loopback. */
static bool private_not_loopback(const char *host)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1) {
        return a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) ||
               (a[0] == 192 && a[1] == 168) || (a[0] == 169 && a[1] == 254) ||
               (a[0] == 100 && (a[1] & 0xc0) == 64) || a[0] == 0;
    }
    if (inet_pton(AF_INET6, host, a) == 1)
        return (a[0] & 0xfe) == 0xfc || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80);
    return false;
}

/* The rules shared by TCP and UDP (spec §5.2, steps 1-3). */
static nectar_action_t shared_rules(struct ex_state *ex,
                                    const nectar_flow_meta_t *m)
{
    if (ex_domains_match(ex->cfg.passthrough, m->remote_hostname))
        return NECTAR_ACTION_PASSTHROUGH;
    if (m->remote.host == NULL)
        return NECTAR_ACTION_PASSTHROUGH;
    if (private_not_loopback(m->remote.host))
        return NECTAR_ACTION_PASSTHROUGH;
    return NECTAR_ACTION_INTERCEPT;
}

static void log_new_flow(const nectar_flow_meta_t *m)
{
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG,
               "transparent proxy: new flow id=%llu protocol=%s remote=%s:%u "
               "remote_hostname=%s interface=%s bound=%d bundle=%s",
               (unsigned long long)m->flow_id,
               m->protocol == NECTAR_PROTO_UDP ? "udp" : "tcp",
               m->remote.host ? m->remote.host : "-", m->remote.port,
               m->remote_hostname ? m->remote_hostname : "-",
               m->interface_name ? m->interface_name : "-",
               m->has_is_bound && m->is_bound,
               m->bundle_identifier ? m->bundle_identifier : "-");
}

static void settle(struct ex_state *ex, nectar_decision_t *d, nectar_action_t a)
{
    nectar__app_stats_decision(&ex->stats, a);
    if (a == NECTAR_ACTION_BLOCK)
        nectar_decision_block(d);
    else
        nectar_decision_passthrough(d);
}

static void ex_decide_tcp(void *state, const nectar_flow_meta_t *m,
                          nectar_decision_t *d)
{
    struct ex_state *ex = state;
    log_new_flow(m);
    nectar_action_t a = nectar__app_config_decide(&ex->cfg.engine, m);
    if (a == NECTAR_ACTION_INTERCEPT)
        a = shared_rules(ex, m);
    if (a != NECTAR_ACTION_INTERCEPT) {
        settle(ex, d, a);
        return;
    }
    ex_permit_t permit;
    const char *host = m->remote_hostname ? m->remote_hostname : m->remote.host;
    ex_reject_t r = ex_admission_try(ex->adm, m->remote.port,
                                     m->bundle_identifier, host, &permit);
    if (r != EX_ADMIT) {
        nectar_log(NECTAR_LOG_DEBUG, EX_TAG,
                   "flow=%llu over the %s limit: passthrough",
                   (unsigned long long)m->flow_id, ex_reject_name(r));
        settle(ex, d, NECTAR_ACTION_PASSTHROUGH);
        return;
    }
    struct ex_live *live = ex_live_get(ex);
    void *svc = ex_tcp_new(ex, live, &permit);
    if (svc == NULL) {
        ex_live_put(live);
        ex_admission_release(ex->adm, &permit);
        settle(ex, d, NECTAR_ACTION_BLOCK);
        return;
    }
    nectar__app_stats_decision(&ex->stats, NECTAR_ACTION_INTERCEPT);
    nectar_decision_intercept_tcp(d, &ex_tcp_service, svc);
}

static bool udp_overrides_active(const struct ex_state *ex)
{
    return !ex->cfg.udp_e2e_mode ||
           ex_now_ms() - ex->created_ms < UDP_E2E_WINDOW_MS;
}

static nectar_action_t udp_policy(struct ex_state *ex,
                                  const nectar_flow_meta_t *m)
{
    bool overrides = udp_overrides_active(ex);
    if (overrides && m->remote.host != NULL) {
        char ep[300];
        ex_endpoint_format(m->remote.host, m->remote.port, ep, sizeof(ep));
        for (size_t i = 0; i < ex->cfg.udp_blocked_len; i++) {
            if (strcmp(ep, ex->cfg.udp_blocked[i]) == 0)
                return NECTAR_ACTION_BLOCK;
        }
    }
    if (m->remote.port == 53)
        return NECTAR_ACTION_PASSTHROUGH;
    for (size_t i = 0; overrides && i < ex->cfg.udp_passthrough_len; i++) {
        if (m->remote.port == ex->cfg.udp_passthrough_ports[i])
            return NECTAR_ACTION_PASSTHROUGH;
    }
    return shared_rules(ex, m);
}

static void ex_decide_udp(void *state, const nectar_flow_meta_t *m,
                          nectar_decision_t *d)
{
    struct ex_state *ex = state;
    log_new_flow(m);
    nectar_action_t a = nectar__app_config_decide(&ex->cfg.engine, m);
    if (a == NECTAR_ACTION_INTERCEPT)
        a = udp_policy(ex, m);
    if (ex->cfg.udp_e2e_mode && udp_overrides_active(ex))
        nectar_log(NECTAR_LOG_INFO, EX_TAG,
                   "udp_e2e_decision nectar_decision=%s remote_endpoint=%s:%u "
                   "source_app=%s",
                   nectar__app_action_name(a),
                   m->remote.host ? m->remote.host : "-", m->remote.port,
                   m->bundle_identifier ? m->bundle_identifier : "-");
    void *svc = NULL;
    if (a == NECTAR_ACTION_INTERCEPT &&
        (svc = svc_udp_relay_new(&ex->stats.udp)) == NULL)
        a = NECTAR_ACTION_BLOCK;
    if (a != NECTAR_ACTION_INTERCEPT) {
        settle(ex, d, a);
        return;
    }
    nectar__app_stats_decision(&ex->stats, a);
    nectar_decision_intercept_udp(d, &svc_udp_relay_service, svc);
}

static void ex_app_message(void *state, const uint8_t *msg, size_t len,
                           nectar_reply_t *r)
{
    struct ex_state *ex = state;
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (nectar__app_message_reply(msg, len, &ex->stats, &out, &out_len) != 0)
        nectar_log(NECTAR_LOG_WARN, EX_TAG, "app message: out of memory");
    nectar_reply_send(r, out, out_len);
    nectar_free(out);
}

static void ex_sleep(void *state)
{
    (void)state;
    nectar_log(NECTAR_LOG_INFO, EX_TAG, "system sleep");
}

static void ex_wake(void *state)
{
    (void)state;
    nectar_log(NECTAR_LOG_INFO, EX_TAG, "system wake");
}

static const nectar_handler_vtable_t example_vtable = {
    .version = NECTAR_HANDLER_VERSION,
    .name = "example",
    .create = ex_create,
    .destroy = ex_destroy,
    .proxy_config = ex_proxy_config,
    .egress_options = ex_egress_options,
    .decide_tcp = ex_decide_tcp,
    .decide_udp = ex_decide_udp,
    .app_message = ex_app_message,
    .system_sleep = ex_sleep,
    .system_wake = ex_wake,
};

NECTAR_API const nectar_handler_vtable_t *nectar_example_handler(void)
{
    return &example_vtable;
}

/* ---- control API ----------------------------------------------------------
 */

NECTAR_API int nectar_example_update_settings(const char *json, size_t len,
                                              nectar_error_t *err)
{
    struct ex_settings_update u;
    int rc = ex_settings_update_parse(json, len, &u, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&g_mu);
    struct ex_state *ex = g_current;
    if (ex == NULL) {
        rc = nectar_error_set(err, NECTAR_ESTATE, "no example engine runs");
    } else {
        struct ex_live *cur = ex_live_get(ex);
        struct ex_live *l = live_new(ex, cur, &u, cur->mitm);
        ex_live_put(cur);
        if (l == NULL)
            rc = nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
        else
            live_swap(ex, l);
    }
    pthread_mutex_unlock(&g_mu);
    ex_settings_update_free(&u);
    if (rc == 0)
        nectar_log(NECTAR_LOG_INFO, EX_TAG, "settings updated");
    return rc;
}

NECTAR_API bool nectar_example_set_tls_keylog(bool on)
{
    bool state = false;
    pthread_mutex_lock(&g_mu);
    if (g_current != NULL) {
        tls_keylog_set_enabled(g_current->keylog, on);
        state = tls_keylog_enabled(g_current->keylog);
    }
    pthread_mutex_unlock(&g_mu);
    return state;
}

NECTAR_API bool nectar_example_get_tls_keylog(void)
{
    bool state = false;
    pthread_mutex_lock(&g_mu);
    if (g_current != NULL)
        state = tls_keylog_enabled(g_current->keylog);
    pthread_mutex_unlock(&g_mu);
    return state;
}

NECTAR_API char *nectar_example_ca_pem(void)
{
    char *pem = NULL;
    pthread_mutex_lock(&g_mu);
    if (g_current != NULL) {
        pthread_mutex_lock(&g_current->mu);
        pem = nectar_strdup(g_current->ca_cert_pem);
        pthread_mutex_unlock(&g_current->mu);
    }
    pthread_mutex_unlock(&g_mu);
    return pem;
}

NECTAR_API void nectar_example_free(void *p)
{
    nectar_free(p);
}

static int pem_to_der(const char *pem, uint8_t **der, size_t *len,
                      nectar_error_t *err)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    unsigned char *tmp = NULL;
    int n = x ? i2d_X509(x, &tmp) : -1;
    X509_free(x);
    if (n <= 0)
        return nectar_error_set(err, NECTAR_ECRYPTO, "cannot encode the CA");
    *der = nectar_memdup(tmp, (size_t)n);
    OPENSSL_free(tmp);
    *len = (size_t)n;
    return *der ? 0 : nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
}

static int current_der(uint8_t **der, size_t *len, nectar_error_t *err)
{
    char *pem = nectar_example_ca_pem();
    if (pem == NULL)
        return nectar_error_set(err, NECTAR_ESTATE, "no example engine runs");
    int rc = pem_to_der(pem, der, len, err);
    nectar_free(pem);
    return rc;
}

NECTAR_API int nectar_example_ca_install(uint8_t **der, size_t *der_len,
                                         nectar_error_t *err)
{
    /* The CA always exists once the engine runs; trusting it is the
     * caller's business (spec §1.5: trust stays out of the extension). */
    return current_der(der, der_len, err);
}

NECTAR_API int nectar_example_ca_uninstall(uint8_t **der, size_t *der_len,
                                           nectar_error_t *err)
{
    return current_der(der, der_len, err);
}

/* A new CA: through the keychain when the CA lives there (it stores the
 * new one and moves the certificate item), else in memory. */
static int new_ca(struct ex_state *ex, char **cert, char **key,
                  nectar_error_t *err)
{
    char *c = NULL, *k = NULL;
    uint8_t *prev = NULL;
    size_t prev_len = 0;
    int rc = ex->keychain == NULL
                 ? nectar_ca_generate(&c, &k, err)
                 : nectar_ca_rotate(ex->keychain, ex->vault, &c, &k, &prev,
                                    &prev_len, err);
    nectar_secret_free(prev);
    return rc != 0 ? rc : take_pems(c, k, cert, key, err);
}

static int rotate_locked(struct ex_state *ex, nectar_error_t *err)
{
    char *cert = NULL, *key = NULL;
    int rc = new_ca(ex, &cert, &key, err);
    tls_mitm_t *mitm = NULL;
    if (rc == 0)
        rc = mitm_from_pem(ex, cert, key, &mitm, err);
    if (rc != 0) {
        if (key != NULL)
            nectar_wipe(key, strlen(key));
        nectar_free(cert);
        nectar_free(key);
        return rc;
    }
    struct ex_live *cur = ex_live_get(ex);
    struct ex_live *l = live_new(ex, cur, NULL, mitm);
    ex_live_put(cur);
    tls_mitm_unref(mitm);
    if (l == NULL) {
        nectar_wipe(key, strlen(key));
        nectar_free(cert);
        nectar_free(key);
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    }
    set_ca_pems(ex, cert, key);
    live_swap(ex, l);
    return 0;
}

NECTAR_API int nectar_example_ca_rotate(uint8_t **der, size_t *der_len,
                                        uint8_t **previous,
                                        size_t *previous_len,
                                        nectar_error_t *err)
{
    *previous = NULL;
    *previous_len = 0;
    int rc = current_der(previous, previous_len, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&g_mu);
    rc = g_current
             ? rotate_locked(g_current, err)
             : nectar_error_set(err, NECTAR_ESTATE, "no example engine runs");
    pthread_mutex_unlock(&g_mu);
    if (rc == 0)
        rc = current_der(der, der_len, err);
    if (rc != 0) {
        nectar_free(*previous);
        *previous = NULL;
        return rc;
    }
    nectar_log(NECTAR_LOG_INFO, EX_TAG, "CA rotated; new flows use it");
    return 0;
}
