/* match.c - IP/CIDR, host-name and glob matching for the built-in handler
 * (see match.h).  Only numeric IP literals are ever parsed: no DNS, since a
 * decision must never generate traffic of its own. */
#include "app/match.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/alloc.h"

/* Longest text we accept for an address: a full IPv6 literal in brackets
 * with a zone, or a CIDR. */
#define APP_ADDR_TEXT_MAX 96

static bool is_v4_mapped(const uint8_t a[16])
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0,    0,
                                       0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, prefix, sizeof(prefix)) == 0;
}

bool nectar__app_ip_parse(const char *text, int *family, uint8_t addr[16])
{
    char buf[APP_ADDR_TEXT_MAX];
    size_t len;

    if (text == NULL)
        return false;
    len = strlen(text);
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, text, len + 1);
    if (buf[0] == '[') {
        if (buf[len - 1] != ']')
            return false;
        buf[len - 1] = '\0';
        memmove(buf, buf + 1, len - 1);
    }
    char *zone = strchr(buf, '%');
    if (zone != NULL)
        *zone = '\0';
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, buf, addr) != 1)
        return false;
    if (is_v4_mapped(addr)) {
        memmove(addr, addr + 12, 4);
        memset(addr + 4, 0, 12);
        *family = AF_INET;
        return true;
    }
    *family = AF_INET6;
    return true;
}

static unsigned family_bits(int family)
{
    return family == AF_INET ? 32 : 128;
}

static void clear_host_bits(struct app_cidr *c)
{
    for (unsigned bit = c->prefix; bit < 128; bit++)
        c->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
}

static int parse_prefix(const char *s, unsigned max, unsigned *out)
{
    unsigned v = 0;

    if (*s == '\0' || strlen(s) > 3)
        return NECTAR_EINVAL;
    for (; *s != '\0'; s++) {
        if (!isdigit((unsigned char)*s))
            return NECTAR_EINVAL;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v > max)
        return NECTAR_EINVAL;
    *out = v;
    return 0;
}

int nectar__app_cidr_parse(const char *text, struct app_cidr *out)
{
    char buf[APP_ADDR_TEXT_MAX];
    size_t len;

    if (text == NULL)
        return NECTAR_EINVAL;
    len = strlen(text);
    if (len == 0 || len >= sizeof(buf))
        return NECTAR_EINVAL;
    memcpy(buf, text, len + 1);
    memset(out, 0, sizeof(*out));

    char *slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    if (!nectar__app_ip_parse(buf, &out->family, out->addr))
        return NECTAR_EINVAL;
    /* A mapped address written with an IPv6 prefix ("::ffff:0:0/96") would
     * silently change meaning once folded to IPv4; refuse it instead. */
    if (slash != NULL && out->family == AF_INET && strchr(buf, ':') != NULL)
        return NECTAR_EINVAL;
    out->prefix = family_bits(out->family);
    if (slash != NULL &&
        parse_prefix(slash + 1, family_bits(out->family), &out->prefix) != 0)
        return NECTAR_EINVAL;
    clear_host_bits(out);
    return 0;
}

