/*
 * h1.c - the HTTP/1.1 relay: requests parsed from the client stream by
 * http_parser and re-serialised towards the server, responses the other
 * way, streaming (bodies are never held whole).
 *
 * Map of this file:
 *   1. state: a queue of requests awaiting their response (pipelining and
 *      keep-alive), one header collector per direction
 *   2. output helpers (framing, flush, read back-pressure)
 *   3. request callbacks (observed header, hijack, CONNECT/upgrade hold)
 *   4. response callbacks (badge, HEAD/1xx/204/304, upgrade answers)
 *   5. tunnels: WebSocket/raw after 101, CONNECT one level deep
 *   6. stream callbacks, start, teardown
 *
 * Framing: a body is re-framed from what the parser decoded: chunked
 * stays chunked (trailers kept), Content-Length bodies go as they are, a
 * body the badge rewrites is sent chunked (or close-delimited to
 * HTTP/1.0 peers) without Content-Length and validators.
 *
 * Modes: M_HTTP parses both directions; M_TUNNEL copies bytes both ways
 * (WebSocket frames are logged); M_DELEGATED: after a CONNECT, two tunnel
 * views own the reading, and the relay only waits for them to close.
 */
#include <http_parser.h>
#include <string.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/http_int.h"

/* Output queued beyond this pauses the reading side that produces it. */
#define H1_HIGH_WATER (256 * 1024)
/* Requests read ahead of their responses (pipelining) before the relay
 * stops reading the client. */
#define H1_MAX_PENDING 64
/* Header block limit per message (request line and headers). */
#define H1_MAX_HEAD (64 * 1024)

/* ---- 1. state ------------------------------------------------------------ */

/* One request whose response has not been relayed yet. */
typedef struct pending {
    struct pending *next;
    bool local;       /* answered here (hijack host, or no server) */
    bool close_after; /* local: close the connection after the answer */
    bool head;
    bool connect;
    bool upgrade;  /* the request asked for an Upgrade */
    bool ws;       /* ... to websocket */
    bool badge_ok; /* badge allowed for this host */
    bool http10;
    hbuf_t resp;     /* local answer bytes */
    char *authority; /* CONNECT target */
} pending_t;

typedef struct hdr {
    size_t no, nl, vo, vl; /* name / value offsets into msg.raw */
} hdr_t;

enum body_mode { BODY_NONE, BODY_RAW, BODY_CHUNKED, BODY_BADGE };

typedef struct msg {
    hbuf_t raw;       /* URL or reason, then header names and values */
    size_t first_len; /* bytes of raw holding the URL / reason */
    hdr_t *hdrs;
    size_t nhdrs;
    size_t cap;
    bool in_value;
    bool headers_done;
    enum body_mode body;
    bool out_chunked;   /* BODY_BADGE: chunked output framing */
    bool out_close;     /* close the connection after this message */
    bool informational; /* 1xx other than 101 */
    badge_t *badge;
    pending_t *req; /* the request this message belongs to */
} msg_t;

enum mode { M_HTTP, M_TUNNEL, M_DELEGATED };

typedef struct h1 {
    http_base_t base;
    http_parser reqp;
    http_parser resp;
    msg_t rq;
    msg_t rs;
    pending_t *qhead;
    pending_t *qtail;
    hbuf_t to_server;
    hbuf_t to_client;
    enum mode mode;
    bool ws;
    ws_parser_t ws_c2s;
    ws_parser_t ws_s2c;
    bool c_eof, s_eof;   /* read side ended */
    bool c_shut, s_shut; /* we shut the write half down */
    bool c_reading, s_reading;
    bool c_hold;            /* requests wait for an upgrade answer */
    bool resume;            /* the held request was answered plainly */
    bool tunnel_ready;      /* its answer was 101 or a CONNECT 2xx */
    hbuf_t c_pending;       /* client bytes read while holding */
    bool any_request;       /* raw fallback no longer possible */
    hbuf_t first;           /* client bytes before the first request */
    bool done;              /* no more HTTP processing */
    int err;                /* error raised inside a parser callback */
    svc_stream_t *views[2]; /* M_DELEGATED: client / server views */
    int views_open;
    svc_http_opts_t nested; /* options of the relay inside a tunnel */
} h1_t;

