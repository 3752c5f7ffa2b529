/*
 * h1_response.c - the response side of the HTTP/1.1 relay: http_parser
 * callbacks for the server's responses, matched in order to the queued
 * requests.  Adds the observed header, runs text/html bodies through the
 * badge rewriter (re-framed chunked, or close-delimited to HTTP/1.0), and
 * knows which answers carry no body (HEAD, 1xx, 204, 304) and which turn
 * the connection into a tunnel (101, a CONNECT's 2xx).
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/h1_int.h"

static int rs_begin(http_parser *p)
{
    h1_t *h = p->data;
    nectar__h1_msg_reset(&h->rs);
    return 0;
}

static int rs_status(http_parser *p, const char *at, size_t len)
{
    return nectar__h1_on_first_line(p, &((h1_t *)p->data)->rs, at, len);
}

static int rs_field(http_parser *p, const char *at, size_t len)
{
    return nectar__h1_on_field(p, &((h1_t *)p->data)->rs, at, len);
}

static int rs_value(http_parser *p, const char *at, size_t len)
{
    return nectar__h1_on_value(p, &((h1_t *)p->data)->rs, at, len);
}

/* Headers a rewritten body makes wrong; the relay writes its own
 * framing (Transfer-Encoding or Connection: close) instead. */
static bool drop_for_badge(const char *name, size_t len)
{
    return nectar__http_badge_drops(name, len) ||
           nectar__http_ieq(name, len, "transfer-encoding") ||
           nectar__http_ieq(name, len, "connection");
}

static bool badge_applies(h1_t *h, http_parser *p, pending_t *pd, int *enc)
{
    const msg_t *m = &h->rs;
    int st = p->status_code;
    if (!pd->badge_ok || pd->head || !nectar__http_badge_status(st))
        return false;
    size_t ctl, cel;
    const char *ct = nectar__h1_msg_header(m, "content-type", &ctl);
    const char *ce = nectar__h1_msg_header(m, "content-encoding", &cel);
    return nectar__http_badge_candidate(ct, ctl, ce, cel, enc);
}

static int rs_headers_complete(http_parser *p)
{
    h1_t *h = p->data;
    msg_t *m = &h->rs;
    pending_t *pd = h->qhead;
    if (pd == NULL || pd->local) {
        nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "unsolicited response");
        h->err = NECTAR_EPARSE;
        return -1;
    }
    m->req = pd;
    m->headers_done = true;
    int st = p->status_code;
    m->informational = st / 100 == 1 && st != 101;
    int enc = BADGE_ENC_IDENTITY;
    bool badge = badge_applies(h, p, pd, &enc);
    hbuf_t *out = &h->to_client;
    int rc = nectar__http_buf_addf(out, "HTTP/%d.%d %d %.*s\r\n", p->http_major,
                                   p->http_minor, st, (int)m->first_len,
                                   (const char *)m->raw.data);
    if (badge) {
        m->badge = nectar__http_badge_new(enc, h->base.opts.badge_label);
        if (m->badge == NULL)
            rc = NECTAR_ENOMEM;
        m->body = BODY_BADGE;
        /* HTTP/1.0 on either side cannot take chunked. */
        m->out_close = pd->http10 || p->http_minor == 0;
        m->out_chunked = !m->out_close;
    } else if (p->flags & F_CHUNKED) {
        m->body = BODY_CHUNKED;
    } else {
        m->body = BODY_RAW;
    }
    if (rc == 0)
        rc = nectar__h1_add_headers(h, out, m, badge ? drop_for_badge : NULL);
    if (rc == 0 && m->out_chunked)
        rc = nectar__http_buf_adds(out, "Transfer-Encoding: chunked\r\n");
    if (rc == 0 && m->out_close)
        rc = nectar__http_buf_adds(out, "Connection: close\r\n");
    if (rc == 0)
        rc = nectar__http_buf_adds(out, "\r\n");
    if (rc != 0) {
        h->err = rc;
        return -1;
    }
    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "response %d%s", st,
                     badge ? " (badge candidate)" : "");
    nectar__h1_msg_start_trailers(m);
    if (pd->head)
        return 1;
    /* 2 = no body and nothing after: the connection is a tunnel now
     * (also for a 101 whose Connection header forgot "upgrade"). */
    if ((pd->connect && st / 100 == 2) || (st == 101 && pd->upgrade))
        return 2;
    return 0;
}

