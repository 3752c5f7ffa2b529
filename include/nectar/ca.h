/*
 * ca.h - the MITM root CA: created once, kept in the keychain with its
 * private key encrypted by the key vault, handed to the TLS interception
 * code as PEM.
 *
 * Typical use (the TLS service mints leaf certificates from the result):
 *
 *     char *cert_pem, *key_pem;
 *     if (nectar_ca_load_or_create(kc, vault, &cert_pem, &key_pem, &err))
 *         ...fail...
 *     ...use...
 *     nectar_secret_free(cert_pem);
 *     nectar_secret_free(key_pem);
 *
 * The CA: ECDSA P-256, self-signed with ECDSA-SHA256, X.509 v3, subject
 * O=NECTAR_CA_ORG, CN=NECTAR_CA_CN, 159-bit random serial, valid from
 * now - 60 s for 20 x 365 days, BasicConstraints critical CA:TRUE,
 * KeyUsage critical keyCertSign+cRLSign, SubjectKeyIdentifier.
 *
 * Storage (generic secrets, account NECTAR_CA_ACCOUNT):
 *   with a vault   NECTAR_CA_SERVICE_VAULT_KEY  the vault key blob
 *                  NECTAR_CA_SERVICE_CERT       envelope of the cert PEM
 *                  NECTAR_CA_SERVICE_KEY        envelope of the PKCS#8 PEM
 *   without        NECTAR_CA_SERVICE_CERT / _KEY as plain PEM (the file
 *                  keychain still encrypts them at rest); an orphaned
 *                  vault key blob is deleted.
 * A missing, partial or undecryptable set is wiped and replaced by a fresh
 * CA, with a log line saying why.  Nothing rotates on a timer.
 *
 * Threads: as the keychain and vault passed in (one thread at a time per
 * handle).  All calls block.  Returned PEM strings are NUL-terminated, in
 * non-dumpable memory; free them with nectar_secret_free.  Errors: 0 or a
 * negative NECTAR_E* code with a message in *err; outputs NULL on error.
 */
#ifndef NECTAR_CA_H
#define NECTAR_CA_H

#include <stddef.h>
#include <stdint.h>

#include "nectar/error.h"
#include "nectar/keychain.h"
#include "nectar/vault.h"
#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NECTAR_CA_ACCOUNT           "org.nectar.mitm"
#define NECTAR_CA_SERVICE_CERT      "nectar-mitm-ca-crt"
#define NECTAR_CA_SERVICE_KEY       "nectar-mitm-ca-key"
#define NECTAR_CA_SERVICE_VAULT_KEY "nectar-mitm-ca-vault-key"
#define NECTAR_CA_ORG               "Nectar Transparent Proxy Root CA"
#define NECTAR_CA_CN                "nectar-mitm-ca.localhost"
#define NECTAR_CA_VALID_DAYS        (20 * 365)

/* Loads the stored CA, or creates and stores one (see above).  kc and
 * vault are borrowed; vault may be NULL (plain PEM storage).  Errors:
 * keychain and vault errors when a new CA cannot be stored. */
NECTAR_API int nectar_ca_load_or_create(nectar_keychain_t *kc,
                                        nectar_vault_t *vault, char **cert_pem,
                                        char **key_pem, nectar_error_t *err);

/* Loads without creating or wiping.  NECTAR_ENOENT when nothing usable is
 * stored (missing, partial, undecryptable or unparsable).  key_pem may be
 * NULL when only the certificate is wanted. */
NECTAR_API int nectar_ca_load(nectar_keychain_t *kc, nectar_vault_t *vault,
                              char **cert_pem, char **key_pem,
                              nectar_error_t *err);

/*
 * Replaces the CA: remembers the previous certificate, wipes the stored
 * set, creates and stores a new CA (with a new vault key), then, best
 * effort with a warning, uninstalls the previous certificate item and
 * installs the new one.  prev_der/prev_len may be NULL; *prev_der is NULL
 * when there was no previous CA (free with nectar_secret_free).
 */
NECTAR_API int nectar_ca_rotate(nectar_keychain_t *kc, nectar_vault_t *vault,
                                char **cert_pem, char **key_pem,
                                uint8_t **prev_der, size_t *prev_len,
                                nectar_error_t *err);

/* rama's "Install CA": load-or-create, then add the certificate as a
 * certificate item (trust is left to a UI process).  *der (free with
 * nectar_secret_free) is the certificate, for whoever grants trust. */
NECTAR_API int nectar_ca_install(nectar_keychain_t *kc, nectar_vault_t *vault,
                                 uint8_t **der, size_t *der_len,
                                 nectar_error_t *err);

/* rama's "Uninstall CA": removes the certificate item of the stored CA and
 * returns its DER; the stored CA is kept, so the next start loads the same
 * one.  Nothing stored: 0 with *der NULL. */
NECTAR_API int nectar_ca_uninstall(nectar_keychain_t *kc, nectar_vault_t *vault,
                                   uint8_t **der, size_t *der_len,
                                   nectar_error_t *err);

/* Deletes the three stored items (each delete is idempotent). */
NECTAR_API int nectar_ca_wipe(nectar_keychain_t *kc, nectar_error_t *err);

/* A fresh CA pair, not stored. */
NECTAR_API int nectar_ca_generate(char **cert_pem, char **key_pem,
                                  nectar_error_t *err);

/* DER of a PEM certificate (free with nectar_secret_free).  NECTAR_EPARSE
 * when cert_pem is not a certificate. */
NECTAR_API int nectar_ca_cert_der(const char *cert_pem, uint8_t **der,
                                  size_t *len, nectar_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* NECTAR_CA_H */