static http_parser_settings req_settings;
static http_parser_settings res_settings;

static void on_client_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data);
static void on_server_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data);

static void msg_reset(msg_t *m)
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

static void msg_free(msg_t *m)
{
    msg_reset(m);
    nectar__http_buf_free(&m->raw);
    nectar_free(m->hdrs);
    m->hdrs = NULL;
    m->cap = 0;
}

static void pending_free(pending_t *p)
{
    nectar__http_buf_free(&p->resp);
    nectar_free(p->authority);
    nectar_free(p);
}

/* A header value by name (first match), or NULL. */
static const char *msg_header(const msg_t *m, const char *name, size_t *len)
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

/* ---- 2. output helpers --------------------------------------------------- */

static int add_chunk(hbuf_t *out, const uint8_t *p, size_t n)
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

/* Append the collected headers (the trailers, after a body). */
static int add_fields(hbuf_t *out, const msg_t *m)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < m->nhdrs; i++) {
        const hdr_t *h = &m->hdrs[i];
        rc = nectar__http_buf_add(out, m->raw.data + h->no, h->nl);
        if (rc == 0)
            rc = nectar__http_buf_adds(out, ": ");
        if (rc == 0)
            rc = nectar__http_buf_add(out, m->raw.data + h->vo, h->vl);
        if (rc == 0)
            rc = nectar__http_buf_adds(out, "\r\n");
    }
    return rc;
}

static bool queue_full(const h1_t *h)
{
    size_t n = 0;
    for (const pending_t *p = h->qhead; p != NULL; p = p->next) {
        if (++n >= H1_MAX_PENDING)
            return true;
    }
    return false;
}

static void update_reading(h1_t *h)
{
    http_base_t *b = &h->base;
    bool live = !b->finishing && h->mode != M_DELEGATED;
    size_t cq = svc_write_queue_size(b->client);
    size_t sq = b->server ? svc_write_queue_size(b->server) : 0;
    /* While a request waits for its upgrade answer, a little more is
     * read (and held) so that an EOF is still noticed. */
    bool want_c = live && !h->c_eof && !h->done && !queue_full(h) &&
                  (!h->c_hold || h->c_pending.len < H1_MAX_HEAD) &&
                  cq < H1_HIGH_WATER && sq < H1_HIGH_WATER;
    bool want_s = live && b->server != NULL && !h->s_eof && cq < H1_HIGH_WATER;
    if (want_c != h->c_reading) {
        h->c_reading = want_c;
        if (want_c)
            svc_read_start(b->client, on_client_read, h);
        else
            svc_read_stop(b->client);
    }
    if (b->server != NULL && want_s != h->s_reading) {
        h->s_reading = want_s;
        if (want_s)
            svc_read_start(b->server, on_server_read, h);
        else
            svc_read_stop(b->server);
    }
}

/* Write what was produced; shut write halves whose input ended. */
static void flush(h1_t *h)
{
    http_base_t *b = &h->base;
    int rc = nectar__http_write(b, b->client, &h->to_client);
    if (rc == 0 && b->server != NULL)
        rc = nectar__http_write(b, b->server, &h->to_server);
    if (rc < 0) {
        nectar__http_finish(b, rc);
        return;
    }
    if (b->finishing)
        return;
    if (h->mode == M_DELEGATED) {
        update_reading(h);
        return;
    }
    /* Half-close: an ended input ends the other side's output. */
    if (h->c_eof && !h->c_hold && !h->s_shut && b->server != NULL) {
        h->s_shut = true;
        svc_shutdown(b->server);
    }
    if (h->s_eof && !h->c_shut) {
        h->c_shut = true;
        svc_shutdown(b->client);
    }
    bool idle = h->mode == M_HTTP && !h->c_hold && h->qhead == NULL;
    /* An upgrade or CONNECT the server can no longer answer ends it. */
    bool orphan = h->mode == M_HTTP && h->c_hold && h->s_eof;
    if (orphan || (h->c_eof && (h->s_eof || b->server == NULL || idle))) {
        nectar__http_finish(b, 0);
        return;
    }
    update_reading(h);
}

