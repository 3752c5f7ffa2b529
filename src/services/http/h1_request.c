/*
 * h1_request.c - the request side of the HTTP/1.1 relay: http_parser
 * callbacks for the client's requests.  Each request is queued (see
 * pending_t) and either answered here (the hijack host, or 502 without a
 * server) or re-serialised towards the server with the observed header;
 * a CONNECT or Upgrade request makes the relay hold the client's further
 * bytes until the answer comes (h1.c).
 */
#include <string.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/h1_int.h"

/* True when a comma-separated header value lists token. */
static bool value_has_token(const char *v, size_t len, const char *token)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t j = i;
        while (j < len && v[j] != ',')
            j++;
        size_t e = j;
        while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (nectar__http_ieq(v + i, e - i, token))
            return true;
        i = j;
    }
    return false;
}

static int rq_begin(http_parser *p)
{
    h1_t *h = p->data;
    nectar__h1_msg_reset(&h->rq);
    return 0;
}

static int rq_url(http_parser *p, const char *at, size_t len)
{
    return nectar__h1_on_first_line(p, &((h1_t *)p->data)->rq, at, len);
}

static int rq_field(http_parser *p, const char *at, size_t len)
{
    return nectar__h1_on_field(p, &((h1_t *)p->data)->rq, at, len);
}

static int rq_value(http_parser *p, const char *at, size_t len)
{
    return nectar__h1_on_value(p, &((h1_t *)p->data)->rq, at, len);
}

/* Host of the request: the Host header, else an absolute URL's host. */
static void request_host(const msg_t *m, bool connect, char *host, size_t n)
{
    size_t len;
    const char *v = nectar__h1_msg_header(m, "host", &len);
    host[0] = '\0';
    if (v != NULL && nectar__http_host_norm(v, len, host, n))
        return;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url((const char *)m->raw.data, m->first_len, connect,
                              &u) != 0 ||
        !(u.field_set & (1 << UF_HOST)))
        return;
    nectar__http_host_norm((const char *)m->raw.data +
                               u.field_data[UF_HOST].off,
                           u.field_data[UF_HOST].len, host, n);
}

/* The path of an origin-form or absolute URL. */
static const char *request_path(const msg_t *m, size_t *plen)
{
    const char *url = (const char *)m->raw.data;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (m->first_len > 0 && url[0] != '/' &&
        http_parser_parse_url(url, m->first_len, 0, &u) == 0) {
        if (!(u.field_set & (1 << UF_PATH))) {
            *plen = 1;
            return "/";
        }
        *plen = m->first_len - u.field_data[UF_PATH].off;
        return url + u.field_data[UF_PATH].off;
    }
    *plen = m->first_len;
    return url;
}

static int build_local(h1_t *h, pending_t *pd, const char *method,
                       const char *host)
{
    hijack_resp_t r;
    int rc;
    if (nectar__http_hijack_match(&h->base.opts, host)) {
        size_t plen;
        const char *path = request_path(&h->rq, &plen);
        rc = nectar__http_hijack_answer(&h->base.opts, method, path, plen, &r);
        nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "hijack %s %.*s -> %d",
                         method, (int)plen, path, r.status);
    } else {
        memset(&r, 0, sizeof(r));
        r.status = 502;
        r.ctype = "text/plain";
        rc = nectar__http_buf_adds(&r.body, "no upstream for this request\n");
    }
    hbuf_t *o = &pd->resp;
    if (rc == 0)
        rc = nectar__http_buf_addf(
            o,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
            "Content-Length: %zu\r\nCache-Control: no-store\r\n"
            "%s: %s\r\n",
            r.status, http_status_str((enum http_status)r.status), r.ctype,
            r.body.len, h->base.opts.observed_name,
            h->base.opts.observed_value);
    if (rc == 0 && r.extra_header != NULL)
        rc = nectar__http_buf_addf(o, "%s\r\n", r.extra_header);
    if (rc == 0 && pd->close_after)
        rc = nectar__http_buf_adds(o, "Connection: close\r\n");
    if (rc == 0)
        rc = nectar__http_buf_adds(o, "\r\n");
    if (rc == 0 && !pd->head)
        rc = nectar__http_buf_add(o, r.body.data, r.body.len);
    nectar__http_buf_free(&r.body);
    return rc;
}

