/*
 * secmem.c - buffers for secrets: excluded from core dumps, wiped on free.
 *
 * MADV_DONTDUMP works on whole pages, so each secret gets its own run of
 * pages carved out of an ordinary nectar_malloc block (which keeps the
 * allocation fault injection working).  A small header just below the
 * aligned start remembers the block and the advised length.  Before the
 * block goes back to malloc the pages are wiped and made dumpable again,
 * so unrelated data reusing them later is not hidden from debuggers.
 */
#include "nectar/vault.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"

struct secmem_hdr {
    void *block;        /* what nectar_malloc returned */
    size_t advised_len; /* page-rounded length under MADV_DONTDUMP */
};

static size_t page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

void *nectar_secret_alloc(size_t len)
{
    size_t ps = page_size();
    size_t rounded = ((len == 0 ? 1 : len) + ps - 1) / ps * ps;
    size_t need = sizeof(struct secmem_hdr) + ps + rounded;
    if (rounded < len || need < rounded)
        return NULL; /* overflow */
    uint8_t *block = nectar_malloc(need);
    if (block == NULL)
        return NULL;
    uintptr_t first = (uintptr_t)block + sizeof(struct secmem_hdr);
    uint8_t *data = (uint8_t *)((first + ps - 1) / ps * ps);
    struct secmem_hdr *hdr = (struct secmem_hdr *)(data - sizeof(*hdr));
    hdr->block = block;
    hdr->advised_len = rounded;
#ifdef MADV_DONTDUMP
    /* Best effort: an old kernel without MADV_DONTDUMP still works. */
    (void)madvise(data, rounded, MADV_DONTDUMP);
#endif
    return data;
}

void nectar_secret_free(void *p)
{
    if (p == NULL)
        return;
    uint8_t *data = p;
    struct secmem_hdr *hdr = (struct secmem_hdr *)(data - sizeof(*hdr));
    void *block = hdr->block;
    size_t len = hdr->advised_len;
    nectar_wipe(data, len);
#ifdef MADV_DODUMP
    (void)madvise(data, len, MADV_DODUMP);
#endif
    nectar_wipe(hdr, sizeof(*hdr));
    nectar_free(block);
}
