/*
 * tcp.c - the example's per-flow TCP service (spec §5.3).
 *
 *   peek the app's first bytes (peek_duration_s, at least 0.5 s)
 *    |- TLS ClientHello: excluded SNI, no CA, or a host whose app rejected
 *    |      our certificate -> promote;  else TLS interception, then by
 *    |      ALPN: h2 -> HTTP/2 relay, http/1.1 -> HTTP/1 relay, none ->
 *    |      inner peek (HTTP/1 relay or plain relay), other -> plain relay
 *    |- HTTP/1.x request: excluded host -> promote;  else HTTP/1 relay
 *    '- anything else (SOCKS5 included, timeout, silence) -> promote
 *   promote = flush the peeked bytes to the remote, ask the host to take
 *   the flow back (nectar_tcp_flow_promote), and relay whatever the engine
 *   still holds (all of it when the host refused).
 *
 * Promote is only attempted on the raw bridge: once TLS or HTTP is
 * terminated the two sides carry different bytes, so layers below the
 * top level (a "chain") never promote.  CONNECT tunnels (HTTP/1 only) get
 * a chain of their own, one level deep.
 *
 * Map: ended stream; classification; chains (no promote); the flow (peek,
 * promote, dispatch); the service vtable.
 */
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "example/example_int.h"
#include "example/socks5.h"
#include "nectar/log.h"
#include "services/http/http.h"
#include "services/peek/clienthello.h"
#include "services/peek/peek.h"
#include "services/peek/sniff.h"
#include "services/relay.h"

#define PEEK_MAX (64 * 1024)

/* ---- a stream whose reads already ended --------------------------------- */

/* When the peek saw the app's EOF, the flow stream will not report it
 * again; this wrapper reports it once more to whoever reads next. */
struct ended {
    svc_stream_t base;
    svc_stream_t *inner;
    uv_idle_t *idle;
    int status;
    svc_read_cb cb;
    void *data;
};

static void ended_idle_closed(uv_handle_t *h)
{
    nectar_free(h);
}

static void ended_fire(uv_idle_t *h)
{
    struct ended *e = h->data;
    uv_idle_stop(h);
    if (e->cb != NULL) {
        svc_read_cb cb = e->cb;
        e->cb = NULL;
        cb(&e->base, e->status, NULL, e->data);
    }
}

static int ended_read_start(svc_stream_t *s, svc_read_cb cb, void *data)
{
    struct ended *e = (struct ended *)s;
    e->cb = cb;
    e->data = data;
    return uv_idle_start(e->idle, ended_fire) == 0 ? 0 : NECTAR_EIO;
}

static int ended_read_stop(svc_stream_t *s)
{
    struct ended *e = (struct ended *)s;
    uv_idle_stop(e->idle);
    return 0;
}

static int ended_write(svc_stream_t *s, const uint8_t *buf, size_t len,
                       svc_write_cb cb, void *data)
{
    struct ended *e = (struct ended *)s;
    /* Writes pass through; the callback sees the inner stream, which no
     * caller here looks at. */
    return svc_write(e->inner, buf, len, cb, data);
}

static int ended_shutdown(svc_stream_t *s)
{
    return svc_shutdown(((struct ended *)s)->inner);
}

static size_t ended_queue(const svc_stream_t *s)
{
    return svc_write_queue_size(((const struct ended *)s)->inner);
}

static void ended_close(svc_stream_t *s)
{
    struct ended *e = (struct ended *)s;
    uv_idle_stop(e->idle);
    uv_close((uv_handle_t *)e->idle, ended_idle_closed);
    svc_close(e->inner);
    nectar_free(e);
}

static const svc_stream_ops_t ended_ops = {
    .name = "ended",
    .read_start = ended_read_start,
    .read_stop = ended_read_stop,
    .write = ended_write,
    .shutdown = ended_shutdown,
    .write_queue_size = ended_queue,
    .close = ended_close,
};

/* Takes inner (closed on failure too). */
static svc_stream_t *ended_new(svc_stream_t *inner, int status)
{
    struct ended *e = nectar_calloc(1, sizeof(*e));
    uv_idle_t *idle = nectar_malloc(sizeof(*idle));
    if (e == NULL || idle == NULL) {
        nectar_free(e);
        nectar_free(idle);
        svc_close(inner);
        return NULL;
    }
    e->base.ops = &ended_ops;
    e->base.loop = inner->loop;
    e->inner = inner;
    e->idle = idle;
    e->status = status;
    uv_idle_init(inner->loop, idle);
    idle->data = e;
    return &e->base;
}

/* ---- classification ----------------------------------------------------- */