/* Emit the answers built here that are due (in request order). */
static void emit_locals(h1_t *h)
{
    while (h->qhead != NULL && h->qhead->local) {
        pending_t *p = h->qhead;
        h->qhead = p->next;
        if (h->qhead == NULL)
            h->qtail = NULL;
        if (nectar__http_buf_add(&h->to_client, p->resp.data, p->resp.len) != 0)
            h->err = NECTAR_ENOMEM;
        bool close_after = p->close_after;
        pending_free(p);
        if (close_after) {
            h->done = true;
            nectar__http_finish(&h->base, 0);
            return;
        }
    }
}

/* ---- header collection (both directions) --------------------------------- */

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

static int on_first_line(http_parser *p, msg_t *m, const char *at, size_t len)
{
    h1_t *h = p->data;
    if (collect(h, m, at, len) != 0)
        return -1;
    m->first_len += len;
    return 0;
}

static int on_field(http_parser *p, msg_t *m, const char *at, size_t len)
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

static int on_value(http_parser *p, msg_t *m, const char *at, size_t len)
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

/* Header lines of m into out, skipping those drop() rejects, plus the
 * observed header when m lacks it. */
static int add_headers(h1_t *h, hbuf_t *out, const msg_t *m,
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
        rc = nectar__http_buf_add(out, name, hd->nl);
        if (rc == 0)
            rc = nectar__http_buf_adds(out, ": ");
        if (rc == 0)
            rc = nectar__http_buf_add(out, m->raw.data + hd->vo, hd->vl);
        if (rc == 0)
            rc = nectar__http_buf_adds(out, "\r\n");
    }
    if (rc == 0 && !seen && !m->informational)
        rc = nectar__http_buf_addf(out, "%s: %s\r\n", o->observed_name,
                                   o->observed_value);
    return rc;
}

/* ---- 3. request callbacks ------------------------------------------------ */

static int rq_begin(http_parser *p)
{
    h1_t *h = p->data;
    msg_reset(&h->rq);
    return 0;
}

static int rq_url(http_parser *p, const char *at, size_t len)
{
    return on_first_line(p, &((h1_t *)p->data)->rq, at, len);
}

static int rq_field(http_parser *p, const char *at, size_t len)
{
    return on_field(p, &((h1_t *)p->data)->rq, at, len);
}

static int rq_value(http_parser *p, const char *at, size_t len)
{
    return on_value(p, &((h1_t *)p->data)->rq, at, len);
}

/* Host of the request: the Host header, else an absolute URL's host. */
static void request_host(const msg_t *m, bool connect, char *host, size_t n)
{
    size_t len;
    const char *v = msg_header(m, "host", &len);
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
    const char *up = msg_header(m, "upgrade", &ulen);
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
    pd->badge_ok =
        o->badge_enabled && !(o->is_excluded != NULL && host[0] != '\0' &&
                              o->is_excluded(o->data, host));
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
        emit_locals(h);
        return 0;
    }

    hbuf_t *out = &h->to_server;
    int rc = nectar__http_buf_addf(out, "%s %.*s HTTP/%d.%d\r\n", method,
                                   (int)m->first_len, (const char *)m->raw.data,
                                   p->http_major, p->http_minor);
    if (rc == 0)
        rc = add_headers(h, out, m, NULL);
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
    /* Later fields are trailers: collect them afresh. */
    m->nhdrs = 0;
    m->raw.len = 0;
    m->first_len = 0;
    return 0;
}

