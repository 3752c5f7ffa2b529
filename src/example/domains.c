/*
 * domains.c - exact and "*.x" domain lists (see domains.h).
 */
#include "example/domains.h"

#include <string.h>

#include "common/alloc.h"

struct ex_entry {
    char *name;       /* normalised, with "*." for wildcards */
    const char *base; /* name without "*." */
    bool wildcard;
};

struct ex_domains {
    size_t n;
    struct ex_entry *v;
};

const char *const ex_default_excluded[] = {
    "detectportal.firefox.com",
    "connectivitycheck.gstatic.com",
    "captive.apple.com",
    "my.securityjourney.com",
    "*.my.securityjourney.com",
    "webgate.ec.europa.eu",
    "*.github.com",
    "*.githubusercontent.com",
    "*.googleapis.com",
    "*.gstatic.com",
    "*.cloudflare.com",
    "*.jsdelivr.net",
    "*.apple.com",
    "*.icloud.com",
    "*.microsoft.com",
    "*.azureedge.net",
    "*.fastly.net",
    "*.akamaized.net",
    "*.amazonaws.com",
    "*.cloudfront.net",
    "*.google.com",
    "*.googlevideo.com",
    "*.slack-edge.com",
    "registry.npmjs.org",
    "*.pythonhosted.org",
    "*.docker.io",
};
const size_t ex_default_excluded_len =
    sizeof(ex_default_excluded) / sizeof(ex_default_excluded[0]);

const char *const ex_default_passthrough[] = {
    "*.example.com", "*.example.org", "*.example.net", "*.neverssl.com"};
const size_t ex_default_passthrough_len =
    sizeof(ex_default_passthrough) / sizeof(ex_default_passthrough[0]);

/* Lower-cases into out; false for names that are not host names. */
static bool normalise(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in);
    while (n > 0 && in[n - 1] == '.')
        n--;
    if (n == 0 || n >= cap || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
        out[i] = c;
    }
    out[n] = '\0';
    return true;
}

ex_domains_t *ex_domains_new(const char *const *names, size_t n)
{
    ex_domains_t *d = nectar_calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->v = nectar_calloc(n ? n : 1, sizeof(*d->v));
    if (d->v == NULL) {
        nectar_free(d);
        return NULL;
    }
    char buf[256];
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        if (name == NULL)
            continue;
        bool wild = strncmp(name, "*.", 2) == 0;
        if (!normalise(wild ? name + 2 : name, buf + 2, sizeof(buf) - 2))
            continue;
        buf[0] = '*';
        buf[1] = '.';
        struct ex_entry *e = &d->v[d->n];
        e->name = nectar_strdup(wild ? buf : buf + 2);
        if (e->name == NULL) {
            ex_domains_free(d);
            return NULL;
        }
        e->wildcard = wild;
        e->base = wild ? e->name + 2 : e->name;
        d->n++;
    }
    return d;
}

void ex_domains_free(ex_domains_t *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++)
        nectar_free(d->v[i].name);
    nectar_free(d->v);
    nectar_free(d);
}

size_t ex_domains_count(const ex_domains_t *d)
{
    return d ? d->n : 0;
}

const char *ex_domains_get(const ex_domains_t *d, size_t i)
{
    return i < d->n ? d->v[i].name : NULL;
}

bool ex_domains_match(const ex_domains_t *d, const char *host)
{
    char h[256];
    if (d == NULL || host == NULL || !normalise(host, h, sizeof(h)))
        return false;
    size_t hl = strlen(h);
    for (size_t i = 0; i < d->n; i++) {
        const struct ex_entry *e = &d->v[i];
        if (strcmp(h, e->base) == 0)
            return true;
        size_t bl = strlen(e->base);
        if (e->wildcard && hl > bl + 1 && h[hl - bl - 1] == '.' &&
            memcmp(h + hl - bl, e->base, bl) == 0)
            return true;
    }
    return false;
}
