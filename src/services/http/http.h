/*
 * http.h - the HTTP relays of the example application: HTTP/1.1 (with
 * WebSocket and CONNECT) and HTTP/2, both between two svc_stream_t (the
 * client side and the server side of one intercepted flow, usually
 * already decrypted by the TLS layer).
 *
 * What a relay does to the traffic (docs/http.md has the details):
 *  - adds the observed header (x-nectar-observed: seen-by-<pid>) to
 *    requests and responses that do not carry it;
 *  - inserts the HTML badge right after <body ...> in text/html responses
 *    (not HEAD, not excluded hosts), re-compressing gzip/deflate bodies and
 *    dropping Content-Length and validators;
 *  - answers requests for the hijack host itself (status page, /ping, the
 *    CA certificate);
 *  - HTTP/1 only: relays `Upgrade: websocket` as WebSocket frames (logged
 *    by direction, kind and size) and CONNECT tunnels one level deep.
 *
 * Threading: every function and every callback runs on the loop thread of
 * the two streams (the flow's loop).  Nothing blocks.
 *
 * Ownership: a successful start takes ownership of both streams; the
 * relay closes them before done_cb runs (or in svc_http_cancel).  opts and
 * every pointer inside it are borrowed until done_cb runs or
 * svc_http_cancel returns.
 */
#ifndef NECTAR_SERVICES_HTTP_H
#define NECTAR_SERVICES_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/stream.h"

typedef struct svc_http svc_http_t;
typedef struct svc_http_opts svc_http_opts_t;

/* The relay ended: status 0 after both directions finished cleanly, else a
 * NECTAR_* code.  Both streams are already closed; the relay is freed
 * when this returns.  Runs once, on the loop, never inside start. */
typedef void (*svc_http_done_cb)(int status, void *data);

/*
 * CONNECT hook: the server accepted a CONNECT (2xx) at the top level;
 * client_inner/server_inner carry the tunnelled bytes (bytes already read
 * past the CONNECT are replayed first).  Return 0 to take ownership of
 * both inner streams (close both when done, e.g. after running TLS
 * interception and another relay over them); the outer relay's done_cb
 * runs after both are closed (on a later loop turn, never inside their
 * close).  Return non-zero to decline: the relay then runs a nested HTTP/1
 * relay over the tunnel (raw relay for non-HTTP bytes).  `authority` and
 * `opts` (the options for a relay inside the tunnel: within_connect set)
 * are borrowed for the call; copy what you keep.
 */
typedef int (*svc_http_connect_hook)(void *data, svc_stream_t *client_inner,
                                     svc_stream_t *server_inner,
                                     const char *authority,
                                     const svc_http_opts_t *opts);

/* Writes the current CA certificate in PEM into *pem (allocated with
 * nectar_malloc, the relay frees it) and its length into *len.  Returns 0
 * or a NECTAR_* code (the hijack route then answers 503). */
typedef int (*svc_http_ca_pem_cb)(void *data, char **pem, size_t *len);

/* True when `host` (lower case, no port) is an excluded domain. */
typedef bool (*svc_http_excluded_cb)(void *data, const char *host);

struct svc_http_opts {
    /* Logging: lines go to nectar_log under log_tag (default "http"),
     * prefixed with "flow=<flow_id>" when flow_id != 0. */
    const char *log_tag;
    uint64_t flow_id;

    /* Observed header name and value.  NULL: "x-nectar-observed" and
     * "seen-by-<pid>". */
    const char *observed_name;
    const char *observed_value;

    /* HTML badge (default on, label "proxied by nectar"). */
    bool badge_enabled;
    const char *badge_label;

    /* Badge skip for excluded hosts (NULL: none excluded). */
    svc_http_excluded_cb is_excluded;

    /* Hijacked host (default "nectar.localhost"; "" turns hijack off).
     * Routes: GET / status page, GET /ping, GET /data/root.ca.pem (also
     * /ca.pem) through ca_pem (NULL: 404). */
    const char *hijack_host;
    svc_http_ca_pem_cb ca_pem;

    /* CONNECT handling (HTTP/1 only).  within_connect: this relay already
     * runs inside a tunnel, so a nested CONNECT is relayed raw. */
    svc_http_connect_hook connect_hook;
    bool within_connect;

    /* Passed to every callback above. */
    void *data;
};

/* Fills *o with the defaults above.  Any thread. */
void svc_http_opts_defaults(svc_http_opts_t *o);

/*
 * Start an HTTP/1.1 relay: requests are read from `client` and relayed to
 * `server`, responses the other way.  server may be NULL: only hijack
 * requests are served, others get 502.  On success returns 0, owns both
 * streams and sets *out (if out != NULL) to a handle valid until done_cb
 * runs.  On error (NECTAR_EINVAL, NECTAR_ENOMEM) the streams stay the
 * caller's and done_cb never runs.
 */
int svc_http1_start(svc_stream_t *client, svc_stream_t *server,
                    const svc_http_opts_t *opts, svc_http_done_cb done_cb,
                    void *data, svc_http_t **out);

/*
 * Start an HTTP/2 relay (for TLS flows that negotiated h2 on both sides):
 * an nghttp2 server session towards `client`, a client session towards
 * `server`, streams mapped 1:1.  Same ownership and errors as
 * svc_http1_start; server must not be NULL.
 */
int svc_h2_start(svc_stream_t *client, svc_stream_t *server,
                 const svc_http_opts_t *opts, svc_http_done_cb done_cb,
                 void *data, svc_http_t **out);

/* Stop now (e.g. the flow was cancelled): closes both streams and frees
 * the relay; done_cb does not run.  Called from inside one of the relay's
 * callbacks (e.g. the CONNECT hook), the teardown happens as that callback
 * returns.  Tunnel streams handed to a CONNECT hook stay valid objects but
 * fail reads and writes with NECTAR_ECLOSED. */
void svc_http_cancel(svc_http_t *h);

#endif
