/* http_fixture.c - set-up shared by the HTTP relay tests (see the header). */
#include "http_fixture.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "harness/test.h"
#include "nectar/log.h"

void fx_init(fx_t *f)
{
    memset(f, 0, sizeof(*f));
    CHECK_EQ(uv_loop_init(&f->loop), 0);
    mem_pair(&f->loop, &f->cli, &f->rc);
    mem_pair(&f->loop, &f->rs, &f->srv);
    mem_collect(f->cli, &f->cli_in);
    mem_collect(f->srv, &f->srv_in);
    svc_http_opts_defaults(&f->opts);
    f->opts.observed_value = "test";
}

void fx_on_done(int status, void *data)
{
    fx_t *f = data;
    CHECK(!f->done);
    f->done = true;
    f->status = status;
}

void fx_start(fx_t *f, bool h2)
{
    int rc = h2 ? svc_h2_start(f->rc, f->rs, &f->opts, fx_on_done, f, NULL)
                : svc_http1_start(f->rc, f->rs, &f->opts, fx_on_done, f, NULL);
    CHECK_EQ(rc, 0);
}

typedef struct waitc {
    mem_sink_t *k;
    const char *needle;
    int n;
} waitc_t;

int count_of(const char *hay, size_t len, const char *needle)
{
    int n = 0;
    size_t nl = strlen(needle);
    for (size_t i = 0; nl > 0 && i + nl <= len; i++) {
        if (memcmp(hay + i, needle, nl) == 0)
            n++;
    }
    return n;
}

static int cond_count(void *arg)
{
    waitc_t *w = arg;
    return count_of((const char *)w->k->data, w->k->len, w->needle) >= w->n;
}

void fx_wait_count(fx_t *f, mem_sink_t *k, const char *needle, int n)
{
    waitc_t w = {k, needle, n};
    if (!mem_run_until(&f->loop, cond_count, &w, 5000))
        NECTAR_FAIL_AT("timed out waiting for %d x \"%s\"; have %zu bytes:\n%s",
                       n, needle, k->len, mem_sink_str(k));
}

static int cond_eof(void *arg)
{
    return ((mem_sink_t *)arg)->eof;
}

void fx_wait_eof(fx_t *f, mem_sink_t *k)
{
    CHECK(mem_run_until(&f->loop, cond_eof, k, 5000));
}

static int cond_done(void *arg)
{
    return ((fx_t *)arg)->done;
}

void fx_wait_done(fx_t *f)
{
    CHECK(mem_run_until(&f->loop, cond_done, f, 5000));
}

void fx_close(fx_t *f)
{
    svc_close(f->cli);
    svc_close(f->srv);
    if (!f->done)
        fx_wait_done(f);
    mem_sink_free(&f->cli_in);
    mem_sink_free(&f->srv_in);
    CHECK_EQ(mem_loop_close(&f->loop), 0);
}

/* ---- log capture --------------------------------------------------------- */

static char *cap;
static size_t cap_len;

static void cap_sink(void *ctx, nectar_log_level_t level, const char *tag,
                     const char *line)
{
    (void)ctx;
    (void)level;
    size_t add = strlen(tag) + strlen(line) + 3;
    cap = realloc(cap, cap_len + add + 1);
    cap_len += (size_t)snprintf(cap + cap_len, add + 1, "%s: %s\n", tag, line);
}

void logcap_start(void)
{
    nectar_log_set_level(NECTAR_LOG_TRACE);
    nectar_log_set_sink(cap_sink, NULL);
}

const char *logcap_text(void)
{
    return cap ? cap : "";
}

void logcap_stop(void)
{
    nectar_log_set_sink(NULL, NULL);
    nectar_log_set_level(NECTAR_LOG_INFO);
}

/* ---- response splitter --------------------------------------------------- */

typedef struct pstate {
    resp_t *out;
    int max;
    int n;
    bool head_first;
    bool in_value;
    bool partial; /* out[n] holds a message begun, not complete */
} pstate_t;

static resp_t *cur(http_parser *p)
{
    pstate_t *s = p->data;
    return &s->out[s->n];
}

static void grow(char **buf, size_t *len, const char *at, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = 0;
}

static int p_begin(http_parser *p)
{
    pstate_t *s = p->data;
    if (s->n >= s->max)
        return -1;
    memset(cur(p), 0, sizeof(resp_t));
    s->in_value = false;
    s->partial = true;
    return 0;
}

static int p_field(http_parser *p, const char *at, size_t n)
{
    pstate_t *s = p->data;
    resp_t *r = cur(p);
    if (s->in_value || r->head_len == 0)
        grow(&r->head, &r->head_len, "\n", 1);
    s->in_value = false;
    grow(&r->head, &r->head_len, at, n);
    return 0;
}

static int p_value(http_parser *p, const char *at, size_t n)
{
    pstate_t *s = p->data;
    resp_t *r = cur(p);
    if (!s->in_value)
        grow(&r->head, &r->head_len, ": ", 2);
    s->in_value = true;
    grow(&r->head, &r->head_len, at, n);
    return 0;
}

static int p_headers(http_parser *p)
{
    pstate_t *s = p->data;
    resp_t *r = cur(p);
    r->status = p->status_code;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    grow(&r->head, &r->head_len, "\n", 1);
    if (s->n == 0 && s->head_first)
        return 1;
    return 0;
}

static int p_body(http_parser *p, const char *at, size_t n)
{
    resp_t *r = cur(p);
    grow((char **)&r->body, &r->body_len, at, n);
    return 0;
}

static int p_complete(http_parser *p)
{
    pstate_t *s = p->data;
    s->n++;
    s->partial = false;
    return 0;
}

int parse_responses(const void *data, size_t len, resp_t *out, int max,
                    bool head_first)
{
    http_parser_settings st = {
        .on_message_begin = p_begin,
        .on_header_field = p_field,
        .on_header_value = p_value,
        .on_headers_complete = p_headers,
        .on_body = p_body,
        .on_message_complete = p_complete,
    };
    pstate_t s = {out, max, 0, head_first, false, false};
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &s;
    http_parser_execute(&p, &st, data, len);
    if (s.partial)
        resp_free(&out[s.n], 1);
    return s.n;
}

void resp_free(resp_t *r, int n)
{
    for (int i = 0; i < n; i++) {
        free(r[i].head);
        free(r[i].body);
    }
}

const char *resp_header(const resp_t *r, const char *name, char *buf, size_t n)
{
    size_t nl = strlen(name);
    const char *p = r->head;
    while (p != NULL && *p != '\0') {
        if (*p == '\n')
            p++;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 2;
            const char *e = strchr(v, '\n');
            size_t vl = e ? (size_t)(e - v) : strlen(v);
            if (vl >= n)
                vl = n - 1;
            memcpy(buf, v, vl);
            buf[vl] = 0;
            return buf;
        }
        p = strchr(p, '\n');
    }
    return NULL;
}
