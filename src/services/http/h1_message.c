/*
 * h1_message.c - what the HTTP/1.1 relay does alike for requests and
 * responses: collecting a head (first line and header fields, at most
 * H1_MAX_HEAD bytes) from the parser callbacks, looking fields up, and
 * writing a message out again (header lines plus the observed header,
 * chunks, the last chunk with trailers).
 */
#include <string.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/h1_int.h"

/* ---- messages and the request queue -------------------------------------- */

void nectar__h1_msg_reset(msg_t *m)
{
    m->raw.len = 0;
    m->first_len = 0;
    m->nhdrs = 0;
    m->in_value = false;
    m->headers_done = false;
    m->body = BODY_NONE;
    m->out_chunked = false;
    m->out_close = false;
    m->informational = false;
    nectar__http_badge_free(m->badge);
    m->badge = NULL;
    m->req = NULL;
}

/* The head went out: later fields are trailers, collected afresh. */
void nectar__h1_msg_start_trailers(msg_t *m)
{
    m->nhdrs = 0;
    m->raw.len = 0;
    m->first_len = 0;
}

void nectar__h1_msg_free(msg_t *m)
{
    nectar__h1_msg_reset(m);
    nectar__http_buf_free(&m->raw);
    nectar_free(m->hdrs);
    m->hdrs = NULL;
    m->cap = 0;
}

void nectar__h1_pending_free(pending_t *p)
{
    nectar__http_buf_free(&p->resp);
    nectar_free(p->authority);
    nectar_free(p);
}

/* A header value by name (first match), or NULL. */
const char *nectar__h1_msg_header(const msg_t *m, const char *name, size_t *len)
{
    for (size_t i = 0; i < m->nhdrs; i++) {
        const hdr_t *h = &m->hdrs[i];
        if (nectar__http_ieq((const char *)m->raw.data + h->no, h->nl, name)) {
            *len = h->vl;
            return (const char *)m->raw.data + h->vo;
        }
    }
    *len = 0;
    return NULL;
}

/* ---- head collection ----------------------------------------------------- */

static int collect(h1_t *h, msg_t *m, const char *at, size_t len)
{
    if (m->raw.len + len > H1_MAX_HEAD) {
        h->err = NECTAR_ELIMIT;
        return -1;
    }
    if (nectar__http_buf_add(&m->raw, at, len) != 0) {
        h->err = NECTAR_ENOMEM;
        return -1;
    }
    return 0;
}

int nectar__h1_on_first_line(http_parser *p, msg_t *m, const char *at,
                             size_t len)
{
    h1_t *h = p->data;
    if (collect(h, m, at, len) != 0)
        return -1;
    m->first_len += len;
    return 0;
}

int nectar__h1_on_field(http_parser *p, msg_t *m, const char *at, size_t len)
{
    h1_t *h = p->data;
    if (m->in_value || m->nhdrs == 0) {
        if (m->nhdrs == m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 16;
            hdr_t *n = nectar_realloc(m->hdrs, cap * sizeof(*n));
            if (n == NULL) {
                h->err = NECTAR_ENOMEM;
                return -1;
            }
            m->hdrs = n;
            m->cap = cap;
        }
        m->hdrs[m->nhdrs++] = (hdr_t){.no = m->raw.len};
        m->in_value = false;
    }
    if (collect(h, m, at, len) != 0)
        return -1;
    m->hdrs[m->nhdrs - 1].nl += len;
    return 0;
}

int nectar__h1_on_value(http_parser *p, msg_t *m, const char *at, size_t len)
{
    h1_t *h = p->data;
    if (m->nhdrs == 0)
        return 0;
    hdr_t *hd = &m->hdrs[m->nhdrs - 1];
    if (!m->in_value) {
        hd->vo = m->raw.len;
        hd->vl = 0;
        m->in_value = true;
    }
    if (collect(h, m, at, len) != 0)
        return -1;
    hd->vl += len;
    return 0;
}

/* ---- output -------------------------------------------------------------- */

int nectar__h1_add_chunk(hbuf_t *out, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = nectar__http_buf_addf(out, "%zx\r\n", n);
    if (rc == 0)
        rc = nectar__http_buf_add(out, p, n);
    if (rc == 0)
        rc = nectar__http_buf_adds(out, "\r\n");
    return rc;
}

/* One collected header line of m, as "Name: value". */
static int add_field(hbuf_t *out, const msg_t *m, const hdr_t *hd)
{
    int rc = nectar__http_buf_add(out, m->raw.data + hd->no, hd->nl);
    if (rc == 0)
        rc = nectar__http_buf_adds(out, ": ");
    if (rc == 0)
        rc = nectar__http_buf_add(out, m->raw.data + hd->vo, hd->vl);
    if (rc == 0)
        rc = nectar__http_buf_adds(out, "\r\n");
    return rc;
}

/* End of a chunked body: the last chunk, the trailers collected in m,
 * the blank line. */
int nectar__h1_add_last_chunk(hbuf_t *out, const msg_t *m)
{
    int rc = nectar__http_buf_adds(out, "0\r\n");
    for (size_t i = 0; rc == 0 && i < m->nhdrs; i++)
        rc = add_field(out, m, &m->hdrs[i]);
    if (rc == 0)
        rc = nectar__http_buf_adds(out, "\r\n");
    return rc;
}

/* Header lines of m into out, skipping those drop() rejects, plus the
 * observed header when m lacks it. */
int nectar__h1_add_headers(h1_t *h, hbuf_t *out, const msg_t *m,
                           bool (*drop)(const char *name, size_t len))
{
    const svc_http_opts_t *o = &h->base.opts;
    bool seen = false;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < m->nhdrs; i++) {
        const hdr_t *hd = &m->hdrs[i];
        const char *name = (const char *)m->raw.data + hd->no;
        if (nectar__http_ieq(name, hd->nl, o->observed_name))
            seen = true;
        if (drop != NULL && drop(name, hd->nl))
            continue;
        rc = add_field(out, m, hd);
    }
    if (rc == 0 && !seen && !m->informational)
        rc = nectar__http_buf_addf(out, "%s: %s\r\n", o->observed_name,
                                   o->observed_value);
    return rc;
}
