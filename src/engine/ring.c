/* ring.c - bounded pointer FIFO behind the per-flow queues (see ring.h). */
#include "engine/ring.h"

#include "common/alloc.h"
#include "nectar/error.h"

int nectar_ring_init(struct nectar_ring *r, uint32_t cap)
{
    r->head = 0;
    r->count = 0;
    r->cap = 0;
    r->slots = NULL;
    if (cap == 0)
        return NECTAR_EINVAL;
    r->slots = nectar_calloc(cap, sizeof(void *));
    if (r->slots == NULL)
        return NECTAR_ENOMEM;
    r->cap = cap;
    return 0;
}

void nectar_ring_free(struct nectar_ring *r, void (*dtor)(void *item))
{
    void *item;

    while ((item = nectar_ring_pop(r)) != NULL) {
        if (dtor != NULL)
            dtor(item);
    }
    nectar_free(r->slots);
    r->slots = NULL;
    r->cap = 0;
}

bool nectar_ring_push(struct nectar_ring *r, void *item)
{
    if (r->count == r->cap)
        return false;
    r->slots[(r->head + r->count) % r->cap] = item;
    r->count++;
    return true;
}

void *nectar_ring_pop(struct nectar_ring *r)
{
    void *item;

    if (r->count == 0)
        return NULL;
    item = r->slots[r->head];
    r->slots[r->head] = NULL;
    r->head = (r->head + 1) % r->cap;
    r->count--;
    return item;
}
