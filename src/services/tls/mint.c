/*
 * mint.c - the in-memory MITM CA and its leaf cache (see mint.h).
 */
#include "services/tls/mint.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "nectar/log.h"
#include "services/tls/lru.h"

#define LEAF_DAYS         90
#define LEAF_CACHE_TTL_MS (89ull * 24 * 3600 * 1000)

struct tls_ca {
    atomic_int refs;
    X509 *cert;
    EVP_PKEY *key;
    EVP_PKEY *leaf_key;
    char *cert_pem;
    tls_lru_t *cache; /* host -> X509* */
};

static void *leaf_dup(void *v)
{
    X509_up_ref(v);
    return v;
}

static void leaf_free(void *v)
{
    X509_free(v);
}

static char *bio_take(BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = n > 0 ? nectar_strndup(p, (size_t)n) : NULL;
    BIO_free(b);
    return out;
}

static char *pem_of(X509 *cert)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL || PEM_write_bio_X509(b, cert) != 1) {
        BIO_free(b);
        return NULL;
    }
    return bio_take(b);
}

static void ca_free(tls_ca_t *ca)
{
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    EVP_PKEY_free(ca->leaf_key);
    nectar_free(ca->cert_pem);
    tls_lru_free(ca->cache);
    nectar_free(ca);
}

static int load_pair(tls_ca_t *ca, const char *cert_pem, const char *key_pem,
                     nectar_error_t *err)
{
    BIO *cb = BIO_new_mem_buf(cert_pem, -1);
    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    if (cb == NULL || kb == NULL) {
        BIO_free(cb);
        BIO_free(kb);
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    }
    ca->cert = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    ca->key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    BIO_free(cb);
    BIO_free(kb);
    ERR_clear_error();
    if (ca->cert == NULL)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "ca_cert_pem: not a PEM certificate");
    if (ca->key == NULL)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "ca_key_pem: not a PEM private key");
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        ERR_clear_error();
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ca_key_pem does not match ca_cert_pem");
    }
    return 0;
}

int tls_ca_from_pem(const char *cert_pem, const char *key_pem, size_t cache_max,
                    tls_ca_t **out, nectar_error_t *err)
{
    if (cert_pem == NULL || key_pem == NULL || out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "missing CA PEM");
    tls_ca_t *ca = nectar_calloc(1, sizeof(*ca));
    if (ca == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    atomic_init(&ca->refs, 1);
    int rc = load_pair(ca, cert_pem, key_pem, err);
    if (rc == 0) {
        ca->leaf_key = EVP_EC_gen("P-256");
        ca->cert_pem = pem_of(ca->cert);
        ca->cache = tls_lru_new(cache_max ? cache_max : TLS_LEAF_CACHE_DEFAULT,
                                LEAF_CACHE_TTL_MS, leaf_dup, leaf_free);
        if (ca->leaf_key == NULL || ca->cert_pem == NULL || ca->cache == NULL)
            rc = nectar_error_set(err, NECTAR_ECRYPTO,
                                  "cannot create the leaf key");
    }
    if (rc != 0) {
        ca_free(ca);
        return rc;
    }
    *out = ca;
    return 0;
}

tls_ca_t *tls_ca_ref(tls_ca_t *ca)
{
    atomic_fetch_add(&ca->refs, 1);
    return ca;
}

void tls_ca_unref(tls_ca_t *ca)
{
    if (ca != NULL && atomic_fetch_sub(&ca->refs, 1) == 1)
        ca_free(ca);
}

X509 *tls_ca_cert(const tls_ca_t *ca)
{
    return ca->cert;
}

const char *tls_ca_cert_pem(const tls_ca_t *ca)
{
    return ca->cert_pem;
}

EVP_PKEY *tls_ca_leaf_key(const tls_ca_t *ca)
{
    return ca->leaf_key;
}

size_t tls_ca_cache_size(tls_ca_t *ca)
{
    return tls_lru_size(ca->cache);
}

static bool valid_host(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                  c == ':';
        if (!ok)
            return false;
    }
    return true;
}

static bool is_ip_literal(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

static bool add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (ext == NULL)
        return false;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1;
}

static bool set_serial(X509 *x)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return false;
    raw[0] &= 0x7f; /* positive */
    raw[0] |= 0x01; /* and never zero-padded away */
    BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
    bool ok =
        bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

static bool fill_leaf(tls_ca_t *ca, X509 *x, const char *host)
{
    char san[300];
    bool ip = is_ip_literal(host);
    snprintf(san, sizeof(san), "%s:%s", ip ? "IP" : "DNS", host);
    X509_NAME *name = X509_get_subject_name(x);
    /* A CN is limited to 64 characters; the SAN is what clients check. */
    if (strlen(host) <= 64 &&
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   (const unsigned char *)host, -1, -1, 0) != 1)
        return false;
    if (X509_set_version(x, 2) != 1 || !set_serial(x) ||
        X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -60) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)LEAF_DAYS * 86400) ==
            NULL ||
        X509_set_pubkey(x, ca->leaf_key) != 1)
        return false;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca->cert, x, NULL, NULL, 0);
    return add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") &&
           add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") &&
           add_ext(x, &ctx, NID_ext_key_usage, "serverAuth") &&
           add_ext(x, &ctx, NID_subject_key_identifier, "hash") &&
           add_ext(x, &ctx, NID_authority_key_identifier, "keyid,issuer") &&
           add_ext(x, &ctx, NID_subject_alt_name, san) &&
           X509_sign(x, ca->key, EVP_sha256()) > 0;
}

static X509 *mint(tls_ca_t *ca, const char *host)
{
    X509 *x = X509_new();
    if (x == NULL || !fill_leaf(ca, x, host)) {
        unsigned long e = ERR_get_error();
        nectar_log(NECTAR_LOG_WARN, "tls", "minting a leaf for %s failed: %s",
                   host, e ? ERR_reason_error_string(e) : "out of memory");
        ERR_clear_error();
        X509_free(x);
        return NULL;
    }
    return x;
}

X509 *tls_ca_leaf(tls_ca_t *ca, const char *host)
{
    if (host == NULL || !valid_host(host))
        return NULL;
    X509 *leaf = tls_lru_get(ca->cache, host);
    if (leaf != NULL)
        return leaf;
    /* Minted outside the cache lock; two flows racing for a new host
     * both mint and the later insert wins, which is harmless. */
    leaf = mint(ca, host);
    if (leaf == NULL)
        return NULL;
    X509_up_ref(leaf);
    tls_lru_put(ca->cache, host, leaf);
    return leaf;
}
