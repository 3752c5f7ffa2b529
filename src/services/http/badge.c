/*
 * badge.c - the streaming HTML badge rewriter: finds the opening <body ...>
 * tag in a response body and inserts the badge element right after it,
 * once.  A small tokenizer walks the markup byte by byte (so a tag may be
 * split across reads anywhere): tag names are case-insensitive, attribute
 * values may hold '>' in quotes, and "<body" counts neither inside another
 * tag, a comment or a declaration, nor in the text of <script>, <style>,
 * <textarea> or <title>.
 *
 * gzip and deflate bodies are inflated, rewritten and deflated again in
 * the same encoding (zlib or raw deflate as received), flushing at every
 * input piece so the client sees bytes as they arrive: nothing is
 * buffered beyond zlib's own window.  A decode error ends the decoded
 * stream there; the re-encoded output is still well-formed, only shorter.
 * Without a <body> tag the decoded bytes pass unchanged.
 */
#include <string.h>
#include <zlib.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/http_int.h"

enum scan_state {
    SC_TEXT,     /* outside markup */
    SC_LT,       /* after '<' */
    SC_NAME,     /* in a tag name (start or end tag) */
    SC_TAG,      /* in a tag's attributes */
    SC_QUOTE,    /* in a quoted attribute value */
    SC_BANG,     /* after "<!" */
    SC_BANG2,    /* after "<!-" */
    SC_COMMENT,  /* in <!-- --> */
    SC_DECL,     /* in <!DOCTYPE ...>, <?...>: up to '>' */
    SC_RAW,      /* in the text of <script>, <style>, ...: no markup */
    SC_RAW_LT,   /* raw text, after '<' */
    SC_RAW_NAME, /* raw text, after "</": matching the element's name */
    SC_RAW_END,  /* the raw element's end tag: up to '>' */
    SC_DONE,     /* badge inserted */
};

/* Elements whose text is not markup: a "<body>" inside them is text. */
static const char *const raw_elements[] = {"script", "style", "textarea",
                                           "title"};

struct badge {
    int enc;
    enum scan_state st;
    char name[12];   /* SC_NAME/SC_TAG: the tag name, lower case */
    unsigned nlen;   /* its length; sizeof(name) means "longer" */
    bool end_tag;    /* the tag is an end tag */
    int raw;         /* SC_RAW*: index into raw_elements */
    unsigned ridx;   /* SC_RAW_NAME: name bytes matched */
    char quote;      /* SC_QUOTE: the closing quote */
    unsigned dashes; /* SC_COMMENT: consecutive '-' */
    hbuf_t element;
    /* zlib state (gzip/deflate only) */
    bool coding;      /* dec/cmp initialised */
    bool dec_ended;   /* stream end or decode error: ignore the rest */
    bool raw_deflate; /* deflate without the zlib wrapper */
    uint8_t pre[2];   /* deflate: first bytes, to tell zlib from raw */
    unsigned npre;
    z_stream dec;
    z_stream cmp;
};

int nectar__http_badge_element(const char *label, hbuf_t *out)
{
    static const char open[] =
        "<div id=\"nectar-proxy-badge\" style=\"position:fixed;top:16px;"
        "right:16px;z-index:2147483647;padding:10px 14px;"
        "background:rgba(17,17,17,0.92);color:#fff;"
        "font:700 12px monospace;border-radius:999px;"
        "box-shadow:0 4px 14px rgba(0,0,0,0.35);pointer-events:none\">";
    int rc = nectar__http_buf_adds(out, open);
    for (const char *p = label; rc == 0 && *p != '\0'; p++) {
        switch (*p) {
        case '<':
            rc = nectar__http_buf_adds(out, "&lt;");
            break;
        case '>':
            rc = nectar__http_buf_adds(out, "&gt;");
            break;
        case '&':
            rc = nectar__http_buf_adds(out, "&amp;");
            break;
        case '"':
            rc = nectar__http_buf_adds(out, "&quot;");
            break;
        default:
            rc = nectar__http_buf_add(out, p, 1);
            break;
        }
    }
    if (rc == 0)
        rc = nectar__http_buf_adds(out, "</div>");
    return rc;
}

badge_t *nectar__http_badge_new(int enc, const char *label)
{
    badge_t *bd = nectar_calloc(1, sizeof(*bd));
    if (bd == NULL)
        return NULL;
    bd->enc = enc;
    if (nectar__http_badge_element(label ? label : "", &bd->element) != 0) {
        nectar__http_badge_free(bd);
        return NULL;
    }
    return bd;
}

void nectar__http_badge_free(badge_t *bd)
{
    if (bd == NULL)
        return;
    if (bd->coding) {
        inflateEnd(&bd->dec);
        deflateEnd(&bd->cmp);
    }
    nectar__http_buf_free(&bd->element);
    nectar_free(bd);
}

