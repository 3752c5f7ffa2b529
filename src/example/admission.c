/*
 * admission.c - global / non-web / per app+host flow limits (see
 * admission.h).  Per app+host counts live in a chained hash table keyed by
 * a 64-bit hash of (bundle id, 0xff, host); an entry is removed when its
 * count drops to zero, so the table never holds more entries than there
 * are reservations.
 */
#include "example/admission.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"

#define BUCKETS 4096

struct key_count {
    struct key_count *next;
    uint64_t key;
    uint32_t count;
};

struct ex_admission {
    pthread_mutex_t mu;
    uint32_t global, nonweb_limit, per_app_host;
    uint32_t total, nonweb;
    struct key_count *buckets[BUCKETS];
};

static uint32_t default_global(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus <= 0)
        cpus = 8;
    uint32_t g = (uint32_t)cpus * 128;
    return g > 2048 ? g : 2048;
}

ex_admission_t *ex_admission_new(uint32_t global, uint32_t per_app_host)
{
    ex_admission_t *a = nectar_calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    a->global = global ? global : default_global();
    uint32_t web_reserved = (uint32_t)((uint64_t)a->global * 3 / 4);
    a->nonweb_limit = a->global - web_reserved;
    if (per_app_host == 0) {
        per_app_host = a->global / 32;
        per_app_host = per_app_host < 16 ? 16 : per_app_host;
        per_app_host = per_app_host > 64 ? 64 : per_app_host;
    }
    a->per_app_host = per_app_host;
    return a;
}

void ex_admission_free(ex_admission_t *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < BUCKETS; i++) {
        struct key_count *k = a->buckets[i];
        while (k != NULL) {
            struct key_count *next = k->next;
            nectar_free(k);
            k = next;
        }
    }
    pthread_mutex_destroy(&a->mu);
    nectar_free(a);
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t app_host_key(const char *bundle, const char *host)
{
    uint64_t h = fnv(1469598103934665603ull, bundle);
    h ^= 0xff;
    h *= 1099511628211ull;
    return fnv(h, host);
}

static struct key_count **slot(ex_admission_t *a, uint64_t key)
{
    struct key_count **p = &a->buckets[key % BUCKETS];
    while (*p != NULL && (*p)->key != key)
        p = &(*p)->next;
    return p;
}

ex_reject_t ex_admission_try(ex_admission_t *a, uint16_t port,
                             const char *bundle, const char *host,
                             ex_permit_t *permit)
{
    memset(permit, 0, sizeof(*permit));
    bool nonweb = port != 80 && port != 443;
    bool keyed =
        bundle != NULL && bundle[0] != '\0' && host != NULL && host[0] != '\0';
    uint64_t key = keyed ? app_host_key(bundle, host) : 0;
    ex_reject_t r = EX_ADMIT;
    pthread_mutex_lock(&a->mu);
    struct key_count **kc = keyed ? slot(a, key) : NULL;
    if (a->total >= a->global)
        r = EX_REJECT_GLOBAL;
    else if (nonweb && a->nonweb >= a->nonweb_limit)
        r = EX_REJECT_NONWEB;
    else if (keyed && *kc != NULL && (*kc)->count >= a->per_app_host)
        r = EX_REJECT_APPHOST;
    if (r == EX_ADMIT && keyed && *kc == NULL) {
        *kc = nectar_calloc(1, sizeof(**kc));
        if (*kc == NULL)
            keyed = false; /* out of memory: count it globally only */
        else
            (*kc)->key = key;
    }
    if (r == EX_ADMIT) {
        a->total++;
        a->nonweb += nonweb;
        if (keyed)
            (*kc)->count++;
        permit->held = true;
        permit->nonweb = nonweb;
        permit->keyed = keyed;
        permit->key = key;
    }
    pthread_mutex_unlock(&a->mu);
    return r;
}

void ex_admission_release(ex_admission_t *a, ex_permit_t *permit)
{
    if (a == NULL || !permit->held)
        return;
    pthread_mutex_lock(&a->mu);
    a->total--;
    a->nonweb -= permit->nonweb;
    if (permit->keyed) {
        struct key_count **kc = slot(a, permit->key);
        if (*kc != NULL && --(*kc)->count == 0) {
            struct key_count *dead = *kc;
            *kc = dead->next;
            nectar_free(dead);
        }
    }
    pthread_mutex_unlock(&a->mu);
    permit->held = false;
}

const char *ex_reject_name(ex_reject_t r)
{
    switch (r) {
    case EX_REJECT_GLOBAL:
        return "Global";
    case EX_REJECT_NONWEB:
        return "NonWeb";
    case EX_REJECT_APPHOST:
        return "AppHost";
    default:
        return "Admit";
    }
}

uint32_t ex_admission_global_limit(const ex_admission_t *a)
{
    return a->global;
}

uint32_t ex_admission_app_host_limit(const ex_admission_t *a)
{
    return a->per_app_host;
}

uint32_t ex_admission_in_use(ex_admission_t *a)
{
    pthread_mutex_lock(&a->mu);
    uint32_t n = a->total;
    pthread_mutex_unlock(&a->mu);
    return n;
}
