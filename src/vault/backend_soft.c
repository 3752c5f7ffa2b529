/*
 * backend_soft.c - the software vault, for machines with neither a TPM nor
 * a Secure Enclave.  The P-256 private key lives in the blob, encrypted
 * with AES-256-GCM under the host key file (hostkey.c); the public point
 * is stored beside it in clear (and authenticated as AAD) so exporting it
 * needs no decryption.  It is honest about what it is: kind "software",
 * hardware = 0, and the front never picks it when a TPM was asked for.
 *
 * Payload (126 bytes):
 *   0      format 0x01
 *   1..66  public point, X9.63 uncompressed
 *   66..78 nonce
 *   78..110 encrypted scalar d (32)
 *   110..126 tag
 *   AAD = "nectar-soft-vault-v1" || payload[0..66]
 */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "vault/crypto.h"
#include "vault/vault_int.h"

#define SOFT_VERSION     0x01
#define SOFT_LEN         126
#define SOFT_AAD_LABEL   "nectar-soft-vault-v1"
#define DEFAULT_HOST_KEY "/var/lib/nectar/host.key"

struct soft_state {
    uint8_t *host_key; /* 32 bytes, nectar_secret_alloc */
};

static const char *host_key_path(const nectar_vault_options_t *opts)
{
    if (opts != NULL && opts->host_key_path != NULL)
        return opts->host_key_path;
    const char *env = getenv("NECTAR_VAULT_HOST_KEY");
    return env != NULL && env[0] != '\0' ? env : DEFAULT_HOST_KEY;
}

static int soft_probe(const nectar_vault_options_t *opts, nectar_error_t *err)
{
    (void)opts;
    (void)err;
    return 0; /* OpenSSL is always there; the key file is made on open */
}

static int soft_open(void *state, const nectar_vault_options_t *opts,
                     nectar_error_t *err)
{
    struct soft_state *s = state;
    s->host_key = nectar_secret_alloc(32);
    if (s->host_key == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "vault: out of memory");
    return nectar__host_key_load(host_key_path(opts), s->host_key, err);
}

static void soft_close(void *state)
{
    struct soft_state *s = state;
    nectar_secret_free(s->host_key);
    s->host_key = NULL;
}

/* AAD binding the label, format and public point to the sealed scalar. */
static void soft_aad(const uint8_t *payload, uint8_t aad[20 + 66])
{
    memcpy(aad, SOFT_AAD_LABEL, 20);
    memcpy(aad + 20, payload, 66);
}

static int soft_create(void *state, uint8_t **payload, size_t *len,
                       nectar_error_t *err)
{
    struct soft_state *s = state;
    EVP_PKEY *key = NULL;
    uint8_t d[32], aad[86];
    uint8_t *out = nectar_secret_alloc(SOFT_LEN);
    if (out == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "vault: out of memory");
    out[0] = SOFT_VERSION;
    int rc = nectar__p256_generate(&key, err);
    if (rc == 0)
        rc = nectar__p256_public(key, out + 1, err);
    if (rc == 0)
        rc = nectar__p256_scalar(key, d, err);
    if (rc == 0)
        rc = nectar__random(out + 66, 12, err);
    if (rc == 0) {
        soft_aad(out, aad);
        rc = nectar__gcm_seal(s->host_key, out + 66, aad, sizeof(aad), d, 32,
                              out + 78, out + 110, err);
    }
    EVP_PKEY_free(key);
    nectar_wipe(d, sizeof(d));
    if (rc != 0) {
        nectar_secret_free(out);
        return rc;
    }
    *payload = out;
    *len = SOFT_LEN;
    return 0;
}

static int soft_check(const uint8_t *payload, size_t len, nectar_error_t *err)
{
    if (len != SOFT_LEN)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "software key blob is %zu bytes, expected %d",
                                len, SOFT_LEN);
    if (payload[0] != SOFT_VERSION)
        return nectar_error_set(err, NECTAR_EVERSION,
                                "software key blob version %u", payload[0]);
    return 0;
}

static int soft_public_key(void *state, const uint8_t *payload, size_t len,
                           uint8_t pub[65], nectar_error_t *err)
{
    (void)state;
    int rc = soft_check(payload, len, err);
    if (rc == 0)
        memcpy(pub, payload + 1, 65);
    return rc;
}

static int soft_ecdh(void *state, const uint8_t *payload, size_t len,
                     const uint8_t peer[65], uint8_t z[32], nectar_error_t *err)
{
    struct soft_state *s = state;
    int rc = soft_check(payload, len, err);
    if (rc != 0)
        return rc;
    uint8_t d[32], aad[86];
    EVP_PKEY *priv = NULL, *pk = NULL;
    soft_aad(payload, aad);
    rc = nectar__gcm_open(s->host_key, payload + 66, aad, sizeof(aad),
                          payload + 78, 32, payload + 110, d, err);
    if (rc == NECTAR_EAUTH)
        rc = nectar_error_set(err, NECTAR_EAUTH,
                              "software key blob does not open under this "
                              "host key (another machine's key, or "
                              "tampered)");
    if (rc == 0)
        rc = nectar__p256_from_scalar(d, payload + 1, &priv, err);
    if (rc == 0)
        rc = nectar__p256_from_public(peer, &pk, err);
    if (rc == 0)
        rc = nectar__p256_ecdh(priv, pk, z, err);
    nectar_wipe(d, sizeof(d));
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pk);
    return rc;
}

const struct nectar__vault_backend nectar__vault_backend_soft = {
    .name = "software",
    .kind = NECTAR_VAULT_SOFTWARE,
    .hardware = 0,
    .state_size = sizeof(struct soft_state),
    .probe = soft_probe,
    .open = soft_open,
    .close = soft_close,
    .create = soft_create,
    .public_key = soft_public_key,
    .ecdh = soft_ecdh,
    .seal = NULL,
    .unseal = NULL,
};
