/*
 * vault.c - the key vault front: backend selection, the blob header, and
 * the route from nectar_vault_encrypt/decrypt to the one envelope
 * implementation (envelope.c).  Backends never see a blob header or an
 * envelope they have not been given by this file.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "nectar/log.h"
#include "vault/vault_int.h"

struct nectar_vault {
    const struct nectar__vault_backend *be;
    void *state; /* be->state_size bytes, owned */
};

/* Every backend built into this library, hardware first. */
static const struct nectar__vault_backend *const backends[] = {
#ifdef NECTAR_HAVE_SECURE_ENCLAVE
    &nectar__vault_backend_apple_se,
#endif
#ifdef NECTAR_HAVE_TSS2
    &nectar__vault_backend_tpm2,
#endif
    &nectar__vault_backend_soft,
};
#define N_BACKENDS (sizeof(backends) / sizeof(backends[0]))

const char *nectar_vault_kind_name(nectar_vault_kind_t kind)
{
    switch (kind) {
    case NECTAR_VAULT_TPM2:
        return "tpm2";
    case NECTAR_VAULT_SOFTWARE:
        return "software";
    case NECTAR_VAULT_SECURE_ENCLAVE:
        return "secure-enclave";
    default:
        return "none";
    }
}

static const struct nectar__vault_backend *
backend_by_kind(nectar_vault_kind_t kind)
{
    for (size_t i = 0; i < N_BACKENDS; i++) {
        if (backends[i]->kind == kind)
            return backends[i];
    }
    return NULL;
}

static const struct nectar__vault_backend *backend_by_name(const char *name)
{
    for (size_t i = 0; i < N_BACKENDS; i++) {
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    }
    return NULL;
}

/* Is TPM hardware (or an explicit TCTI) present?  If so, "auto" must use
 * it or fail: silently using software would downgrade the promise. */
static int tpm_requested(const nectar_vault_options_t *opts)
{
    if (opts != NULL && opts->tpm_tcti != NULL)
        return 1;
    const char *env = getenv("NECTAR_TPM_TCTI");
    if (env != NULL && env[0] != '\0')
        return 1;
    return access("/dev/tpmrm0", F_OK) == 0 || access("/dev/tpm0", F_OK) == 0;
}

/* Resolves a backend name (or "auto") to a backend, per the rules in
 * vault.h.  Does not open it. */
static int choose_backend(const nectar_vault_options_t *opts,
                          const struct nectar__vault_backend **out,
                          nectar_error_t *err)
{
    const char *name = opts != NULL ? opts->backend : NULL;
    if (name == NULL || name[0] == '\0')
        name = getenv("NECTAR_VAULT");
    if (name == NULL || name[0] == '\0')
        name = "auto";
    if (strcmp(name, "auto") != 0) {
        *out = backend_by_name(name);
        if (*out == NULL)
            return nectar_error_set(err, NECTAR_ENOTSUP,
                                    "vault backend '%s' is not built into "
                                    "this nectar",
                                    name);
        return 0;
    }
    *out = backend_by_kind(NECTAR_VAULT_SECURE_ENCLAVE);
    if (*out != NULL && (*out)->probe(opts, NULL) == 0)
        return 0;
    if (tpm_requested(opts)) {
        *out = backend_by_kind(NECTAR_VAULT_TPM2);
        if (*out == NULL)
            return nectar_error_set(err, NECTAR_ENOTSUP,
                                    "a TPM is present but this nectar was "
                                    "built without tss2; choose "
                                    "NECTAR_VAULT=software explicitly");
        return 0;
    }
    *out = &nectar__vault_backend_soft;
    nectar_log(NECTAR_LOG_WARN, "vault",
               "no TPM or Secure Enclave found; using the software vault "
               "(key protected by a root-only host key file)");
    return 0;
}

