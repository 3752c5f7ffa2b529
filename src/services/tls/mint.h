/*
 * mint.h - the MITM certificate authority in memory: leaf certificates
 * minted per host name and cached.
 *
 * Leaves are ECDSA P-256, signed with ECDSA-SHA256 by the CA, with the
 * host as subject CN and as the only subjectAltName (a DNS name, or an IP
 * address for an IP literal), serverAuth, valid from one minute ago for 90
 * days.  All leaves of one CA share one key pair, generated with the CA
 * object: minting is then one signature, and the cache holds certificates
 * only.  The cache is an LRU bounded by `cache_max`, entries live 89 days.
 *
 * Threading: a tls_ca_t is immutable after creation except for its cache,
 * which has its own lock; every function may be called from any thread.
 * Reference counted: the creator holds one reference.
 */
#ifndef NECTAR_SERVICES_TLS_MINT_H
#define NECTAR_SERVICES_TLS_MINT_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

#include "nectar/error.h"

typedef struct tls_ca tls_ca_t;

#define TLS_LEAF_CACHE_DEFAULT 32000

/* Parses the CA certificate and its private key (PKCS#8 or traditional
 * PEM; the key must match the certificate).  Returns 0 and *out, or
 * NECTAR_EPARSE / NECTAR_EINVAL / NECTAR_ECRYPTO / NECTAR_ENOMEM with *err
 * filled. */
int tls_ca_from_pem(const char *cert_pem, const char *key_pem, size_t cache_max,
                    tls_ca_t **out, nectar_error_t *err);

tls_ca_t *tls_ca_ref(tls_ca_t *ca);
void tls_ca_unref(tls_ca_t *ca);

/* The CA certificate (borrowed) and its PEM text (borrowed, NUL-ended). */
X509 *tls_ca_cert(const tls_ca_t *ca);
const char *tls_ca_cert_pem(const tls_ca_t *ca);
/* The shared leaf key (borrowed). */
EVP_PKEY *tls_ca_leaf_key(const tls_ca_t *ca);

/* A leaf for host (a DNS name or IP literal): from the cache or freshly
 * minted.  Returns a new reference the caller frees with X509_free, or
 * NULL (bad host, out of memory, OpenSSL failure; logged). */
X509 *tls_ca_leaf(tls_ca_t *ca, const char *host);

/* Cached leaves (for tests and stats). */
size_t tls_ca_cache_size(tls_ca_t *ca);

#endif