enum kind { K_MORE, K_TLS, K_HTTP, K_SOCKS5, K_OTHER };

struct verdict {
    enum kind kind;
    bool tls_allowed;
    peek_tls_hello_t hello;
    peek_http_req_t req;
};

static enum kind classify(const uint8_t *b, size_t n, bool final,
                          struct verdict *v)
{
    peek_verdict_t tls =
        v->tls_allowed ? peek_tls_parse(b, n, &v->hello) : PEEK_NO;
    if (tls == PEEK_YES)
        return K_TLS;
    peek_verdict_t http = peek_http_parse(b, n, final, &v->req);
    if (http == PEEK_YES)
        return K_HTTP;
    peek_verdict_t s5 = peek_socks5_greeting(b, n, NULL);
    if (s5 == PEEK_YES && tls == PEEK_NO && http == PEEK_NO)
        return K_SOCKS5;
    if (final || (tls == PEEK_NO && http == PEEK_NO && s5 == PEEK_NO))
        return K_OTHER;
    return K_MORE;
}

static bool judge(struct verdict *v, const uint8_t *buf, size_t len, bool final)
{
    v->kind = classify(buf, len, final, v);
    return v->kind != K_MORE;
}

static const char *kind_name(enum kind k)
{
    static const char *const names[] = {"?", "tls", "http", "socks5", "other"};
    return names[k];
}

/* ---- per-flow state ----------------------------------------------------- */

struct ex_chain;

struct ex_tcp {
    struct ex_state *ex;
    struct ex_live *live;
    ex_permit_t permit;
    nectar_tcp_flow_t *flow;
    uint64_t id;
    char remote[256];
    char remote_name[256]; /* remote_hostname, else remote host */
    uint64_t peek_ms;
    svc_stream_t *in, *out; /* raw flow streams while we own them */
    svc_peek_t *peek;
    struct verdict v;
    uint8_t *buf;
    size_t len;
    int peek_status;
    /* The remote is watched during the peek: a server that speaks first
     * (SMTP, FTP, a database) ends the peek at once. */
    svc_peek_t *opeek;
    uint8_t *obuf; /* what the remote said, for the app */
    size_t olen;
    int out_end;  /* the remote ended during the peek (its status) */
    int flushing; /* peeked bytes being written out before a promote */
    svc_relay_t *relay;
    struct ex_chain *chains;
    bool finished;
};

/* A layer over (client, server) that terminates TLS and/or HTTP. */
struct ex_chain {
    struct ex_chain *prev, *next;
    struct ex_tcp *t;
    svc_stream_t *c, *s; /* owned until handed to a relay */
    svc_peek_t *peek;
    tls_mitm_flow_t *mitm;
    svc_http_t *http;
    svc_relay_t *relay;
    svc_http_opts_t opts;
    bool top; /* its end ends the flow */
    bool within_connect;
    char host[256];
    struct verdict v;
    /* SOCKS5 handshake relay (top level only): the step being read, what
     * follows once the forwarded message is written, the message buffer. */
    int sk_step, sk_next;
    long sk_len;
    uint8_t sk_cmd, sk_rep;
    uint16_t sk_port;
    int sk_c_end, sk_s_end; /* a side ended while peeking (its status) */
    uint8_t *sk_buf;
    uint8_t *c_left, *s_left; /* bytes past the handshake, to replay */
    size_t c_left_len, s_left_len;
};

static void flow_end(struct ex_tcp *t);
static void chain_peek(struct ex_chain *ch);

static const char *flow_tag(void)
{
    return EX_TAG;
}

/* ---- chains ------------------------------------------------------------- */

static bool opts_excluded(void *data, const char *host)
{
    struct ex_chain *ch = data;
    return ex_domains_match(ch->t->live->exclude, host);
}

static int opts_ca_pem(void *data, char **pem, size_t *len)
{
    struct ex_chain *ch = data;
    if (ch->t->live->mitm == NULL)
        return NECTAR_ENOENT;
    const char *p = tls_ca_cert_pem(tls_mitm_ca(ch->t->live->mitm));
    *pem = nectar_strdup(p);
    if (*pem == NULL)
        return NECTAR_ENOMEM;
    *len = strlen(p);
    return 0;
}

static int opts_connect(void *data, svc_stream_t *client_inner,
                        svc_stream_t *server_inner, const char *authority,
                        const svc_http_opts_t *opts);

