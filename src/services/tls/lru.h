/*
 * lru.h - a bounded, thread-safe string-keyed cache with expiry, used for
 * the minted-leaf cache and the per-host trust-failure cache.
 *
 * Entries are evicted least-recently-used first when the cache is full,
 * and treated as absent once their time-to-live has passed.  Values are
 * opaque pointers; the cache calls `free_value` when it drops one.
 *
 * Threading: every function may be called from any thread (one mutex).
 */
#ifndef NECTAR_SERVICES_TLS_LRU_H
#define NECTAR_SERVICES_TLS_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tls_lru tls_lru_t;

/* Copies a value out of the cache under its lock (e.g. takes a
 * reference), so the caller may use it after the lock is dropped. */
typedef void *(*tls_lru_dup_fn)(void *value);
typedef void (*tls_lru_free_fn)(void *value);

/* max_entries >= 1; ttl_ms == 0 means no expiry.  NULL on ENOMEM. */
tls_lru_t *tls_lru_new(size_t max_entries, uint64_t ttl_ms, tls_lru_dup_fn dup,
                       tls_lru_free_fn free_value);
void tls_lru_free(tls_lru_t *c);

/* The value for key duplicated with `dup` (or the raw pointer when dup is
 * NULL), or NULL when absent or expired.  Marks the entry recently used. */
void *tls_lru_get(tls_lru_t *c, const char *key);

/* Inserts or replaces; the cache owns value from here (freed with
 * free_value even on failure).  Returns 0 or NECTAR_ENOMEM. */
int tls_lru_put(tls_lru_t *c, const char *key, void *value);

bool tls_lru_remove(tls_lru_t *c, const char *key);
size_t tls_lru_size(tls_lru_t *c);

/* Test hook: pretend the monotonic clock is `offset_ms` further along. */
void tls_lru_advance(tls_lru_t *c, uint64_t offset_ms);

#endif