static int rq_body(http_parser *p, const char *at, size_t len)
{
    h1_t *h = p->data;
    int rc = 0;
    if (h->rq.body == BODY_RAW)
        rc = nectar__http_buf_add(&h->to_server, at, len);
    else if (h->rq.body == BODY_CHUNKED)
        rc = add_chunk(&h->to_server, (const uint8_t *)at, len);
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
    if (m->body == BODY_CHUNKED) {
        rc = nectar__http_buf_adds(&h->to_server, "0\r\n");
        if (rc == 0)
            rc = add_fields(&h->to_server, m);
        if (rc == 0)
            rc = nectar__http_buf_adds(&h->to_server, "\r\n");
    }
    if (rc != 0) {
        h->err = rc;
        return -1;
    }
    msg_reset(m);
    return 0;
}

/* ---- 4. response callbacks ----------------------------------------------- */

static int rs_begin(http_parser *p)
{
    h1_t *h = p->data;
    msg_reset(&h->rs);
    return 0;
}

static int rs_status(http_parser *p, const char *at, size_t len)
{
    return on_first_line(p, &((h1_t *)p->data)->rs, at, len);
}

static int rs_field(http_parser *p, const char *at, size_t len)
{
    return on_field(p, &((h1_t *)p->data)->rs, at, len);
}

static int rs_value(http_parser *p, const char *at, size_t len)
{
    return on_value(p, &((h1_t *)p->data)->rs, at, len);
}

/* Headers a rewritten body makes wrong. */
static bool drop_for_badge(const char *name, size_t len)
{
    static const char *const names[] = {
        "content-length", "transfer-encoding", "etag",
        "last-modified",  "content-md5",       "digest",
        "connection",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (nectar__http_ieq(name, len, names[i]))
            return true;
    }
    return false;
}

static bool badge_applies(h1_t *h, http_parser *p, pending_t *pd, int *enc)
{
    const msg_t *m = &h->rs;
    int st = p->status_code;
    if (!pd->badge_ok || pd->head || st < 200 || st == 204 || st == 206 ||
        st == 304)
        return false;
    size_t ctl, cel;
    const char *ct = msg_header(m, "content-type", &ctl);
    const char *ce = msg_header(m, "content-encoding", &cel);
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
        rc = add_headers(h, out, m, badge ? drop_for_badge : NULL);
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
    m->nhdrs = 0;
    m->raw.len = 0;
    m->first_len = 0;
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
        rc = add_chunk(&h->to_client, (const uint8_t *)at, len);
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
        rc = nectar__http_buf_adds(&h->to_client, "0\r\n");
        if (rc == 0)
            rc = add_fields(&h->to_client, m);
        if (rc == 0)
            rc = nectar__http_buf_adds(&h->to_client, "\r\n");
    }
    if (rc != 0) {
        h->err = rc;
        return -1;
    }
    pending_t *pd = m->req;
    bool informational = m->informational;
    bool out_close = m->out_close;
    int st = p->status_code;
    msg_reset(m);
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
    pending_free(pd);
    if (out_close) {
        h->done = true;
        nectar__http_finish(&h->base, 0);
        return 0;
    }
    emit_locals(h);
    return 0;
}

/* ---- 5. tunnels ---------------------------------------------------------- */

static void on_view_closed(void *arg)
{
    h1_t *h = arg;
    if (--h->views_open == 0) {
        nectar__http_enter(&h->base);
        nectar__http_finish(&h->base, 0);
        nectar__http_leave(&h->base);
    }
}

/* The outer relay may be gone by now (closing the views finishes it), so
 * this touches nothing of it. */
static void nested_done(int status, void *data)
{
    (void)status;
    (void)data;
}

