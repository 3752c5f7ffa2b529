/*
 * list.h - intrusive circular doubly-linked list (the libuv QUEUE idea, as
 * plain inline functions).  A node lives inside the object it links; the
 * list never allocates and never owns what it links.
 *
 * Threading: none; the owner of the list serialises access.
 */
#ifndef NECTAR_ENGINE_LIST_H
#define NECTAR_ENGINE_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct nectar_list {
    struct nectar_list *prev;
    struct nectar_list *next;
};

/* The object that contains `node` as field `member`. */
#define nectar_list_entry(node, type, member)                                  \
    ((type *)((char *)(node)-offsetof(type, member)))

static inline void nectar_list_init(struct nectar_list *l)
{
    l->prev = l;
    l->next = l;
}

static inline bool nectar_list_empty(const struct nectar_list *l)
{
    return l->next == l;
}

/* Whether `n` is linked into some list (nodes are init'ed when unlinked). */
static inline bool nectar_list_linked(const struct nectar_list *n)
{
    return n->next != n;
}

static inline void nectar_list_push_back(struct nectar_list *l,
                                         struct nectar_list *n)
{
    n->prev = l->prev;
    n->next = l;
    l->prev->next = n;
    l->prev = n;
}

/* Unlinks n and leaves it self-linked, so removing twice is harmless. */
static inline void nectar_list_remove(struct nectar_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n;
    n->next = n;
}

/* First node, or NULL when empty. */
static inline struct nectar_list *nectar_list_first(const struct nectar_list *l)
{
    return nectar_list_empty(l) ? NULL : l->next;
}

/* Moves every node of `from` to the end of `to`; `from` becomes empty. */
static inline void nectar_list_splice(struct nectar_list *to,
                                      struct nectar_list *from)
{
    if (nectar_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    nectar_list_init(from);
}

#endif
