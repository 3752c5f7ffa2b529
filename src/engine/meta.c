/*
 * meta.c - decoding of the host's RamaTransparentProxyFlowMeta into the
 * engine's immutable nectar_flow_meta_t (spec ne-engine §1.2.5, §2.4,
 * §8.5), process-wide flow ids (§2.5) and the UTF-8 string rule shared by
 * every string that crosses the ABI.
 *
 * Every pointer in the raw struct is untrusted and borrowed for the call:
 * whatever is kept is copied into one allocation with the decoded struct.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "engine/internal.h"

static atomic_uint_fast64_t flow_ids = 1;

uint64_t nectar__flow_id_next(void)
{
    uint64_t id = atomic_fetch_add(&flow_ids, 1);

    /* 0 means "unknown"; skip it on wrap. */
    if (id == 0)
        id = atomic_fetch_add(&flow_ids, 1);
    return id;
}

uint64_t nectar__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Strict UTF-8 (no overlongs, no surrogates, max U+10FFFF). */
bool nectar__utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = p[i];
        size_t need;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v';
}

/* Trims ASCII whitespace; *len 0 afterwards means blank. */
static const char *trim(const char *p, size_t *len)
{
    size_t n = *len;

    while (n > 0 && is_ws((uint8_t)p[0])) {
        p++;
        n--;
    }
    while (n > 0 && is_ws((uint8_t)p[n - 1]))
        n--;
    *len = n;
    return p;
}

/* Interior NULs cannot survive as C strings: treat them as invalid. */
static bool decodable(const char *p, size_t len)
{
    if (p == NULL || len == 0)
        return false;
    if (memchr(p, '\0', len) != NULL)
        return false;
    return nectar__utf8_valid((const uint8_t *)p, len);
}

char *nectar__utf8_dup_trimmed(const char *p, size_t len)
{
    if (!decodable(p, len))
        return NULL;
    p = trim(p, &len);
    if (len == 0)
        return NULL;
    return nectar_strndup(p, len);
}

/* A host is an IP literal (IPv6 optionally in brackets) or a DNS name. */
static bool host_valid(const char *h, size_t len)
{
    char buf[256];
    struct in6_addr a6;
    struct in_addr a4;
    size_t label = 0;

    if (len == 0 || len >= sizeof(buf))
        return false;
    if (h[0] == '[') {
        if (len < 3 || h[len - 1] != ']')
            return false;
        memcpy(buf, h + 1, len - 2);
        buf[len - 2] = '\0';
        return inet_pton(AF_INET6, buf, &a6) == 1;
    }
    memcpy(buf, h, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1 || inet_pton(AF_INET6, buf, &a6) == 1)
        return true;
    if (len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '.') {
            if (label == 0 && !(i == len - 1 && i > 0))
                return false;
            label = 0;
            continue;
        }
        if (!(isalnum(c) || c == '-' || c == '_' || c >= 0x80))
            return false;
        if (++label > 63)
            return false;
    }
    return true;
}

/* Bytes a string field needs in the arena (0 when it decodes as absent). */
static size_t str_need(const char *p, size_t len)
{
    if (!decodable(p, len))
        return 0;
    p = trim(p, &len);
    return len == 0 ? 0 : len + 1;
}

static size_t endpoint_need(const RamaTransparentProxyFlowEndpoint *ep)
{
    const char *p = ep->host_utf8;
    size_t len = ep->host_utf8_len;

    if (ep->port == 0 || !decodable(p, len))
        return 0;
    p = trim(p, &len);
    if (len == 0 || !host_valid(p, len))
        return 0;
    return len + 1;
}

/* Copies a decodable field into the arena; NULL when absent. */
static const char *arena_put(char **arena, const char *p, size_t len)
{
    char *out;

    if (!decodable(p, len))
        return NULL;
    p = trim(p, &len);
    if (len == 0)
        return NULL;
    out = *arena;
    memcpy(out, p, len);
    out[len] = '\0';
    *arena += len + 1;
    return out;
}

