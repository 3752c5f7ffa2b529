/*
 * crypto.h - the few OpenSSL 3 primitives nectar's secrets code needs:
 * P-256 keys and ECDH, HKDF-SHA256, AES-256-GCM and randomness.
 *
 * Shared by the vault (envelope, software backend) and the file keychain.
 * All functions are callable from any thread, borrow their inputs, and
 * return 0 or a negative NECTAR_E* code with a message in *err.
 */
#ifndef NECTAR_VAULT_CRYPTO_H
#define NECTAR_VAULT_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "nectar/error.h"

#define NECTAR__GCM_KEY_LEN     32
#define NECTAR__GCM_NONCE_LEN   12
#define NECTAR__GCM_TAG_LEN     16
#define NECTAR__P256_SCALAR_LEN 32

/* Fills buf with len bytes from the OpenSSL CSPRNG. */
int nectar__random(void *buf, size_t len, nectar_error_t *err);

/* A fresh P-256 key pair; *out owned by the caller (EVP_PKEY_free). */
int nectar__p256_generate(EVP_PKEY **out, nectar_error_t *err);

/* The public point of key, X9.63 uncompressed (65 bytes). */
int nectar__p256_public(EVP_PKEY *key, uint8_t pub[65], nectar_error_t *err);

/* A public key from 65 bytes.  Rejects anything but an uncompressed point
 * on the curve (NECTAR_EPARSE). */
int nectar__p256_from_public(const uint8_t pub[65], EVP_PKEY **out,
                             nectar_error_t *err);

/* The private scalar of key, big-endian, left-padded to 32 bytes. */
int nectar__p256_scalar(EVP_PKEY *key, uint8_t d[32], nectar_error_t *err);

/* A key pair from a scalar and its public point. */
int nectar__p256_from_scalar(const uint8_t d[32], const uint8_t pub[65],
                             EVP_PKEY **out, nectar_error_t *err);

/* z = X coordinate of priv * peer (32 bytes). */
int nectar__p256_ecdh(EVP_PKEY *priv, EVP_PKEY *peer, uint8_t z[32],
                      nectar_error_t *err);

/* RFC 5869 extract-and-expand with SHA-256; out_len bytes into out. */
int nectar__hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt,
                        size_t salt_len, const uint8_t *info, size_t info_len,
                        uint8_t *out, size_t out_len, nectar_error_t *err);

/* AES-256-GCM.  ct has room for len bytes; in place (ct == pt) is fine.
 * open returns NECTAR_EAUTH when the tag does not verify, and then leaves
 * pt zeroed rather than holding unauthenticated bytes. */
int nectar__gcm_seal(const uint8_t key[32], const uint8_t nonce[12],
                     const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                     size_t len, uint8_t *ct, uint8_t tag[16],
                     nectar_error_t *err);
int nectar__gcm_open(const uint8_t key[32], const uint8_t nonce[12],
                     const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                     size_t len, const uint8_t tag[16], uint8_t *pt,
                     nectar_error_t *err);

/* Reports the newest OpenSSL error as NECTAR_ECRYPTO, prefixed by what. */
int nectar__crypto_error(nectar_error_t *err, const char *what);

#endif
