/*
 * vault.h - the key vault: a P-256 key-agreement key that never leaves its
 * hardware, and the "ECIES v1" envelope built on it.
 *
 * A vault key is created once and handed back as an opaque blob the caller
 * persists (in the keychain, a file, ...).  The blob is useless without the
 * vault that made it: a TPM-wrapped key only loads into the TPM whose
 * storage seed wrapped it, a software key only decrypts under the host key
 * file, a Secure Enclave blob only unwraps in that Mac's enclave.
 *
 * Envelope (identical bytes from every backend, and from rama's Secure
 * Enclave bridge):
 *
 *   offset 0        0x01 (version)
 *   offset 1..66    E, ephemeral P-256 public key, X9.63 uncompressed
 *   offset 66..78   AES-GCM nonce (12 bytes)
 *   offset 78..78+N ciphertext (N = plaintext length)
 *   offset 78+N..   GCM tag (16 bytes)           total 94 + N bytes
 *
 *   key = HKDF-SHA256(IKM = X coordinate of ECDH(e, R),
 *                     salt = X9.63(E) || X9.63(R),
 *                     info = "rama-apple-se-p256-ecies-v1", L = 32)
 *   AES-256-GCM, no AAD.
 *
 * Backends, chosen by name or automatically (nectar_vault_open):
 *   "tpm2"            TPM 2.0 through tss2 ESAPI; ECDH runs in the TPM.
 *   "software"        OpenSSL; the private key is kept encrypted under a
 *                     root-only host key file.  Reports itself as software
 *                     and is never picked when a TPM was asked for.
 *   "secure-enclave"  macOS only, the RamaAppleSecureEnclave C ABI.
 *
 * Threads: a nectar_vault_t may be used from one thread at a time; open
 * one per thread if needed (the TPM serialises commands anyway).  Every
 * call blocks (a TPM command takes milliseconds to tens of milliseconds).
 * Errors: negative NECTAR_E* codes, with a message in *err when err is
 * not NULL; out-parameters are left NULL/0 on error.
 */
#ifndef NECTAR_VAULT_H
#define NECTAR_VAULT_H

#include <stddef.h>
#include <stdint.h>

#include "nectar/error.h"
#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NECTAR_ENVELOPE_VERSION  0x01
#define NECTAR_ENVELOPE_OVERHEAD 94 /* 1 + 65 + 12 + 16 */
#define NECTAR_ENVELOPE_INFO     "rama-apple-se-p256-ecies-v1"
#define NECTAR_P256_POINT_LEN    65 /* 0x04 || X(32) || Y(32) */

typedef enum nectar_vault_kind {
    NECTAR_VAULT_NONE = 0,
    NECTAR_VAULT_TPM2 = 1,
    NECTAR_VAULT_SOFTWARE = 2,
    NECTAR_VAULT_SECURE_ENCLAVE = 3,
} nectar_vault_kind_t;

typedef struct nectar_vault nectar_vault_t;

/*
 * Options; every field may be NULL/0.
 *   backend        "auto", "tpm2", "software", "secure-enclave".  NULL
 *                  means $NECTAR_VAULT, else "auto".  "auto" picks the
 *                  platform's hardware (Secure Enclave, or a TPM when
 *                  $NECTAR_TPM_TCTI is set or /dev/tpmrm0 exists) and
 *                  fails if that hardware does not answer; only when no
 *                  hardware exists at all does it fall back to software,
 *                  with a warning in the log.
 *   tpm_tcti       TCTI configuration string ("device:/dev/tpmrm0",
 *                  "swtpm:host=127.0.0.1,port=2321"); NULL means
 *                  $NECTAR_TPM_TCTI, else the tss2 default.
 *   host_key_path  software backend key file; NULL means
 *                  $NECTAR_VAULT_HOST_KEY, else /var/lib/nectar/host.key.
 *                  Created (32 random bytes, mode 0600) when missing;
 *                  refused when group/world accessible or owned by
 *                  another user.
 */
typedef struct nectar_vault_options {
    const char *backend;
    const char *tpm_tcti;
    const char *host_key_path;
} nectar_vault_options_t;

/* Opens a backend.  *out is owned by the caller (nectar_vault_close).
 * Errors: NECTAR_ENOTSUP (backend not built in / unknown name),
 * NECTAR_ETPM (TPM asked for but not usable), NECTAR_EACCES (host key
 * file unsafe), NECTAR_ENOMEM. */
