/*
 * http_int.h - internal contract between the files of src/services/http:
 * the growable buffer, the relay base both relays start with (owned
 * writes, logging, done/cancel), the body rewriter behind the HTML badge,
 * the hijack pages, the WebSocket frame logger and the tunnel stream.
 *
 * Map:  util.c    hbuf, relay base (writes, logging, finish)
 *       badge.c   HTML badge inserter and gzip/deflate re-coding
 *       hijack.c  local answers for the hijack host
 *       ws.c      WebSocket frame parser (logging only)
 *       tunnel.c  a stream view over a relay's stream (CONNECT inner)
 *       h1*.c     HTTP/1.1 relay (h1_int.h maps its files)
 *       h2.c      HTTP/2 relay
 * Everything here runs on the flow's loop thread.
 */
#ifndef NECTAR_SERVICES_HTTP_INT_H
#define NECTAR_SERVICES_HTTP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/log.h"
#include "services/http/http.h"

/* ---- growable byte buffer ------------------------------------------------ */

typedef struct hbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
} hbuf_t;

/* Append; returns 0 or NECTAR_ENOMEM (the buffer is unchanged then). */
int nectar__http_buf_add(hbuf_t *b, const void *p, size_t n);
int nectar__http_buf_adds(hbuf_t *b, const char *s);
int nectar__http_buf_addf(hbuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void nectar__http_buf_consume(hbuf_t *b, size_t n);
void nectar__http_buf_free(hbuf_t *b);

/* ---- relay base ---------------------------------------------------------- */

typedef struct http_base http_base_t;

/* Subclass hooks: write_done = a write finished; detach (may be NULL) =
 * the streams are about to close; destroy = free the subclass (the base
 * closed the streams already). */
typedef struct http_base_ops {
    void (*write_done)(http_base_t *b, int status);
    void (*detach)(http_base_t *b);
    void (*destroy)(http_base_t *b);
} http_base_ops_t;

struct http_base {
    const http_base_ops_t *ops;
    svc_http_opts_t opts; /* copy; strings borrowed from the caller */
    char observed_value[48];
    char prefix[40]; /* "flow=N " or "" for log lines */
    svc_stream_t *client;
    svc_stream_t *server;
    svc_http_done_cb done_cb;
    void *done_data;
    struct wreq *wlist; /* in-flight writes (buffers owned here) */
    unsigned writes_pending;
    unsigned depth;      /* nesting of nectar__http_enter */
    bool finishing;      /* finish requested: waiting for writes to drain */
    bool cancelled;      /* svc_http_cancel: done_cb never runs */
    bool drain_on_error; /* an error, yet queued writes complete first */
    int finish_status;
    bool finished;
};

/* The public handle is the base (svc_http_t is opaque outside). */
struct svc_http {
    http_base_t base;
};

/* Fill the base from the caller's arguments. */
void nectar__http_base_init(http_base_t *b, const http_base_ops_t *ops,
                            svc_stream_t *client, svc_stream_t *server,
                            const svc_http_opts_t *opts,
                            svc_http_done_cb done_cb, void *data);

/* Hand the bytes of *out to a write on s (the buffer moves into the
 * write; *out is left empty).  Returns 0 or an error. */
int nectar__http_write(http_base_t *b, svc_stream_t *s, hbuf_t *out);

/* Finish with status: after pending writes drain (status 0, or an error
 * with drain_on_error set) or at once (error), close both streams, run
 * done_cb, destroy.  Idempotent. */
void nectar__http_finish(http_base_t *b, int status);

/* Bracket every callback's work: the relay is destroyed only when the
 * outermost callback leaves.  nectar__http_leave returns false when the relay
 * was destroyed (touch nothing then). */
void nectar__http_enter(http_base_t *b);
bool nectar__http_leave(http_base_t *b);

/* Start or stop reading s so that it matches want; *reading remembers
 * what the stream was last told, so it hears only of changes. */
void nectar__http_set_reading(svc_stream_t *s, bool want, bool *reading,
                              svc_read_cb cb, void *data);

/* Log with the relay's tag and flow prefix. */
void nectar__http_log(const http_base_t *b, nectar_log_level_t lvl,
                      const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ASCII case-insensitive equality of a counted string and a C string. */
bool nectar__http_ieq(const char *a, size_t alen, const char *b);
/* Lower-case host of a Host header or authority, without port or
 * brackets, into out (size n).  Returns false when it does not fit. */
bool nectar__http_host_norm(const char *in, size_t len, char *out, size_t n);
/* True when the badge applies to a response with these header values
 * (each may be NULL): content type essence text/html and an encoding we
 * can decode.  *enc gets the encoding (BADGE_ENC_*). */
bool nectar__http_badge_candidate(const char *ctype, size_t ctlen,
                                  const char *cenc, size_t celen, int *enc);

/* True when o allows the badge for a request to host (normalised; ""
 * when unknown, which is never excluded). */
bool nectar__http_badge_allowed(const svc_http_opts_t *o, const char *host);
/* True when a response with this status has a body the badge may
 * rewrite (not 1xx, 204, 206 or 304). */
bool nectar__http_badge_status(int status);
/* True for the header fields a rewritten body makes wrong in both HTTP
 * versions: the length and the validators (case-insensitive). */
bool nectar__http_badge_drops(const char *name, size_t len);

/* ---- HTML badge body rewriter -------------------------------------------- */

enum { BADGE_ENC_IDENTITY = 0, BADGE_ENC_GZIP = 1, BADGE_ENC_DEFLATE = 2 };

typedef struct badge badge_t;

/* A rewriter for one response body in encoding enc.  NULL on ENOMEM. */
badge_t *nectar__http_badge_new(int enc, const char *label);
/* Feed body bytes (as received); rewritten bytes are appended to out.
 * Returns 0 or NECTAR_ENOMEM.  Decode errors are tolerated: the rest of
 * the input is dropped and the output stays well-formed. */
int nectar__http_badge_feed(badge_t *bd, const uint8_t *in, size_t len,
                            hbuf_t *out);
/* End of body: flush the encoder.  Returns 0 or NECTAR_ENOMEM. */
int nectar__http_badge_finish(badge_t *bd, hbuf_t *out);
bool nectar__http_badge_inserted(const badge_t *bd);
void nectar__http_badge_free(badge_t *bd);
/* The badge element for a label (HTML-escaped), appended to out. */
int nectar__http_badge_element(const char *label, hbuf_t *out);

/* ---- hijack -------------------------------------------------------------- */

typedef struct hijack_resp {
    int status;
    const char *ctype;
    hbuf_t body;
    const char *extra_header; /* one "Name: value" line or NULL */
} hijack_resp_t;

/* True when host (normalised) is the hijack host of opts. */
bool nectar__http_hijack_match(const svc_http_opts_t *o, const char *host);
/* Build the answer for method/path (path may include a query).  Returns 0
 * or NECTAR_ENOMEM.  resp->body is owned by the caller. */
int nectar__http_hijack_answer(const svc_http_opts_t *o, const char *method,
                               const char *path, size_t plen,
                               hijack_resp_t *resp);

/* ---- WebSocket frame logging --------------------------------------------- */

typedef struct ws_parser {
    uint8_t hdr[14];
    unsigned hlen;      /* header bytes collected */
    unsigned hneed;     /* header bytes needed (2 until length known) */
    uint64_t remaining; /* payload bytes still to skip */
    bool in_payload;
    uint64_t frames;
} ws_parser_t;

/* Observe bytes relayed in one direction; logs one line per frame header
 * ("ws frame dir=<dir> kind=<kind> size=<n> fin=<0|1> masked=<0|1>"). */
void nectar__http_ws_observe(http_base_t *b, ws_parser_t *p, const char *dir,
                             const uint8_t *buf, size_t len);
const char *nectar__http_ws_kind_name(unsigned opcode);

/* ---- tunnel stream ------------------------------------------------------- */

typedef struct tunnel tunnel_t;

/* A stream view over `parent` (owned by the relay): replays `prefix`,
 * then parent's reads (or EOF at once when eof: the parent already ended);
 * writes go to parent.  close() calls on_close(arg)
 * on a later loop turn (unless detached first).  NULL on ENOMEM. */
svc_stream_t *nectar__http_tunnel_new(svc_stream_t *parent,
                                      const uint8_t *prefix, size_t plen,
                                      bool eof, void (*on_close)(void *arg),
                                      void *arg);
/* The parent is going away: the view fails every further call with
 * NECTAR_ECLOSED and stops reading the parent. */
void nectar__http_tunnel_detach(svc_stream_t *view);

#endif
