/*
 * envelope.c - the ECIES v1 envelope, byte for byte as rama's Secure
 * Enclave bridge writes it (layout in include/nectar/vault.h).  Every
 * backend goes through here, so all of them emit and accept the same
 * bytes.
 */
#include <string.h>

#include "common/alloc.h"
#include "vault/crypto.h"
#include "vault/vault_int.h"

#define OFF_EPHEMERAL 1
#define OFF_NONCE     66
#define OFF_CT        78

int nectar__envelope_parse(const uint8_t *env, size_t env_len,
                           struct nectar__envelope_view *view,
                           nectar_error_t *err)
{
    memset(view, 0, sizeof(*view));
    if (env == NULL || env_len < NECTAR_ENVELOPE_OVERHEAD)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "envelope is %zu bytes, shorter than the "
                                "%d-byte minimum",
                                env == NULL ? 0 : env_len,
                                NECTAR_ENVELOPE_OVERHEAD);
    if (env[0] != NECTAR_ENVELOPE_VERSION)
        return nectar_error_set(err, NECTAR_EVERSION,
                                "envelope version 0x%02x, expected 0x01",
                                env[0]);
    view->ephemeral = env + OFF_EPHEMERAL;
    view->nonce = env + OFF_NONCE;
    view->ct = env + OFF_CT;
    view->ct_len = env_len - NECTAR_ENVELOPE_OVERHEAD;
    view->tag = env + OFF_CT + view->ct_len;
    return 0;
}

/* AES key = HKDF-SHA256(z, salt = E || R, info = "rama-apple-se-..."). */
static int derive_key(const uint8_t z[32], const uint8_t eph[65],
                      const uint8_t recipient[65], uint8_t key[32],
                      nectar_error_t *err)
{
    uint8_t salt[130];
    memcpy(salt, eph, 65);
    memcpy(salt + 65, recipient, 65);
    return nectar__hkdf_sha256(z, 32, salt, sizeof(salt),
                               (const uint8_t *)NECTAR_ENVELOPE_INFO,
                               strlen(NECTAR_ENVELOPE_INFO), key, 32, err);
}

/* Ephemeral half: fresh (e, E), z = X(e * R). */
static int ephemeral_agree(EVP_PKEY *recipient, uint8_t eph_pub[65],
                           uint8_t z[32], nectar_error_t *err)
{
    EVP_PKEY *eph = NULL;
    int rc = nectar__p256_generate(&eph, err);
    if (rc == 0)
        rc = nectar__p256_public(eph, eph_pub, err);
    if (rc == 0)
        rc = nectar__p256_ecdh(eph, recipient, z, err);
    EVP_PKEY_free(eph);
    return rc;
}

int nectar__envelope_seal(const uint8_t recipient[65], const uint8_t *pt,
                          size_t pt_len, uint8_t **env, size_t *env_len,
                          nectar_error_t *err)
{
    *env = NULL;
    *env_len = 0;
    if (pt == NULL && pt_len > 0)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "plaintext is NULL with length %zu", pt_len);
    if (pt_len > SIZE_MAX - NECTAR_ENVELOPE_OVERHEAD || pt_len > INT32_MAX)
        return nectar_error_set(err, NECTAR_ELIMIT, "plaintext too long");
    EVP_PKEY *rkey = NULL;
    int rc = nectar__p256_from_public(recipient, &rkey, err);
    if (rc != 0)
        return rc;
    size_t total = NECTAR_ENVELOPE_OVERHEAD + pt_len;
    uint8_t *out = nectar_secret_alloc(total);
    uint8_t z[32], key[32];
    if (out == NULL) {
        EVP_PKEY_free(rkey);
        return nectar_error_set(err, NECTAR_ENOMEM, "envelope: out of memory");
    }
    out[0] = NECTAR_ENVELOPE_VERSION;
    rc = ephemeral_agree(rkey, out + OFF_EPHEMERAL, z, err);
    EVP_PKEY_free(rkey);
    if (rc == 0)
        rc = derive_key(z, out + OFF_EPHEMERAL, recipient, key, err);
    if (rc == 0)
        rc = nectar__random(out + OFF_NONCE, 12, err);
    if (rc == 0)
        rc = nectar__gcm_seal(key, out + OFF_NONCE, NULL, 0, pt, pt_len,
                              out + OFF_CT, out + OFF_CT + pt_len, err);
    nectar_wipe(z, sizeof(z));
    nectar_wipe(key, sizeof(key));
    if (rc != 0) {
        nectar_secret_free(out);
        return rc;
    }
    *env = out;
    *env_len = total;
    return 0;
}

int nectar__envelope_open(const uint8_t recipient[65], nectar__ecdh_fn ecdh,
                          void *ecdh_ctx, const uint8_t *env, size_t env_len,
                          uint8_t **pt, size_t *pt_len, nectar_error_t *err)
{
    *pt = NULL;
    *pt_len = 0;
    struct nectar__envelope_view v;
    int rc = nectar__envelope_parse(env, env_len, &v, err);
    if (rc != 0)
        return rc;
    /* Validate E before it reaches a TPM or a key: an off-curve point is
     * malformed input, never something to multiply by our secret. */
    EVP_PKEY *eph = NULL;
    rc = nectar__p256_from_public(v.ephemeral, &eph, err);
    EVP_PKEY_free(eph);
    if (rc != 0)
        return rc;
    uint8_t *out = nectar_secret_alloc(v.ct_len);
    if (out == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "envelope: out of memory");
    uint8_t z[32], key[32];
    rc = ecdh(ecdh_ctx, v.ephemeral, z, err);
    if (rc == 0)
        rc = derive_key(z, v.ephemeral, recipient, key, err);
    if (rc == 0)
        rc = nectar__gcm_open(key, v.nonce, NULL, 0, v.ct, v.ct_len, v.tag, out,
                              err);
    nectar_wipe(z, sizeof(z));
    nectar_wipe(key, sizeof(key));
    if (rc != 0) {
        nectar_secret_free(out);
        return rc;
    }
    *pt = out;
    *pt_len = v.ct_len;
    return 0;
}

int nectar_envelope_seal(const uint8_t pub[NECTAR_P256_POINT_LEN],
                         const uint8_t *pt, size_t pt_len, uint8_t **env,
                         size_t *env_len, nectar_error_t *err)
{
    if (pub == NULL || env == NULL || env_len == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "nectar_envelope_seal: NULL argument");
    return nectar__envelope_seal(pub, pt, pt_len, env, env_len, err);
}
