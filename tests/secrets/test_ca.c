/*
 * test_ca.c - the MITM root CA: certificate profile, load-or-create with
 * the key encrypted by the vault, replacement of missing / partial /
 * undecryptable sets (and the log line saying so), the plain path,
 * rotation, and a TPM-backed CA (swtpm).
 */
#include <stdlib.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "harness/test.h"
#include "nectar/ca.h"
#include "nectar/keychain.h"
#include "nectar/log.h"
#include "nectar/vault.h"
#include "secrets/secrets_test.h"
#include "secrets/swtpm_helper.h"

struct cfix {
    char dir[64];
    nectar_vault_t *vault;
    nectar_keychain_t *kc;
};

static void cfix_open(struct cfix *f, int with_vault)
{
    char path[128];
    nectar_error_t err = {0};
    st_tempdir(f->dir, sizeof(f->dir));
    f->vault = NULL;
    if (with_vault) {
        snprintf(path, sizeof(path), "%s/host.key", f->dir);
        nectar_vault_options_t vo = {.backend = "software",
                                     .host_key_path = path};
        CHECK_EQ(nectar_vault_open(&vo, &f->vault, &err), 0);
    }
    snprintf(path, sizeof(path), "%s/store", f->dir);
    nectar_keychain_options_t ko = {
        .backend = "file", .dir = path, .vault = f->vault};
    CHECK_EQ(nectar_keychain_open(&ko, &f->kc, &err), 0);
}

static void cfix_close(struct cfix *f)
{
    nectar_keychain_close(f->kc);
    nectar_vault_close(f->vault);
    st_rmrf(f->dir);
}

static char log_seen[512];

static void capture(void *ctx, nectar_log_level_t level, const char *tag,
                    const char *line)
{
    (void)ctx;
    if (level <= NECTAR_LOG_WARN && strcmp(tag, "ca") == 0)
        snprintf(log_seen, sizeof(log_seen), "%s", line);
}

static void get(struct cfix *f, char **cert, char **key)
{
    nectar_error_t err = {0};
    int rc = nectar_ca_load_or_create(f->kc, f->vault, cert, key, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("load_or_create: %s", err.message);
}

static X509 *parse_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    CHECK(x != NULL);
    return x;
}

