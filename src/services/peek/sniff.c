/*
 * sniff.c - SOCKS5 greeting and HTTP/1.x request-head recognisers for the
 * peek service.  See sniff.h.  Both are incremental: they look at the bytes
 * seen so far and say whether more could still make a match.
 */
#include "services/peek/sniff.h"

#include <string.h>
#include <strings.h>

#define METHOD_MAX 16
#define TARGET_MAX 8192

peek_verdict_t peek_socks5_greeting(const uint8_t *buf, size_t len,
                                    size_t *greeting_len)
{
    if (len == 0)
        return PEEK_MORE;
    if (buf[0] != 5)
        return PEEK_NO;
    if (len < 2)
        return PEEK_MORE;
    size_t want = 2 + (size_t)buf[1];
    if (buf[1] == 0 || len > want)
        return PEEK_NO;
    if (len < want)
        return PEEK_MORE;
    if (greeting_len != NULL)
        *greeting_len = want;
    return PEEK_YES;
}

static bool is_method_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
}

static bool is_host_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == ':';
}

bool peek_host_normalize(const char *host, size_t n, char *out, size_t cap)
{
    if (n > 0 && host[0] == '[') {
        const char *close = memchr(host, ']', n);
        if (close == NULL)
            return false;
        host++;
        n = (size_t)(close - host);
    } else {
        const char *colon = memchr(host, ':', n);
        if (colon != NULL)
            n = (size_t)(colon - host);
    }
    while (n > 0 && host[n - 1] == '.')
        n--;
    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)host[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c - 'A' + 'a');
        if (!is_host_char(c))
            return false;
        out[i] = (char)c;
    }
    out[n] = '\0';
    return true;
}

/* Host from an absolute-form target "scheme://authority/...". */
static void host_from_target(const uint8_t *t, size_t n, peek_http_req_t *out)
{
    const uint8_t *sep = NULL;
    for (size_t i = 0; i + 2 < n; i++) {
        if (t[i] == ':' && t[i + 1] == '/' && t[i + 2] == '/') {
            sep = t + i + 3;
            break;
        }
    }
    if (sep == NULL)
        return;
    size_t rest = n - (size_t)(sep - t), alen = 0;
    while (alen < rest && sep[alen] != '/' && sep[alen] != '?')
        alen++;
    const uint8_t *at = memchr(sep, '@', alen);
    if (at != NULL) {
        alen -= (size_t)(at + 1 - sep);
        sep = at + 1;
    }
    if (!peek_host_normalize((const char *)sep, alen, out->host,
                             sizeof(out->host)))
        out->host[0] = '\0';
}

/* Scans complete header lines in buf[start..len) for Host; sets
 * head_complete when the blank line is among them. */
static void scan_headers(const uint8_t *buf, size_t len, size_t start,
                         peek_http_req_t *out)
{
    size_t pos = start;
    for (;;) {
        const uint8_t *nl = memchr(buf + pos, '\n', len - pos);
        if (nl == NULL)
            return;
        size_t end = (size_t)(nl - buf);
        size_t llen = end - pos;
        if (llen > 0 && buf[end - 1] == '\r')
            llen--;
        if (llen == 0) {
            out->head_complete = true;
            return;
        }
        const char *line = (const char *)buf + pos;
        if (llen > 5 && strncasecmp(line, "host:", 5) == 0) {
            size_t v = 5;
            while (v < llen && (line[v] == ' ' || line[v] == '\t'))
                v++;
            size_t vend = llen;
            while (vend > v &&
                   (line[vend - 1] == ' ' || line[vend - 1] == '\t'))
                vend--;
            if (!peek_host_normalize(line + v, vend - v, out->host,
                                     sizeof(out->host)))
                out->host[0] = '\0';
        }
        pos = end + 1;
    }
}

/* Matches the request line; returns PEEK_YES with *line_len, or MORE/NO. */
static peek_verdict_t match_line(const uint8_t *buf, size_t len,
                                 peek_http_req_t *out, size_t *target_at,
                                 size_t *target_len)
{
    size_t i = 0;
    while (i < len && is_method_char(buf[i]) && i < METHOD_MAX)
        i++;
    if (i == len)
        return i < METHOD_MAX ? PEEK_MORE : PEEK_NO;
    if (i == 0 || buf[i] != ' ')
        return PEEK_NO;
    memcpy(out->method, buf, i);
    out->method[i] = '\0';
    size_t t0 = ++i;
    while (i < len && buf[i] > 0x20 && buf[i] < 0x7f && i - t0 < TARGET_MAX)
        i++;
    if (i == len)
        return i - t0 < TARGET_MAX ? PEEK_MORE : PEEK_NO;
    if (i == t0 || buf[i] != ' ')
        return PEEK_NO;
    *target_at = t0;
    *target_len = i - t0;
    i++;
    static const char proto[] = "HTTP/1.";
    for (size_t k = 0; k < sizeof(proto) - 1; k++, i++) {
        if (i == len)
            return PEEK_MORE;
        if (buf[i] != (uint8_t)proto[k])
            return PEEK_NO;
    }
    if (i == len)
        return PEEK_MORE;
    if (buf[i] != '0' && buf[i] != '1')
        return PEEK_NO;
    out->version_minor = buf[i] - '0';
    i++;
    if (i < len && buf[i] == '\r')
        i++;
    if (i == len)
        return PEEK_MORE;
    if (buf[i] != '\n')
        return PEEK_NO;
    out->line_len = i + 1;
    return PEEK_YES;
}

peek_verdict_t peek_http_parse(const uint8_t *buf, size_t len, bool final,
                               peek_http_req_t *out)
{
    peek_http_req_t tmp;
    memset(&tmp, 0, sizeof(tmp));
    size_t t_at = 0, t_len = 0;
    peek_verdict_t v = match_line(buf, len, &tmp, &t_at, &t_len);
    if (v != PEEK_YES)
        return v;
    host_from_target(buf + t_at, t_len, &tmp);
    /* The Host header wins over nothing, and an absolute-form target wins
     * over Host (RFC 9112 §3.2.2). */
    char from_target[sizeof(tmp.host)];
    memcpy(from_target, tmp.host, sizeof(from_target));
    scan_headers(buf, len, tmp.line_len, &tmp);
    if (from_target[0] != '\0')
        memcpy(tmp.host, from_target, sizeof(tmp.host));
    if (!tmp.head_complete && !final && len < PEEK_HTTP_MAX_HEAD)
        return PEEK_MORE;
    *out = tmp;
    return PEEK_YES;
}
