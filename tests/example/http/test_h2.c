/*
 * test_h2.c - the HTTP/2 relay with nghttp2 peers on both ends, over the
 * in-memory stream pairs: 16 concurrent streams (HTML with the badge,
 * 256 KiB binary bodies that need flow control, uploads), the observed
 * header on both sides, a hijack-host request answered locally, and a
 * server reset relayed to the client.
 */
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "harness/test.h"
#include "http_fixture.h"

#define NSTREAMS 16
#define BIN_LEN  (256 * 1024)
#define POST_LEN (100 * 1024)

static const char html_page[] =
    "<html><head><title>h2</title></head><body lang=\"en\"><p>x</p></body>"
    "</html>";

typedef struct tstream {
    int32_t id;
    char path[64];
    char head[2048];
    size_t hlen;
    uint8_t *body;
    size_t blen;
    size_t bcap;
    const uint8_t *src; /* what this side sends */
    size_t src_len;
    size_t src_off;
    bool ended;   /* END_STREAM received */
    bool is_head; /* a HEAD request */
    bool trailer; /* send a trailer field after the body */
    bool closed;
    uint32_t code;
} tstream_t;

typedef struct tpeer {
    svc_stream_t *s;
    nghttp2_session *sess;
    bool server;
    tstream_t st[NSTREAMS + 4];
    int n;
    int requests_ended;
    bool hold; /* server: answer only after all requests */
    bool answered;
    bool reset_bin3; /* server: reset /bin/3 instead of answering */
} tpeer_t;

static uint8_t bin_body[BIN_LEN];
#define BIG_LEN (8 * 1024 * 1024)
static uint8_t *big_body;
static bool big_bin; /* /bin/ answers carry big_body */
static uint8_t post_body[POST_LEN];

static tstream_t *find(tpeer_t *p, int32_t id)
{
    for (int i = 0; i < p->n; i++) {
        if (p->st[i].id == id)
            return &p->st[i];
    }
    return NULL;
}

static void flush_peer(tpeer_t *p)
{
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(p->sess, &d);
        CHECK_GE(n, 0);
        if (n == 0)
            break;
        mem_send(p->s, d, (size_t)n);
    }
}

static void peer_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                      void *data)
{
    (void)s;
    tpeer_t *p = data;
    if (nread < 0)
        return;
    ssize_t rc = nghttp2_session_mem_recv(p->sess, buf, (size_t)nread);
    if (rc < 0)
        NECTAR_FAIL_AT("mem_recv: %s", nghttp2_strerror((int)rc));
    flush_peer(p);
}