int nectar_vault_open(const nectar_vault_options_t *opts, nectar_vault_t **out,
                      nectar_error_t *err)
{
    if (out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "vault_open: out is NULL");
    *out = NULL;
    const struct nectar__vault_backend *be = NULL;
    int rc = choose_backend(opts, &be, err);
    if (rc != 0)
        return rc;
    nectar_vault_t *v = nectar_calloc(1, sizeof(*v));
    void *state = v != NULL ? nectar_calloc(1, be->state_size) : NULL;
    if (state == NULL) {
        nectar_free(v);
        return nectar_error_set(err, NECTAR_ENOMEM, "vault: out of memory");
    }
    v->be = be;
    v->state = state;
    rc = be->open(state, opts, err);
    if (rc != 0) {
        be->close(state);
        nectar_free(state);
        nectar_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

void nectar_vault_close(nectar_vault_t *vault)
{
    if (vault == NULL)
        return;
    vault->be->close(vault->state);
    nectar_wipe(vault->state, vault->be->state_size);
    nectar_free(vault->state);
    nectar_free(vault);
}

nectar_vault_kind_t nectar_vault_kind(const nectar_vault_t *vault)
{
    return vault != NULL ? vault->be->kind : NECTAR_VAULT_NONE;
}

int nectar_vault_is_hardware(const nectar_vault_t *vault)
{
    return vault != NULL && vault->be->hardware;
}

int nectar_vault_is_available(const nectar_vault_options_t *opts,
                              nectar_vault_kind_t *kind, nectar_error_t *err)
{
    const struct nectar__vault_backend *be = NULL;
    if (kind != NULL)
        *kind = NECTAR_VAULT_NONE;
    if (choose_backend(opts, &be, err) != 0)
        return 0;
    if (be->probe(opts, err) != 0)
        return 0;
    if (kind != NULL)
        *kind = be->kind;
    return 1;
}

/* Checks the header and returns the backend payload inside blob. */
static int blob_payload(const nectar_vault_t *v, const uint8_t *blob,
                        size_t blob_len, const uint8_t **payload,
                        size_t *payload_len, nectar_error_t *err)
{
    if (blob == NULL || blob_len <= NECTAR__VAULT_BLOB_HDR ||
        memcmp(blob, NECTAR__VAULT_BLOB_MAGIC, 4) != 0)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "not a nectar vault key blob");
    if (blob[4] != NECTAR__VAULT_BLOB_VERSION)
        return nectar_error_set(err, NECTAR_EVERSION,
                                "vault key blob format %u, expected %u",
                                blob[4], NECTAR__VAULT_BLOB_VERSION);
    if (blob[5] != (uint8_t)v->be->kind)
        return nectar_error_set(err, NECTAR_ETYPE,
                                "key blob belongs to the %s vault, this is "
                                "the %s vault",
                                nectar_vault_kind_name(blob[5]), v->be->name);
    *payload = blob + NECTAR__VAULT_BLOB_HDR;
    *payload_len = blob_len - NECTAR__VAULT_BLOB_HDR;
    return 0;
}

int nectar_vault_create_key(nectar_vault_t *vault, uint8_t **blob,
                            size_t *blob_len, nectar_error_t *err)
{
    if (vault == NULL || blob == NULL || blob_len == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "create_key: NULL arg");
    *blob = NULL;
    *blob_len = 0;
    uint8_t *payload = NULL;
    size_t len = 0;
    int rc = vault->be->create(vault->state, &payload, &len, err);
    if (rc != 0)
        return rc;
    uint8_t *out = nectar_secret_alloc(NECTAR__VAULT_BLOB_HDR + len);
    if (out == NULL) {
        nectar_secret_free(payload);
        return nectar_error_set(err, NECTAR_ENOMEM, "vault: out of memory");
    }
    memcpy(out, NECTAR__VAULT_BLOB_MAGIC, 4);
    out[4] = NECTAR__VAULT_BLOB_VERSION;
    out[5] = (uint8_t)vault->be->kind;
    memcpy(out + NECTAR__VAULT_BLOB_HDR, payload, len);
    nectar_secret_free(payload);
    *blob = out;
    *blob_len = NECTAR__VAULT_BLOB_HDR + len;
    return 0;
}

int nectar_vault_public_key(nectar_vault_t *vault, const uint8_t *blob,
                            size_t blob_len, uint8_t pub[NECTAR_P256_POINT_LEN],
                            nectar_error_t *err)
{
    if (vault == NULL || pub == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "public_key: NULL arg");
    const uint8_t *payload;
    size_t len;
    int rc = blob_payload(vault, blob, blob_len, &payload, &len, err);
    if (rc != 0)
        return rc;
    if (vault->be->public_key == NULL)
        return nectar_error_set(err, NECTAR_ENOTSUP,
                                "the %s vault does not export public keys",
                                vault->be->name);
    return vault->be->public_key(vault->state, payload, len, pub, err);
}

int nectar_vault_encrypt(nectar_vault_t *vault, const uint8_t *blob,
                         size_t blob_len, const uint8_t *pt, size_t pt_len,
                         uint8_t **env, size_t *env_len, nectar_error_t *err)
{
    if (vault == NULL || env == NULL || env_len == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "encrypt: NULL arg");
    *env = NULL;
    *env_len = 0;
    if (pt == NULL && pt_len > 0)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "encrypt: plaintext is NULL with length %zu",
                                pt_len);
    const uint8_t *payload;
    size_t len;
    int rc = blob_payload(vault, blob, blob_len, &payload, &len, err);
    if (rc != 0)
        return rc;
    if (vault->be->public_key != NULL) {
        uint8_t pub[65];
        rc = vault->be->public_key(vault->state, payload, len, pub, err);
        if (rc != 0)
            return rc;
        return nectar__envelope_seal(pub, pt, pt_len, env, env_len, err);
    }
    rc = vault->be->seal(vault->state, payload, len, pt, pt_len, env, env_len,
                         err);
    if (rc == 0 && *env_len != pt_len + NECTAR_ENVELOPE_OVERHEAD) {
        nectar_secret_free(*env);
        *env = NULL;
        *env_len = 0;
        return nectar_error_set(err, NECTAR_ECRYPTO,
                                "%s vault produced a malformed envelope",
                                vault->be->name);
    }
    return rc;
}

