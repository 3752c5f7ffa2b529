/*
 * identity.c - PKCS#12 identities on top of plain keychain secrets.
 *
 * The PKCS#12 file is parsed once, at import, with OpenSSL; what is stored
 * is a PEM bundle (PKCS#8 private key, then the leaf certificate, then the
 * rest of the chain).  That is the form the TLS code consumes, it works on
 * every backend (rama also keeps private keys as PEM inside generic
 * passwords), and the PKCS#12 password never needs to be stored.
 * Every buffer that holds the private key is OpenSSL secure-heap memory
 * (BIO_s_secmem) or nectar secret memory.
 */
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include "common/alloc.h"
#include "keychain/keychain_int.h"
#include "vault/crypto.h"

#define KEY_BEGIN  "-----BEGIN PRIVATE KEY-----"
#define KEY_END    "-----END PRIVATE KEY-----\n"
#define CERT_BEGIN "-----BEGIN CERTIFICATE-----"

/* Copies a memory BIO's contents into secret memory, NUL-terminated. */
static int bio_take(BIO *bio, char **out, size_t *len, nectar_error_t *err)
{
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    if (n < 0)
        return nectar__crypto_error(err, "PEM buffer");
    char *copy = nectar_secret_alloc((size_t)n + 1);
    if (copy == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    memcpy(copy, p, (size_t)n);
    copy[n] = '\0';
    *out = copy;
    *len = (size_t)n;
    return 0;
}

/* PKCS12_parse cannot tell a wrong password from a damaged file; the MAC
 * check can, so it runs first. */
static int parse_p12(const uint8_t *der, size_t len, const char *password,
                     EVP_PKEY **key, X509 **cert, STACK_OF(X509) * *ca,
                     nectar_error_t *err)
{
    const unsigned char *p = der;
    PKCS12 *p12 = d2i_PKCS12(NULL, &p, (long)len);
    if (p12 == NULL) {
        ERR_clear_error();
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: not a PKCS#12 file");
    }
    int rc = 0;
    if (PKCS12_mac_present(p12) && PKCS12_verify_mac(p12, password, -1) != 1 &&
        PKCS12_verify_mac(p12, NULL, 0) != 1) {
        rc = nectar_error_set(err, NECTAR_EAUTH,
                              "keychain: wrong PKCS#12 password");
    } else if (PKCS12_parse(p12, password, key, cert, ca) != 1) {
        rc = nectar__crypto_error(err,
                                  "PKCS#12 parse (legacy RC2/3DES files need "
                                  "OpenSSL's legacy provider)");
    }
    ERR_clear_error();
    PKCS12_free(p12);
    return rc;
}

static int write_bundle(BIO *bio, EVP_PKEY *key, X509 *cert,
                        STACK_OF(X509) * ca)
{
    if (PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) !=
            1 ||
        PEM_write_bio_X509(bio, cert) != 1)
        return 0;
    for (int i = 0; ca != NULL && i < sk_X509_num(ca); i++) {
        if (PEM_write_bio_X509(bio, sk_X509_value(ca, i)) != 1)
            return 0;
    }
    return 1;
}

int nectar_keychain_import_p12(nectar_keychain_t *kc, const char *service,
                               const char *account, const uint8_t *p12,
                               size_t len, const char *password,
                               nectar_error_t *err)
{
    if (p12 == NULL || len == 0 || len > NECTAR_KEYCHAIN_DATA_MAX)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "keychain: empty or oversized PKCS#12 data");
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    STACK_OF(X509) *ca = NULL;
    int rc = parse_p12(p12, len, password != NULL ? password : "", &key, &cert,
                       &ca, err);
    if (rc == 0 && (key == NULL || cert == NULL))
        rc = nectar_error_set(err, NECTAR_EINVAL,
                              "keychain: PKCS#12 holds no %s",
                              key == NULL ? "private key" : "certificate");
    BIO *bio = NULL;
    char *pem = NULL;
    size_t pem_len = 0;
    if (rc == 0) {
        bio = BIO_new(BIO_s_secmem());
        if (bio == NULL || !write_bundle(bio, key, cert, ca))
            rc = nectar__crypto_error(err, "PEM encoding");
    }
    if (rc == 0)
        rc = bio_take(bio, &pem, &pem_len, err);
    if (rc == 0)
        rc = nectar_keychain_store(kc, service, account, pem, pem_len, err);
    nectar_secret_free(pem);
    BIO_free(bio);
    EVP_PKEY_free(key);
    X509_free(cert);
    sk_X509_pop_free(ca, X509_free);
    return rc;
}

void nectar_identity_free(nectar_identity_t *id)
{
    if (id == NULL)
        return;
    nectar_secret_free(id->key_pem);
    nectar_free(id->chain_pem);
    nectar_free(id);
}

/* Splits a stored bundle into key and chain, checking both parse. */
static int split_bundle(const char *pem, size_t len, nectar_identity_t *id,
                        nectar_error_t *err)
{
    const char *kb = strstr(pem, KEY_BEGIN);
    const char *ke = kb != NULL ? strstr(kb, KEY_END) : NULL;
    const char *cb = ke != NULL ? strstr(ke, CERT_BEGIN) : NULL;
    if (kb == NULL || ke == NULL || cb == NULL)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: secret is not an identity bundle");
    size_t key_len = (size_t)(ke - kb) + strlen(KEY_END);
    id->key_pem = nectar_secret_alloc(key_len + 1);
    id->chain_pem = nectar_strndup(cb, len - (size_t)(cb - pem));
    if (id->key_pem == NULL || id->chain_pem == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    memcpy(id->key_pem, kb, key_len);
    id->key_pem[key_len] = '\0';
    /* Both halves must parse: a bundle is only handed out whole. */
    BIO *bio = BIO_new_mem_buf(id->key_pem, (int)key_len);
    EVP_PKEY *key =
        bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    EVP_PKEY_free(key);
    BIO_free(bio);
    bio = BIO_new_mem_buf(id->chain_pem, -1);
    X509 *x;
    while (bio != NULL &&
           (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        id->chain_len++;
        X509_free(x);
    }
    BIO_free(bio);
    ERR_clear_error();
    if (key == NULL || id->chain_len == 0)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: identity bundle does not parse");
    return 0;
}

int nectar_keychain_load_identity(nectar_keychain_t *kc, const char *service,
                                  const char *account, nectar_identity_t **out,
                                  nectar_error_t *err)
{
    if (out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "load_identity: no out");
    *out = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = nectar_keychain_load(kc, service, account, &data, &len, err);
    if (rc != 0)
        return rc;
    /* Secret buffers are page-rounded, so there is room for the NUL. */
    char *pem = nectar_secret_alloc(len + 1);
    nectar_identity_t *id = nectar_calloc(1, sizeof(*id));
    if (pem == NULL || id == NULL) {
        rc = nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    } else {
        memcpy(pem, data, len);
        pem[len] = '\0';
        rc = split_bundle(pem, len, id, err);
    }
    nectar_secret_free(data);
    nectar_secret_free(pem);
    if (rc != 0) {
        nectar_identity_free(id);
        return rc;
    }
    *out = id;
    return 0;
}