static struct ex_chain *chain_new(struct ex_tcp *t, svc_stream_t *c,
                                  svc_stream_t *s, const char *host,
                                  bool within_connect)
{
    struct ex_chain *ch = nectar_calloc(1, sizeof(*ch));
    if (ch == NULL)
        return NULL;
    ch->t = t;
    ch->c = c;
    ch->s = s;
    ch->within_connect = within_connect;
    snprintf(ch->host, sizeof(ch->host), "%s", host ? host : "");
    svc_http_opts_defaults(&ch->opts);
    ch->opts.log_tag = flow_tag();
    ch->opts.flow_id = t->id;
    ch->opts.observed_value = t->live->observed_value;
    ch->opts.badge_enabled = t->live->badge_enabled;
    ch->opts.badge_label = t->live->badge_label;
    ch->opts.is_excluded = opts_excluded;
    ch->opts.hijack_host = t->live->hijack_host;
    ch->opts.ca_pem = opts_ca_pem;
    ch->opts.connect_hook = opts_connect;
    ch->opts.within_connect = within_connect;
    ch->opts.data = ch;
    ch->next = t->chains;
    if (t->chains != NULL)
        t->chains->prev = ch;
    t->chains = ch;
    return ch;
}

/* Stops whatever runs in the chain and frees it (no notification). */
static void chain_free(struct ex_chain *ch)
{
    struct ex_tcp *t = ch->t;
    if (ch->prev != NULL)
        ch->prev->next = ch->next;
    else
        t->chains = ch->next;
    if (ch->next != NULL)
        ch->next->prev = ch->prev;
    if (ch->peek != NULL) {
        size_t n;
        nectar_free(svc_peek_cancel(ch->peek, &n));
    }
    if (ch->mitm != NULL)
        tls_mitm_flow_cancel(ch->mitm);
    if (ch->http != NULL)
        svc_http_cancel(ch->http);
    if (ch->relay != NULL)
        svc_relay_free(ch->relay);
    if (ch->c != NULL)
        svc_close(ch->c);
    if (ch->s != NULL)
        svc_close(ch->s);
    nectar_free(ch->sk_buf);
    nectar_free(ch->c_left);
    nectar_free(ch->s_left);
    nectar_free(ch);
}

static void chain_end(struct ex_chain *ch, int status)
{
    struct ex_tcp *t = ch->t;
    bool top = ch->top;
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG, "flow=%llu %s layer for %s ended: %s",
               (unsigned long long)t->id, top ? "top" : "tunnel", ch->host,
               status ? nectar_strerror(status) : "ok");
    chain_free(ch);
    if (top)
        flow_end(t);
}

static void chain_relay_done(svc_relay_t *r, int status, void *data)
{
    (void)r;
    struct ex_chain *ch = data;
    svc_relay_free(ch->relay);
    ch->relay = NULL;
    chain_end(ch, status);
}

/* Plain relay of the (decrypted) bytes: never promoted. */
static void chain_raw(struct ex_chain *ch)
{
    ch->relay = svc_relay_start(ch->c, ch->s, SVC_RELAY_MAX_PENDING,
                                chain_relay_done, ch);
    if (ch->relay == NULL) {
        chain_end(ch, NECTAR_ENOMEM);
        return;
    }
    struct svc_counters *k = &ch->t->ex->stats.tcp;
    svc_relay_set_counters(ch->relay, &k->bytes_to_remote, &k->bytes_to_app);
}

static void chain_http_done(int status, void *data)
{
    struct ex_chain *ch = data;
    ch->http = NULL;
    ch->c = ch->s = NULL; /* the relay closed them */
    chain_end(ch, status);
}

static void chain_http(struct ex_chain *ch, bool h2)
{
    svc_http_t *h = NULL;
    int rc =
        h2 ? svc_h2_start(ch->c, ch->s, &ch->opts, chain_http_done, ch, &h)
           : svc_http1_start(ch->c, ch->s, &ch->opts, chain_http_done, ch, &h);
    if (rc != 0) {
        chain_end(ch, rc);
        return;
    }
    ch->http = h;
    ch->c = ch->s = NULL; /* owned by the relay now */
}

static void chain_mitm_done(int status, svc_stream_t *c, svc_stream_t *s,
                            const char *alpn, void *data)
{
    struct ex_chain *ch = data;
    ch->mitm = NULL;
    if (status != 0) {
        chain_end(ch, status);
        return;
    }
    ch->c = c;
    ch->s = s;
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG,
               "flow=%llu intercepted TLS for %s, "
               "alpn \"%s\"",
               (unsigned long long)ch->t->id, ch->host, alpn);
    if (strcmp(alpn, "h2") == 0)
        chain_http(ch, true);
    else if (strcmp(alpn, "http/1.1") == 0)
        chain_http(ch, false);
    else if (alpn[0] == '\0') {
        ch->v.tls_allowed = false;
        chain_peek(ch);
    } else
        chain_raw(ch);
}

