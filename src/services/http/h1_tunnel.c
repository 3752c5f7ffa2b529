/*
 * h1_tunnel.c - the HTTP/1.1 relay leaving HTTP: after a 101 (WebSocket
 * frames are logged) or a CONNECT inside a tunnel it copies bytes both
 * ways; after a top-level CONNECT it hands two tunnel views to the
 * CONNECT hook (or a nested relay) and waits for them to close; and a
 * connection whose first bytes are not HTTP is relayed raw.
 */
#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/h1_int.h"

/* ---- WebSocket and raw tunnels ------------------------------------------- */

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

void nectar__h1_tunnel_data(h1_t *h, bool from_client, const uint8_t *buf,
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

/* The first bytes were not HTTP: relay the connection as raw bytes. */
void nectar__h1_raw_fallback(h1_t *h)
{
    nectar__http_log(&h->base, NECTAR_LOG_DEBUG, "not HTTP (%s): relaying raw",
                     http_errno_name(HTTP_PARSER_ERRNO(&h->reqp)));
    h->mode = M_TUNNEL;
    h->ws = false;
    if (nectar__http_buf_add(&h->to_server, h->first.data, h->first.len) != 0)
        h->err = NECTAR_ENOMEM;
    nectar__http_buf_free(&h->first);
}

/* ---- CONNECT ------------------------------------------------------------- */

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
    nectar__h1_flush(h); /* the 2xx goes out before any tunnelled byte */
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

void nectar__h1_upgrade_answered(h1_t *h, const uint8_t *s_left, size_t s_len)
{
    pending_t *pd = h->qhead;
    h->qhead = pd->next;
    pd->next = NULL;
    while (h->qhead != NULL) { /* nothing can follow an upgrade */
        pending_t *n = h->qhead->next;
        nectar__h1_pending_free(h->qhead);
        h->qhead = n;
    }
    h->qtail = NULL;
    h->c_hold = false;
    if (pd->connect && !h->base.opts.within_connect)
        start_delegated(h, pd, s_left, s_len);
    else
        start_tunnel(h, pd->ws, s_left, s_len);
    nectar__h1_pending_free(pd);
}