static ssize_t src_read(nghttp2_session *sess, int32_t id, uint8_t *buf,
                        size_t len, uint32_t *flags, nghttp2_data_source *src,
                        void *user)
{
    (void)user;
    tstream_t *t = src->ptr;
    size_t n = t->src_len - t->src_off;
    if (n > len)
        n = len;
    memcpy(buf, t->src + t->src_off, n);
    t->src_off += n;
    if (t->src_off == t->src_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (t->trailer) {
            nghttp2_nv tr[] = {
                {(uint8_t *)"x-checksum", (uint8_t *)"abc", 10, 3, 0}};
            CHECK_EQ(nghttp2_submit_trailer(sess, id, tr, 1), 0);
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    }
    return (ssize_t)n;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *fr,
                     const uint8_t *name, size_t nl, const uint8_t *value,
                     size_t vl, uint8_t flags, void *user)
{
    (void)sess;
    (void)flags;
    tpeer_t *p = user;
    tstream_t *t = find(p, fr->hd.stream_id);
    if (t == NULL) {
        CHECK(p->server);
        CHECK_LT(p->n, NSTREAMS + 4);
        t = &p->st[p->n++];
        memset(t, 0, sizeof(*t));
        t->id = fr->hd.stream_id;
    }
    int w = snprintf(t->head + t->hlen, sizeof(t->head) - t->hlen,
                     "%.*s: %.*s\n", (int)nl, name, (int)vl, value);
    t->hlen += (size_t)w;
    if (nl == 7 && memcmp(name, ":method", 7) == 0 && vl == 4 &&
        memcmp(value, "HEAD", 4) == 0)
        t->is_head = true;
    if (nl == 5 && memcmp(name, ":path", 5) == 0)
        snprintf(t->path, sizeof(t->path), "%.*s", (int)vl, value);
    return 0;
}

static int on_data(nghttp2_session *sess, uint8_t flags, int32_t id,
                   const uint8_t *data, size_t len, void *user)
{
    (void)sess;
    (void)flags;
    tstream_t *t = find(user, id);
    CHECK(t != NULL);
    if (t->blen + len + 1 > t->bcap) { /* geometric: ASan copies */
        t->bcap = (t->blen + len + 1) * 2;
        t->body = realloc(t->body, t->bcap);
    }
    memcpy(t->body + t->blen, data, len);
    t->blen += len;
    t->body[t->blen] = 0;
    return 0;
}

static void answer(tpeer_t *p, tstream_t *t)
{
    static char post_reply[NSTREAMS][32];
    nghttp2_data_provider prd = {.source.ptr = t, .read_callback = src_read};
    if (strncmp(t->path, "/early/", 7) == 0) {
        nghttp2_nv early[] = {
            {(uint8_t *)":status", (uint8_t *)"103", 7, 3, 0},
            {(uint8_t *)"link", (uint8_t *)"</s.css>; rel=preload", 4, 21, 0},
        };
        CHECK_EQ(nghttp2_submit_headers(p->sess, NGHTTP2_FLAG_NONE, t->id, NULL,
                                        early, 2, NULL),
                 0);
    }
    if (strncmp(t->path, "/html/", 6) == 0 ||
        strncmp(t->path, "/early/", 7) == 0) {
        t->src = (const uint8_t *)html_page;
        t->src_len = strlen(html_page);
        char clen[16];
        snprintf(clen, sizeof(clen), "%zu", t->src_len);
        nghttp2_nv nv[] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0},
            {(uint8_t *)"content-type", (uint8_t *)"text/html", 12, 9, 0},
            {(uint8_t *)"content-length", (uint8_t *)clen, 14, strlen(clen), 0},
            {(uint8_t *)"etag", (uint8_t *)"\"e\"", 4, 3, 0},
        };
        CHECK_EQ(nghttp2_submit_response(p->sess, t->id, nv, 4,
                                         t->is_head ? NULL : &prd),
                 0);
    } else if (strncmp(t->path, "/bin/", 5) == 0) {
        if (p->reset_bin3 && strcmp(t->path, "/bin/3") == 0) {
            nghttp2_submit_rst_stream(p->sess, NGHTTP2_FLAG_NONE, t->id,
                                      NGHTTP2_REFUSED_STREAM);
            return;
        }
        t->src = big_bin ? big_body : bin_body;
        t->src_len = big_bin ? BIG_LEN : BIN_LEN;
        nghttp2_nv nv[] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0},
            {(uint8_t *)"content-type", (uint8_t *)"application/octet-stream",
             12, 24, 0},
        };
        CHECK_EQ(nghttp2_submit_response(p->sess, t->id, nv, 2, &prd), 0);
    } else if (strncmp(t->path, "/trail/", 7) == 0) {
        t->src = (const uint8_t *)"t";
        t->src_len = 1;
        t->trailer = true; /* answered with the same trailer */
        nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0}};
        CHECK_EQ(nghttp2_submit_response(p->sess, t->id, nv, 1, &prd), 0);
    } else {
        int idx = (int)(t - p->st) % NSTREAMS;
        snprintf(post_reply[idx], sizeof(post_reply[idx]), "got=%zu", t->blen);
        t->src = (const uint8_t *)post_reply[idx];
        t->src_len = strlen(post_reply[idx]);
        nghttp2_nv nv[] = {
            {(uint8_t *)":status", (uint8_t *)"201", 7, 3, 0},
            {(uint8_t *)"x-nectar-observed", (uint8_t *)"upstream", 17, 8, 0},
        };
        CHECK_EQ(nghttp2_submit_response(p->sess, t->id, nv, 2, &prd), 0);
    }
}

