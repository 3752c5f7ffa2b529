/*
 * vault_int.h - the contract between the vault front (vault.c) and its
 * backends (backend_tpm2.c, backend_soft.c, backend_apple_se.c).
 *
 * The front owns formats and policy: the blob header, the ECIES v1
 * envelope, backend selection.  A backend only holds the private key and
 * answers "what is my public point" and "what is d * P".  The Secure
 * Enclave bridge cannot do bare ECDH, so it fills the seal/unseal slots
 * instead; the front still validates envelopes before and after.
 *
 * Blob = header + backend payload:
 *   "NVKB" (4) | format version 0x01 | backend kind (nectar_vault_kind_t)
 * A blob of another backend is refused before the backend sees it.
 */
#ifndef NECTAR_VAULT_INT_H
#define NECTAR_VAULT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "nectar/vault.h"

#define NECTAR__VAULT_BLOB_MAGIC   "NVKB"
#define NECTAR__VAULT_BLOB_VERSION 0x01
#define NECTAR__VAULT_BLOB_HDR     6

struct nectar__vault_backend {
    const char *name;
    nectar_vault_kind_t kind;
    int hardware;      /* 1: the private key never exists in host memory */
    size_t state_size; /* bytes the front allocates (zeroed) for state */

    /* 0 if this backend can open with opts; cheap, leaves nothing open. */
    int (*probe)(const nectar_vault_options_t *opts, nectar_error_t *err);
    int (*open)(void *state, const nectar_vault_options_t *opts,
                nectar_error_t *err);
    void (*close)(void *state); /* also after a failed open */

    /* New key; *payload from nectar_secret_alloc. */
    int (*create)(void *state, uint8_t **payload, size_t *len,
                  nectar_error_t *err);
    /* NULL slot: NECTAR_ENOTSUP. */
    int (*public_key)(void *state, const uint8_t *payload, size_t len,
                      uint8_t pub[65], nectar_error_t *err);
    /* z = X(d * peer); peer already validated as a point on P-256. */
    int (*ecdh)(void *state, const uint8_t *payload, size_t len,
                const uint8_t peer[65], uint8_t z[32], nectar_error_t *err);

    /* Whole-envelope slots for backends without ecdh (Secure Enclave).
     * Outputs from nectar_secret_alloc. */
    int (*seal)(void *state, const uint8_t *payload, size_t len,
                const uint8_t *pt, size_t pt_len, uint8_t **env,
                size_t *env_len, nectar_error_t *err);
    int (*unseal)(void *state, const uint8_t *payload, size_t len,
                  const uint8_t *env, size_t env_len, uint8_t **pt,
                  size_t *pt_len, nectar_error_t *err);
};

extern const struct nectar__vault_backend nectar__vault_backend_soft;
#ifdef NECTAR_HAVE_TSS2
extern const struct nectar__vault_backend nectar__vault_backend_tpm2;
/* mkdir -p, creating each missing component with mode 0700. */
int nectar__mkdirs(const char *dir, nectar_error_t *err);

#endif
#ifdef NECTAR_HAVE_SECURE_ENCLAVE
extern const struct nectar__vault_backend nectar__vault_backend_apple_se;
/* mkdir -p, creating each missing component with mode 0700. */
int nectar__mkdirs(const char *dir, nectar_error_t *err);

#endif

/*
 * envelope.c: the ECIES v1 format, written once.
 */
struct nectar__envelope_view {
    const uint8_t *ephemeral; /* 65 bytes */
    const uint8_t *nonce;     /* 12 bytes */
    const uint8_t *ct;        /* ct_len bytes */
    size_t ct_len;
    const uint8_t *tag; /* 16 bytes */
};

/* Splits env; NECTAR_EPARSE when shorter than 94 bytes, NECTAR_EVERSION
 * when the version byte is not 0x01.  Borrowed pointers into env. */
int nectar__envelope_parse(const uint8_t *env, size_t env_len,
                           struct nectar__envelope_view *view,
                           nectar_error_t *err);

/* Seals for recipient point R (validated here); *env from
 * nectar_secret_alloc. */
int nectar__envelope_seal(const uint8_t recipient[65], const uint8_t *pt,
                          size_t pt_len, uint8_t **env, size_t *env_len,
                          nectar_error_t *err);

/* Computes z = X(d * E) for the holder of the recipient key. */
typedef int (*nectar__ecdh_fn)(void *ctx, const uint8_t peer[65], uint8_t z[32],
                               nectar_error_t *err);

/* Opens env for recipient point R, asking ecdh for the shared secret.
 * *pt from nectar_secret_alloc. */
int nectar__envelope_open(const uint8_t recipient[65], nectar__ecdh_fn ecdh,
                          void *ecdh_ctx, const uint8_t *env, size_t env_len,
                          uint8_t **pt, size_t *pt_len, nectar_error_t *err);

/* Opens the host key file for the software backend (and the keychain's
 * unsealed master key): 32 bytes, created when missing, refused when not
 * private to this user.  Used by backend_soft.c and the keychain. */
int nectar__host_key_load(const char *path, uint8_t key[32],
                          nectar_error_t *err);

/* mkdir -p, creating each missing component with mode 0700. */
int nectar__mkdirs(const char *dir, nectar_error_t *err);

#endif
