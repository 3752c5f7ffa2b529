/*
 * ca.c - the MITM root CA lifecycle on the keychain and the vault
 * (contract in include/nectar/ca.h): generate, store, load-or-create with
 * self-healing of damaged sets, rotate.
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/alloc.h"
#include "nectar/ca.h"
#include "nectar/log.h"
#include "vault/crypto.h"

/* ---- generation ----------------------------------------------------- */

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

static int fill_cert(X509 *x, EVP_PKEY *key)
{
    BIGNUM *serial = BN_new();
    X509_NAME *name = X509_get_subject_name(x);
    const long before = -60;
    const long after = before + (long)NECTAR_CA_VALID_DAYS * 86400L;
    int ok = serial != NULL && X509_set_version(x, 2) == 1 &&
             BN_rand(serial, 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
             BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) != NULL &&
             X509_gmtime_adj(X509_getm_notBefore(x), before) != NULL &&
             X509_gmtime_adj(X509_getm_notAfter(x), after) != NULL &&
             X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                        (const unsigned char *)NECTAR_CA_ORG,
                                        -1, -1, 0) == 1 &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                        (const unsigned char *)NECTAR_CA_CN, -1,
                                        -1, 0) == 1 &&
             X509_set_issuer_name(x, name) == 1 &&
             X509_set_pubkey(x, key) == 1 &&
             add_ext(x, NID_basic_constraints, "critical,CA:TRUE") &&
             add_ext(x, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             add_ext(x, NID_subject_key_identifier, "hash") &&
             X509_sign(x, key, EVP_sha256()) > 0;
    BN_free(serial);
    return ok;
}

/* Copies a BIO's contents into secret memory as a C string. */
static int bio_string(BIO *bio, char **out, nectar_error_t *err)
{
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    char *s = n >= 0 ? nectar_secret_alloc((size_t)n + 1) : NULL;
    if (s == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "ca: out of memory");
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    *out = s;
    return 0;
}

int nectar_ca_generate(char **cert_pem, char **key_pem, nectar_error_t *err)
{
    if (cert_pem == NULL || key_pem == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ca_generate: no out");
    *cert_pem = *key_pem = NULL;
    EVP_PKEY *key = NULL;
    int rc = nectar__p256_generate(&key, err);
    if (rc != 0)
        return rc;
    X509 *x = X509_new();
    BIO *cb = BIO_new(BIO_s_mem());
    BIO *kb = BIO_new(BIO_s_secmem());
    if (x == NULL || cb == NULL || kb == NULL || !fill_cert(x, key) ||
        PEM_write_bio_X509(cb, x) != 1 ||
        PEM_write_bio_PKCS8PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) != 1)
        rc = nectar__crypto_error(err, "CA generation");
    if (rc == 0)
        rc = bio_string(cb, cert_pem, err);
    if (rc == 0)
        rc = bio_string(kb, key_pem, err);
    if (rc != 0) {
        nectar_secret_free(*cert_pem);
        *cert_pem = NULL;
    }
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

int nectar_ca_cert_der(const char *cert_pem, uint8_t **der, size_t *len,
                       nectar_error_t *err)
{
    *der = NULL;
    *len = 0;
    BIO *bio = cert_pem != NULL ? BIO_new_mem_buf(cert_pem, -1) : NULL;
    X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    int n = x != NULL ? i2d_X509(x, NULL) : -1;
    uint8_t *out = n > 0 ? nectar_secret_alloc((size_t)n) : NULL;
    unsigned char *p = out;
    if (out != NULL && i2d_X509(x, &p) != n) {
        nectar_secret_free(out);
        out = NULL;
    }
    X509_free(x);
    ERR_clear_error();
    if (out == NULL)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "ca: not a PEM certificate");
    *der = out;
    *len = (size_t)n;
    return 0;
}

/* Both PEMs parse and the key belongs to the certificate. */
static int pair_valid(const char *cert_pem, const char *key_pem)
{
    BIO *cb = BIO_new_mem_buf(cert_pem, -1);
    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    X509 *x = cb != NULL ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k =
        kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    int ok = x != NULL && k != NULL && X509_check_private_key(x, k) == 1;
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    ERR_clear_error();
    return ok;
}

/* ---- storage -------------------------------------------------------- */

