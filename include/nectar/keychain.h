/*
 * keychain.h - secrets by (service, account), certificates and PKCS#12
 * identities, behind one front with a backend per platform.
 *
 * Backends (chosen at build time; `backend` in the options or
 * $NECTAR_KEYCHAIN picks among those built in):
 *   "apple"  macOS: the System keychain (/Library/Keychains/System.keychain)
 *            through Security.framework, generic-password items with only
 *            service and account attributes, certificate items.
 *   "file"   every platform, the default off Apple: a root-only directory
 *            (default /var/lib/nectar/keychain, mode 0700).  Each item is a
 *            file encrypted and authenticated with AES-256-GCM under a
 *            master key; the additional data binds kind, service and
 *            account, so a moved, foreign, tampered or truncated item
 *            fails (NECTAR_EAUTH / NECTAR_EPARSE) and never decrypts to
 *            wrong plaintext.  The master key is sealed by the vault when a
 *            hardware vault (TPM) is given, else kept in a 0600 key file in
 *            the directory.  Writes are atomic (temp file, fsync, rename,
 *            fsync of the directory) and serialised across processes with
 *            flock(2), so a crash leaves each item at its old or new value.
 *
 * Threads: one nectar_keychain_t per thread (the file backend is safe
 * across threads and processes on the same directory, the handle itself
 * is not shared-state safe).  Every call blocks on disk (or on the
 * Security daemon).  Strings are NUL-terminated UTF-8, borrowed for the
 * call.  Returned secrets live in non-dumpable memory: free them with
 * nectar_secret_free (vault.h), which wipes them.
 *
 * Errors: 0 or a negative NECTAR_E* code, with a message in *err when err
 * is not NULL.  On Apple, err->native holds the OSStatus and the message
 * reads "<what> failed (OSStatus <code>)", plus a hint for the codes
 * below.  Out-parameters are NULL/0 on error.
 */
#ifndef NECTAR_KEYCHAIN_H
#define NECTAR_KEYCHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "nectar/error.h"
#include "nectar/vault.h"
#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Security.framework codes the Apple backend maps and explains. */
#define NECTAR_OSSTATUS_ITEM_NOT_FOUND          (-25300)
#define NECTAR_OSSTATUS_DUPLICATE_ITEM          (-25299)
#define NECTAR_OSSTATUS_AUTH_FAILED             (-25293)
#define NECTAR_OSSTATUS_INTERACTION_NOT_ALLOWED (-25308)
#define NECTAR_OSSTATUS_MISSING_ENTITLEMENT     (-34018)

/* Limits the front enforces for every backend. */
#define NECTAR_KEYCHAIN_NAME_MAX 255         /* service, account */
#define NECTAR_KEYCHAIN_DATA_MAX (16u << 20) /* one secret: 16 MiB */

typedef struct nectar_keychain nectar_keychain_t;

/*
 * Options; every field may be NULL.
 *   backend  "file" or "apple"; NULL: $NECTAR_KEYCHAIN, else the platform
 *            default.
 *   dir      file backend directory; NULL: $NECTAR_KEYCHAIN_DIR, else
 *            /var/lib/nectar/keychain.  Created 0700 when missing; refused
 *            when another user owns it or group/world may enter it.
 *   vault    borrowed for the keychain's lifetime.  When it is a hardware
 *            vault (nectar_vault_is_hardware), a new store seals its master
 *            key with it, and a sealed store can only be opened with it.
 */
typedef struct nectar_keychain_options {
    const char *backend;
    const char *dir;
    nectar_vault_t *vault;
} nectar_keychain_options_t;

/* Opens the keychain; *out owned by the caller (nectar_keychain_close).
 * Errors: NECTAR_ENOTSUP (unknown backend), NECTAR_EACCES (directory or
 * key file not private), NECTAR_ETYPE (master key sealed by a vault that
 * was not given), NECTAR_EAUTH (master key does not unseal). */
NECTAR_API int nectar_keychain_open(const nectar_keychain_options_t *opts,
                                    nectar_keychain_t **out,
                                    nectar_error_t *err);

/* NULL is fine. */
NECTAR_API void nectar_keychain_close(nectar_keychain_t *kc);

/* "file" or "apple"; static string. */
NECTAR_API const char *nectar_keychain_backend(const nectar_keychain_t *kc);

/* "plain-key-file" or "vault-sealed:<kind>" for the file backend, the
 * keychain path for Apple; static or owned by kc. */