/* CONNECT answered 2xx at the top level: hand the tunnel on. */
static void start_delegated(h1_t *h, pending_t *pd, const uint8_t *s_left,
                            size_t s_len)
{
    http_base_t *b = &h->base;
    h->mode = M_DELEGATED;
    flush(h); /* the 2xx goes out before any tunnelled byte */
    if (b->finishing)
        return;
    h->views[0] =
        nectar__http_tunnel_new(b->client, h->c_pending.data, h->c_pending.len,
                                h->c_eof, on_view_closed, h);
    h->views[1] = nectar__http_tunnel_new(b->server, s_left, s_len, h->s_eof,
                                          on_view_closed, h);
    nectar__http_buf_free(&h->c_pending);
    if (h->views[0] == NULL || h->views[1] == NULL) {
        if (h->views[0] != NULL)
            svc_close(h->views[0]);
        if (h->views[1] != NULL)
            svc_close(h->views[1]);
        nectar__http_finish(b, NECTAR_ENOMEM);
        return;
    }
    h->views_open = 2;
    h->nested = b->opts;
    h->nested.within_connect = true;
    const char *auth = pd->authority ? pd->authority : "";
    nectar__http_log(b, NECTAR_LOG_DEBUG, "CONNECT %s established", auth);
    if (b->opts.connect_hook != NULL &&
        b->opts.connect_hook(b->opts.data, h->views[0], h->views[1], auth,
                             &h->nested) == 0)
        return;
    if (svc_http1_start(h->views[0], h->views[1], &h->nested, nested_done, NULL,
                        NULL) != 0) {
        svc_close(h->views[0]);
        svc_close(h->views[1]);
    }
}

/* 101 (or CONNECT inside a tunnel): copy bytes both ways from now on. */
static void start_tunnel(h1_t *h, bool ws, const uint8_t *s_left, size_t s_len)
{
    h->mode = M_TUNNEL;
    h->ws = ws;
    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "%s tunnel started",
                     ws ? "websocket" : "raw");
    if (ws) {
        nectar__http_ws_observe(&h->base, &h->ws_c2s, "client->server",
                                h->c_pending.data, h->c_pending.len);
        nectar__http_ws_observe(&h->base, &h->ws_s2c, "server->client", s_left,
                                s_len);
    }
    if (nectar__http_buf_add(&h->to_server, h->c_pending.data,
                             h->c_pending.len) != 0 ||
        nectar__http_buf_add(&h->to_client, s_left, s_len) != 0)
        h->err = NECTAR_ENOMEM;
    nectar__http_buf_free(&h->c_pending);
}

static void upgrade_answered(h1_t *h, const uint8_t *s_left, size_t s_len)
{
    pending_t *pd = h->qhead;
    h->qhead = pd->next;
    pd->next = NULL;
    while (h->qhead != NULL) { /* nothing can follow an upgrade */
        pending_t *n = h->qhead->next;
        pending_free(h->qhead);
        h->qhead = n;
    }
    h->qtail = NULL;
    h->c_hold = false;
    if (pd->connect && !h->base.opts.within_connect)
        start_delegated(h, pd, s_left, s_len);
    else
        start_tunnel(h, pd->ws, s_left, s_len);
    pending_free(pd);
}

/* ---- 6. stream callbacks ------------------------------------------------- */

static void tunnel_data(h1_t *h, bool from_client, const uint8_t *buf,
                        size_t len)
{
    if (h->ws)
        nectar__http_ws_observe(
            &h->base, from_client ? &h->ws_c2s : &h->ws_s2c,
            from_client ? "client->server" : "server->client", buf, len);
    hbuf_t *out = from_client ? &h->to_server : &h->to_client;
    if (nectar__http_buf_add(out, buf, len) != 0)
        h->err = NECTAR_ENOMEM;
}

/* A request the relay cannot parse (or whose head is too large) and that
 * nothing is answering yet gets 400 (431) and the connection closes once
 * that is written; the relay still ends with the error. */
static void refuse_request(h1_t *h)
{
    if ((h->err != NECTAR_EPARSE && h->err != NECTAR_ELIMIT) ||
        h->qhead != NULL || h->mode != M_HTTP)
        return;
    bool big = h->err == NECTAR_ELIMIT;
    if (nectar__http_buf_addf(
            &h->to_client,
            "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n"
            "%s: %s\r\n\r\n",
            big ? 431 : 400,
            big ? "Request Header Fields Too Large" : "Bad Request",
            h->base.opts.observed_name, h->base.opts.observed_value) == 0)
        h->base.drain_on_error = true;
}

/* The first bytes were not HTTP: relay the connection as raw bytes. */
static void raw_fallback(h1_t *h)
{
    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "not HTTP (%s): relaying raw",
                     http_errno_name(HTTP_PARSER_ERRNO(&h->reqp)));
    h->mode = M_TUNNEL;
    h->ws = false;
    if (nectar__http_buf_add(&h->to_server, h->first.data, h->first.len) != 0)
        h->err = NECTAR_ENOMEM;
    nectar__http_buf_free(&h->first);
}

