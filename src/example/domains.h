/*
 * domains.h - domain lists of the example: excluded domains (no TLS
 * interception, no badge) and domains passed through at decision time.
 *
 * An entry is an exact name ("captive.apple.com") or "*.x", which matches
 * x itself and every subdomain of x.  Matching is case-insensitive and
 * ignores a trailing dot.  Invalid names are dropped silently when the
 * list is built (spec §5.3).
 *
 * Threading: a list is immutable once built; any thread may match.
 */
#ifndef NECTAR_EXAMPLE_DOMAINS_H
#define NECTAR_EXAMPLE_DOMAINS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ex_domains ex_domains_t;

/* Builds a list from n names (borrowed).  NULL on ENOMEM. */
ex_domains_t *ex_domains_new(const char *const *names, size_t n);
void ex_domains_free(ex_domains_t *d);
size_t ex_domains_count(const ex_domains_t *d);
/* The i-th kept entry as written after normalising ("*.x" or "x"). */
const char *ex_domains_get(const ex_domains_t *d, size_t i);

/* True when host (any case, may be NULL) is covered by the list. */
bool ex_domains_match(const ex_domains_t *d, const char *host);

/* The 26 rama defaults for exclude_domains and the 4 passthrough ones. */
extern const char *const ex_default_excluded[];
extern const size_t ex_default_excluded_len;
extern const char *const ex_default_passthrough[];
extern const size_t ex_default_passthrough_len;

#endif
