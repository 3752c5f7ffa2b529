/*
 * h1_int.h - internal contract between the files of the HTTP/1.1 relay
 * (svc_http1_start): requests parsed from the client stream by
 * http_parser and re-serialised towards the server, responses the other
 * way, streaming (bodies are never held whole).
 *
 * Map:  h1.c           stream callbacks, output pump, start, teardown
 *       h1_message.c   head collection and message output (both sides)
 *       h1_request.c   request callbacks (observed header, hijack,
 *                      CONNECT/upgrade hold)
 *       h1_response.c  response callbacks (badge, HEAD/1xx/204/304,
 *                      upgrade answers)
 *       h1_tunnel.c    WebSocket/raw after 101, CONNECT one level deep
 *
 * State: a queue of requests awaiting their response (pipelining and
 * keep-alive) and one header collector per direction.
 *
 * Framing: a body is re-framed from what the parser decoded: chunked
 * stays chunked (trailers kept), Content-Length bodies go as they are, a
 * body the badge rewrites is sent chunked (or close-delimited to
 * HTTP/1.0 peers) without Content-Length and validators.
 *
 * Modes: M_HTTP parses both directions; M_TUNNEL copies bytes both ways
 * (WebSocket frames are logged); M_DELEGATED: after a CONNECT, two tunnel
 * views own the reading, and the relay only waits for them to close.
 *
 * Errors inside a parser callback are left in h1_t.err (the callback
 * returns -1); the stream callback that ran the parser finishes the relay
 * with them.  Everything runs on the flow's loop thread.
 */
#ifndef NECTAR_SERVICES_HTTP_H1_INT_H
#define NECTAR_SERVICES_HTTP_H1_INT_H

#include <http_parser.h>

#include "services/http/http_int.h"

/* Output queued beyond this pauses the reading side that produces it. */
#define H1_HIGH_WATER (256 * 1024)
/* Requests read ahead of their responses (pipelining) before the relay
 * stops reading the client. */
#define H1_MAX_PENDING 64
/* Header block limit per message (request line and headers). */
#define H1_MAX_HEAD (64 * 1024)

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

/* ---- h1_message.c -------------------------------------------------------- */

/* Forget a message's head and body state (the buffers are kept). */
void nectar__h1_msg_reset(msg_t *m);
/* The head went out: later fields are trailers, collected afresh. */
void nectar__h1_msg_start_trailers(msg_t *m);
/* Reset and free the buffers. */
void nectar__h1_msg_free(msg_t *m);
void nectar__h1_pending_free(pending_t *p);
/* A header value by name (first match, case-insensitive), or NULL; *len
 * gets its length.  The value points into m. */
const char *nectar__h1_msg_header(const msg_t *m, const char *name,
                                  size_t *len);

/* Collectors for the parser's first-line, field and value callbacks
 * (p->data is the h1_t).  Return 0, or -1 with h->err set (NECTAR_ELIMIT
 * past H1_MAX_HEAD, NECTAR_ENOMEM). */
int nectar__h1_on_first_line(http_parser *p, msg_t *m, const char *at,
                             size_t len);
int nectar__h1_on_field(http_parser *p, msg_t *m, const char *at, size_t len);
int nectar__h1_on_value(http_parser *p, msg_t *m, const char *at, size_t len);

/* Output builders; each returns 0 or NECTAR_ENOMEM.  One chunk (nothing
 * for n == 0, which would end the body): */
int nectar__h1_add_chunk(hbuf_t *out, const uint8_t *p, size_t n);
/* The last chunk, the trailers collected in m, the blank line: */
int nectar__h1_add_last_chunk(hbuf_t *out, const msg_t *m);
/* The header lines of m, skipping those drop() rejects (drop may be
 * NULL), plus the observed header when m lacks it (not on 1xx): */
int nectar__h1_add_headers(h1_t *h, hbuf_t *out, const msg_t *m,
                           bool (*drop)(const char *name, size_t len));

/* ---- h1.c ---------------------------------------------------------------- */

/* Write what was produced, shut write halves whose input ended, finish
 * when both directions are done, else adjust reading.  May finish the
 * relay (check base.finishing after). */
void nectar__h1_flush(h1_t *h);
/* Move the answers built here that are due (in request order) to
 * to_client; one that closes the connection finishes the relay. */
void nectar__h1_emit_locals(h1_t *h);

/* ---- h1_request.c, h1_response.c ----------------------------------------- */

extern const http_parser_settings nectar__h1_req_settings;
extern const http_parser_settings nectar__h1_res_settings;

/* ---- h1_tunnel.c --------------------------------------------------------- */

/* The held request (the queue head) was answered 101 or 2xx to CONNECT:
 * drop the rest of the queue and become a tunnel (M_TUNNEL) or, for a
 * top-level CONNECT, hand the tunnel on (M_DELEGATED).  s_left/s_len are
 * the server's bytes after the answer. */
void nectar__h1_upgrade_answered(h1_t *h, const uint8_t *s_left, size_t s_len);
/* M_TUNNEL: bytes read from one side go to the other (and past the
 * WebSocket frame logger). */
void nectar__h1_tunnel_data(h1_t *h, bool from_client, const uint8_t *buf,
                            size_t len);
/* The first bytes were not HTTP: relay the connection as raw bytes. */
void nectar__h1_raw_fallback(h1_t *h);

#endif
