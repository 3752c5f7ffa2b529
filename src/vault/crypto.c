/*
 * crypto.c - P-256, HKDF-SHA256, AES-256-GCM and randomness over OpenSSL 3
 * (see crypto.h).  Every temporary holding key material is wiped here, so
 * callers only have to wipe what they own.
 */
#include "vault/crypto.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "common/alloc.h"

#define P256_GROUP "prime256v1"

int nectar__crypto_error(nectar_error_t *err, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[128] = "no detail";
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    int rc = nectar_error_set(err, NECTAR_ECRYPTO, "%s: %s", what, buf);
    if (err != NULL)
        err->native = (long)e;
    return rc;
}

int nectar__random(void *buf, size_t len, nectar_error_t *err)
{
    if (len > 0 && RAND_bytes(buf, (int)len) != 1)
        return nectar__crypto_error(err, "RAND_bytes");
    return 0;
}

int nectar__p256_generate(EVP_PKEY **out, nectar_error_t *err)
{
    *out = EVP_EC_gen(P256_GROUP);
    if (*out == NULL)
        return nectar__crypto_error(err, "P-256 key generation");
    return 0;
}

int nectar__p256_public(EVP_PKEY *key, uint8_t pub[65], nectar_error_t *err)
{
    size_t len = 0;
    if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, pub, 65,
                                        &len) != 1 ||
        len != 65 || pub[0] != 0x04)
        return nectar__crypto_error(err, "P-256 public key export");
    return 0;
}

/* Builds a key from OSSL_PARAMs; selection says public or key pair. */
static int key_from_params(OSSL_PARAM *params, int selection, EVP_PKEY **out)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    int ok = ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
             EVP_PKEY_fromdata(ctx, out, selection, params) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

int nectar__p256_from_public(const uint8_t pub[65], EVP_PKEY **out,
                             nectar_error_t *err)
{
    *out = NULL;
    /* Only the uncompressed form is part of the envelope format; OpenSSL
     * would also take compressed or hybrid encodings. */
    if (pub[0] != 0x04)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "public key is not an uncompressed point");
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                 (char *)P256_GROUP, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
                                                  (void *)pub, 65);
    params[2] = OSSL_PARAM_construct_end();
    if (!key_from_params(params, EVP_PKEY_PUBLIC_KEY, out)) {
        ERR_clear_error();
        return nectar_error_set(err, NECTAR_EPARSE,
                                "public key is not a point on P-256");
    }
    return 0;
}

int nectar__p256_scalar(EVP_PKEY *key, uint8_t d[32], nectar_error_t *err)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &bn) != 1)
        return nectar__crypto_error(err, "P-256 private key export");
    int ok = BN_bn2binpad(bn, d, 32) == 32;
    BN_clear_free(bn);
    if (!ok)
        return nectar__crypto_error(err, "P-256 private key encoding");
    return 0;
}

int nectar__p256_from_scalar(const uint8_t d[32], const uint8_t pub[65],
                             EVP_PKEY **out, nectar_error_t *err)
{
    *out = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn = BN_secure_new();
    OSSL_PARAM *params = NULL;
    int ok = bld != NULL && bn != NULL && BN_bin2bn(d, 32, bn) != NULL &&
             OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                             P256_GROUP, 0) == 1 &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bn) == 1 &&
             OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                              65) == 1 &&
             (params = OSSL_PARAM_BLD_to_param(bld)) != NULL &&
             key_from_params(params, EVP_PKEY_KEYPAIR, out);
    OSSL_PARAM_free(params); /* d went to the secure block it clears */
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(bn);
    if (!ok)
        return nectar__crypto_error(err, "P-256 key import");
    return 0;
}

int nectar__p256_ecdh(EVP_PKEY *priv, EVP_PKEY *peer, uint8_t z[32],
                      nectar_error_t *err)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
    size_t len = 32;
    int ok = ctx != NULL && EVP_PKEY_derive_init(ctx) == 1 &&
             EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
             EVP_PKEY_derive(ctx, z, &len) == 1 && len == 32;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        nectar_wipe(z, 32);
        return nectar__crypto_error(err, "ECDH");
    }
    return 0;
}

int nectar__hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt,
                        size_t salt_len, const uint8_t *info, size_t info_len,
                        uint8_t *out, size_t out_len, nectar_error_t *err)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[5];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                                 (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                  (void *)ikm, ikm_len);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                  (void *)salt, salt_len);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                  (void *)info, info_len);
    params[4] = OSSL_PARAM_construct_end();
    int ok = ctx != NULL && EVP_KDF_derive(ctx, out, out_len, params) == 1;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    if (!ok)
        return nectar__crypto_error(err, "HKDF-SHA256");
    return 0;
}

int nectar__gcm_seal(const uint8_t key[32], const uint8_t nonce[12],
                     const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                     size_t len, uint8_t *ct, uint8_t tag[16],
                     nectar_error_t *err)
{
    if (len > INT32_MAX || aad_len > INT32_MAX)
        return nectar_error_set(err, NECTAR_ELIMIT, "AES-GCM input too long");
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int out = 0;
    int ok = ctx != NULL &&
             EVP_EncryptInit_ex2(ctx, EVP_aes_256_gcm(), key, nonce, NULL) &&
             (aad_len == 0 ||
              EVP_EncryptUpdate(ctx, NULL, &out, aad, (int)aad_len)) &&
             (len == 0 || EVP_EncryptUpdate(ctx, ct, &out, pt, (int)len)) &&
             EVP_EncryptFinal_ex(ctx, ct + len, &out) &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
    EVP_CIPHER_CTX_free(ctx);
    if (!ok)
        return nectar__crypto_error(err, "AES-256-GCM seal");
    return 0;
}

int nectar__gcm_open(const uint8_t key[32], const uint8_t nonce[12],
                     const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                     size_t len, const uint8_t tag[16], uint8_t *pt,
                     nectar_error_t *err)
{
    if (len > INT32_MAX || aad_len > INT32_MAX)
        return nectar_error_set(err, NECTAR_ELIMIT, "AES-GCM input too long");
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int out = 0;
    int ok = ctx != NULL &&
             EVP_DecryptInit_ex2(ctx, EVP_aes_256_gcm(), key, nonce, NULL) &&
             (aad_len == 0 ||
              EVP_DecryptUpdate(ctx, NULL, &out, aad, (int)aad_len)) &&
             (len == 0 || EVP_DecryptUpdate(ctx, pt, &out, ct, (int)len)) &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag);
    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        nectar_wipe(pt, len);
        return nectar__crypto_error(err, "AES-256-GCM open");
    }
    /* Final is where the tag is checked; until then pt is unauthenticated
     * and must not reach the caller. */
    ok = EVP_DecryptFinal_ex(ctx, pt + len, &out) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        ERR_clear_error();
        nectar_wipe(pt, len);
        return nectar_error_set(err, NECTAR_EAUTH,
                                "authentication tag mismatch (tampered data "
                                "or wrong key)");
    }
    return 0;
}