NECTAR_API const char *nectar_keychain_protection(const nectar_keychain_t *kc);

/* Stores data (borrowed; may be NULL when len is 0) under (service,
 * account), replacing any previous value: an upsert.  A racing writer on
 * the same item is tolerated (last writer wins; on Apple the duplicate
 * error is retried once as an update).  Errors: NECTAR_EINVAL (empty or
 * too long names), NECTAR_ELIMIT, I/O codes (-errno). */
NECTAR_API int nectar_keychain_store(nectar_keychain_t *kc, const char *service,
                                     const char *account, const void *data,
                                     size_t len, nectar_error_t *err);

/* Loads a secret into *data (nectar_secret_free it; an empty secret is a
 * valid non-NULL buffer with *len 0).  Missing item: NECTAR_ENOENT with the
 * message "not found", which callers treat as "absent", not a failure.
 * Errors: NECTAR_EAUTH (tampered, moved or foreign item), NECTAR_EPARSE
 * (truncated or not an item), NECTAR_EVERSION. */
NECTAR_API int nectar_keychain_load(nectar_keychain_t *kc, const char *service,
                                    const char *account, uint8_t **data,
                                    size_t *len, nectar_error_t *err);

/* Deletes the item; a missing item is success (idempotent). */
NECTAR_API int nectar_keychain_delete(nectar_keychain_t *kc,
                                      const char *service, const char *account,
                                      nectar_error_t *err);

/* Accounts stored under service, sorted.  *accounts is an array of *count
 * strings; free with nectar_keychain_list_free.  Items that fail to
 * authenticate are skipped (and logged).  NECTAR_ENOTSUP on Apple. */
NECTAR_API int nectar_keychain_list(nectar_keychain_t *kc, const char *service,
                                    char ***accounts, size_t *count,
                                    nectar_error_t *err);
NECTAR_API void nectar_keychain_list_free(char **accounts, size_t count);

/* Adds a certificate (DER, borrowed) as a certificate item; installing
 * the same certificate again is success.  Trust settings are not touched.
 * Errors: NECTAR_EINVAL ("empty certificate DER"), NECTAR_EPARSE (not a
 * certificate). */
NECTAR_API int nectar_keychain_cert_install(nectar_keychain_t *kc,
                                            const uint8_t *der, size_t len,
                                            nectar_error_t *err);

/* Removes every certificate item whose DER equals der exactly; nothing to
 * remove is success. */
NECTAR_API int nectar_keychain_cert_uninstall(nectar_keychain_t *kc,
                                              const uint8_t *der, size_t len,
                                              nectar_error_t *err);

/* 1 if exactly this certificate is installed, 0 if not, or an error. */
NECTAR_API int nectar_keychain_cert_installed(nectar_keychain_t *kc,
                                              const uint8_t *der, size_t len,
                                              nectar_error_t *err);

/*
 * PKCS#12 identities.  Import parses p12 (borrowed) with password (may be
 * NULL or "") and stores key and chain as one PEM secret under (service,
 * account), PKCS#8 key first, then the leaf, then the rest of the chain.
 * Errors: NECTAR_EPARSE (not PKCS#12), NECTAR_EAUTH (wrong password),
 * NECTAR_EINVAL (no key or no certificate inside).
 */
NECTAR_API int
nectar_keychain_import_p12(nectar_keychain_t *kc, const char *service,
                           const char *account, const uint8_t *p12, size_t len,
                           const char *password, nectar_error_t *err);

typedef struct nectar_identity {
    char *key_pem;    /* PKCS#8 "BEGIN PRIVATE KEY", non-dumpable memory */
    char *chain_pem;  /* leaf certificate first, then the issuers */
    size_t chain_len; /* number of certificates in chain_pem */
} nectar_identity_t;

/* Loads an identity stored by import_p12.  *out owned by the caller
 * (nectar_identity_free).  Errors: as nectar_keychain_load, and
 * NECTAR_EPARSE when the secret is not an identity. */
NECTAR_API int nectar_keychain_load_identity(nectar_keychain_t *kc,
                                             const char *service,
                                             const char *account,
                                             nectar_identity_t **out,
                                             nectar_error_t *err);
NECTAR_API void nectar_identity_free(nectar_identity_t *id);

#ifdef __cplusplus
}
#endif
#endif /* NECTAR_KEYCHAIN_H */