static void test_profile(void)
{
    char *cert, *key;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ca_generate(&cert, &key, &err), 0);
    CHECK(strncmp(cert, "-----BEGIN CERTIFICATE-----", 27) == 0);
    CHECK(strncmp(key, "-----BEGIN PRIVATE KEY-----", 27) == 0);
    X509 *x = parse_cert(cert);
    CHECK_EQ(X509_get_version(x), 2);
    /* Subject O then CN; issuer the same (self-signed, and it verifies). */
    X509_NAME *subj = X509_get_subject_name(x);
    CHECK_EQ(X509_NAME_entry_count(subj), 2);
    CHECK_EQ(
        OBJ_obj2nid(X509_NAME_ENTRY_get_object(X509_NAME_get_entry(subj, 0))),
        NID_organizationName);
    char buf[128];
    X509_NAME_get_text_by_NID(subj, NID_organizationName, buf, sizeof(buf));
    CHECK_STR_EQ(buf, NECTAR_CA_ORG);
    X509_NAME_get_text_by_NID(subj, NID_commonName, buf, sizeof(buf));
    CHECK_STR_EQ(buf, NECTAR_CA_CN);
    CHECK_EQ(X509_NAME_cmp(subj, X509_get_issuer_name(x)), 0);
    EVP_PKEY *pub = X509_get0_pubkey(x);
    CHECK_EQ(X509_verify(x, pub), 1);
    CHECK(EVP_PKEY_is_a(pub, "EC"));
    char group[32];
    size_t glen;
    CHECK_EQ(EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof(group),
                                            &glen),
             1);
    CHECK_STR_EQ(group, "prime256v1");
    CHECK_EQ(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
    /* Serial: positive, at most 159 bits. */
    BIGNUM *sn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    CHECK(!BN_is_negative(sn));
    CHECK_LE(BN_num_bits(sn), 159);
    CHECK_GT(BN_num_bits(sn), 64);
    BN_free(sn);
    /* Validity: from now - 60 s, for 20 x 365 days. */
    int days, secs;
    CHECK_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x),
                            X509_get0_notAfter(x)),
             1);
    CHECK_EQ(days, NECTAR_CA_VALID_DAYS);
    CHECK_EQ(secs, 0);
    time_t now = time(NULL);
    CHECK_EQ(X509_cmp_time(X509_get0_notBefore(x), &now), -1);
    time_t then = now - 120;
    CHECK_EQ(X509_cmp_time(X509_get0_notBefore(x), &then), 1);
    /* Extensions. */
    int crit = -1;
    BASIC_CONSTRAINTS *bc =
        X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    CHECK(bc != NULL && bc->ca);
    CHECK(bc->pathlen == NULL);
    CHECK_EQ(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    CHECK(ku != NULL);
    CHECK_EQ(crit, 1);
    CHECK_EQ(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    ASN1_BIT_STRING_free(ku);
    CHECK(X509_get0_subject_key_id(x) != NULL);
    /* Two CAs never share a serial or a key. */
    char *cert2, *key2;
    CHECK_EQ(nectar_ca_generate(&cert2, &key2, &err), 0);
    CHECK(strcmp(cert, cert2) != 0);
    CHECK(strcmp(key, key2) != 0);
    X509_free(x);
    nectar_secret_free(cert);
    nectar_secret_free(key);
    nectar_secret_free(cert2);
    nectar_secret_free(key2);
}

static void test_load_or_create_vault(void)
{
    struct cfix f;
    cfix_open(&f, 1);
    char *c1, *k1, *c2, *k2;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ca_load(f.kc, f.vault, &c1, &k1, &err), NECTAR_ENOENT);
    get(&f, &c1, &k1);
    get(&f, &c2, &k2);
    CHECK_STR_EQ(c1, c2);
    CHECK_STR_EQ(k1, k2);
    /* What is stored: a vault key blob, and envelopes, not PEM. */
    uint8_t *d;
    size_t n;
    CHECK_EQ(nectar_keychain_load(f.kc, NECTAR_CA_SERVICE_KEY,
                                  NECTAR_CA_ACCOUNT, &d, &n, &err),
             0);
    CHECK_EQ(n, NECTAR_ENVELOPE_OVERHEAD + strlen(k1));
    CHECK_EQ(d[0], 0x01);
    nectar_secret_free(d);
    CHECK_EQ(nectar_keychain_load(f.kc, NECTAR_CA_SERVICE_CERT,
                                  NECTAR_CA_ACCOUNT, &d, &n, &err),
             0);
    CHECK_EQ(n, NECTAR_ENVELOPE_OVERHEAD + strlen(c1));
    nectar_secret_free(d);
    CHECK_EQ(nectar_keychain_load(f.kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                  NECTAR_CA_ACCOUNT, &d, &n, &err),
             0);
    CHECK(memcmp(d, "NVKB", 4) == 0);
    nectar_secret_free(d);
    /* Load-only agrees, and can skip the key. */
    char *c3;
    CHECK_EQ(nectar_ca_load(f.kc, f.vault, &c3, NULL, &err), 0);
    CHECK_STR_EQ(c3, c1);
    nectar_secret_free(c3);
    nectar_secret_free(c1);
    nectar_secret_free(k1);
    nectar_secret_free(c2);
    nectar_secret_free(k2);
    cfix_close(&f);
}

/* Damage the stored set with `damage`, then check that load_or_create
 * replaces it with a new, working CA and logs why. */
static void heal_case(const char *what,
                      void (*damage)(struct cfix *f, const char *cert))
{
    struct cfix f;
    cfix_open(&f, 1);
    char *c1, *k1, *c2, *k2;
    get(&f, &c1, &k1);
    damage(&f, c1);
    log_seen[0] = '\0';
    nectar_log_set_sink(capture, NULL);
    get(&f, &c2, &k2);
    nectar_log_set_sink(NULL, NULL);
    if (strcmp(c1, c2) == 0)
        NECTAR_FAIL_AT("%s: the damaged CA was kept", what);
    if (strstr(log_seen, "replacing") == NULL)
        NECTAR_FAIL_AT("%s: no log line (got '%s')", what, log_seen);
    /* The replacement is stored whole: it loads again unchanged. */
    char *c3, *k3;
    get(&f, &c3, &k3);
    CHECK_STR_EQ(c3, c2);
    CHECK_STR_EQ(k3, k2);
    nectar_secret_free(c1);
    nectar_secret_free(k1);
    nectar_secret_free(c2);
    nectar_secret_free(k2);
    nectar_secret_free(c3);
    nectar_secret_free(k3);
    cfix_close(&f);
}

static void drop_key(struct cfix *f, const char *cert)
{
    (void)cert;
    CHECK_EQ(nectar_keychain_delete(f->kc, NECTAR_CA_SERVICE_KEY,
                                    NECTAR_CA_ACCOUNT, NULL),
             0);
}

static void drop_blob(struct cfix *f, const char *cert)
{
    (void)cert;
    CHECK_EQ(nectar_keychain_delete(f->kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                    NECTAR_CA_ACCOUNT, NULL),
             0);
}

static void garble_cert(struct cfix *f, const char *cert)
{
    uint8_t junk[200];
    memset(junk, 0x01, sizeof(junk));
    (void)cert;
    CHECK_EQ(nectar_keychain_store(f->kc, NECTAR_CA_SERVICE_CERT,
                                   NECTAR_CA_ACCOUNT, junk, sizeof(junk), NULL),
             0);
}