static void client_data(h1_t *h, const uint8_t *buf, size_t len)
{
    if (h->mode == M_TUNNEL) {
        tunnel_data(h, true, buf, len);
        return;
    }
    if (h->c_hold || h->done) {
        if (!h->done && nectar__http_buf_add(&h->c_pending, buf, len) != 0)
            h->err = NECTAR_ENOMEM;
        return;
    }
    if (!h->any_request && h->base.server != NULL &&
        nectar__http_buf_add(&h->first, buf, len) != 0) {
        h->err = NECTAR_ENOMEM;
        return;
    }
    size_t n =
        http_parser_execute(&h->reqp, &req_settings, (const char *)buf, len);
    if (h->base.finishing)
        return;
    if (h->err == 0 && HTTP_PARSER_ERRNO(&h->reqp) != HPE_OK) {
        if (!h->any_request && h->base.server != NULL) {
            raw_fallback(h);
            return;
        }
        nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "bad request: %s",
                         http_errno_name(HTTP_PARSER_ERRNO(&h->reqp)));
        h->err = NECTAR_EPARSE;
    }
    if (h->err != 0) {
        refuse_request(h);
        return;
    }
    if (h->reqp.upgrade) {
        /* CONNECT or Upgrade: wait for the answer before reading on. */
        h->c_hold = true;
        if (nectar__http_buf_add(&h->c_pending, buf + n, len - n) != 0)
            h->err = NECTAR_ENOMEM;
    }
}

/* The held request got a plain answer: parse what the client sent since. */
static void resume_requests(h1_t *h)
{
    h->resume = false;
    h->c_hold = false;
    http_parser_init(&h->reqp, HTTP_REQUEST);
    h->reqp.data = h;
    hbuf_t held = h->c_pending;
    h->c_pending = (hbuf_t){0};
    if (held.len > 0)
        client_data(h, held.data, held.len);
    nectar__http_buf_free(&held);
}

static void server_data(h1_t *h, const uint8_t *buf, size_t len)
{
    if (h->mode == M_HTTP && !h->any_request && h->qhead == NULL &&
        h->base.server != NULL) {
        /* The server speaks first: not HTTP. */
        raw_fallback(h);
    }
    if (h->mode == M_TUNNEL) {
        tunnel_data(h, false, buf, len);
        return;
    }
    size_t n =
        http_parser_execute(&h->resp, &res_settings, (const char *)buf, len);
    if (h->err != 0 || h->base.finishing)
        return;
    if (HTTP_PARSER_ERRNO(&h->resp) != HPE_OK) {
        nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "bad response: %s",
                         http_errno_name(HTTP_PARSER_ERRNO(&h->resp)));
        h->err = NECTAR_EPARSE;
        return;
    }
    if (h->resp.upgrade) {
        if (!h->tunnel_ready) { /* switched protocols unasked */
            nectar__http_log(&h->base, NECTAR_LOG_DEBUG,
                             "unrequested protocol switch");
            h->err = NECTAR_EPARSE;
            return;
        }
        upgrade_answered(h, buf + n, len - n);
        return;
    }
    if (h->resume)
        resume_requests(h);
}

/* flush() then shuts the other side's write half. */
static void on_eof(h1_t *h, bool client)
{
    if (client) {
        h->c_eof = true;
        if (h->mode == M_HTTP && !h->c_hold)
            http_parser_execute(&h->reqp, &req_settings, NULL, 0);
        return;
    }
    h->s_eof = true;
    if (h->mode == M_HTTP) /* ends a body delimited by the close */
        http_parser_execute(&h->resp, &res_settings, NULL, 0);
}