/* c must replay the ClientHello.  Hosts the app does not trust us for,
 * and excluded ones, are relayed raw (no promote below the top). */
static void chain_tls(struct ex_chain *ch, const peek_tls_hello_t *hello)
{
    struct ex_tcp *t = ch->t;
    const char *host = hello->has_sni ? hello->sni : ch->host;
    snprintf(ch->host, sizeof(ch->host), "%s", host);
    if (t->live->mitm == NULL || ex_domains_match(t->live->exclude, host) ||
        tls_mitm_bypassed(t->live->mitm, host)) {
        chain_raw(ch);
        return;
    }
    svc_stream_t *c = ch->c, *s = ch->s;
    ch->c = ch->s = NULL;
    if (t->live->hijack_host[0] != '\0' &&
        strcmp(host, t->live->hijack_host) == 0) {
        svc_close(s); /* the hijacked host is served here, not upstream */
        s = NULL;
    }
    ch->mitm = tls_mitm_flow_start(t->live->mitm, c, s, hello, t->remote, t->id,
                                   chain_mitm_done, ch);
    if (ch->mitm == NULL)
        chain_end(ch, NECTAR_ENOMEM);
}

static void chain_peek_done(int status, uint8_t *buf, size_t len, void *data)
{
    struct ex_chain *ch = data;
    ch->peek = NULL;
    svc_stream_t *c = svc_stream_prefix(ch->c, buf, len);
    nectar_free(buf);
    ch->c = c;
    if (c == NULL) {
        chain_end(ch, NECTAR_ENOMEM);
        return;
    }
    if (status != 0 && status != NECTAR_ETIMEDOUT && status != NECTAR_ELIMIT) {
        ch->c = ended_new(c, status); /* the app already finished */
        if (ch->c == NULL) {
            chain_end(ch, NECTAR_ENOMEM);
            return;
        }
    }
    switch (ch->v.kind) {
    case K_TLS:
        chain_tls(ch, &ch->v.hello);
        break;
    case K_HTTP:
        chain_http(ch, false);
        break;
    default:
        chain_raw(ch);
        break;
    }
}

static bool chain_judge(const uint8_t *buf, size_t len, bool final, void *data)
{
    return judge(&((struct ex_chain *)data)->v, buf, len, final);
}

static void chain_peek(struct ex_chain *ch)
{
    ch->peek = svc_peek_start(ch->c, ch->t->peek_ms, PEEK_MAX, chain_judge,
                              chain_peek_done, ch);
    if (ch->peek == NULL)
        chain_raw(ch);
}

/* ---- SOCKS5: the handshake relayed message by message ------------------- */

/* Steps: which message is read next (from the app or from the proxy). */
enum {
    SK_METHOD = 1,
    SK_AUTH_REQ,
    SK_AUTH_REP,
    SK_REQ,
    SK_REP,
    SK_RAW,
    SK_INNER
};

static bool sk_from_server(int step)
{
    return step == SK_METHOD || step == SK_AUTH_REP || step == SK_REP;
}

static long sk_frame(struct ex_chain *ch, const uint8_t *b, size_t n)
{
    switch (ch->sk_step) {
    case SK_METHOD:
        return socks5_method_reply(b, n);
    case SK_AUTH_REQ:
        return socks5_auth_request(b, n);
    case SK_AUTH_REP:
        return socks5_auth_reply(b, n);
    case SK_REQ:
        return socks5_request(b, n, &ch->sk_cmd, ch->host, sizeof(ch->host),
                              &ch->sk_port);
    default:
        return socks5_reply(b, n, &ch->sk_rep);
    }
}

static bool sk_judge(const uint8_t *buf, size_t len, bool final, void *data)
{
    struct ex_chain *ch = data;
    ch->sk_len = sk_frame(ch, buf, len);
    return ch->sk_len != 0 || final;
}

static void sk_read(struct ex_chain *ch, int step);

/* Replays what was read past the handshake, and an end already seen. */
static bool sk_rewrap(svc_stream_t **sp, uint8_t **left, size_t *left_len,
                      int end)
{
    if (*left_len > 0) {
        *sp = svc_stream_prefix(*sp, *left, *left_len);
        if (*sp == NULL)
            return false;
    }
    nectar_free(*left);
    *left = NULL;
    *left_len = 0;
    if (end != 0 && (*sp = ended_new(*sp, end)) == NULL)
        return false;
    return true;
}