static void other_vault_key(struct cfix *f, const char *cert)
{
    uint8_t *blob;
    size_t n;
    (void)cert;
    CHECK_EQ(nectar_vault_create_key(f->vault, &blob, &n, NULL), 0);
    CHECK_EQ(nectar_keychain_store(f->kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                   NECTAR_CA_ACCOUNT, blob, n, NULL),
             0);
    nectar_secret_free(blob);
}

static void plaintext_leftovers(struct cfix *f, const char *cert)
{
    char *c, *k;
    CHECK_EQ(nectar_ca_generate(&c, &k, NULL), 0);
    (void)cert;
    CHECK_EQ(nectar_keychain_store(f->kc, NECTAR_CA_SERVICE_CERT,
                                   NECTAR_CA_ACCOUNT, c, strlen(c), NULL),
             0);
    CHECK_EQ(nectar_keychain_store(f->kc, NECTAR_CA_SERVICE_KEY,
                                   NECTAR_CA_ACCOUNT, k, strlen(k), NULL),
             0);
    nectar_secret_free(c);
    nectar_secret_free(k);
}

/* Key and certificate each decrypt, but belong to different CAs. */
static void mismatched_pair(struct cfix *f, const char *cert)
{
    char *c, *k;
    uint8_t *blob, *env;
    size_t blob_len, env_len;
    (void)cert;
    CHECK_EQ(nectar_ca_generate(&c, &k, NULL), 0);
    CHECK_EQ(nectar_keychain_load(f->kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                  NECTAR_CA_ACCOUNT, &blob, &blob_len, NULL),
             0);
    CHECK_EQ(nectar_vault_encrypt(f->vault, blob, blob_len, (const uint8_t *)k,
                                  strlen(k), &env, &env_len, NULL),
             0);
    CHECK_EQ(nectar_keychain_store(f->kc, NECTAR_CA_SERVICE_KEY,
                                   NECTAR_CA_ACCOUNT, env, env_len, NULL),
             0);
    nectar_secret_free(blob);
    nectar_secret_free(env);
    nectar_secret_free(c);
    nectar_secret_free(k);
}

static void test_self_heal(void)
{
    heal_case("key missing", drop_key);
    heal_case("vault blob missing", drop_blob);
    heal_case("cert envelope garbled", garble_cert);
    heal_case("blob of another key", other_vault_key);
    heal_case("plaintext leftovers", plaintext_leftovers);
    heal_case("key of another CA", mismatched_pair);
}

static void test_plain_path(void)
{
    struct cfix f;
    cfix_open(&f, 0);
    char *c1, *k1, *c2, *k2;
    get(&f, &c1, &k1);
    uint8_t *d;
    size_t n;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_keychain_load(f.kc, NECTAR_CA_SERVICE_CERT,
                                  NECTAR_CA_ACCOUNT, &d, &n, &err),
             0);
    CHECK_EQ(n, strlen(c1));
    CHECK_MEM_EQ(d, c1, n);
    nectar_secret_free(d);
    /* An orphaned vault blob (from a machine that had a vault) goes. */
    CHECK_EQ(nectar_keychain_store(f.kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                   NECTAR_CA_ACCOUNT, "blob", 4, &err),
             0);
    get(&f, &c2, &k2);
    CHECK_STR_EQ(c1, c2);
    CHECK_EQ(nectar_keychain_load(f.kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                  NECTAR_CA_ACCOUNT, &d, &n, &err),
             NECTAR_ENOENT);
    nectar_secret_free(c1);
    nectar_secret_free(k1);
    nectar_secret_free(c2);
    nectar_secret_free(k2);
    /* Wipe: everything goes, and is idempotent. */
    CHECK_EQ(nectar_ca_wipe(f.kc, &err), 0);
    CHECK_EQ(nectar_ca_wipe(f.kc, &err), 0);
    CHECK_EQ(nectar_ca_load(f.kc, NULL, &c1, &k1, &err), NECTAR_ENOENT);
    cfix_close(&f);
}