static int rq_headers_complete(http_parser *p)
{
    h1_t *h = p->data;
    msg_t *m = &h->rq;
    const char *method = http_method_str((enum http_method)p->method);
    h->any_request = true;
    nectar__http_buf_free(&h->first);
    m->headers_done = true;

    pending_t *pd = nectar_calloc(1, sizeof(*pd));
    if (pd == NULL) {
        h->err = NECTAR_ENOMEM;
        return -1;
    }
    char host[256];
    request_host(m, p->method == HTTP_CONNECT, host, sizeof(host));
    size_t ulen;
    const char *up = nectar__h1_msg_header(m, "upgrade", &ulen);
    pd->head = p->method == HTTP_HEAD;
    pd->connect = p->method == HTTP_CONNECT;
    /* http_parser sets upgrade before this callback (Upgrade plus
     * Connection: upgrade, or CONNECT). */
    pd->upgrade = p->upgrade && !pd->connect;
    pd->ws =
        pd->upgrade && up != NULL && value_has_token(up, ulen, "websocket");
    pd->http10 =
        p->http_major == 0 || (p->http_major == 1 && p->http_minor == 0);
    const svc_http_opts_t *o = &h->base.opts;
    pd->badge_ok = nectar__http_badge_allowed(o, host);
    if (pd->connect)
        pd->authority = nectar_strndup((const char *)m->raw.data, m->first_len);
    if (h->qtail != NULL)
        h->qtail->next = pd;
    else
        h->qhead = pd;
    h->qtail = pd;
    m->req = pd;

    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "request %s %s%.*s", method,
                     host, (int)(m->first_len > 200 ? 200 : m->first_len),
                     (const char *)m->raw.data);
    if (nectar__http_hijack_match(o, host) || h->base.server == NULL) {
        pd->local = true;
        pd->close_after =
            !http_should_keep_alive(p) || pd->connect || pd->upgrade;
        m->body = BODY_NONE;
        if (build_local(h, pd, method, host) != 0) {
            h->err = NECTAR_ENOMEM;
            return -1;
        }
        m->nhdrs = 0;
        /* Answer now (a client waiting for 100-continue gets the final
         * answer at once); a body that follows is dropped. */
        nectar__h1_emit_locals(h);
        return 0;
    }

    hbuf_t *out = &h->to_server;
    int rc = nectar__http_buf_addf(out, "%s %.*s HTTP/%d.%d\r\n", method,
                                   (int)m->first_len, (const char *)m->raw.data,
                                   p->http_major, p->http_minor);
    if (rc == 0)
        rc = nectar__h1_add_headers(h, out, m, NULL);
    if (rc == 0)
        rc = nectar__http_buf_adds(out, "\r\n");
    if (rc != 0) {
        h->err = rc;
        return -1;
    }
    if (p->flags & F_CHUNKED)
        m->body = BODY_CHUNKED;
    else
        m->body = BODY_RAW;
    nectar__h1_msg_start_trailers(m);
    return 0;
}

static int rq_body(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    int rc = 0;
    if (h->rq.body == BODY_RAW)
        rc = nectar__http_buf_add(&h->to_server, at, len);
    else if (h->rq.body == BODY_CHUNKED)
        rc = nectar__h1_add_chunk(&h->to_server, (const uint8_t *)at, len);
    if (rc != 0) {
        h->err = rc;
        return -1;
    }
    return 0;
}

static int rq_complete(http_parser *p)
{
    h1_t *h = p->data;
    msg_t *m = &h->rq;
    int rc = 0;
    if (m->body == BODY_CHUNKED)
        rc = nectar__h1_add_last_chunk(&h->to_server, m);
    if (rc != 0) {
        h->err = rc;
        return -1;
    }
    nectar__h1_msg_reset(m);
    return 0;
}

const http_parser_settings nectar__h1_req_settings = {
    .on_message_begin = rq_begin,
    .on_url = rq_url,
    .on_header_field = rq_field,
    .on_header_value = rq_value,
    .on_headers_complete = rq_headers_complete,
    .on_body = rq_body,
    .on_message_complete = rq_complete,
};