static void sk_continue(struct ex_chain *ch)
{
    if (ch->sk_next != SK_RAW && ch->sk_next != SK_INNER) {
        sk_read(ch, ch->sk_next);
        return;
    }
    bool ok = sk_rewrap(&ch->c, &ch->c_left, &ch->c_left_len, ch->sk_c_end);
    ch->c = ok ? ch->c : NULL;
    ok = ok && sk_rewrap(&ch->s, &ch->s_left, &ch->s_left_len, ch->sk_s_end);
    if (!ok) {
        chain_end(ch, NECTAR_ENOMEM);
    } else if (ch->sk_next == SK_INNER) {
        nectar_log(NECTAR_LOG_DEBUG, EX_TAG, "flow=%llu SOCKS5 tunnel to %s:%u",
                   (unsigned long long)ch->t->id, ch->host, ch->sk_port);
        ch->within_connect = true; /* one level of tunnels, like CONNECT */
        ch->opts.within_connect = true;
        ch->v.tls_allowed = true;
        chain_peek(ch);
    } else {
        chain_raw(ch);
    }
}

static void sk_written(svc_stream_t *s, int status, void *data)
{
    (void)s;
    struct ex_chain *ch = data;
    nectar_free(ch->sk_buf);
    ch->sk_buf = NULL;
    if (status != 0)
        chain_end(ch, status);
    else
        sk_continue(ch);
}

/* The step after a complete message, or SK_RAW when the handshake goes
 * anywhere we do not follow (no CONNECT, a refusal, GSSAPI, ...). */
static int sk_after(struct ex_chain *ch, const uint8_t *msg)
{
    switch (ch->sk_step) {
    case SK_METHOD:
        return msg[1] == 0 ? SK_REQ : msg[1] == 2 ? SK_AUTH_REQ : SK_RAW;
    case SK_AUTH_REQ:
        return SK_AUTH_REP;
    case SK_AUTH_REP:
        return msg[1] == 0 ? SK_REQ : SK_RAW;
    case SK_REQ:
        return SK_REP;
    default:
        return ch->sk_rep == 0 && ch->sk_cmd == SOCKS5_CMD_CONNECT ? SK_INNER
                                                                   : SK_RAW;
    }
}

static void sk_peeked(int status, uint8_t *buf, size_t len, void *data)
{
    struct ex_chain *ch = data;
    ch->peek = NULL;
    bool from_s = sk_from_server(ch->sk_step);
    if (status != 0 && status != NECTAR_ETIMEDOUT && status != NECTAR_ELIMIT)
        *(from_s ? &ch->sk_s_end : &ch->sk_c_end) = status;
    size_t msg = ch->sk_len > 0 ? (size_t)ch->sk_len : len;
    ch->sk_next = ch->sk_len > 0 ? sk_after(ch, buf) : SK_RAW;
    /* Bytes past a handshake message before the other side answered are
     * only expected once the tunnel is up; otherwise relay raw. */
    if (msg < len && ch->sk_next != SK_INNER && ch->sk_step != SK_REQ) {
        ch->sk_next = SK_RAW;
        msg = len;
    }
    if (msg < len) {
        uint8_t **left = from_s ? &ch->s_left : &ch->c_left;
        size_t *left_len = from_s ? &ch->s_left_len : &ch->c_left_len;
        *left = nectar_memdup(buf + msg, len - msg);
        *left_len = *left ? len - msg : 0;
    }
    ch->sk_buf = buf;
    svc_stream_t *to = from_s ? ch->c : ch->s;
    if (msg == 0) {
        sk_written(to, 0, ch);
        return;
    }
    if (svc_write(to, buf, msg, sk_written, ch) != 0)
        chain_end(ch, NECTAR_EIO);
}

static void sk_read(struct ex_chain *ch, int step)
{
    ch->sk_step = step;
    ch->sk_len = 0;
    svc_stream_t *from = sk_from_server(step) ? ch->s : ch->c;
    ch->peek =
        svc_peek_start(from, ch->t->peek_ms, 1024, sk_judge, sk_peeked, ch);
    if (ch->peek == NULL)
        chain_raw(ch);
}

/* The app's greeting (greeting, owned) goes to the proxy first. */
static void chain_socks5(struct ex_chain *ch, uint8_t *greeting, size_t len)
{
    ch->sk_buf = greeting;
    ch->sk_next = SK_METHOD;
    if (svc_write(ch->s, greeting, len, sk_written, ch) != 0)
        chain_end(ch, NECTAR_EIO);
}