struct ecdh_thunk {
    nectar_vault_t *vault;
    const uint8_t *payload;
    size_t len;
};

static int thunk_ecdh(void *ctx, const uint8_t peer[65], uint8_t z[32],
                      nectar_error_t *err)
{
    struct ecdh_thunk *t = ctx;
    return t->vault->be->ecdh(t->vault->state, t->payload, t->len, peer, z,
                              err);
}

int nectar_vault_decrypt(nectar_vault_t *vault, const uint8_t *blob,
                         size_t blob_len, const uint8_t *env, size_t env_len,
                         uint8_t **pt, size_t *pt_len, nectar_error_t *err)
{
    if (vault == NULL || pt == NULL || pt_len == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "decrypt: NULL arg");
    *pt = NULL;
    *pt_len = 0;
    struct ecdh_thunk t = {vault, NULL, 0};
    int rc = blob_payload(vault, blob, blob_len, &t.payload, &t.len, err);
    if (rc != 0)
        return rc;
    /* Reject malformed envelopes here, identically for every backend. */
    struct nectar__envelope_view view;
    rc = nectar__envelope_parse(env, env_len, &view, err);
    if (rc != 0)
        return rc;
    if (vault->be->ecdh == NULL) {
        rc = vault->be->unseal(vault->state, t.payload, t.len, env, env_len, pt,
                               pt_len, err);
        if (rc == 0 && *pt_len != view.ct_len) {
            nectar_secret_free(*pt);
            *pt = NULL;
            *pt_len = 0;
            return nectar_error_set(err, NECTAR_ECRYPTO,
                                    "%s vault returned a plaintext of the "
                                    "wrong length",
                                    vault->be->name);
        }
        return rc;
    }
    uint8_t pub[65];
    rc = vault->be->public_key(vault->state, t.payload, t.len, pub, err);
    if (rc != 0)
        return rc;
    return nectar__envelope_open(pub, thunk_ecdh, &t, env, env_len, pt, pt_len,
                                 err);
}