static void put_endpoint(char **arena,
                         const RamaTransparentProxyFlowEndpoint *ep,
                         nectar_endpoint_t *out)
{
    out->host = NULL;
    out->port = 0;
    if (endpoint_need(ep) == 0)
        return;
    out->host = arena_put(arena, ep->host_utf8, ep->host_utf8_len);
    out->port = ep->port;
}

struct ne_meta *nectar__meta_decode(const RamaTransparentProxyFlowMeta *raw,
                                    nectar_protocol_t fallback,
                                    bool *unknown_proto)
{
    struct ne_meta *m;
    size_t need = 0;
    char *arena;
    nectar_flow_meta_t *f;

    *unknown_proto = false;
    if (raw != NULL) {
        need += endpoint_need(&raw->remote_endpoint);
        need += endpoint_need(&raw->local_endpoint);
        need += str_need(raw->source_app_signing_identifier_utf8,
                         raw->source_app_signing_identifier_utf8_len);
        need += str_need(raw->source_app_bundle_identifier_utf8,
                         raw->source_app_bundle_identifier_utf8_len);
        need +=
            str_need(raw->remote_hostname_utf8, raw->remote_hostname_utf8_len);
        need += str_need(raw->local_interface_name_utf8,
                         raw->local_interface_name_utf8_len);
    }
    m = nectar_calloc(1, sizeof(*m) + need);
    if (m == NULL)
        return NULL;
    atomic_init(&m->refs, 1);
    f = &m->m;
    arena = (char *)(m + 1);
    f->flow_id = nectar__flow_id_next();
    f->opened_at_ms = nectar__now_ms();
    f->protocol = fallback;
    if (raw == NULL)
        return m;

    if (raw->protocol == RAMA_FLOW_PROTOCOL_TCP)
        f->protocol = NECTAR_PROTO_TCP;
    else if (raw->protocol == RAMA_FLOW_PROTOCOL_UDP)
        f->protocol = NECTAR_PROTO_UDP;
    else
        *unknown_proto = true;

    put_endpoint(&arena, &raw->remote_endpoint, &f->remote);
    put_endpoint(&arena, &raw->local_endpoint, &f->local);
    f->signing_identifier =
        arena_put(&arena, raw->source_app_signing_identifier_utf8,
                  raw->source_app_signing_identifier_utf8_len);
    f->bundle_identifier =
        arena_put(&arena, raw->source_app_bundle_identifier_utf8,
                  raw->source_app_bundle_identifier_utf8_len);
    f->remote_hostname = arena_put(&arena, raw->remote_hostname_utf8,
                                   raw->remote_hostname_utf8_len);
    f->interface_name = arena_put(&arena, raw->local_interface_name_utf8,
                                  raw->local_interface_name_utf8_len);

    if (raw->source_app_audit_token_bytes != NULL &&
        raw->source_app_audit_token_bytes_len == sizeof(f->audit_token)) {
        f->has_audit_token = true;
        memcpy(f->audit_token, raw->source_app_audit_token_bytes,
               sizeof(f->audit_token));
    }
    if (raw->source_app_pid_is_set) {
        f->has_pid = true;
        f->pid = raw->source_app_pid;
    } else if (f->has_audit_token &&
               nectar__audit_token_pid(f->audit_token, &f->pid) == 0) {
        f->has_pid = true;
    }
    if (raw->local_interface_index_is_set) {
        f->has_interface_index = true;
        f->interface_index = raw->local_interface_index;
    }
    if (raw->local_interface_type_is_set && raw->local_interface_type <= 4) {
        f->has_interface_type = true;
        f->interface_type = raw->local_interface_type;
    }
    if (raw->is_bound_is_set) {
        f->has_is_bound = true;
        f->is_bound = raw->is_bound;
    }
    return m;
}

void nectar__meta_ref(struct ne_meta *m)
{
    atomic_fetch_add(&m->refs, 1);
}

void nectar__meta_unref(struct ne_meta *m)
{
    if (m != NULL && atomic_fetch_sub(&m->refs, 1) == 1)
        nectar_free(m);
}