/* CONNECT accepted by the server at the top level: a chain of its own. */
static int opts_connect(void *data, svc_stream_t *client_inner,
                        svc_stream_t *server_inner, const char *authority,
                        const svc_http_opts_t *opts)
{
    (void)opts;
    struct ex_chain *outer = data;
    if (outer->within_connect)
        return 1;
    char host[256];
    size_t n = strlen(authority);
    if (!peek_host_normalize(authority, n, host, sizeof(host)))
        snprintf(host, sizeof(host), "%s", outer->host);
    struct ex_chain *ch =
        chain_new(outer->t, client_inner, server_inner, host, true);
    if (ch == NULL)
        return 1;
    ch->v.tls_allowed = true;
    chain_peek(ch);
    return 0;
}

/* ---- the flow: peek, promote, dispatch ----------------------------------- */

static void flow_end(struct ex_tcp *t)
{
    if (t->finished)
        return;
    t->finished = true;
    if (t->in != NULL)
        svc_close(t->in);
    if (t->out != NULL)
        svc_close(t->out);
    t->in = t->out = NULL;
    nectar_tcp_flow_finish(t->flow);
}

static void flow_relay_done(svc_relay_t *r, int status, void *data)
{
    struct ex_tcp *t = data;
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG,
               "flow=%llu relay done (%s), %llu bytes up, %llu down",
               (unsigned long long)t->id,
               status ? nectar_strerror(status) : "ok",
               (unsigned long long)svc_relay_bytes(r, 1),
               (unsigned long long)svc_relay_bytes(r, 0));
    svc_relay_free(r);
    t->relay = NULL;
    flow_end(t);
}

static void flow_relay(struct ex_tcp *t)
{
    t->relay = svc_relay_start(t->in, t->out, SVC_RELAY_MAX_PENDING,
                               flow_relay_done, t);
    if (t->relay == NULL) {
        flow_end(t);
        return;
    }
    struct svc_counters *k = &t->ex->stats.tcp;
    svc_relay_set_counters(t->relay, &k->bytes_to_remote, &k->bytes_to_app);
}

static void on_promoted(nectar_tcp_flow_t *flow, int status, void *data)
{
    (void)flow;
    struct ex_tcp *t = data;
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG, "flow=%llu promote: %s",
               (unsigned long long)t->id,
               status == 0 ? "host took the flow back"
                           : nectar_strerror(status));
    if (t->finished)
        return;
    /* After a successful promote the engine still delivers what it had
     * queued, then EOF on both sides; after a refusal it carries on. */
    flow_relay(t);
}

static void promote_now(struct ex_tcp *t)
{
    if (t->peek_status != 0 && t->peek_status != NECTAR_ETIMEDOUT &&
        t->peek_status != NECTAR_ELIMIT) {
        /* The app already closed its side: nothing to hand over. */
        t->in = ended_new(t->in, t->peek_status);
        if (t->in == NULL) {
            flow_end(t);
            return;
        }
        flow_relay(t);
        return;
    }
    int rc = nectar_tcp_flow_promote(t->flow, on_promoted, t);
    if (rc != 0)
        on_promoted(t->flow, rc, t);
}

static void on_flushed(svc_stream_t *s, int status, void *data)
{
    (void)s;
    struct ex_tcp *t = data;
    if (status != 0) {
        flow_end(t);
        return;
    }
    if (--t->flushing == 0) {
        nectar_free(t->buf);
        nectar_free(t->obuf);
        t->buf = t->obuf = NULL;
        t->len = t->olen = 0;
        promote_now(t);
    }
}

static void on_written(svc_stream_t *s, int status, void *data)
{
    (void)s;
    (void)status;
    (void)data;
}

/* The peeked bytes (both ways) go out before the host takes over, so the
 * hand-over loses and duplicates nothing. */
static void promote(struct ex_tcp *t, const char *why)
{
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG, "flow=%llu %s: promoting",
               (unsigned long long)t->id, why);
    if (t->out_end != 0) {
        /* The remote already left: relay what remains (the app may still
         * be told so), nothing to hand over. */
        bool app_ended = t->peek_status != 0 &&
                         t->peek_status != NECTAR_ETIMEDOUT &&
                         t->peek_status != NECTAR_ELIMIT;
        t->out = ended_new(t->out, t->out_end);
        if (t->out != NULL && app_ended)
            t->in = ended_new(t->in, t->peek_status);
        if (t->out == NULL || t->in == NULL ||
            (t->len > 0 &&
             svc_write(t->out, t->buf, t->len, on_written, NULL) != 0)) {
            flow_end(t);
            return;
        }
        flow_relay(t);
        return;
    }
    t->flushing = 1; /* held until both writes are queued */
    if (t->len > 0) {
        t->flushing++;
        if (svc_write(t->out, t->buf, t->len, on_flushed, t) != 0) {
            flow_end(t);
            return;
        }
    }
    if (t->olen > 0) {
        t->flushing++;
        if (svc_write(t->in, t->obuf, t->olen, on_flushed, t) != 0) {
            flow_end(t);
            return;
        }
    }
    on_flushed(NULL, 0, t);
}

