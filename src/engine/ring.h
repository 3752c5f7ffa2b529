/*
 * ring.h - a bounded FIFO of pointers with a fixed capacity.
 *
 * The per-flow queues (TCP chunks, UDP datagrams) are bounded in items, not
 * bytes (spec ne-engine §3.5, §5.3), so a ring of pointers is the whole data
 * structure; the engine puts the locking around it.
 *
 * Threading: none; the caller serialises access.  The ring never owns what
 * it holds: nectar_ring_free takes a destructor for the leftovers.
 */
#ifndef NECTAR_ENGINE_RING_H
#define NECTAR_ENGINE_RING_H

#include <stdbool.h>
#include <stdint.h>

struct nectar_ring {
    void **slots;
    uint32_t cap;
    uint32_t head; /* index of the oldest item */
    uint32_t count;
};

/* Allocates cap slots (cap >= 1).  Returns 0 or NECTAR_EINVAL/ENOMEM. */
int nectar_ring_init(struct nectar_ring *r, uint32_t cap);

/* Calls dtor (when not NULL) on every item left, oldest first, then frees
 * the slots.  Safe on a zeroed ring. */
void nectar_ring_free(struct nectar_ring *r, void (*dtor)(void *item));

/* Appends; false (ring unchanged) when full. */
bool nectar_ring_push(struct nectar_ring *r, void *item);

/* Removes and returns the oldest item, or NULL when empty. */
void *nectar_ring_pop(struct nectar_ring *r);

static inline bool nectar_ring_full(const struct nectar_ring *r)
{
    return r->count == r->cap;
}

static inline uint32_t nectar_ring_count(const struct nectar_ring *r)
{
    return r->count;
}

#endif
