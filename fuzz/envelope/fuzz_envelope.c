/*
 * fuzz_envelope.c - libFuzzer target for the ECIES v1 envelope: arbitrary
 * bytes go through the parser, point validation, ECDH, HKDF and the GCM
 * tag check with a fixed recipient key.  Every input must come back as
 * an error code (or, never in practice, a plaintext), without crashes,
 * leaks or reads out of bounds.  The first input byte picks whether the
 * data is used as-is or re-sealed to exercise the successful path too.
 */
#include <stdint.h>
#include <string.h>

#include "nectar/vault.h"
#include "vault/crypto.h"
#include "vault/vault_int.h"

static EVP_PKEY *recipient;
static uint8_t recipient_pub[65];

static int fuzz_ecdh(void *ctx, const uint8_t peer[65], uint8_t z[32],
                     nectar_error_t *err)
{
    (void)ctx;
    EVP_PKEY *pk = NULL;
    int rc = nectar__p256_from_public(peer, &pk, err);
    if (rc == 0)
        rc = nectar__p256_ecdh(recipient, pk, z, err);
    EVP_PKEY_free(pk);
    return rc;
}

static void try_open(const uint8_t *env, size_t len)
{
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    nectar_error_t err;
    if (nectar__envelope_open(recipient_pub, fuzz_ecdh, NULL, env, len, &pt,
                              &pt_len, &err) == 0)
        nectar_secret_free(pt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (recipient == NULL) {
        if (nectar__p256_generate(&recipient, NULL) != 0 ||
            nectar__p256_public(recipient, recipient_pub, NULL) != 0)
            return 0;
    }
    if (size > 0 && (data[0] & 1) == 1) {
        /* Seal the rest, then open it whole and with a damaged byte. */
        uint8_t *env = NULL;
        size_t env_len = 0;
        if (nectar_envelope_seal(recipient_pub, data + 1, size - 1, &env,
                                 &env_len, NULL) != 0)
            return 0;
        try_open(env, env_len);
        env[(size * 31) % env_len] ^= data[0] | 1;
        try_open(env, env_len);
        nectar_secret_free(env);
        return 0;
    }
    try_open(data, size);
    return 0;
}
