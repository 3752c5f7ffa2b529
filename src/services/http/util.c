/*
 * util.c - pieces shared by the HTTP relays: the growable buffer, the
 * relay base (owned writes, finishing, read switching, logging), the
 * badge decisions both relays make alike, and small string helpers.
 *
 * Why writes are "owned": svc_stream_t borrows a write buffer until its
 * callback, while the relays build output from borrowed read buffers.  So
 * every write hands over a heap buffer that the write callback frees; a
 * list of in-flight writes lets a relay that is torn down early free
 * buffers whose callbacks will never run (close drops them).
 *
 * Why finishing is deferred: a relay usually decides to finish inside a
 * stream callback, and the code after that decision still touches the
 * relay.  Callbacks bracket their work with
 * nectar__http_enter/nectar__http_leave, and the relay is destroyed only when
 * the outermost callback leaves.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/http_int.h"

/* ---- hbuf ---------------------------------------------------------------- */

static int hbuf_reserve(hbuf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return NECTAR_ENOMEM;
        cap *= 2;
    }
    uint8_t *p = nectar_realloc(b->data, cap);
    if (p == NULL)
        return NECTAR_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int nectar__http_buf_add(hbuf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (hbuf_reserve(b, n) != 0)
        return NECTAR_ENOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int nectar__http_buf_adds(hbuf_t *b, const char *s)
{
    return nectar__http_buf_add(b, s, strlen(s));
}

int nectar__http_buf_addf(hbuf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return NECTAR_EINVAL;
    if ((size_t)n < sizeof(small))
        return nectar__http_buf_add(b, small, (size_t)n);
    if (hbuf_reserve(b, (size_t)n + 1) != 0)
        return NECTAR_ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void nectar__http_buf_consume(hbuf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void nectar__http_buf_free(hbuf_t *b)
{
    nectar_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- options ------------------------------------------------------------- */

void svc_http_opts_defaults(svc_http_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->log_tag = "http";
    o->badge_enabled = true;
    o->badge_label = "proxied by nectar";
    o->hijack_host = "nectar.localhost";
}

/* ---- relay base ---------------------------------------------------------- */

typedef struct wreq {
    struct wreq *next;
    struct wreq *prev;
    http_base_t *base;
    uint8_t *buf;
} wreq_t;

void nectar__http_base_init(http_base_t *b, const http_base_ops_t *ops,
                            svc_stream_t *client, svc_stream_t *server,
                            const svc_http_opts_t *opts,
                            svc_http_done_cb done_cb, void *data)
{
    memset(b, 0, sizeof(*b));
    b->ops = ops;
    b->opts = *opts;
    if (b->opts.log_tag == NULL)
        b->opts.log_tag = "http";
    if (b->opts.observed_name == NULL)
        b->opts.observed_name = "x-nectar-observed";
    if (b->opts.observed_value == NULL) {
        snprintf(b->observed_value, sizeof(b->observed_value), "seen-by-%ld",
                 (long)getpid());
        b->opts.observed_value = b->observed_value;
    }
    if (b->opts.badge_label == NULL)
        b->opts.badge_label = "proxied by nectar";
    if (b->opts.hijack_host == NULL)
        b->opts.hijack_host = "nectar.localhost";
    if (opts->flow_id != 0)
        snprintf(b->prefix, sizeof(b->prefix), "flow=%llu ",
                 (unsigned long long)opts->flow_id);
    b->client = client;
    b->server = server;
    b->done_cb = done_cb;
    b->done_data = data;
}

static void wreq_unlink(http_base_t *b, wreq_t *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        b->wlist = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
}

static void on_written(svc_stream_t *s, int status, void *data)
{
    (void)s;
    wreq_t *w = data;
    http_base_t *b = w->base;
    wreq_unlink(b, w);
    nectar_free(w->buf);
    nectar_free(w);
    b->writes_pending--;
    nectar__http_enter(b);
    if (status < 0) {
        /* That side is gone, but what is already on its way to the other
         * side still goes (say, the 413 a server sent before resetting
         * an upload): finish once the other writes are done. */
        if (!b->finishing || b->finish_status == 0)
            b->finish_status = status;
        b->finishing = true;
        b->drain_on_error = true;
    } else if (!b->finishing && b->ops->write_done != NULL)
        b->ops->write_done(b, status);
    nectar__http_leave(b);
}

int nectar__http_write(http_base_t *b, svc_stream_t *s, hbuf_t *out)
{
    if (out->len == 0)
        return 0;
    /* After an error nothing more goes out; a clean finish still
     * delivers what was produced before it. */
    if (s == NULL || b->finished || (b->finishing && b->finish_status < 0)) {
        out->len = 0;
        return 0;
    }
    wreq_t *w = nectar_calloc(1, sizeof(*w));
    if (w == NULL)
        return NECTAR_ENOMEM;
    w->base = b;
    w->buf = out->data;
    size_t len = out->len;
    out->data = NULL;
    out->len = out->cap = 0;
    int rc = svc_write(s, w->buf, len, on_written, w);
    if (rc < 0) {
        nectar_free(w->buf);
        nectar_free(w);
        return rc;
    }
    w->next = b->wlist;
    if (b->wlist != NULL)
        b->wlist->prev = w;
    b->wlist = w;
    b->writes_pending++;
    return 0;
}

/* Close both streams, free what close dropped, run done_cb, destroy. */
static void complete(http_base_t *b, bool run_done)
{
    b->finished = true;
    if (b->client != NULL)
        svc_read_stop(b->client);
    if (b->server != NULL)
        svc_read_stop(b->server);
    if (b->ops->detach != NULL)
        b->ops->detach(b);
    if (b->client != NULL)
        svc_close(b->client);
    if (b->server != NULL)
        svc_close(b->server);
    b->client = b->server = NULL;
    while (b->wlist != NULL) {
        wreq_t *w = b->wlist;
        b->wlist = w->next;
        nectar_free(w->buf);
        nectar_free(w);
    }
    b->writes_pending = 0;
    if (run_done && !b->cancelled && b->done_cb != NULL)
        b->done_cb(b->finish_status, b->done_data);
    b->ops->destroy(b);
}

void nectar__http_finish(http_base_t *b, int status)
{
    if (b->finished)
        return;
    if (!b->finishing || (status < 0 && b->finish_status == 0))
        b->finish_status = status;
    b->finishing = true;
    if (b->depth > 0)
        return; /* nectar__http_leave completes */
    if ((status < 0 && !b->drain_on_error) || b->writes_pending == 0)
        complete(b, true);
}

void nectar__http_enter(http_base_t *b)
{
    b->depth++;
}

bool nectar__http_leave(http_base_t *b)
{
    b->depth--;
    if (b->depth > 0 || !b->finishing || b->finished)
        return true;
    if ((b->finish_status < 0 && !b->drain_on_error) ||
        b->writes_pending == 0) {
        complete(b, true);
        return false;
    }
    return true;
}

void svc_http_cancel(svc_http_t *h)
{
    http_base_t *b = &h->base;
    if (b->finished)
        return;
    /* Inside one of the relay's own callbacks (say, a CONNECT hook that
     * gives up on the flow) the teardown waits for that callback to
     * return, like nectar__http_finish. */
    b->cancelled = true;
    b->finishing = true;
    b->finish_status = NECTAR_ECANCELED;
    if (b->depth == 0)
        complete(b, false);
}

void nectar__http_log(const http_base_t *b, nectar_log_level_t lvl,
                      const char *fmt, ...)
{
    if ((int)lvl > (int)nectar_log_get_level())
        return;
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    nectar_log(lvl, b->opts.log_tag, "%s%s", b->prefix, line);
}

void nectar__http_set_reading(svc_stream_t *s, bool want, bool *reading,
                              svc_read_cb cb, void *data)
{
    if (want == *reading)
        return;
    *reading = want;
    if (want)
        svc_read_start(s, cb, data);
    else
        svc_read_stop(s);
}

/* ---- badge decisions ----------------------------------------------------- */

bool nectar__http_badge_allowed(const svc_http_opts_t *o, const char *host)
{
    return o->badge_enabled && !(o->is_excluded != NULL && host[0] != '\0' &&
                                 o->is_excluded(o->data, host));
}

bool nectar__http_badge_status(int status)
{
    return status >= 200 && status != 204 && status != 206 && status != 304;
}

bool nectar__http_badge_drops(const char *name, size_t len)
{
    static const char *const names[] = {
        "content-length", "etag", "last-modified", "content-md5", "digest",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (nectar__http_ieq(name, len, names[i]))
            return true;
    }
    return false;
}

/* ---- strings ------------------------------------------------------------- */

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

bool nectar__http_ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        if (lower(a[i]) != lower(b[i]))
            return false;
    }
    return true;
}

bool nectar__http_host_norm(const char *in, size_t len, char *out, size_t n)
{
    while (len > 0 && (*in == ' ' || *in == '\t')) {
        in++;
        len--;
    }
    size_t end = len;
    if (len > 0 && in[0] == '[') {
        const char *rb = memchr(in, ']', len);
        if (rb == NULL)
            return false;
        in++;
        end = (size_t)(rb - in);
    } else {
        const char *colon = memchr(in, ':', len);
        if (colon != NULL)
            end = (size_t)(colon - in);
    }
    while (end > 0 &&
           (in[end - 1] == ' ' || in[end - 1] == '\t' || in[end - 1] == '.'))
        end--;
    if (end + 1 > n)
        return false;
    for (size_t i = 0; i < end; i++)
        out[i] = lower(in[i]);
    out[end] = '\0';
    return true;
}

/* Trimmed token [p, p+len) up to ';' or ','. */
static size_t token_len(const char *p, size_t len, size_t *start)
{
    size_t i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t'))
        i++;
    size_t j = i;
    while (j < len && p[j] != ';' && p[j] != ',')
        j++;
    size_t e = j;
    while (e > i && (p[e - 1] == ' ' || p[e - 1] == '\t'))
        e--;
    *start = i;
    return e - i;
}

bool nectar__http_badge_candidate(const char *ctype, size_t ctlen,
                                  const char *cenc, size_t celen, int *enc)
{
    if (ctype == NULL)
        return false;
    size_t s;
    size_t n = token_len(ctype, ctlen, &s);
    if (!nectar__http_ieq(ctype + s, n, "text/html"))
        return false;
    *enc = BADGE_ENC_IDENTITY;
    if (cenc == NULL)
        return true;
    n = token_len(cenc, celen, &s);
    if (n < celen - s && memchr(cenc + s + n, ',', celen - s - n) != NULL)
        return false; /* stacked encodings: leave alone */
    if (n == 0 || nectar__http_ieq(cenc + s, n, "identity"))
        return true;
    if (nectar__http_ieq(cenc + s, n, "gzip") ||
        nectar__http_ieq(cenc + s, n, "x-gzip")) {
        *enc = BADGE_ENC_GZIP;
        return true;
    }
    if (nectar__http_ieq(cenc + s, n, "deflate")) {
        *enc = BADGE_ENC_DEFLATE;
        return true;
    }
    return false;
}