/* Hands the raw streams (ingress replaying the peeked bytes) to a top
 * chain. */
static struct ex_chain *top_chain(struct ex_tcp *t, const char *host,
                                  bool replay)
{
    svc_stream_t *c = replay ? svc_stream_prefix(t->in, t->buf, t->len) : t->in;
    t->in = NULL;
    if (replay) {
        nectar_free(t->buf);
        t->buf = NULL;
    }
    if (c == NULL) {
        flow_end(t);
        return NULL;
    }
    if (t->peek_status != 0 && t->peek_status != NECTAR_ETIMEDOUT &&
        t->peek_status != NECTAR_ELIMIT &&
        (c = ended_new(c, t->peek_status)) == NULL) {
        flow_end(t);
        return NULL;
    }
    svc_stream_t *s = t->out;
    if (t->olen > 0)
        s = svc_stream_prefix(s, t->obuf, t->olen);
    if (s != NULL && t->out_end != 0)
        s = ended_new(s, t->out_end);
    t->out = NULL;
    nectar_free(t->obuf);
    t->obuf = NULL;
    t->olen = 0;
    struct ex_chain *ch = s ? chain_new(t, c, s, host, false) : NULL;
    if (ch == NULL) {
        svc_close(c);
        if (s != NULL)
            svc_close(s);
        flow_end(t);
        return NULL;
    }
    ch->top = true;
    return ch;
}

static void dispatch_tls(struct ex_tcp *t)
{
    const peek_tls_hello_t *h = &t->v.hello;
    const char *host = h->has_sni ? h->sni : t->remote;
    struct ex_live *l = t->live;
    if (ex_domains_match(l->exclude, host)) {
        promote(t, "excluded TLS host");
    } else if (l->mitm == NULL) {
        promote(t, "no CA");
    } else if (tls_mitm_bypassed(l->mitm, host) ||
               tls_mitm_bypassed(l->mitm, t->remote_name)) {
        promote(t, "app rejected our certificate earlier");
    } else {
        struct ex_chain *ch = top_chain(t, host, true);
        if (ch != NULL)
            chain_tls(ch, h);
    }
}

static void dispatch_http(struct ex_tcp *t)
{
    const char *host = t->v.req.host[0] ? t->v.req.host : t->remote_name;
    if (ex_domains_match(t->live->exclude, host)) {
        promote(t, "excluded HTTP host");
        return;
    }
    struct ex_chain *ch = top_chain(t, host, true);
    if (ch != NULL)
        chain_http(ch, false);
}

static void dispatch_socks5(struct ex_tcp *t)
{
    if (t->peek_status != 0 && t->peek_status != NECTAR_ETIMEDOUT &&
        t->peek_status != NECTAR_ELIMIT) {
        promote(t, "socks5 greeting then EOF");
        return;
    }
    struct ex_chain *ch = top_chain(t, t->remote_name, false);
    if (ch == NULL)
        return;
    uint8_t *greeting = t->buf;
    size_t len = t->len;
    t->buf = NULL;
    t->len = 0;
    chain_socks5(ch, greeting, len);
}

static void stop_watching_remote(struct ex_tcp *t)
{
    if (t->opeek == NULL)
        return;
    size_t n = 0;
    uint8_t *b = svc_peek_cancel(t->opeek, &n);
    t->opeek = NULL;
    if (n > 0) {
        t->obuf = b;
        t->olen = n;
    } else {
        nectar_free(b);
    }
}

static void on_peeked(int status, uint8_t *buf, size_t len, void *data)
{
    struct ex_tcp *t = data;
    t->peek = NULL;
    t->buf = buf;
    t->len = len;
    t->peek_status = status;
    stop_watching_remote(t);
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG, "flow=%llu peeked %zu bytes: %s%s",
               (unsigned long long)t->id, len, kind_name(t->v.kind),
               status == NECTAR_ETIMEDOUT ? " (timeout)" : "");
    switch (t->v.kind) {
    case K_TLS:
        dispatch_tls(t);
        break;
    case K_HTTP:
        dispatch_http(t);
        break;
    case K_SOCKS5:
        dispatch_socks5(t);
        break;
    default:
        promote(t, kind_name(t->v.kind));
        break;
    }
}

/* ---- watching the remote during the peek -------------------------------- */

static bool any_byte(const uint8_t *buf, size_t len, bool final, void *data)
{
    (void)buf;
    (void) final;
    (void)data;
    return len > 0;
}

