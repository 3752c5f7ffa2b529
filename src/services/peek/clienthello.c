/*
 * clienthello.c - TLS ClientHello parser (SNI and ALPN) for the peek
 * service.  See clienthello.h.
 *
 * Layout parsed (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301 §3.1):
 *   record:    type(1)=22 version(2) length(2) fragment
 *   handshake: msg_type(1)=1 length(3) body
 *   body:      legacy_version(2) random(32) session_id<0..32>
 *              cipher_suites<2..2^16-2> compression<1..2^8-1>
 *              extensions<0..2^16-1> (optional in TLS 1.0-1.2)
 * Every length is checked against what is left before it is used.
 */
#include "services/peek/clienthello.h"

#include <string.h>

#include "common/alloc.h"

#define REC_HANDSHAKE     22
#define HS_CLIENT_HELLO   1
#define REC_HDR           5
#define REC_MAX_PLAINTEXT 16384
#define EXT_SERVER_NAME   0
#define EXT_ALPN          16

/* A bounds-checked reader over a byte range. */
typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader_t;

static bool rd_u8(reader_t *r, unsigned *v)
{
    if (r->left < 1)
        return false;
    *v = r->p[0];
    r->p++;
    r->left--;
    return true;
}

static bool rd_u16(reader_t *r, unsigned *v)
{
    if (r->left < 2)
        return false;
    *v = ((unsigned)r->p[0] << 8) | r->p[1];
    r->p += 2;
    r->left -= 2;
    return true;
}

static bool rd_skip(reader_t *r, size_t n)
{
    if (r->left < n)
        return false;
    r->p += n;
    r->left -= n;
    return true;
}

/* Splits off the next n bytes as a sub-reader. */
static bool rd_sub(reader_t *r, size_t n, reader_t *sub)
{
    if (r->left < n)
        return false;
    sub->p = r->p;
    sub->left = n;
    r->p += n;
    r->left -= n;
    return true;
}

/*
 * Copies up to `want` handshake-payload bytes, starting at handshake offset
 * 0, from the records in buf into dst.  Returns the number copied (less than
 * want when the records end), or -1 when a record header is not a TLS
 * handshake record.  *end receives the stream offset just past the last
 * byte copied.
 */
static long gather(const uint8_t *buf, size_t len, uint8_t *dst, size_t want,
                   size_t *end)
{
    size_t off = 0, got = 0;
    *end = 0;
    while (got < want) {
        if (len - off < REC_HDR) {
            /* Judge the partial header now so garbage fails early. */
            if (len - off >= 1 && buf[off] != REC_HANDSHAKE)
                return -1;
            if (len - off >= 2 && buf[off + 1] != 3)
                return -1;
            return (long)got;
        }
        const uint8_t *h = buf + off;
        size_t rlen = ((size_t)h[3] << 8) | h[4];
        if (h[0] != REC_HANDSHAKE || h[1] != 3 || h[2] > 4 || rlen == 0 ||
            rlen > REC_MAX_PLAINTEXT)
            return -1;
        off += REC_HDR;
        size_t avail = len - off < rlen ? len - off : rlen;
        size_t take = want - got < avail ? want - got : avail;
        memcpy(dst + got, buf + off, take);
        got += take;
        off += take;
        *end = off;
        if (avail < rlen && take == avail)
            return (long)got; /* the record is still arriving */
        if (take < avail)
            break; /* enough: the rest of this record is not needed */
    }
    return (long)got;
}

/* Host names in SNI: letters, digits, '-', '_', '.'; lower-cased. */
static bool copy_hostname(const uint8_t *p, size_t n, char *out, size_t cap)
{
    while (n > 0 && p[n - 1] == '.')
        n--;
    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c - 'A' + 'a');
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
        out[i] = (char)c;
    }
    out[n] = '\0';
    return true;
}

static bool parse_sni(reader_t ext, peek_tls_hello_t *out)
{
    unsigned list_len;
    reader_t list;
    if (!rd_u16(&ext, &list_len) || !rd_sub(&ext, list_len, &list))
        return false;
    while (list.left > 0) {
        unsigned type, name_len;
        reader_t name;
        if (!rd_u8(&list, &type) || !rd_u16(&list, &name_len) ||
            !rd_sub(&list, name_len, &name))
            return false;
        if (type == 0 && !out->has_sni) {
            /* An unusable name is ignored, not fatal: the flow is still
             * TLS, it just has no SNI we can act on. */
            out->has_sni =
                copy_hostname(name.p, name.left, out->sni, sizeof(out->sni));
        }
    }
    return true;
}

