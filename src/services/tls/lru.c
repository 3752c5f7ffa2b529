/*
 * lru.c - bounded string-keyed LRU with time-to-live (see lru.h).
 *
 * A chained hash table finds entries; an intrusive doubly linked list keeps
 * them in use order (head = most recent).  The bucket count is fixed at
 * twice the capacity, so chains stay short without rehashing.
 */
#include "services/tls/lru.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "nectar/error.h"

struct lru_entry {
    struct lru_entry *hnext;       /* hash chain */
    struct lru_entry *prev, *next; /* use order */
    uint64_t expires_ms;           /* 0: never */
    void *value;
    char key[];
};

struct tls_lru {
    pthread_mutex_t mu;
    struct lru_entry **buckets;
    size_t nbuckets, count, max;
    uint64_t ttl_ms, skew_ms;
    struct lru_entry *head, *tail;
    tls_lru_dup_fn dup;
    tls_lru_free_fn free_value;
};

static uint64_t now_ms(const tls_lru_t *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 +
           c->skew_ms;
}

static size_t hash_key(const char *k)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *k; k++) {
        h ^= (uint8_t)*k;
        h *= 1099511628211ull;
    }
    return (size_t)h;
}

tls_lru_t *tls_lru_new(size_t max_entries, uint64_t ttl_ms, tls_lru_dup_fn dup,
                       tls_lru_free_fn free_value)
{
    if (max_entries == 0)
        max_entries = 1;
    tls_lru_t *c = nectar_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->nbuckets = max_entries * 2;
    c->buckets = nectar_calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        nectar_free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->max = max_entries;
    c->ttl_ms = ttl_ms;
    c->dup = dup;
    c->free_value = free_value;
    return c;
}

static void list_unlink(tls_lru_t *c, struct lru_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_front(tls_lru_t *c, struct lru_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head != NULL)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

/* Finds key; *link receives the pointer that points at the entry. */
static struct lru_entry *find(tls_lru_t *c, const char *key,
                              struct lru_entry ***link)
{
    struct lru_entry **p = &c->buckets[hash_key(key) % c->nbuckets];
    while (*p != NULL && strcmp((*p)->key, key) != 0)
        p = &(*p)->hnext;
    *link = p;
    return *p;
}

static void drop(tls_lru_t *c, struct lru_entry *e)
{
    struct lru_entry **link;
    find(c, e->key, &link);
    *link = e->hnext;
    list_unlink(c, e);
    c->count--;
    if (c->free_value != NULL)
        c->free_value(e->value);
    nectar_free(e);
}

void tls_lru_free(tls_lru_t *c)
{
    if (c == NULL)
        return;
    while (c->head != NULL)
        drop(c, c->head);
    pthread_mutex_destroy(&c->mu);
    nectar_free(c->buckets);
    nectar_free(c);
}

void *tls_lru_get(tls_lru_t *c, const char *key)
{
    void *out = NULL;
    struct lru_entry **link;
    pthread_mutex_lock(&c->mu);
    struct lru_entry *e = find(c, key, &link);
    if (e != NULL && e->expires_ms != 0 && e->expires_ms <= now_ms(c)) {
        drop(c, e);
        e = NULL;
    }
    if (e != NULL) {
        list_unlink(c, e);
        list_push_front(c, e);
        out = c->dup != NULL ? c->dup(e->value) : e->value;
    }
    pthread_mutex_unlock(&c->mu);
    return out;
}

int tls_lru_put(tls_lru_t *c, const char *key, void *value)
{
    size_t klen = strlen(key);
    struct lru_entry *n = nectar_malloc(sizeof(*n) + klen + 1);
    if (n == NULL) {
        if (c->free_value != NULL)
            c->free_value(value);
        return NECTAR_ENOMEM;
    }
    memcpy(n->key, key, klen + 1);
    n->value = value;
    pthread_mutex_lock(&c->mu);
    n->expires_ms = c->ttl_ms ? now_ms(c) + c->ttl_ms : 0;
    struct lru_entry **link;
    struct lru_entry *old = find(c, key, &link);
    if (old != NULL)
        drop(c, old);
    while (c->count >= c->max && c->tail != NULL)
        drop(c, c->tail);
    find(c, key, &link);
    n->hnext = NULL;
    *link = n;
    list_push_front(c, n);
    c->count++;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

bool tls_lru_remove(tls_lru_t *c, const char *key)
{
    struct lru_entry **link;
    pthread_mutex_lock(&c->mu);
    struct lru_entry *e = find(c, key, &link);
    if (e != NULL)
        drop(c, e);
    pthread_mutex_unlock(&c->mu);
    return e != NULL;
}

size_t tls_lru_size(tls_lru_t *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->count;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void tls_lru_advance(tls_lru_t *c, uint64_t offset_ms)
{
    pthread_mutex_lock(&c->mu);
    c->skew_ms += offset_ms;
    pthread_mutex_unlock(&c->mu);
}