static void on_remote_peeked(int status, uint8_t *buf, size_t len, void *data)
{
    struct ex_tcp *t = data;
    t->opeek = NULL;
    if (len == 0) {
        /* The remote ended without a word; the app's peek decides. */
        nectar_free(buf);
        t->out_end = status != 0 ? status : NECTAR_EOF;
        return;
    }
    t->obuf = buf;
    t->olen = len;
    if (status != 0 && status != NECTAR_ELIMIT)
        t->out_end = status;
    if (t->peek == NULL)
        return; /* the app's peek already decided (and dispatched) */
    /* A server that speaks first: not TLS, not HTTP.  Stop the app's
     * peek and hand the flow over with both sides' bytes. */
    size_t n = 0;
    t->buf = svc_peek_cancel(t->peek, &n);
    t->len = n;
    t->peek = NULL;
    t->peek_status = 0;
    t->v.kind = K_OTHER;
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG,
               "flow=%llu the remote spoke first (%zu bytes)",
               (unsigned long long)t->id, len);
    promote(t, "server-first protocol");
}

/* ---- service vtable ----------------------------------------------------- */

static bool flow_judge(const uint8_t *buf, size_t len, bool final, void *data)
{
    return judge(&((struct ex_tcp *)data)->v, buf, len, final);
}

static void tcp_start(void *svc, nectar_tcp_flow_t *flow)
{
    struct ex_tcp *t = svc;
    const nectar_flow_meta_t *m = nectar_tcp_flow_meta(flow);
    t->flow = flow;
    t->id = m->flow_id;
    snprintf(t->remote, sizeof(t->remote), "%s",
             m->remote.host ? m->remote.host : "");
    snprintf(t->remote_name, sizeof(t->remote_name), "%s",
             m->remote_hostname ? m->remote_hostname : t->remote);
    t->in = svc_stream_wrap(nectar_tcp_flow_ingress(flow));
    t->out = svc_stream_wrap(nectar_tcp_flow_egress(flow));
    t->v.tls_allowed = true;
    if (t->in == NULL || t->out == NULL) {
        flow_end(t);
        return;
    }
    t->peek =
        svc_peek_start(t->in, t->peek_ms, PEEK_MAX, flow_judge, on_peeked, t);
    if (t->peek == NULL) {
        flow_end(t);
        return;
    }
    t->opeek =
        svc_peek_start(t->out, 0, PEEK_MAX, any_byte, on_remote_peeked, t);
}

/* Stops everything; the engine finishes the flow after cancel. */
static void teardown(struct ex_tcp *t)
{
    if (t->peek != NULL) {
        size_t n;
        nectar_free(svc_peek_cancel(t->peek, &n));
        t->peek = NULL;
    }
    if (t->opeek != NULL) {
        size_t n;
        nectar_free(svc_peek_cancel(t->opeek, &n));
        t->opeek = NULL;
    }
    while (t->chains != NULL)
        chain_free(t->chains);
    if (t->relay != NULL) {
        svc_relay_free(t->relay);
        t->relay = NULL;
    }
    if (t->in != NULL)
        svc_close(t->in);
    if (t->out != NULL)
        svc_close(t->out);
    t->in = t->out = NULL;
    nectar_free(t->buf);
    nectar_free(t->obuf);
    t->buf = t->obuf = NULL;
}

static void tcp_cancel(void *svc, nectar_tcp_flow_t *flow, int reason)
{
    (void)flow;
    struct ex_tcp *t = svc;
    nectar_log(NECTAR_LOG_DEBUG, EX_TAG, "flow=%llu cancelled: %s",
               (unsigned long long)t->id, nectar_strerror(reason));
    t->finished = true;
    teardown(t);
}

static void tcp_destroy(void *svc)
{
    struct ex_tcp *t = svc;
    teardown(t);
    ex_admission_release(t->ex->adm, &t->permit);
    svc_counters_close(&t->ex->stats.tcp);
    ex_live_put(t->live);
    nectar_free(t);
}

const nectar_tcp_service_t ex_tcp_service = {
    .start = tcp_start,
    .cancel = tcp_cancel,
    .destroy = tcp_destroy,
};

void *ex_tcp_new(struct ex_state *ex, struct ex_live *live,
                 const ex_permit_t *permit)
{
    struct ex_tcp *t = nectar_calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->ex = ex;
    t->live = live;
    t->permit = *permit;
    t->peek_ms = (uint64_t)(ex->cfg.peek_s * 1000.0);
    svc_counters_open(&ex->stats.tcp);
    return t;
}