/* What is stored, loaded as raw bytes (NULL when absent). */
struct ca_items {
    uint8_t *blob, *cert, *key;
    size_t blob_len, cert_len, key_len;
};

static void items_free(struct ca_items *it)
{
    nectar_secret_free(it->blob);
    nectar_secret_free(it->cert);
    nectar_secret_free(it->key);
    memset(it, 0, sizeof(*it));
}

/* Loads one item; absent is fine (NULL), other errors are returned. */
static int load_opt(nectar_keychain_t *kc, const char *service, uint8_t **data,
                    size_t *len, nectar_error_t *err)
{
    int rc =
        nectar_keychain_load(kc, service, NECTAR_CA_ACCOUNT, data, len, err);
    return rc == NECTAR_ENOENT ? 0 : rc;
}

static int items_load(nectar_keychain_t *kc, struct ca_items *it,
                      nectar_error_t *err)
{
    memset(it, 0, sizeof(*it));
    int rc = load_opt(kc, NECTAR_CA_SERVICE_VAULT_KEY, &it->blob, &it->blob_len,
                      err);
    if (rc == 0)
        rc =
            load_opt(kc, NECTAR_CA_SERVICE_CERT, &it->cert, &it->cert_len, err);
    if (rc == 0)
        rc = load_opt(kc, NECTAR_CA_SERVICE_KEY, &it->key, &it->key_len, err);
    if (rc != 0)
        items_free(it);
    return rc;
}

int nectar_ca_wipe(nectar_keychain_t *kc, nectar_error_t *err)
{
    const char *services[] = {NECTAR_CA_SERVICE_VAULT_KEY,
                              NECTAR_CA_SERVICE_CERT, NECTAR_CA_SERVICE_KEY};
    int first = 0;
    for (int i = 0; i < 3; i++) {
        int rc =
            nectar_keychain_delete(kc, services[i], NECTAR_CA_ACCOUNT, err);
        if (rc != 0 && first == 0)
            first = rc;
    }
    return first;
}