static void test_rotate(void)
{
    struct cfix f;
    cfix_open(&f, 1);
    char *c1, *k1, *c2, *k2, *c3, *k3;
    uint8_t *der1, *prev;
    size_t der1_len, prev_len;
    nectar_error_t err = {0};
    /* Rotating with nothing stored just creates one. */
    CHECK_EQ(nectar_ca_rotate(f.kc, f.vault, &c1, &k1, &prev, &prev_len, &err),
             0);
    CHECK(prev == NULL);
    CHECK_EQ(nectar_ca_cert_der(c1, &der1, &der1_len, &err), 0);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, der1, der1_len, &err), 1);
    CHECK_EQ(nectar_ca_rotate(f.kc, f.vault, &c2, &k2, &prev, &prev_len, &err),
             0);
    CHECK(strcmp(c1, c2) != 0);
    CHECK_EQ(prev_len, der1_len);
    CHECK_MEM_EQ(prev, der1, der1_len);
    /* The certificate items moved to the new CA. */
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, der1, der1_len, &err), 0);
    uint8_t *der2;
    size_t der2_len;
    CHECK_EQ(nectar_ca_cert_der(c2, &der2, &der2_len, &err), 0);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, der2, der2_len, &err), 1);
    get(&f, &c3, &k3);
    CHECK_STR_EQ(c3, c2);
    CHECK_STR_EQ(k3, k2);
    nectar_secret_free(der2);
    CHECK_EQ(nectar_ca_cert_der("not pem", &der2, &der2_len, &err),
             NECTAR_EPARSE);
    CHECK(der2 == NULL);
    nectar_secret_free(der1);
    nectar_secret_free(prev);
    nectar_secret_free(c1);
    nectar_secret_free(k1);
    nectar_secret_free(c2);
    nectar_secret_free(k2);
    nectar_secret_free(c3);
    nectar_secret_free(k3);
    cfix_close(&f);
}

static void test_install_uninstall(void)
{
    struct cfix f;
    cfix_open(&f, 1);
    uint8_t *der = NULL, *der2 = NULL;
    size_t len = 0, len2 = 0;
    nectar_error_t err = {0};
    /* Nothing stored: uninstall is a no-op. */
    CHECK_EQ(nectar_ca_uninstall(f.kc, f.vault, &der, &len, &err), 0);
    CHECK(der == NULL);
    /* Install creates the CA and its certificate item. */
    CHECK_EQ(nectar_ca_install(f.kc, f.vault, &der, &len, &err), 0);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, der, len, &err), 1);
    char *cert, *key;
    get(&f, &cert, &key);
    uint8_t *cur;
    size_t cur_len;
    CHECK_EQ(nectar_ca_cert_der(cert, &cur, &cur_len, &err), 0);
    CHECK_EQ(cur_len, len);
    CHECK_MEM_EQ(cur, der, len);
    /* Uninstall removes the item, keeps the CA. */
    CHECK_EQ(nectar_ca_uninstall(f.kc, f.vault, &der2, &len2, &err), 0);
    CHECK_EQ(len2, len);
    CHECK_MEM_EQ(der2, der, len);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, der, len, &err), 0);
    char *cert2, *key2;
    get(&f, &cert2, &key2);
    CHECK_STR_EQ(cert2, cert);
    nectar_secret_free(der);
    nectar_secret_free(der2);
    nectar_secret_free(cur);
    nectar_secret_free(cert);
    nectar_secret_free(key);
    nectar_secret_free(cert2);
    nectar_secret_free(key2);
    cfix_close(&f);
}

static void test_tpm_ca(void)
{
    struct test_swtpm t;
    test_swtpm_start(&t);
    char dir[64], store[128];
    st_tempdir(dir, sizeof(dir));
    snprintf(store, sizeof(store), "%s/store", dir);
    char *certs[2], *keys[2];
    for (int round = 0; round < 2; round++) {
        /* Fresh handles each round: as two daemon starts would. */
        nectar_vault_options_t vo = {.backend = "tpm2", .tpm_tcti = t.tcti};
        struct cfix f = {.vault = NULL};
        nectar_error_t err = {0};
        CHECK_EQ(nectar_vault_open(&vo, &f.vault, &err), 0);
        nectar_keychain_options_t ko = {
            .backend = "file", .dir = store, .vault = f.vault};
        CHECK_EQ(nectar_keychain_open(&ko, &f.kc, &err), 0);
        CHECK_STR_EQ(nectar_keychain_protection(f.kc), "vault-sealed:tpm2");
        get(&f, &certs[round], &keys[round]);
        nectar_keychain_close(f.kc);
        nectar_vault_close(f.vault);
    }
    CHECK_STR_EQ(certs[0], certs[1]);
    CHECK_STR_EQ(keys[0], keys[1]);
    for (int i = 0; i < 2; i++) {
        nectar_secret_free(certs[i]);
        nectar_secret_free(keys[i]);
    }
    st_rmrf(dir);
    test_swtpm_stop(&t);
}

int main(int argc, char **argv)
{
    static const nectar_test_t tests[] = {
        {"profile", test_profile},
        {"load_or_create_vault", test_load_or_create_vault},
        {"self_heal", test_self_heal},
        {"plain_path", test_plain_path},
        {"rotate", test_rotate},
        {"install_uninstall", test_install_uninstall},
        {"tpm_ca", test_tpm_ca},
        {NULL, NULL},
    };
    return nectar_test_main(argc, argv, tests);
}