static int on_frame(nghttp2_session *sess, const nghttp2_frame *fr, void *user)
{
    (void)sess;
    tpeer_t *p = user;
    tstream_t *t = find(p, fr->hd.stream_id);
    if (t == NULL || !(fr->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    if (fr->hd.type != NGHTTP2_DATA && fr->hd.type != NGHTTP2_HEADERS)
        return 0;
    t->ended = true;
    if (!p->server)
        return 0;
    p->requests_ended++;
    if (!p->hold) {
        answer(p, t);
    } else if (p->requests_ended == NSTREAMS - 1) {
        /* Every request is open at once before any answer: 15 relayed
         * streams (the 16th is answered by the hijack). */
        p->answered = true;
        for (int i = 0; i < p->n; i++)
            answer(p, &p->st[i]);
    }
    return 0;
}

static int on_close(nghttp2_session *sess, int32_t id, uint32_t code,
                    void *user)
{
    (void)sess;
    tstream_t *t = find(user, id);
    if (t != NULL) {
        t->closed = true;
        t->code = code;
    }
    return 0;
}

static void peer_init(tpeer_t *p, svc_stream_t *s, bool server)
{
    memset(p, 0, sizeof(*p));
    p->s = s;
    p->server = server;
    nghttp2_session_callbacks *cb;
    CHECK_EQ(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    if (server)
        CHECK_EQ(nghttp2_session_server_new(&p->sess, cb, p), 0);
    else
        CHECK_EQ(nghttp2_session_client_new(&p->sess, cb, p), 0);
    nghttp2_session_callbacks_del(cb);
    CHECK_EQ(nghttp2_submit_settings(p->sess, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    svc_read_start(s, peer_read, p);
}

static void client_request(tpeer_t *c, const char *method, const char *auth,
                           const char *path, const uint8_t *body, size_t len)
{
    tstream_t *t = &c->st[c->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->path, sizeof(t->path), "%s", path);
    t->src = body;
    t->src_len = len;
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)method, 7, strlen(method), 0},
        {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
        {(uint8_t *)":authority", (uint8_t *)auth, 10, strlen(auth), 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
    };
    nghttp2_data_provider prd = {.source.ptr = t, .read_callback = src_read};
    t->id = nghttp2_submit_request(c->sess, NULL, nv, 4, body ? &prd : NULL, t);
    CHECK_GT(t->id, 0);
}

typedef struct both {
    tpeer_t *c;
    int want;
} both_t;

static int all_closed(void *arg)
{
    both_t *b = arg;
    int n = 0;
    for (int i = 0; i < b->c->n; i++)
        n += b->c->st[i].closed;
    return n >= b->want;
}

static void peer_free(tpeer_t *p)
{
    nghttp2_session_del(p->sess);
    for (int i = 0; i < p->n; i++)
        free(p->st[i].body);
}

/* Fixture and nghttp2 peers; the relay is started when fail_after < 0,
 * else with allocations failing from the Nth on (false: start failed). */
static bool start_pair_n(fx_t *f, tpeer_t *c, tpeer_t *s, long fail_after)
{
    for (size_t i = 0; i < BIN_LEN; i++)
        bin_body[i] = (uint8_t)(i * 13 + (i >> 10));
    for (size_t i = 0; i < POST_LEN; i++)
        post_body[i] = (uint8_t)(i * 7);
    if (big_body == NULL) {
        big_body = malloc(BIG_LEN);
        for (size_t i = 0; i < BIG_LEN; i++)
            big_body[i] = (uint8_t)(i ^ (i >> 9));
    }
    fx_init(f);
    if (fail_after < 0) {
        fx_start(f, true);
    } else {
        nectar__alloc_fail_after(fail_after);
        if (svc_h2_start(f->rc, f->rs, &f->opts, fx_on_done, f, NULL) != 0) {
            nectar__alloc_fail_after(-1);
            svc_close(f->rc);
            svc_close(f->rs);
            f->done = true;
            return false;
        }
    }
    peer_init(c, f->cli, false);
    peer_init(s, f->srv, true);
    flush_peer(c);
    flush_peer(s);
    return true;
}

static void start_pair(fx_t *f, tpeer_t *c, tpeer_t *s)
{
    start_pair_n(f, c, s, -1);
}

static void streams16(void)
{
    fx_t f;
    tpeer_t c, s;
    start_pair(&f, &c, &s);
    s.hold = true;
    char path[32];
    for (int i = 0; i < NSTREAMS - 1; i++) {
        if (i % 3 == 0) {
            snprintf(path, sizeof(path), "/html/%d", i);
            client_request(&c, "GET", "www.site.test", path, NULL, 0);
        } else if (i % 3 == 1) {
            snprintf(path, sizeof(path), "/bin/%d", i);
            client_request(&c, "GET", "www.site.test", path, NULL, 0);
        } else {
            snprintf(path, sizeof(path), "/post/%d", i);
            client_request(&c, "POST", "www.site.test", path, post_body,
                           POST_LEN);
        }
    }
    client_request(&c, "GET", "nectar.localhost", "/ping", NULL, 0);
    flush_peer(&c);
    both_t b = {&c, NSTREAMS};
    if (!mem_run_until(&f.loop, all_closed, &b, 10000))
        NECTAR_FAIL_AT("streams did not finish (server saw %d requests)", s.n);
    CHECK(s.answered);
    CHECK_EQ(s.n, NSTREAMS - 1); /* the hijacked one never reached it */
    for (int i = 0; i < s.n; i++) {
        tstream_t *t = &s.st[i];
        CHECK_EQ(count_of(t->head, t->hlen, "x-nectar-observed: test\n"), 1);
        if (strncmp(t->path, "/post/", 6) == 0) {
            CHECK_EQ(t->blen, POST_LEN);
            CHECK_MEM_EQ(t->body, post_body, POST_LEN);
        }
    }
    for (int i = 0; i < c.n; i++) {
        tstream_t *t = &c.st[i];
        CHECK_EQ(t->code, 0);
        CHECK(t->ended);
        CHECK_EQ(count_of(t->head, t->hlen, "x-nectar-observed: "), 1);
        if (strncmp(t->path, "/html/", 6) == 0) {
            CHECK(strstr(t->head, ":status: 200\n") != NULL);
            CHECK(strstr(t->head, "content-length") == NULL);
            CHECK(strstr(t->head, "etag") == NULL);
            CHECK_EQ(count_of((char *)t->body, t->blen,
                              "<div id=\"nectar-proxy-badge\""),
                     1);
            CHECK(strstr((char *)t->body, "<body lang=\"en\"><div id=") !=
                  NULL);
        } else if (strncmp(t->path, "/bin/", 5) == 0) {
            CHECK_EQ(t->blen, BIN_LEN);
            CHECK_MEM_EQ(t->body, bin_body, BIN_LEN);
        } else if (strncmp(t->path, "/post/", 6) == 0) {
            CHECK(strstr(t->head, ":status: 201\n") != NULL);
            CHECK(strstr(t->head, "x-nectar-observed: upstream\n") != NULL);
            CHECK_EQ(t->blen, 10);
            CHECK_MEM_EQ(t->body, "got=102400", 10);
        } else {
            CHECK_STR_EQ(t->path, "/ping");
            CHECK(strstr(t->head, "content-type: application/json\n") != NULL);
            CHECK(strstr((char *)t->body, "\"ok\":true") != NULL);
        }
    }
    /* The client says goodbye; the relay ends cleanly. */
    nghttp2_session_terminate_session(c.sess, NGHTTP2_NO_ERROR);
    flush_peer(&c);
    svc_shutdown(f.cli);
    fx_wait_done(&f);
    CHECK_EQ(f.status, 0);
    peer_free(&c);
    peer_free(&s);
    fx_close(&f);
}

/* A client that stops reading: the server can only send what the windows
 * and buffers allow (far below the body), then everything arrives intact
 * once the client reads again. */
static void flow_control(void)
{
    fx_t f;
    tpeer_t c, s;
    start_pair(&f, &c, &s);
    big_bin = true;
    client_request(&c, "GET", "a.test", "/bin/big", NULL, 0);
    flush_peer(&c);
    for (int i = 0; i < 200 && s.n == 0; i++)
        mem_run_turns(&f.loop, 2);
    CHECK_EQ(s.n, 1);
    svc_read_stop(f.cli);
    mem_run_turns(&f.loop, 2000);
    size_t sent = s.st[0].src_off;
    CHECK_GT(sent, 0);
    CHECK_LT(sent, (size_t)2 << 20); /* of 8 MiB */
    svc_read_start(f.cli, peer_read, &c);
    both_t b = {&c, 1};
    CHECK(mem_run_until(&f.loop, all_closed, &b, 10000));
    CHECK_EQ(c.st[0].code, 0);
    CHECK_EQ(c.st[0].blen, BIG_LEN);
    CHECK_MEM_EQ(c.st[0].body, big_body, BIG_LEN);
    big_bin = false;
    peer_free(&c);
    peer_free(&s);
    fx_close(&f);
}

/* The server answers, then says GOAWAY: the client hears GOAWAY too and
 * the relay ends on its own once the stream is done. */
static void server_goaway(void)
{
    fx_t f;
    tpeer_t c, s;
    start_pair(&f, &c, &s);
    client_request(&c, "GET", "a.test", "/post/1", NULL, 0);
    flush_peer(&c);
    both_t b = {&c, 1};
    CHECK(mem_run_until(&f.loop, all_closed, &b, 5000));
    CHECK_EQ(c.st[0].code, 0);
    CHECK_EQ(nghttp2_session_terminate_session(s.sess, NGHTTP2_NO_ERROR), 0);
    flush_peer(&s);
    fx_wait_done(&f);
    CHECK_EQ(f.status, 0);
    /* The client session got the relay's GOAWAY: it wants nothing more. */
    CHECK(!nghttp2_session_want_read(c.sess));
    peer_free(&c);
    peer_free(&s);
    fx_close(&f);
}

/* Every relay allocation fails from the Nth on, for each N along a small
 * exchange (an HTML page with the badge, an upload, the hijack host): the
 * relay ends cleanly whatever N is (ASan build: no crash, no leak). */
static int over(void *arg)
{
    fx_t *f = ((void **)arg)[0];
    both_t *b = ((void **)arg)[1];
    return f->done || all_closed(b);
}

static void alloc_failures(void)
{
    bool last_ok = false;
    for (long n = 0; n < 600; n++) {
        fx_t f;
        tpeer_t c, s;
        if (!start_pair_n(&f, &c, &s, n)) {
            fx_close(&f);
            continue;
        }
        client_request(&c, "GET", "a.test", "/html/1", NULL, 0);
        client_request(&c, "POST", "a.test", "/post/2", post_body, 5000);
        client_request(&c, "GET", "nectar.localhost", "/ping", NULL, 0);
        flush_peer(&c);
        both_t b = {&c, 3};
        void *arg[2] = {&f, &b};
        mem_run_until(&f.loop, over, arg, 3000);
        nectar__alloc_fail_after(-1);
        last_ok = all_closed(&b) && c.st[0].code == 0 && c.st[1].code == 0 &&
                  c.st[2].code == 0;
        svc_shutdown(f.cli);
        svc_shutdown(f.srv);
        fx_wait_done(&f);
        peer_free(&c);
        peer_free(&s);
        fx_close(&f);
    }
    CHECK(last_ok);
}

static bool excluded(void *data, const char *host)
{
    (void)data;
    return strcmp(host, "skip.test") == 0;
}

/* An interim 103 is relayed before the final answer; an excluded host's
 * page keeps its length and gets no badge. */
static void interim_and_rules(void)
{
    fx_t f;
    tpeer_t c, s;
    fx_init(&f);
    f.opts.is_excluded = excluded;
    fx_start(&f, true);
    peer_init(&c, f.cli, false);
    peer_init(&s, f.srv, true);
    client_request(&c, "GET", "www.site.test", "/early/1", NULL, 0);
    client_request(&c, "GET", "skip.test:443", "/html/2", NULL, 0);
    flush_peer(&c);
    flush_peer(&s);
    both_t b = {&c, 2};
    CHECK(mem_run_until(&f.loop, all_closed, &b, 5000));
    tstream_t *e = &c.st[0], *x = &c.st[1];
    CHECK_EQ(e->code, 0);
    const char *s103 = strstr(e->head, ":status: 103\n");
    const char *s200 = strstr(e->head, ":status: 200\n");
    CHECK(s103 != NULL && s200 != NULL && s103 < s200);
    CHECK(strstr(e->head, "link: </s.css>; rel=preload\n") != NULL);
    CHECK_EQ(count_of((char *)e->body, e->blen, "nectar-proxy-badge"), 1);
    CHECK_EQ(x->code, 0);
    CHECK_EQ(x->blen, strlen(html_page));
    CHECK_MEM_EQ(x->body, html_page, x->blen);
    CHECK(strstr(x->head, "content-length: ") != NULL);
    peer_free(&c);
    peer_free(&s);
    fx_close(&f);
}

/* Trailer fields cross the relay both ways. */
static void trailers(void)
{
    fx_t f;
    tpeer_t c, s;
    start_pair(&f, &c, &s);
    client_request(&c, "POST", "a.test", "/trail/1", post_body, 3000);
    c.st[0].trailer = true;
    flush_peer(&c);
    both_t b = {&c, 1};
    CHECK(mem_run_until(&f.loop, all_closed, &b, 5000));
    CHECK_EQ(c.st[0].code, 0);
    CHECK_EQ(s.n, 1);
    CHECK_EQ(s.st[0].blen, 3000);
    CHECK(strstr(s.st[0].head, "x-checksum: abc\n") != NULL);
    CHECK(strstr(c.st[0].head, "x-checksum: abc\n") != NULL);
    CHECK_EQ(c.st[0].blen, 1);
    peer_free(&c);
    peer_free(&s);
    fx_close(&f);
}

static void server_reset(void)
{
    fx_t f;
    tpeer_t c, s;
    start_pair(&f, &c, &s);
    s.reset_bin3 = true;
    client_request(&c, "GET", "a.test", "/bin/3", NULL, 0);
    client_request(&c, "HEAD", "a.test", "/html/1", NULL, 0);
    flush_peer(&c);
    both_t b = {&c, 2};
    CHECK(mem_run_until(&f.loop, all_closed, &b, 5000));
    CHECK_EQ(c.st[0].code, NGHTTP2_REFUSED_STREAM);
    CHECK_EQ(c.st[1].code, 0);
    /* HEAD: no body, no badge, content-length kept. */
    CHECK_EQ(c.st[1].blen, 0);
    CHECK(strstr(c.st[1].head, "content-length") != NULL);
    /* The server closing the connection ends the relay. */
    svc_shutdown(f.srv);
    fx_wait_done(&f);
    peer_free(&c);
    peer_free(&s);
    fx_close(&f);
}

static const nectar_test_t tests[] = {
    {"streams16", streams16},
    {"flow_control", flow_control},
    {"server_goaway", server_goaway},
    {"alloc_failures", alloc_failures},
    {"interim_and_rules", interim_and_rules},
    {"trailers", trailers},
    {"server_reset", server_reset},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    int rc = nectar_test_main(argc, argv, tests);
    free(big_body);
    return rc;
}