NECTAR_API int nectar_vault_open(const nectar_vault_options_t *opts,
                                 nectar_vault_t **out, nectar_error_t *err);

/* Frees the vault; NULL is fine.  Flushes nothing persistent. */
NECTAR_API void nectar_vault_close(nectar_vault_t *vault);

/* Which backend this vault is; never fails. */
NECTAR_API nectar_vault_kind_t nectar_vault_kind(const nectar_vault_t *vault);

/* "tpm2", "software", "secure-enclave" or "none"; static string. */
NECTAR_API const char *nectar_vault_kind_name(nectar_vault_kind_t kind);

/* 1 if the key is held by hardware (TPM, Secure Enclave), else 0. */
NECTAR_API int nectar_vault_is_hardware(const nectar_vault_t *vault);

/*
 * Probes whether `backend` (same names as the options) would open, without
 * keeping it open.  Returns 1 and sets *kind when it would, 0 when not (with
 * the reason in *err).  Never negative.
 */
NECTAR_API int nectar_vault_is_available(const nectar_vault_options_t *opts,
                                         nectar_vault_kind_t *kind,
                                         nectar_error_t *err);

/* Creates a new key.  *blob (free with nectar_secret_free) is
 * the opaque wrapped key; persist it.  Errors: NECTAR_ETPM, NECTAR_ECRYPTO,
 * NECTAR_ENOMEM. */
NECTAR_API int nectar_vault_create_key(nectar_vault_t *vault, uint8_t **blob,
                                       size_t *blob_len, nectar_error_t *err);

/* Writes the key's public point (65 bytes, uncompressed) to pub.  blob is
 * borrowed.  Errors: NECTAR_EPARSE/NECTAR_EVERSION (not a blob of this
 * vault), NECTAR_ENOTSUP (Secure Enclave: not exposed by the bridge). */
NECTAR_API int nectar_vault_public_key(nectar_vault_t *vault,
                                       const uint8_t *blob, size_t blob_len,
                                       uint8_t pub[NECTAR_P256_POINT_LEN],
                                       nectar_error_t *err);

/* Seals pt (borrowed; pt may be NULL when pt_len is 0) for the key in blob.
 * *env (free with nectar_secret_free) is 94 + pt_len
 * bytes.  Errors: as nectar_vault_public_key, NECTAR_ECRYPTO. */
NECTAR_API int nectar_vault_encrypt(nectar_vault_t *vault, const uint8_t *blob,
                                    size_t blob_len, const uint8_t *pt,
                                    size_t pt_len, uint8_t **env,
                                    size_t *env_len, nectar_error_t *err);

/* Opens an envelope.  *pt lives in non-dumpable memory; free it with
 * nectar_secret_free (which wipes).  Errors: NECTAR_EPARSE (too short,
 * bad point), NECTAR_EVERSION (version byte), NECTAR_EAUTH (tag check
 * failed: tampered, or another key), NECTAR_ETPM. */
NECTAR_API int nectar_vault_decrypt(nectar_vault_t *vault, const uint8_t *blob,
                                    size_t blob_len, const uint8_t *env,
                                    size_t env_len, uint8_t **pt,
                                    size_t *pt_len, nectar_error_t *err);

/*
 * Envelope encryption to a bare public key (no vault needed): anyone can
 * seal for a vault key whose public half they hold.  Same errors as
 * nectar_vault_encrypt.
 */
NECTAR_API int nectar_envelope_seal(const uint8_t pub[NECTAR_P256_POINT_LEN],
                                    const uint8_t *pt, size_t pt_len,
                                    uint8_t **env, size_t *env_len,
                                    nectar_error_t *err);

/*
 * Secret memory: page-aligned and excluded from core dumps (MADV_DONTDUMP).
 * nectar_secret_alloc returns NULL on failure; nectar_secret_free wipes
 * the whole allocation, then frees it; NULL is fine.  Any thread.  Every
 * buffer this module or the keychain hands out comes from here.
 */
NECTAR_API void *nectar_secret_alloc(size_t len);
NECTAR_API void nectar_secret_free(void *p);

#ifdef __cplusplus
}
#endif
#endif /* NECTAR_VAULT_H */
