/*
 * alloc.h - the one allocation wrapper every nectar module uses.
 *
 * Routing all allocation through here lets tests fail the Nth allocation
 * (curl's torture mode) and check that every error path is clean.
 * Thread-safety: all functions are callable from any thread.
 */
#ifndef NECTAR_COMMON_ALLOC_H
#define NECTAR_COMMON_ALLOC_H

#include <stddef.h>

/* Like malloc/calloc/realloc; NULL on failure (or injected failure). */
void *nectar_malloc(size_t n);
void *nectar_calloc(size_t count, size_t size);
void *nectar_realloc(void *p, size_t n);
void nectar_free(void *p);

/* Copy of a NUL-terminated string / of len bytes plus a NUL; NULL on
 * failure or when s is NULL. */
char *nectar_strdup(const char *s);
char *nectar_strndup(const char *s, size_t len);
void *nectar_memdup(const void *p, size_t len);

/*
 * Test hook: after `n` more successful allocations, every allocation fails
 * until the hook is reset with n < 0.  Set it only while no other thread
 * allocates (it is a plain atomic counter, not a per-thread setting).
 */
void nectar__alloc_fail_after(long n);

/* Overwrite len bytes with zeros in a way the compiler cannot elide. */
void nectar_wipe(void *p, size_t len);

#endif
