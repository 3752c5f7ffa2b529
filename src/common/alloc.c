/* alloc.c - allocation wrapper with fault injection for tests. */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* < 0: injection off.  >= 0: allocations left before failures start. */
static atomic_long fail_countdown = -1;

static int should_fail(void)
{
    long left = atomic_load(&fail_countdown);
    while (left >= 0) {
        if (left == 0)
            return 1;
        if (atomic_compare_exchange_weak(&fail_countdown, &left, left - 1))
            return 0;
    }
    return 0;
}

void nectar__alloc_fail_after(long n)
{
    atomic_store(&fail_countdown, n);
}

void *nectar_malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n == 0 ? 1 : n);
}

void *nectar_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
}

void *nectar_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n == 0 ? 1 : n);
}

void nectar_free(void *p)
{
    free(p);
}

char *nectar_strndup(const char *s, size_t len)
{
    if (s == NULL)
        return NULL;
    char *out = nectar_malloc(len + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, s, len);
    out[len] = '\0';
    return out;
}

char *nectar_strdup(const char *s)
{
    return s == NULL ? NULL : nectar_strndup(s, strlen(s));
}

void *nectar_memdup(const void *p, size_t len)
{
    void *out = nectar_malloc(len);
    if (out != NULL && len > 0)
        memcpy(out, p, len);
    return out;
}

void nectar_wipe(void *p, size_t len)
{
    /* A volatile function pointer keeps the compiler from proving the
     * memset dead when the buffer is freed right after. */
    static void *(*volatile do_memset)(void *, int, size_t) = memset;
    if (p != NULL && len > 0)
        do_memset(p, 0, len);
}
