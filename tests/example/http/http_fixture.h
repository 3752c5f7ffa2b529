/*
 * http_fixture.h - shared set-up for the HTTP relay tests: a loop, two
 * in-memory stream pairs (test client <-> relay client side, relay server
 * side <-> test server), what each test end read, a log capture, and a
 * small HTTP/1 response splitter (built on http_parser) to check bodies.
 */
#ifndef NECTAR_TEST_HTTP_FIXTURE_H
#define NECTAR_TEST_HTTP_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "memstream.h"
#include "services/http/http.h"

typedef struct fx {
    uv_loop_t loop;
    svc_stream_t *cli; /* the test's client end */
    svc_stream_t *srv; /* the test's server end */
    svc_stream_t *rc;  /* relay: client side */
    svc_stream_t *rs;  /* relay: server side */
    mem_sink_t cli_in; /* what the client received */
    mem_sink_t srv_in; /* what the server received */
    svc_http_opts_t opts;
    bool done;
    int status;
} fx_t;

/* Loop, pairs, sinks, default options with observed value "test". */
void fx_init(fx_t *f);
/* The done_cb fx_start uses (data = the fixture): sets done and status. */
void fx_on_done(int status, void *data);
/* Start the HTTP/1 relay (h2 = false) or the HTTP/2 one; checks rc 0. */
void fx_start(fx_t *f, bool h2);
/* Wait until haystack holds needle at least n times (5 s max). */
void fx_wait_count(fx_t *f, mem_sink_t *k, const char *needle, int n);
void fx_wait_eof(fx_t *f, mem_sink_t *k);
void fx_wait_done(fx_t *f);
/* Close the test ends, run the loop dry and check no handle leaked. */
void fx_close(fx_t *f);

int count_of(const char *hay, size_t len, const char *needle);

/* Log capture (level TRACE while on). */
void logcap_start(void);
const char *logcap_text(void);
void logcap_stop(void);

/* One parsed response. */
typedef struct resp {
    int status;
    char *head; /* header block text, lower case names as received */
    size_t head_len;
    unsigned char *body; /* decoded (de-chunked) */
    size_t body_len;
    bool chunked;
} resp_t;

/* Split len bytes into responses (head_first: the first answers a HEAD).
 * Returns the count parsed, up to max.  Free with resp_free. */
int parse_responses(const void *data, size_t len, resp_t *out, int max,
                    bool head_first);
void resp_free(resp_t *r, int n);
/* Header value (case-insensitive name) from r->head, copied into buf;
 * NULL when absent. */
const char *resp_header(const resp_t *r, const char *name, char *buf, size_t n);

#endif
