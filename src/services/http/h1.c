/*
 * h1.c - the core of the HTTP/1.1 relay: the stream callbacks that feed
 * the two parsers, the output pump (owned writes, half-close, read
 * back-pressure) and start/teardown.  What the parsers call back lives in
 * h1_request.c and h1_response.c, the switch to a tunnel in h1_tunnel.c;
 * h1_int.h describes the whole relay and the state the files share.
 */
#include <string.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/h1_int.h"

static void on_client_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data);
static void on_server_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                           void *data);

/* ---- output -------------------------------------------------------------- */

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
    nectar__http_set_reading(b->client, want_c, &h->c_reading, on_client_read,
                             h);
    if (b->server != NULL)
        nectar__http_set_reading(b->server, want_s, &h->s_reading,
                                 on_server_read, h);
}

/* Write what was produced; shut write halves whose input ended. */
void nectar__h1_flush(h1_t *h)
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
void nectar__h1_emit_locals(h1_t *h)
{
    while (h->qhead != NULL && h->qhead->local) {
        pending_t *p = h->qhead;
        h->qhead = p->next;
        if (h->qhead == NULL)
            h->qtail = NULL;
        if (nectar__http_buf_add(&h->to_client, p->resp.data, p->resp.len) != 0)
            h->err = NECTAR_ENOMEM;
        bool close_after = p->close_after;
        nectar__h1_pending_free(p);
        if (close_after) {
            h->done = true;
            nectar__http_finish(&h->base, 0);
            return;
        }
    }
}

/* ---- stream callbacks ---------------------------------------------------- */

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

static void client_data(h1_t *h, const uint8_t *buf, size_t len)
{
    if (h->mode == M_TUNNEL) {
        nectar__h1_tunnel_data(h, true, buf, len);
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
    size_t n = http_parser_execute(&h->reqp, &nectar__h1_req_settings,
                                   (const char *)buf, len);
    if (h->base.finishing)
        return;
    if (h->err == 0 && HTTP_PARSER_ERRNO(&h->reqp) != HPE_OK) {
        if (!h->any_request && h->base.server != NULL) {
            nectar__h1_raw_fallback(h);
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
        nectar__h1_raw_fallback(h);
    }
    if (h->mode == M_TUNNEL) {
        nectar__h1_tunnel_data(h, false, buf, len);
        return;
    }
    size_t n = http_parser_execute(&h->resp, &nectar__h1_res_settings,
                                   (const char *)buf, len);
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
        nectar__h1_upgrade_answered(h, buf + n, len - n);
        return;
    }
    if (h->resume)
        resume_requests(h);
}

/* Note an EOF; nectar__h1_flush, which on_read runs next, then shuts the
 * other side's write half. */
static void on_eof(h1_t *h, bool client)
{
    if (client) {
        h->c_eof = true;
        if (h->mode == M_HTTP && !h->c_hold)
            http_parser_execute(&h->reqp, &nectar__h1_req_settings, NULL, 0);
        return;
    }
    h->s_eof = true;
    if (h->mode == M_HTTP) /* ends a body delimited by the close */
        http_parser_execute(&h->resp, &nectar__h1_res_settings, NULL, 0);
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
        /* Also after a clean finish: the last bytes go out. */
        nectar__h1_flush(h);
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

/* ---- start, teardown ----------------------------------------------------- */

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
    nectar__h1_msg_free(&h->rq);
    nectar__h1_msg_free(&h->rs);
    while (h->qhead != NULL) {
        pending_t *p = h->qhead;
        h->qhead = p->next;
        nectar__h1_pending_free(p);
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

int svc_http1_start(svc_stream_t *client, svc_stream_t *server,
                    const svc_http_opts_t *opts, svc_http_done_cb done_cb,
                    void *data, svc_http_t **out)
{
    if (client == NULL || opts == NULL || done_cb == NULL)
        return NECTAR_EINVAL;
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