static bool parse_alpn(reader_t ext, peek_tls_hello_t *out)
{
    unsigned list_len;
    reader_t list;
    if (!rd_u16(&ext, &list_len) || !rd_sub(&ext, list_len, &list))
        return false;
    const uint8_t *start = list.p;
    size_t keep = 0;
    while (list.left > 0) {
        unsigned n;
        if (!rd_u8(&list, &n) || n == 0 || !rd_skip(&list, n))
            return false;
        size_t upto = (size_t)(list.p - start);
        if (upto <= PEEK_TLS_MAX_ALPN)
            keep = upto;
    }
    memcpy(out->alpn, start, keep);
    out->alpn_len = keep;
    out->offers_h2 = peek_alpn_contains(out->alpn, keep, "h2");
    out->offers_http11 = peek_alpn_contains(out->alpn, keep, "http/1.1");
    return true;
}

static bool parse_extensions(reader_t *r, peek_tls_hello_t *out)
{
    unsigned total;
    reader_t exts;
    if (r->left == 0)
        return true; /* no extensions block at all */
    if (!rd_u16(r, &total) || !rd_sub(r, total, &exts))
        return false;
    while (exts.left > 0) {
        unsigned type, elen;
        reader_t ext;
        if (!rd_u16(&exts, &type) || !rd_u16(&exts, &elen) ||
            !rd_sub(&exts, elen, &ext))
            return false;
        if (type == EXT_SERVER_NAME && !parse_sni(ext, out))
            return false;
        if (type == EXT_ALPN && !parse_alpn(ext, out))
            return false;
    }
    return true;
}

static bool parse_body(const uint8_t *body, size_t n, peek_tls_hello_t *out)
{
    reader_t r = {body, n};
    unsigned ver, sid_len, cs_len, comp_len;
    if (!rd_u16(&r, &ver) || (ver >> 8) != 3 || !rd_skip(&r, 32))
        return false;
    out->legacy_version = (uint16_t)ver;
    if (!rd_u8(&r, &sid_len) || sid_len > 32 || !rd_skip(&r, sid_len))
        return false;
    if (!rd_u16(&r, &cs_len) || cs_len < 2 || (cs_len & 1) ||
        !rd_skip(&r, cs_len))
        return false;
    if (!rd_u8(&r, &comp_len) || comp_len < 1 || !rd_skip(&r, comp_len))
        return false;
    return parse_extensions(&r, out);
}

peek_verdict_t peek_tls_parse(const uint8_t *buf, size_t len,
                              peek_tls_hello_t *out)
{
    uint8_t hdr[4];
    size_t end;
    long got = gather(buf, len, hdr, sizeof(hdr), &end);
    if (got < 0)
        return PEEK_NO;
    if (got >= 1 && hdr[0] != HS_CLIENT_HELLO)
        return PEEK_NO;
    if (got < 4)
        return PEEK_MORE;
    size_t body_len = ((size_t)hdr[1] << 16) | ((size_t)hdr[2] << 8) | hdr[3];
    if (body_len > PEEK_TLS_MAX_HELLO || body_len < 38)
        return PEEK_NO;
    uint8_t *msg = nectar_malloc(body_len + 4);
    if (msg == NULL)
        return PEEK_NO; /* treat as not-TLS: the flow is relayed as is */
    got = gather(buf, len, msg, body_len + 4, &end);
    peek_verdict_t v = PEEK_MORE;
    if (got < 0) {
        v = PEEK_NO;
    } else if ((size_t)got == body_len + 4) {
        peek_tls_hello_t tmp;
        memset(&tmp, 0, sizeof(tmp));
        if (parse_body(msg + 4, body_len, &tmp)) {
            tmp.consumed = end;
            *out = tmp;
            v = PEEK_YES;
        } else {
            v = PEEK_NO;
        }
    }
    nectar_free(msg);
    return v;
}

bool peek_alpn_contains(const uint8_t *alpn, size_t alpn_len, const char *proto)
{
    size_t plen = strlen(proto);
    size_t i = 0;
    while (i < alpn_len) {
        size_t n = alpn[i];
        if (i + 1 + n > alpn_len)
            return false;
        if (n == plen && memcmp(alpn + i + 1, proto, n) == 0)
            return true;
        i += 1 + n;
    }
    return false;
}