/* A PEM in secret memory from raw stored bytes. */
static char *pem_string(const uint8_t *p, size_t n)
{
    char *s = nectar_secret_alloc(n + 1);
    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static char *open_envelope(nectar_vault_t *vault, const struct ca_items *it,
                           const uint8_t *env, size_t env_len,
                           nectar_error_t *err)
{
    uint8_t *pt = NULL;
    size_t n = 0;
    if (nectar_vault_decrypt(vault, it->blob, it->blob_len, env, env_len, &pt,
                             &n, err) != 0)
        return NULL;
    char *s = pem_string(pt, n);
    nectar_secret_free(pt);
    return s;
}

/* Turns a complete stored set into PEMs, or says why it cannot. */
static int items_decode(nectar_vault_t *vault, const struct ca_items *it,
                        char **cert_pem, char **key_pem, nectar_error_t *err)
{
    *cert_pem = *key_pem = NULL;
    int complete = vault != NULL
                       ? it->blob != NULL && it->cert != NULL && it->key
                       : it->cert != NULL && it->key != NULL;
    if (!complete)
        return nectar_error_set(err, NECTAR_ENOENT,
                                it->blob || it->cert || it->key
                                    ? "stored CA set is partial"
                                    : "no CA stored");
    if (vault != NULL) {
        *cert_pem = open_envelope(vault, it, it->cert, it->cert_len, err);
        if (*cert_pem != NULL)
            *key_pem = open_envelope(vault, it, it->key, it->key_len, err);
    } else {
        *cert_pem = pem_string(it->cert, it->cert_len);
        *key_pem = pem_string(it->key, it->key_len);
    }
    if (*cert_pem == NULL || *key_pem == NULL ||
        !pair_valid(*cert_pem, *key_pem)) {
        int decrypted = *cert_pem != NULL && *key_pem != NULL;
        nectar_secret_free(*cert_pem);
        nectar_secret_free(*key_pem);
        *cert_pem = *key_pem = NULL;
        if (decrypted)
            nectar_error_set(err, NECTAR_EPARSE,
                             "stored CA does not parse (or key and "
                             "certificate do not match)");
        return NECTAR_ENOENT;
    }
    return 0;
}

static int store_pair(nectar_keychain_t *kc, nectar_vault_t *vault,
                      const char *cert_pem, const char *key_pem,
                      nectar_error_t *err)
{
    if (vault == NULL) {
        int rc =
            nectar_keychain_store(kc, NECTAR_CA_SERVICE_CERT, NECTAR_CA_ACCOUNT,
                                  cert_pem, strlen(cert_pem), err);
        if (rc == 0)
            rc = nectar_keychain_store(kc, NECTAR_CA_SERVICE_KEY,
                                       NECTAR_CA_ACCOUNT, key_pem,
                                       strlen(key_pem), err);
        return rc;
    }
    /* A fresh vault key per CA; blob first, so a crash part-way leaves a
     * partial set that the next start replaces. */
    uint8_t *blob = NULL, *cenv = NULL, *kenv = NULL;
    size_t blob_len = 0, cenv_len = 0, kenv_len = 0;
    int rc = nectar_vault_create_key(vault, &blob, &blob_len, err);
    if (rc == 0)
        rc = nectar_vault_encrypt(vault, blob, blob_len,
                                  (const uint8_t *)cert_pem, strlen(cert_pem),
                                  &cenv, &cenv_len, err);
    if (rc == 0)
        rc = nectar_vault_encrypt(vault, blob, blob_len,
                                  (const uint8_t *)key_pem, strlen(key_pem),
                                  &kenv, &kenv_len, err);
    if (rc == 0)
        rc = nectar_keychain_store(kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                   NECTAR_CA_ACCOUNT, blob, blob_len, err);
    if (rc == 0)
        rc = nectar_keychain_store(kc, NECTAR_CA_SERVICE_CERT,
                                   NECTAR_CA_ACCOUNT, cenv, cenv_len, err);
    if (rc == 0)
        rc = nectar_keychain_store(kc, NECTAR_CA_SERVICE_KEY, NECTAR_CA_ACCOUNT,
                                   kenv, kenv_len, err);
    nectar_secret_free(blob);
    nectar_secret_free(cenv);
    nectar_secret_free(kenv);
    return rc;
}

static int generate_and_store(nectar_keychain_t *kc, nectar_vault_t *vault,
                              char **cert_pem, char **key_pem,
                              nectar_error_t *err)
{
    int rc = nectar_ca_wipe(kc, err);
    if (rc == 0)
        rc = nectar_ca_generate(cert_pem, key_pem, err);
    if (rc == 0)
        rc = store_pair(kc, vault, *cert_pem, *key_pem, err);
    if (rc != 0) {
        nectar_secret_free(*cert_pem);
        nectar_secret_free(*key_pem);
        *cert_pem = *key_pem = NULL;
        return rc;
    }
    nectar_log(NECTAR_LOG_INFO, "ca", "created a new MITM root CA (%s)",
               vault != NULL ? "encrypted by the vault" : "plain PEM");
    return 0;
}

/* ---- public operations ---------------------------------------------- */

int nectar_ca_load(nectar_keychain_t *kc, nectar_vault_t *vault,
                   char **cert_pem, char **key_pem, nectar_error_t *err)
{
    if (cert_pem == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ca_load: no out");
    *cert_pem = NULL;
    if (key_pem != NULL)
        *key_pem = NULL;
    struct ca_items it;
    int rc = items_load(kc, &it, err);
    if (rc != 0)
        return rc;
    char *c = NULL, *k = NULL;
    rc = items_decode(vault, &it, &c, &k, err);
    items_free(&it);
    if (rc != 0)
        return rc;
    *cert_pem = c;
    if (key_pem != NULL)
        *key_pem = k;
    else
        nectar_secret_free(k);
    return 0;
}

int nectar_ca_load_or_create(nectar_keychain_t *kc, nectar_vault_t *vault,
                             char **cert_pem, char **key_pem,
                             nectar_error_t *err)
{
    if (cert_pem == NULL || key_pem == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ca: no out");
    *cert_pem = *key_pem = NULL;
    struct ca_items it;
    int rc = items_load(kc, &it, err);
    if (rc != 0)
        return rc; /* the keychain itself failed: do not wipe anything */
    nectar_error_t why = {0};
    rc = items_decode(vault, &it, cert_pem, key_pem, &why);
    /* One retry tolerates a transient vault error (a busy TPM). */
    if (rc != 0 && vault != NULL && it.blob && it.cert && it.key)
        rc = items_decode(vault, &it, cert_pem, key_pem, &why);
    int had_any = it.blob != NULL || it.cert != NULL || it.key != NULL;
    int orphan_blob = vault == NULL && it.blob != NULL;
    items_free(&it);
    if (rc == 0) {
        if (orphan_blob) /* left by an earlier run that had a vault */
            (void)nectar_keychain_delete(kc, NECTAR_CA_SERVICE_VAULT_KEY,
                                         NECTAR_CA_ACCOUNT, NULL);
        return 0;
    }
    if (had_any)
        nectar_log(NECTAR_LOG_WARN, "ca", "replacing the stored MITM CA: %s",
                   why.message);
    return generate_and_store(kc, vault, cert_pem, key_pem, err);
}

/* Best effort: a failure here leaves the new CA in place, logged. */
static void swap_cert_items(nectar_keychain_t *kc, const uint8_t *prev,
                            size_t prev_len, const char *cert_pem)
{
    nectar_error_t e = {0};
    if (prev != NULL &&
        nectar_keychain_cert_uninstall(kc, prev, prev_len, &e) != 0)
        nectar_log(NECTAR_LOG_WARN, "ca",
                   "could not uninstall the previous CA certificate: %s",
                   e.message);
    uint8_t *der = NULL;
    size_t len = 0;
    if (nectar_ca_cert_der(cert_pem, &der, &len, &e) != 0 ||
        nectar_keychain_cert_install(kc, der, len, &e) != 0)
        nectar_log(NECTAR_LOG_WARN, "ca",
                   "could not install the new CA certificate: %s", e.message);
    nectar_secret_free(der);
}

int nectar_ca_rotate(nectar_keychain_t *kc, nectar_vault_t *vault,
                     char **cert_pem, char **key_pem, uint8_t **prev_der,
                     size_t *prev_len, nectar_error_t *err)
{
    if (cert_pem == NULL || key_pem == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ca_rotate: no out");
    *cert_pem = *key_pem = NULL;
    if (prev_der != NULL)
        *prev_der = NULL;
    if (prev_len != NULL)
        *prev_len = 0;
    char *old = NULL;
    uint8_t *der = NULL;
    size_t der_len = 0;
    if (nectar_ca_load(kc, vault, &old, NULL, NULL) == 0)
        (void)nectar_ca_cert_der(old, &der, &der_len, NULL);
    nectar_secret_free(old);
    int rc = generate_and_store(kc, vault, cert_pem, key_pem, err);
    if (rc == 0)
        swap_cert_items(kc, der, der_len, *cert_pem);
    if (rc == 0 && prev_der != NULL) {
        *prev_der = der;
        if (prev_len != NULL)
            *prev_len = der_len;
        der = NULL;
    }
    nectar_secret_free(der);
    return rc;
}

int nectar_ca_install(nectar_keychain_t *kc, nectar_vault_t *vault,
                      uint8_t **der, size_t *der_len, nectar_error_t *err)
{
    if (der == NULL || der_len == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ca_install: no out");
    *der = NULL;
    *der_len = 0;
    char *cert = NULL, *key = NULL;
    int rc = nectar_ca_load_or_create(kc, vault, &cert, &key, err);
    nectar_secret_free(key);
    if (rc == 0)
        rc = nectar_ca_cert_der(cert, der, der_len, err);
    nectar_secret_free(cert);
    if (rc == 0)
        rc = nectar_keychain_cert_install(kc, *der, *der_len, err);
    if (rc != 0) {
        nectar_secret_free(*der);
        *der = NULL;
        *der_len = 0;
    }
    return rc;
}

int nectar_ca_uninstall(nectar_keychain_t *kc, nectar_vault_t *vault,
                        uint8_t **der, size_t *der_len, nectar_error_t *err)
{
    if (der == NULL || der_len == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ca_uninstall: no out");
    *der = NULL;
    *der_len = 0;
    char *cert = NULL;
    int rc = nectar_ca_load(kc, vault, &cert, NULL, err);
    if (rc == NECTAR_ENOENT)
        return 0;
    if (rc == 0)
        rc = nectar_ca_cert_der(cert, der, der_len, err);
    nectar_secret_free(cert);
    if (rc == 0)
        rc = nectar_keychain_cert_uninstall(kc, *der, *der_len, err);
    if (rc != 0) {
        nectar_secret_free(*der);
        *der = NULL;
        *der_len = 0;
    }
    return rc;
}