bool nectar__http_badge_inserted(const badge_t *bd)
{
    return bd->st == SC_DONE;
}

static bool is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static bool name_is(const badge_t *bd, const char *name)
{
    return bd->nlen == strlen(name) && memcmp(bd->name, name, bd->nlen) == 0;
}

/* A tag ended with '>': true when it was the opening <body>. */
static bool tag_closed(badge_t *bd)
{
    bd->st = SC_TEXT;
    if (bd->end_tag)
        return false;
    if (name_is(bd, "body"))
        return true;
    for (size_t i = 0; i < sizeof(raw_elements) / sizeof(raw_elements[0]);
         i++) {
        if (name_is(bd, raw_elements[i])) {
            bd->st = SC_RAW;
            bd->raw = (int)i;
        }
    }
    return false;
}

/* Inside raw text: only the element's own end tag ends it. */
static void scan_raw(badge_t *bd, uint8_t c, uint8_t lc)
{
    const char *name = raw_elements[bd->raw];
    switch (bd->st) {
    case SC_RAW:
        if (c == '<')
            bd->st = SC_RAW_LT;
        break;
    case SC_RAW_LT:
        if (c == '/') {
            bd->st = SC_RAW_NAME;
            bd->ridx = 0;
        } else if (c != '<') {
            bd->st = SC_RAW;
        }
        break;
    case SC_RAW_NAME:
        if (name[bd->ridx] != '\0' && lc == (uint8_t)name[bd->ridx])
            bd->ridx++;
        else if (name[bd->ridx] == '\0' && c == '>')
            bd->st = SC_TEXT;
        else if (name[bd->ridx] == '\0' && (is_space(c) || c == '/'))
            bd->st = SC_RAW_END;
        else
            bd->st = c == '<' ? SC_RAW_LT : SC_RAW;
        break;
    default: /* SC_RAW_END */
        if (c == '>')
            bd->st = SC_TEXT;
        break;
    }
}

/* Advance the scanner by one byte; true when the byte closes <body ...>. */
static bool scan_byte(badge_t *bd, uint8_t c)
{
    uint8_t lc = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
    bool letter = lc >= 'a' && lc <= 'z';
    switch (bd->st) {
    case SC_TEXT:
        if (c == '<')
            bd->st = SC_LT;
        return false;
    case SC_LT:
        bd->end_tag = false;
        if (letter || c == '/') {
            bd->st = SC_NAME;
            bd->end_tag = c == '/';
            bd->nlen = 0;
            if (letter)
                bd->name[bd->nlen++] = (char)lc;
        } else if (c == '!') {
            bd->st = SC_BANG;
        } else if (c == '?') {
            bd->st = SC_DECL;
        } else if (c != '<') {
            bd->st = SC_TEXT;
        }
        return false;
    case SC_NAME:
        if (c == '>')
            return tag_closed(bd);
        if (is_space(c) || c == '/')
            bd->st = SC_TAG;
        else if (bd->nlen < sizeof(bd->name))
            bd->name[bd->nlen++] = (char)lc; /* past the end: no match */
        return false;
    case SC_TAG:
        if (c == '>')
            return tag_closed(bd);
        if (c == '"' || c == '\'') {
            bd->quote = (char)c;
            bd->st = SC_QUOTE;
        }
        return false;
    case SC_QUOTE:
        if (c == (uint8_t)bd->quote)
            bd->st = SC_TAG;
        return false;
    case SC_BANG:
        bd->st = (c == '-') ? SC_BANG2 : SC_DECL;
        if (c == '>')
            bd->st = SC_TEXT;
        return false;
    case SC_BANG2:
        bd->st = (c == '-') ? SC_COMMENT : SC_DECL;
        bd->dashes = 0;
        return false;
    case SC_COMMENT:
        if (c == '>' && bd->dashes >= 2)
            bd->st = SC_TEXT;
        bd->dashes = (c == '-') ? bd->dashes + 1 : 0;
        return false;
    case SC_DECL:
        if (c == '>')
            bd->st = SC_TEXT;
        return false;
    case SC_RAW:
    case SC_RAW_LT:
    case SC_RAW_NAME:
    case SC_RAW_END:
        scan_raw(bd, c, lc);
        return false;
    case SC_DONE:
        return false;
    }
    return false;
}

/* Rewrite decoded bytes into out (plain HTML). */
static int rewrite(badge_t *bd, const uint8_t *in, size_t len, hbuf_t *out)
{
    size_t i = 0;
    while (bd->st != SC_DONE && i < len) {
        if (scan_byte(bd, in[i++])) {
            bd->st = SC_DONE;
            int rc = nectar__http_buf_add(out, in, i);
            if (rc == 0)
                rc = nectar__http_buf_add(out, bd->element.data,
                                          bd->element.len);
            if (rc != 0)
                return rc;
            in += i;
            len -= i;
            i = 0;
        }
    }
    return nectar__http_buf_add(out, in, len);
}