/* Rewritten bytes go straight into to_client: when chunked, behind a
 * fixed-width size line patched afterwards (leading zeros are valid), so
 * the body is copied once. */
static int badge_out(h1_t *h, msg_t *m, const uint8_t *in, size_t len, bool fin)
{
    hbuf_t *out = &h->to_client;
    size_t mark = out->len;
    int rc = 0;
    if (m->out_chunked)
        rc = nectar__http_buf_adds(out, "00000000\r\n");
    if (rc == 0 && fin)
        rc = nectar__http_badge_finish(m->badge, out);
    else if (rc == 0)
        rc = nectar__http_badge_feed(m->badge, in, len, out);
    if (rc != 0 || !m->out_chunked)
        return rc;
    size_t n = out->len - mark - 10;
    if (n == 0) {
        out->len = mark; /* an empty chunk would end the body */
        return 0;
    }
    char line[24];
    snprintf(line, sizeof(line), "%08zx\r\n", n & 0xffffffffu);
    memcpy(out->data + mark, line, 10);
    return nectar__http_buf_adds(out, "\r\n");
}

static int rs_body(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    msg_t *m = &h->rs;
    int rc = 0;
    if (m->body == BODY_RAW) {
        rc = nectar__http_buf_add(&h->to_client, at, len);
    } else if (m->body == BODY_CHUNKED) {
        rc = nectar__h1_add_chunk(&h->to_client, (const uint8_t *)at, len);
    } else if (m->body == BODY_BADGE) {
        rc = badge_out(h, m, (const uint8_t *)at, len, false);
    }
    if (rc != 0) {
        h->err = rc;
        return -1;
    }
    return 0;
}

static int finish_badge_body(h1_t *h, msg_t *m)
{
    int rc = badge_out(h, m, NULL, 0, true);
    if (rc == 0 && m->out_chunked)
        rc = nectar__http_buf_adds(&h->to_client, "0\r\n\r\n");
    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "badge %s",
                     nectar__http_badge_inserted(m->badge)
                         ? "inserted"
                         : "not inserted (no body)");
    return rc;
}

static int rs_complete(http_parser *p)
{
    h1_t *h = p->data;
    msg_t *m = &h->rs;
    int rc = 0;
    if (m->body == BODY_BADGE) {
        rc = finish_badge_body(h, m);
    } else if (m->body == BODY_CHUNKED) {
        rc = nectar__h1_add_last_chunk(&h->to_client, m);
    }
    if (rc != 0) {
        h->err = rc;
        return -1;
    }
    pending_t *pd = m->req;
    bool informational = m->informational;
    bool out_close = m->out_close;
    int st = p->status_code;
    nectar__h1_msg_reset(m);
    if (informational || pd == NULL)
        return 0;
    bool upgraded =
        (st == 101 && pd->upgrade) || (pd->connect && st / 100 == 2);
    if ((pd->upgrade || pd->connect) && !upgraded && h->c_hold)
        h->resume = true;
    if (upgraded) {
        h->tunnel_ready = true; /* server_data starts it; pd stays queued */
        return 0;
    }
    h->qhead = pd->next;
    if (h->qhead == NULL)
        h->qtail = NULL;
    nectar__h1_pending_free(pd);
    if (out_close) {
        h->done = true;
        nectar__http_finish(&h->base, 0);
        return 0;
    }
    nectar__h1_emit_locals(h);
    return 0;
}

const http_parser_settings nectar__h1_res_settings = {
    .on_message_begin = rs_begin,
    .on_status = rs_status,
    .on_header_field = rs_field,
    .on_header_value = rs_value,
    .on_headers_complete = rs_headers_complete,
    .on_body = rs_body,
    .on_message_complete = rs_complete,
};