static void on_read(h1_t *h, bool client, ssize_t nread, const uint8_t *buf)
{
    http_base_t *b = &h->base;
    nectar__http_enter(b);
    if (b->finishing) {
        nectar__http_leave(b);
        return;
    }
    if (nread == NECTAR_EOF) {
        on_eof(h, client);
    } else if (nread < 0) {
        nectar__http_log(b, NECTAR_LOG_DEBUG, "%s read error: %s",
                         client ? "client" : "server",
                         nectar_strerror((int)nread));
        if (client)
            h->c_eof = true;
        else
            h->s_eof = true;
        h->err = (int)nread;
    } else if (client) {
        client_data(h, buf, (size_t)nread);
    } else {
        server_data(h, buf, (size_t)nread);
    }
    if (h->err != 0) {
        if (b->drain_on_error) /* a refusal to deliver first */
            nectar__http_write(b, b->client, &h->to_client);
        nectar__http_finish(b, h->err);
    } else {
        flush(h); /* also after a clean finish: the last bytes go out */
    }
    nectar__http_leave(b);
}

static void on_client_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data)
{
    (void)s;
    on_read(data, true, nread, buf);
}

static void on_server_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data)
{
    (void)s;
    on_read(data, false, nread, buf);
}

static void h1_write_done(http_base_t *b, int status)
{
    (void)status;
    h1_t *h = (h1_t *)b;
    update_reading(h);
}

static void h1_detach(http_base_t *b)
{
    h1_t *h = (h1_t *)b;
    for (int i = 0; i < 2; i++) {
        if (h->views[i] != NULL)
            nectar__http_tunnel_detach(h->views[i]);
        h->views[i] = NULL;
    }
}

static void h1_destroy(http_base_t *b)
{
    h1_t *h = (h1_t *)b;
    msg_free(&h->rq);
    msg_free(&h->rs);
    while (h->qhead != NULL) {
        pending_t *p = h->qhead;
        h->qhead = p->next;
        pending_free(p);
    }
    nectar__http_buf_free(&h->to_server);
    nectar__http_buf_free(&h->to_client);
    nectar__http_buf_free(&h->c_pending);
    nectar__http_buf_free(&h->first);
    nectar_free(h);
}

static const http_base_ops_t h1_ops = {
    .write_done = h1_write_done,
    .detach = h1_detach,
    .destroy = h1_destroy,
};

static void init_settings(void)
{
    req_settings = (http_parser_settings){
        .on_message_begin = rq_begin,
        .on_url = rq_url,
        .on_header_field = rq_field,
        .on_header_value = rq_value,
        .on_headers_complete = rq_headers_complete,
        .on_body = rq_body,
        .on_message_complete = rq_complete,
    };
    res_settings = (http_parser_settings){
        .on_message_begin = rs_begin,
        .on_status = rs_status,
        .on_header_field = rs_field,
        .on_header_value = rs_value,
        .on_headers_complete = rs_headers_complete,
        .on_body = rs_body,
        .on_message_complete = rs_complete,
    };
}

int svc_http1_start(svc_stream_t *client, svc_stream_t *server,
                    const svc_http_opts_t *opts, svc_http_done_cb done_cb,
                    void *data, svc_http_t **out)
{
    static uv_once_t once = UV_ONCE_INIT;
    if (client == NULL || opts == NULL || done_cb == NULL)
        return NECTAR_EINVAL;
    uv_once(&once, init_settings);
    h1_t *h = nectar_calloc(1, sizeof(*h));
    if (h == NULL)
        return NECTAR_ENOMEM;
    nectar__http_base_init(&h->base, &h1_ops, client, server, opts, done_cb,
                           data);
    http_parser_init(&h->reqp, HTTP_REQUEST);
    http_parser_init(&h->resp, HTTP_RESPONSE);
    h->reqp.data = h;
    h->resp.data = h;
    int rc = svc_read_start(client, on_client_read, h);
    if (rc == 0 && server != NULL)
        rc = svc_read_start(server, on_server_read, h);
    if (rc != 0) {
        svc_read_stop(client);
        nectar_free(h);
        return rc;
    }
    h->c_reading = true;
    h->s_reading = server != NULL;
    if (out != NULL)
        *out = (svc_http_t *)h;
    return 0;
}