/* Compress plain bytes into out with the given flush mode. */
static int encode(badge_t *bd, const uint8_t *in, size_t len, int flush,
                  hbuf_t *out)
{
    uint8_t tmp[16384];
    bd->cmp.next_in = (Bytef *)in;
    bd->cmp.avail_in = (uInt)len;
    for (;;) {
        bd->cmp.next_out = tmp;
        bd->cmp.avail_out = sizeof(tmp);
        int zr = deflate(&bd->cmp, flush);
        if (zr == Z_STREAM_ERROR)
            return NECTAR_EIO;
        size_t n = sizeof(tmp) - bd->cmp.avail_out;
        if (nectar__http_buf_add(out, tmp, n) != 0)
            return NECTAR_ENOMEM;
        if (zr == Z_STREAM_END)
            return 0;
        if (bd->cmp.avail_in == 0 && bd->cmp.avail_out != 0)
            return 0;
    }
}

static int start_coding(badge_t *bd)
{
    int wbits = 15;
    if (bd->enc == BADGE_ENC_GZIP)
        wbits = 15 + 16;
    else if (bd->raw_deflate)
        wbits = -15;
    if (inflateInit2(&bd->dec, bd->enc == BADGE_ENC_GZIP ? 15 + 32 : wbits) !=
        Z_OK)
        return NECTAR_ENOMEM;
    /* Speed over ratio: this runs per response on the flow's loop
     * (measured: level 1 re-codes about twice as fast as level 6). */
    if (deflateInit2(&bd->cmp, Z_BEST_SPEED, Z_DEFLATED, wbits, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        inflateEnd(&bd->dec);
        return NECTAR_ENOMEM;
    }
    bd->coding = true;
    return 0;
}

/* Inflate, rewrite and re-deflate one piece of encoded input. */
static int decode(badge_t *bd, const uint8_t *in, size_t len, hbuf_t *out)
{
    uint8_t tmp[16384];
    hbuf_t plain = {0};
    int rc = 0;
    bd->dec.next_in = (Bytef *)in;
    bd->dec.avail_in = (uInt)len;
    while (!bd->dec_ended) {
        bd->dec.next_out = tmp;
        bd->dec.avail_out = sizeof(tmp);
        int zr = inflate(&bd->dec, Z_NO_FLUSH);
        size_t n = sizeof(tmp) - bd->dec.avail_out;
        plain.len = 0;
        rc = rewrite(bd, tmp, n, &plain);
        if (rc == 0)
            rc = encode(bd, plain.data, plain.len, Z_NO_FLUSH, out);
        if (rc != 0)
            break;
        if (zr == Z_STREAM_END || (zr != Z_OK && zr != Z_BUF_ERROR)) {
            bd->dec_ended = true; /* trailing bytes or corrupt: drop */
            break;
        }
        /* Stop when input is used up and inflate had room to spare. */
        if (zr == Z_BUF_ERROR ||
            (bd->dec.avail_in == 0 && bd->dec.avail_out != 0))
            break;
    }
    nectar__http_buf_free(&plain);
    if (rc == 0)
        rc = encode(bd, NULL, 0, Z_SYNC_FLUSH, out);
    return rc;
}

int nectar__http_badge_feed(badge_t *bd, const uint8_t *in, size_t len,
                            hbuf_t *out)
{
    if (bd->enc == BADGE_ENC_IDENTITY)
        return rewrite(bd, in, len, out);
    if (!bd->coding && bd->enc == BADGE_ENC_DEFLATE) {
        /* RFC 9110 deflate is zlib-wrapped, yet raw deflate is common:
         * the first two bytes tell (a zlib header is a multiple of 31). */
        while (bd->npre < 2 && len > 0) {
            bd->pre[bd->npre++] = *in++;
            len--;
        }
        if (bd->npre < 2)
            return 0;
        unsigned hdr = (unsigned)bd->pre[0] << 8 | bd->pre[1];
        bd->raw_deflate = (bd->pre[0] & 0x0f) != 8 || hdr % 31 != 0;
        int rc = start_coding(bd);
        if (rc == 0)
            rc = decode(bd, bd->pre, 2, out);
        if (rc != 0)
            return rc;
    } else if (!bd->coding) {
        int rc = start_coding(bd);
        if (rc != 0)
            return rc;
    }
    if (len == 0)
        return 0;
    return decode(bd, in, len, out);
}

int nectar__http_badge_finish(badge_t *bd, hbuf_t *out)
{
    if (bd->enc == BADGE_ENC_IDENTITY)
        return 0;
    if (!bd->coding) {
        /* Fewer than two bytes of deflate (or nothing): pass them on. */
        return nectar__http_buf_add(out, bd->pre, bd->npre);
    }
    return encode(bd, NULL, 0, Z_FINISH, out);
}
