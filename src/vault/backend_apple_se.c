/*
 * backend_apple_se.c - the Secure Enclave vault, over the C ABI of rama's
 * RamaAppleSecureEnclave Swift package (link that product; this file
 * only declares its symbols).
 *
 * The bridge owns the whole ECIES v1 construction (CryptoKit cannot hand
 * out a bare ECDH result), so this backend fills the seal/unseal slots;
 * the front still checks every envelope on the way in and out.  The blob
 * payload is CryptoKit's opaque, SE-wrapped dataRepresentation.  Keys are
 * created with accessibility "Always", the only class usable before the
 * first login, which a system extension needs.  The bridge does not
 * expose public keys, so that slot is NULL (NECTAR_ENOTSUP).
 *
 * Built only on Apple; no machine here compiles it, so it stays thin.
 */
#ifdef NECTAR_HAVE_SECURE_ENCLAVE

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "vault/vault_int.h"

/* ---- the bridge's C ABI (rama_apple_se_ffi.h) ------------------------ */
typedef struct {
    uint8_t *ptr;
    size_t len;
} RamaSeBytes;

#define RAMA_SE_OK                   0
#define RAMA_SE_ERR_UNAVAILABLE      -1
#define RAMA_SE_ERR_BAD_INPUT        -2
#define RAMA_SE_ERR_CRYPTO           -3
#define RAMA_SE_ERR_SYSTEM           -4
#define RAMA_SE_ACCESSIBILITY_ALWAYS 1

bool rama_apple_se_is_available(void);
int32_t rama_apple_se_p256_create(int32_t accessibility, RamaSeBytes *out);
int32_t rama_apple_se_p256_encrypt(const uint8_t *blob, size_t blob_len,
                                   const uint8_t *pt, size_t pt_len,
                                   RamaSeBytes *out_ct);
int32_t rama_apple_se_p256_decrypt(const uint8_t *blob, size_t blob_len,
                                   const uint8_t *ct, size_t ct_len,
                                   RamaSeBytes *out_pt);
void rama_apple_se_bytes_free(RamaSeBytes bytes);
/* ---------------------------------------------------------------------- */

struct se_state {
    int unused;
};

/* Maps a bridge code; crypto_code says what RAMA_SE_ERR_CRYPTO means for
 * this call (a failed tag on decrypt, a library failure otherwise). */
static int se_error(nectar_error_t *err, int32_t code, int crypto_code)
{
    int rc;
    switch (code) {
    case RAMA_SE_ERR_UNAVAILABLE:
        rc = nectar_error_set(err, NECTAR_ENOTSUP,
                              "Secure Enclave unavailable on this Mac");
        break;
    case RAMA_SE_ERR_BAD_INPUT:
        rc = nectar_error_set(err, NECTAR_EPARSE,
                              "invalid input to Secure Enclave bridge");
        break;
    case RAMA_SE_ERR_CRYPTO:
        rc = nectar_error_set(err, crypto_code,
                              "Secure Enclave cryptographic operation "
                              "failed");
        break;
    case RAMA_SE_ERR_SYSTEM:
        rc = nectar_error_set(err, NECTAR_EIO,
                              "Secure Enclave system error (see system log)");
        break;
    default:
        rc = nectar_error_set(err, NECTAR_ECRYPTO,
                              "unknown Secure Enclave bridge code %d",
                              (int)code);
        break;
    }
    if (err != NULL)
        err->native = code;
    return rc;
}

/* Moves a bridge buffer into nectar secret memory and frees (wipes) the
 * bridge's copy. */
static int take(RamaSeBytes b, uint8_t **out, size_t *len, nectar_error_t *err)
{
    uint8_t *copy = nectar_secret_alloc(b.len);
    if (copy != NULL && b.len > 0)
        memcpy(copy, b.ptr, b.len);
    rama_apple_se_bytes_free(b);
    if (copy == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "vault: out of memory");
    *out = copy;
    *len = b.len;
    return 0;
}

static int se_probe(const nectar_vault_options_t *opts, nectar_error_t *err)
{
    (void)opts;
    if (!rama_apple_se_is_available())
        return se_error(err, RAMA_SE_ERR_UNAVAILABLE, NECTAR_ECRYPTO);
    return 0;
}

static int se_open(void *state, const nectar_vault_options_t *opts,
                   nectar_error_t *err)
{
    (void)state;
    return se_probe(opts, err);
}

static void se_close(void *state)
{
    (void)state;
}

static int se_create(void *state, uint8_t **payload, size_t *len,
                     nectar_error_t *err)
{
    (void)state;
    RamaSeBytes out = {NULL, 0};
    int32_t code =
        rama_apple_se_p256_create(RAMA_SE_ACCESSIBILITY_ALWAYS, &out);
    if (code != RAMA_SE_OK)
        return se_error(err, code, NECTAR_ECRYPTO);
    return take(out, payload, len, err);
}

static int se_seal(void *state, const uint8_t *payload, size_t len,
                   const uint8_t *pt, size_t pt_len, uint8_t **env,
                   size_t *env_len, nectar_error_t *err)
{
    (void)state;
    RamaSeBytes out = {NULL, 0};
    int32_t code = rama_apple_se_p256_encrypt(payload, len, pt, pt_len, &out);
    if (code != RAMA_SE_OK)
        return se_error(err, code, NECTAR_ECRYPTO);
    return take(out, env, env_len, err);
}

static int se_unseal(void *state, const uint8_t *payload, size_t len,
                     const uint8_t *env, size_t env_len, uint8_t **pt,
                     size_t *pt_len, nectar_error_t *err)
{
    (void)state;
    RamaSeBytes out = {NULL, 0};
    int32_t code = rama_apple_se_p256_decrypt(payload, len, env, env_len, &out);
    if (code != RAMA_SE_OK)
        return se_error(err, code, NECTAR_EAUTH);
    return take(out, pt, pt_len, err);
}

const struct nectar__vault_backend nectar__vault_backend_apple_se = {
    .name = "secure-enclave",
    .kind = NECTAR_VAULT_SECURE_ENCLAVE,
    .hardware = 1,
    .state_size = sizeof(struct se_state),
    .probe = se_probe,
    .open = se_open,
    .close = se_close,
    .create = se_create,
    .public_key = NULL,
    .ecdh = NULL,
    .seal = se_seal,
    .unseal = se_unseal,
};

#endif /* NECTAR_HAVE_SECURE_ENCLAVE */