bool nectar__app_cidr_contains(const struct app_cidr *c, int family,
                               const uint8_t addr[16])
{
    unsigned full = c->prefix / 8, rest = c->prefix % 8;

    if (family != c->family)
        return false;
    if (memcmp(c->addr, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (addr[full] & mask) == c->addr[full];
}

const char *nectar__app_cidr_addr_text(const struct app_cidr *c, char *buf,
                                       unsigned buflen)
{
    if (inet_ntop(c->family, c->addr, buf, buflen) == NULL && buflen > 0)
        buf[0] = '\0';
    return buf;
}

/* Length of name without one trailing dot. */
static size_t name_len(const char *name)
{
    size_t n = strlen(name);
    return (n > 0 && name[n - 1] == '.') ? n - 1 : n;
}

bool nectar__app_name_equal(const char *pattern, const char *name)
{
    size_t pn, nn;

    if (pattern == NULL || name == NULL)
        return false;
    pn = name_len(pattern);
    nn = name_len(name);
    return pn == nn && pn > 0 && strncasecmp(pattern, name, pn) == 0;
}

bool nectar__app_name_suffix(const char *suffix, const char *name)
{
    size_t sn, nn;

    if (suffix == NULL || name == NULL)
        return false;
    sn = name_len(suffix);
    nn = name_len(name);
    if (sn == 0 || nn < sn)
        return false;
    if (strncasecmp(name + (nn - sn), suffix, sn) != 0)
        return false;
    /* Equal, or the match starts right after a label boundary. */
    return nn == sn || name[nn - sn - 1] == '.';
}

bool nectar__app_glob(const char *pattern, const char *text)
{
    const char *star = NULL, *resume = NULL;

    if (pattern == NULL || text == NULL)
        return false;
    /* Greedy scan with one backtrack point: on mismatch, let the most
     * recent `*` swallow one more character.  O(len(p) * len(t)). */
    while (*text != '\0') {
        if (*pattern == '*') {
            star = pattern++;
            resume = text;
        } else if (*pattern == *text) {
            pattern++;
            text++;
        } else if (star != NULL) {
            pattern = star + 1;
            text = ++resume;
        } else {
            return false;
        }
    }
    while (*pattern == '*')
        pattern++;
    return *pattern == '\0';
}

/* Host names as they may appear in rules: letters, digits, '-', '_', '.'.
 * Anything else (spaces, '*', '/') is a typo we want to report. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 253 || s[0] == '.' || strstr(s, "..") != NULL)
        return false;
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
            return false;
    }
    return true;
}

static char *lower_dup(const char *s)
{
    size_t n = name_len(s);
    char *out = nectar_strndup(s, n);

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)out[i]);
    return out;
}

int nectar__app_host_pattern_parse(const char *text,
                                   struct app_host_pattern *out,
                                   const char **why)
{
    memset(out, 0, sizeof(*out));
    if (text == NULL || text[0] == '\0') {
        *why = "expected a non-empty host name, .suffix or CIDR";
        return NECTAR_EINVAL;
    }
    if (nectar__app_cidr_parse(text, &out->cidr) == 0) {
        out->kind = APP_HOST_CIDR;
        return 0;
    }
    if (strchr(text, '/') != NULL || strchr(text, ':') != NULL) {
        *why = "expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32";
        return NECTAR_EINVAL;
    }
    bool suffix = text[0] == '.';
    const char *name = suffix ? text + 1 : text;
    if (!valid_name(name)) {
        *why = "expected a host name, .suffix or CIDR";
        return NECTAR_EINVAL;
    }
    out->name = lower_dup(name);
    if (out->name == NULL) {
        *why = "out of memory";
        return NECTAR_ENOMEM;
    }
    out->kind = suffix ? APP_HOST_SUFFIX : APP_HOST_NAME;
    return 0;
}

void nectar__app_host_pattern_free(struct app_host_pattern *p)
{
    nectar_free(p->name);
    p->name = NULL;
}

bool nectar__app_host_pattern_match(const struct app_host_pattern *p,
                                    const char *host)
{
    int family;
    uint8_t addr[16];

    if (host == NULL || host[0] == '\0')
        return false;
    switch (p->kind) {
    case APP_HOST_NAME:
        return nectar__app_name_equal(p->name, host);
    case APP_HOST_SUFFIX:
        return nectar__app_name_suffix(p->name, host);
    case APP_HOST_CIDR:
        return nectar__app_ip_parse(host, &family, addr) &&
               nectar__app_cidr_contains(&p->cidr, family, addr);
    }
    return false;
}

bool nectar__app_match_flow(const struct app_match *m,
                            const nectar_flow_meta_t *meta)
{
    if (m->has_protocol && meta->protocol != m->protocol)
        return false;
    if (m->remote_port >= 0 &&
        (meta->remote.host == NULL || meta->remote.port != m->remote_port))
        return false;
    if (m->has_remote_host &&
        !nectar__app_host_pattern_match(&m->remote_host,
                                        meta->remote_hostname) &&
        !nectar__app_host_pattern_match(&m->remote_host, meta->remote.host))
        return false;
    if (m->app != NULL && !nectar__app_glob(m->app, meta->signing_identifier))
        return false;
    return true;
}
