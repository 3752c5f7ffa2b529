/*
 * test_http1.c - the HTTP/1.1 relay over in-memory streams: observed
 * header, keep-alive and pipelining, chunked and Content-Length framing,
 * the HTML badge (HEAD, non-HTML, excluded, split tags, gzip, deflate,
 * pages without <body>), WebSocket frame logging, CONNECT one level deep,
 * the hijack routes and raw fallback.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/alloc.h"
#include "harness/test.h"
#include "http_fixture.h"

static const char *html_page =
    "<!DOCTYPE html><html><head><title>t</title></head>"
    "<BODY class=\"a>b\" data-x='1'>\n<p>hello</p></body></html>";

static const char badge_id[] = "id=\"nectar-proxy-badge\"";

/* ---- observed header, keep-alive, framing -------------------------------- */

static void header_once(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    mem_send_str(f.cli, "GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"
                        "GET /b HTTP/1.1\r\nHost: example.test\r\n"
                        "X-Nectar-Observed: already\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 2);
    const char *s = mem_sink_str(&f.srv_in);
    CHECK_EQ(count_of(s, f.srv_in.len, "x-nectar-observed: test\r\n"), 1);
    CHECK_EQ(count_of(s, f.srv_in.len, "X-Nectar-Observed: already\r\n"), 1);
    CHECK_EQ(count_of(s, f.srv_in.len, "bserved"), 2);
    CHECK(strstr(s, "GET /a HTTP/1.1\r\nHost: example.test\r\n"
                    "x-nectar-observed: test\r\n\r\n") == s);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                        "x-nectar-observed: up\r\n\r\nok");
    fx_wait_count(&f, &f.cli_in, "ok", 2);
    const char *c = mem_sink_str(&f.cli_in);
    CHECK_EQ(count_of(c, f.cli_in.len, "bserved"), 2);
    CHECK_EQ(count_of(c, f.cli_in.len, "x-nectar-observed: test\r\n"), 1);
    CHECK_EQ(count_of(c, f.cli_in.len, "x-nectar-observed: up\r\n"), 1);
    fx_close(&f);
}

static void keepalive_pipelining(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    /* Three requests in one write, one with a body. */
    mem_send_str(f.cli, "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
                        "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                        "\r\nhello"
                        "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "Host: h\r\n", 3);
    fx_wait_count(&f, &f.srv_in, "hello", 1);
    const char *s = mem_sink_str(&f.srv_in);
    const char *p1 = strstr(s, "GET /1 ");
    const char *p2 = strstr(s, "POST /2 ");
    const char *p3 = strstr(s, "GET /3 ");
    CHECK(p1 != NULL && p2 != NULL && p3 != NULL);
    CHECK(p1 < p2 && p2 < p3);
    CHECK(strstr(s, "Content-Length: 5\r\nx-nectar-observed: test\r\n\r\n"
                    "helloGET /3") != NULL);
    /* Responses one by one, in two pieces each, on the same connection. */
    for (int i = 1; i <= 3; i++) {
        char body[32];
        snprintf(body, sizeof(body), "HTTP/1.1 200 OK\r\nContent-");
        mem_send_str(f.srv, body);
        snprintf(body, sizeof(body), "Length: 3\r\n\r\nr%d\n", i);
        mem_send_str(f.srv, body);
        fx_wait_count(&f, &f.cli_in, "HTTP/1.1 200 OK", i);
    }
    fx_wait_count(&f, &f.cli_in, "r3\n", 1);
    resp_t r[4];
    int n = parse_responses(f.cli_in.data, f.cli_in.len, r, 4, false);
    CHECK_EQ(n, 3);
    for (int i = 0; i < 3; i++) {
        char want[8];
        snprintf(want, sizeof(want), "r%d\n", i + 1);
        CHECK_EQ(r[i].body_len, 3);
        CHECK_MEM_EQ(r[i].body, want, 3);
    }
    resp_free(r, n);
    /* Client half-close: the server sees EOF, its close ends the relay. */
    svc_shutdown(f.cli);
    fx_wait_eof(&f, &f.srv_in);
    svc_shutdown(f.srv);
    fx_wait_done(&f);
    CHECK_EQ(f.status, 0);
    fx_close(&f);
}

/* A client pipelining far ahead is read only so far ahead of the answers
 * (64 requests), then everything still goes through in order. */
static void pipeline_bound(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    for (int i = 0; i < 200; i++) {
        char req[64];
        snprintf(req, sizeof(req), "GET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i);
        mem_send_str(f.cli, req);
    }
    fx_wait_count(&f, &f.srv_in, "Host: h", 64);
    mem_run_turns(&f.loop, 200);
    CHECK_EQ(count_of(mem_sink_str(&f.srv_in), f.srv_in.len, "Host: h"), 64);
    for (int i = 0; i < 200; i++) {
        mem_send_str(f.srv, "HTTP/1.1 204 No Content\r\n\r\n");
        if (i % 50 == 49)
            mem_run_turns(&f.loop, 20);
    }
    fx_wait_count(&f, &f.srv_in, "Host: h", 200);
    fx_wait_count(&f, &f.cli_in, "204 No Content", 200);
    CHECK(strstr(mem_sink_str(&f.srv_in), "GET /199 ") != NULL);
    fx_close(&f);
}

static void chunked_and_length(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    mem_send_str(f.cli, "POST /up HTTP/1.1\r\nHost: h\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n"
                        "4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n"
                        "X-Trailer: t\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "X-Trailer: t\r\n\r\n", 1);
    const char *s = mem_sink_str(&f.srv_in);
    CHECK(strstr(s, "\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n") != NULL);
    /* A chunked response split in odd places, then a Content-Length one
     * with a binary body. */
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chu");
    mem_send_str(f.srv, "nked\r\nContent-Type: text/plain\r\n\r\n3\r\nab");
    mem_send_str(f.srv, "c\r\n0\r\n\r\n");
    fx_wait_count(&f, &f.cli_in, "0\r\n\r\n", 1);
    mem_send_str(f.cli, "GET /bin HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "GET /bin", 1);
    uint8_t bin[5000];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (uint8_t)(i * 7);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
    mem_send(f.srv, bin, sizeof(bin));
    fx_wait_count(&f, &f.cli_in, "HTTP/1.1 200", 2);
    resp_t r[3];
    for (int tries = 0; tries < 100; tries++) {
        int n = parse_responses(f.cli_in.data, f.cli_in.len, r, 3, false);
        resp_free(r, n);
        if (n == 2)
            break;
        mem_run_turns(&f.loop, 5);
    }
    int n = parse_responses(f.cli_in.data, f.cli_in.len, r, 3, false);
    CHECK_EQ(n, 2);
    CHECK(r[0].chunked);
    CHECK_EQ(r[0].body_len, 3);
    CHECK_MEM_EQ(r[0].body, "abc", 3);
    CHECK(!r[1].chunked);
    CHECK_EQ(r[1].body_len, sizeof(bin));
    CHECK_MEM_EQ(r[1].body, bin, sizeof(bin));
    char v[64];
    CHECK_STR_EQ(resp_header(&r[1], "content-length", v, sizeof(v)), "5000");
    resp_free(r, n);
    fx_close(&f);
}

/* A response body delimited by the server closing, and HEAD/204/304/1xx
 * answers without bodies on one connection. */
static void bodiless_answers(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    mem_send_str(f.cli, "HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "HEAD /h", 1);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                        "Content-Type: text/html\r\n\r\n");
    mem_send_str(f.cli, "POST /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue"
                        "\r\nContent-Length: 2\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "POST /c", 1);
    mem_send_str(f.srv, "HTTP/1.1 100 Continue\r\n\r\n");
    fx_wait_count(&f, &f.cli_in, "100 Continue", 1);
    mem_send_str(f.cli, "hi");
    fx_wait_count(&f, &f.srv_in, "\r\n\r\nhi", 1);
    mem_send_str(f.srv, "HTTP/1.1 204 No Content\r\n\r\n");
    mem_send_str(f.cli, "GET /n HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "GET /n", 1);
    mem_send_str(f.srv, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
    mem_send_str(f.cli, "GET /e HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "GET /e", 1);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                        "until close");
    svc_shutdown(f.srv);
    fx_wait_eof(&f, &f.cli_in);
    const char *c = mem_sink_str(&f.cli_in);
    /* HEAD kept its Content-Length and got no body and no badge. */
    CHECK(strstr(c, "Content-Length: 100\r\n") != NULL);
    CHECK(strstr(c, badge_id) == NULL);
    CHECK(strstr(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204") != NULL);
    CHECK(strstr(c, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n"
                    "x-nectar-observed: test\r\n\r\nHTTP/1.1 200") != NULL);
    CHECK(strstr(c, "\r\n\r\nuntil close") != NULL);
    CHECK_EQ(count_of(c, f.cli_in.len, "HTTP/1.1 "), 5);
    fx_close(&f);
}

/* ---- badge --------------------------------------------------------------- */

typedef struct badge_case {
    const char *req_extra; /* request line + headers */
    const char *ctype;
    const char *cenc; /* NULL: identity */
    const uint8_t *body;
    size_t body_len;
    size_t slice; /* delivery slice towards the relay */
    bool excluded;
    bool chunked_in;
} badge_case_t;

static bool exclude_all(void *data, const char *host)
{
    (void)data;
    return strcmp(host, "excluded.test") == 0;
}

/* Run one request/response through the relay; returns the response. */
static int run_badge(const badge_case_t *bc, resp_t *r, bool head)
{
    fx_t f;
    fx_init(&f);
    f.opts.is_excluded = exclude_all;
    f.opts.badge_label = "nectar <test>";
    fx_start(&f, false);
    mem_set_slice(f.rs, bc->slice);
    char req[256];
    snprintf(req, sizeof(req), "%s /p HTTP/1.1\r\nHost: %s\r\n\r\n",
             head ? "HEAD" : "GET",
             bc->excluded ? "excluded.test:8080" : "www.site.test");
    mem_send_str(f.cli, req);
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 1);
    char hdr[512];
    if (bc->chunked_in)
        snprintf(hdr, sizeof(hdr),
                 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%s%s%s"
                 "ETag: \"v1\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 "
                 "GMT\r\nTransfer-Encoding: chunked\r\n\r\n",
                 bc->ctype, bc->cenc ? "Content-Encoding: " : "",
                 bc->cenc ? bc->cenc : "", bc->cenc ? "\r\n" : "");
    else
        snprintf(hdr, sizeof(hdr),
                 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n%s%s%s"
                 "ETag: \"v1\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 "
                 "GMT\r\nContent-Length: %zu\r\n\r\n",
                 bc->ctype, bc->cenc ? "Content-Encoding: " : "",
                 bc->cenc ? bc->cenc : "", bc->cenc ? "\r\n" : "",
                 bc->body_len);
    mem_send_str(f.srv, hdr);
    if (!head && bc->chunked_in) {
        /* Three chunks so the body crosses chunk boundaries. */
        size_t third = bc->body_len / 3 + 1;
        for (size_t off = 0; off < bc->body_len; off += third) {
            size_t n = bc->body_len - off < third ? bc->body_len - off : third;
            char line[32];
            snprintf(line, sizeof(line), "%zx\r\n", n);
            mem_send_str(f.srv, line);
            mem_send(f.srv, bc->body + off, n);
            mem_send_str(f.srv, "\r\n");
        }
        mem_send_str(f.srv, "0\r\n\r\n");
    } else if (!head) {
        mem_send(f.srv, bc->body, bc->body_len);
    }
    int n = 0;
    for (int i = 0; i < 2000 && n == 0; i++) {
        mem_run_turns(&f.loop, 2);
        resp_t tmp[2];
        n = parse_responses(f.cli_in.data, f.cli_in.len, tmp, 2, head);
        resp_free(tmp, n);
    }
    CHECK_EQ(n, 1);
    n = parse_responses(f.cli_in.data, f.cli_in.len, r, 1, head);
    fx_close(&f);
    return n;
}

static void check_badged_plain(const char *plain, size_t plen);

static void check_badged(resp_t *r, const char *plain, size_t plen)
{
    char v[64];
    CHECK(resp_header(r, "content-length", v, sizeof(v)) == NULL);
    CHECK(resp_header(r, "etag", v, sizeof(v)) == NULL);
    CHECK(resp_header(r, "last-modified", v, sizeof(v)) == NULL);
    CHECK(r->chunked);
    check_badged_plain(plain, plen);
}

static void check_badged_plain(const char *plain, size_t plen)
{
    /* The badge exactly once, right after the opening body tag. */
    const char *tag = "<BODY class=\"a>b\" data-x='1'>";
    char *at = memmem(plain, plen, tag, strlen(tag));
    CHECK(at != NULL);
    const char *after = at + strlen(tag);
    CHECK(strncmp(after, "<div id=\"nectar-proxy-badge\"", 28) == 0);
    CHECK_EQ(count_of(plain, plen, badge_id), 1);
    CHECK(memmem(plain, plen, ">nectar &lt;test&gt;</div>", 26) != NULL);
    /* Everything else is the original page. */
    const char *end = strstr(after, "</div>") + 6;
    size_t pre = (size_t)(after - plain);
    CHECK_EQ(pre + strlen(end), strlen(html_page));
    CHECK_MEM_EQ(plain, html_page, pre);
    CHECK_STR_EQ(end, html_page + pre);
}

static void badge_once(void)
{
    badge_case_t bc = {.ctype = "text/html; charset=utf-8",
                       .body = (const uint8_t *)html_page,
                       .body_len = strlen(html_page)};
    resp_t r;
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    check_badged(&r, (const char *)r.body, r.body_len);
    resp_free(&r, 1);
    /* Chunked upstream body, same result. */
    bc.chunked_in = true;
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    check_badged(&r, (const char *)r.body, r.body_len);
    resp_free(&r, 1);
}

static void badge_split(void)
{
    /* The relay reads the response one byte at a time: "<body" and the
     * whole tag are split across every possible boundary. */
    badge_case_t bc = {.ctype = "TEXT/HTML",
                       .body = (const uint8_t *)html_page,
                       .body_len = strlen(html_page),
                       .slice = 1};
    resp_t r;
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    check_badged(&r, (const char *)r.body, r.body_len);
    resp_free(&r, 1);
    bc.slice = 7;
    bc.chunked_in = true;
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    check_badged(&r, (const char *)r.body, r.body_len);
    resp_free(&r, 1);
}

static void badge_absent(void)
{
    badge_case_t bc = {.ctype = "text/html",
                       .body = (const uint8_t *)html_page,
                       .body_len = strlen(html_page)};
    resp_t r;
    char v[64];
    /* HEAD */
    CHECK_EQ(run_badge(&bc, &r, true), 1);
    CHECK_EQ(r.body_len, 0);
    CHECK(resp_header(&r, "content-length", v, sizeof(v)) != NULL);
    CHECK(resp_header(&r, "etag", v, sizeof(v)) != NULL);
    resp_free(&r, 1);
    /* non-HTML */
    bc.ctype = "text/plain";
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    CHECK_EQ(r.body_len, strlen(html_page));
    CHECK_MEM_EQ(r.body, html_page, r.body_len);
    CHECK(resp_header(&r, "etag", v, sizeof(v)) != NULL);
    resp_free(&r, 1);
    /* excluded host (matched without its port) */
    bc.ctype = "text/html";
    bc.excluded = true;
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    CHECK_EQ(r.body_len, strlen(html_page));
    CHECK_MEM_EQ(r.body, html_page, r.body_len);
    resp_free(&r, 1);
    /* an encoding we cannot decode */
    bc.excluded = false;
    bc.cenc = "br";
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    CHECK_EQ(r.body_len, strlen(html_page));
    CHECK_MEM_EQ(r.body, html_page, r.body_len);
    resp_free(&r, 1);
}

/* Decoys before the real tag: the badge lands after the real <body>. */
static void badge_after_decoys(void)
{
    static const char page[] =
        "<html><head><title>a <body> b</title>"
        "<script type=\"x\">if (a<b) s='<body>'; // </scriptx> </script>"
        "</head><!-- <body> --><body\nonload=\"f('>')\">"
        "<p>content</p></body></html>";
    badge_case_t bc = {.ctype = "text/html",
                       .body = (const uint8_t *)page,
                       .body_len = strlen(page),
                       .slice = 2};
    resp_t r;
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    const char *body = (const char *)r.body;
    CHECK_EQ(count_of(body, r.body_len, badge_id), 1);
    static const char tag[] = "<body\nonload=\"f('>')\">";
    const char *real = strstr(body, tag);
    CHECK(real != NULL);
    CHECK(strstr(body, badge_id) > real);
    CHECK(strncmp(real + strlen(tag), "<div id=\"nectar-proxy-badge\"", 28) ==
          0);
    resp_free(&r, 1);
}

static void badge_no_body_tag(void)
{
    static const char page[] =
        "<!DOCTYPE html><html><head><title>no <body> here</title>"
        "<script>document.write('<body>')</script>"
        "<STYLE>/* <body> */</STYLE></head><!-- <body> -->"
        "<a title=\"<body>\">x</a><bodyx>text</bodyx><p>x</p></html>";
    badge_case_t bc = {.ctype = "text/html",
                       .body = (const uint8_t *)page,
                       .body_len = strlen(page),
                       .slice = 3};
    resp_t r;
    CHECK_EQ(run_badge(&bc, &r, false), 1);
    CHECK_EQ(r.body_len, strlen(page));
    CHECK_MEM_EQ(r.body, page, r.body_len);
    resp_free(&r, 1);
}

/* Compress with zlib: wbits 31 gzip, 15 zlib, -15 raw deflate. */
static size_t zcompress(const void *in, size_t len, uint8_t *out, size_t cap,
                        int wbits)
{
    z_stream z = {0};
    CHECK_EQ(deflateInit2(&z, 9, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY),
             Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    CHECK_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t n = z.total_out;
    deflateEnd(&z);
    return n;
}

/* Decompress fully; the stream must end cleanly (Z_STREAM_END). */
static size_t zdecompress(const void *in, size_t len, uint8_t *out, size_t cap,
                          int wbits)
{
    z_stream z = {0};
    CHECK_EQ(inflateInit2(&z, wbits), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    CHECK_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
    size_t n = z.total_out;
    inflateEnd(&z);
    return n;
}

static void badge_coded(const char *cenc, int wbits)
{
    uint8_t comp[4096];
    size_t clen =
        zcompress(html_page, strlen(html_page), comp, sizeof(comp), wbits);
    for (size_t slice = 0; slice <= 5; slice += 5) {
        badge_case_t bc = {.ctype = "text/html",
                           .cenc = cenc,
                           .body = comp,
                           .body_len = clen,
                           .slice = slice};
        resp_t r;
        CHECK_EQ(run_badge(&bc, &r, false), 1);
        char v[64];
        CHECK_STR_EQ(resp_header(&r, "content-encoding", v, sizeof(v)), cenc);
        uint8_t plain[8192];
        size_t n =
            zdecompress(r.body, r.body_len, plain, sizeof(plain) - 1, wbits);
        plain[n] = 0;
        check_badged(&r, (const char *)plain, n);
        resp_free(&r, 1);
    }
}

static void badge_gzip(void)
{
    badge_coded("gzip", 15 + 16);
}

static void badge_deflate(void)
{
    badge_coded("deflate", 15);  /* zlib-wrapped, as RFC 9110 says */
    badge_coded("deflate", -15); /* raw, as some servers send */
}

/* ---- WebSocket ----------------------------------------------------------- */

/* Append one frame (client frames masked). */
static size_t ws_frame(uint8_t *out, bool fin, unsigned op, const void *p,
                       size_t n, bool masked)
{
    size_t i = 0;
    out[i++] = (uint8_t)((fin ? 0x80 : 0) | op);
    uint8_t m = masked ? 0x80 : 0;
    if (n < 126) {
        out[i++] = (uint8_t)(m | n);
    } else {
        out[i++] = m | 126;
        out[i++] = (uint8_t)(n >> 8);
        out[i++] = (uint8_t)n;
    }
    static const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
    if (masked) {
        memcpy(out + i, key, 4);
        i += 4;
    }
    for (size_t k = 0; k < n; k++)
        out[i + k] = ((const uint8_t *)p)[k] ^ (masked ? key[k % 4] : 0);
    return i + n;
}

static void websocket(void)
{
    logcap_start();
    fx_t f;
    fx_init(&f);
    f.opts.flow_id = 42;
    fx_start(&f, false);
    mem_set_slice(f.rs, 3); /* frame headers split across reads */
    mem_send_str(f.cli, "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 1);
    CHECK(strstr(mem_sink_str(&f.srv_in), "Upgrade: websocket\r\n") != NULL);
    /* 101 plus the first server frame in the same write. */
    uint8_t buf[2048];
    size_t n = 0;
    static const char hs[] =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    memcpy(buf, hs, strlen(hs));
    n = strlen(hs);
    n += ws_frame(buf + n, true, 0x1, "SECRET-server-text", 18, false);
    mem_send(f.srv, buf, n);
    fx_wait_count(&f, &f.cli_in, "SECRET-server-text", 1);
    CHECK(strstr(mem_sink_str(&f.cli_in), "x-nectar-observed: test") != NULL);

    /* Client: fragmented text (text + continuation), binary (300 bytes,
     * 16-bit length), ping, close; all masked. */
    uint8_t big[300];
    memset(big, 0xAB, sizeof(big));
    n = 0;
    n += ws_frame(buf + n, false, 0x1, "SECRET-", 7, true);
    n += ws_frame(buf + n, true, 0x0, "part2", 5, true);
    n += ws_frame(buf + n, true, 0x2, big, sizeof(big), true);
    n += ws_frame(buf + n, true, 0x9, "SECRET-ping", 11, true);
    size_t client_len = n;
    uint8_t client_bytes[2048];
    memcpy(client_bytes, buf, n);
    mem_send(f.cli, buf, n);
    /* Server: pong, binary, close. */
    n = 0;
    n += ws_frame(buf + n, true, 0xA, "SECRET-pong", 11, false);
    n += ws_frame(buf + n, true, 0x2, "\x01\x02", 2, false);
    n += ws_frame(buf + n, true, 0x8, "\x03\xe8", 2, false);
    mem_send(f.srv, buf, n);
    fx_wait_count(&f, &f.cli_in, "\x88\x02\x03\xe8", 1);
    /* The client's bytes arrive unchanged after the handshake. */
    for (int i = 0; i < 1000 && f.srv_in.len < client_len; i++)
        mem_run_turns(&f.loop, 2);
    const char *hdr_end = strstr(mem_sink_str(&f.srv_in), "\r\n\r\n") + 4;
    size_t off = (size_t)(hdr_end - (const char *)f.srv_in.data);
    CHECK_EQ(f.srv_in.len - off, client_len);
    CHECK_MEM_EQ(f.srv_in.data + off, client_bytes, client_len);
    uint8_t close_frame[16];
    n = ws_frame(close_frame, true, 0x8, "\x03\xe8", 2, true);
    mem_send(f.cli, close_frame, n);
    svc_shutdown(f.cli);
    svc_shutdown(f.srv);
    fx_wait_done(&f);
    CHECK_EQ(f.status, 0);

    const char *log = logcap_text();
    static const char *const want[] = {
        "flow=42 ws frame dir=server->client kind=text size=18 fin=1 masked=0",
        "ws frame dir=client->server kind=text size=7 fin=0 masked=1",
        "ws frame dir=client->server kind=continuation size=5 fin=1",
        "ws frame dir=client->server kind=binary size=300 fin=1 masked=1",
        "ws frame dir=client->server kind=ping size=11",
        "ws frame dir=server->client kind=pong size=11 fin=1 masked=0",
        "ws frame dir=server->client kind=binary size=2",
        "ws frame dir=server->client kind=close size=2",
        "ws frame dir=client->server kind=close size=2 fin=1 masked=1",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (strstr(log, want[i]) == NULL)
            NECTAR_FAIL_AT("missing log line \"%s\" in:\n%s", want[i], log);
    }
    CHECK_EQ(count_of(log, strlen(log), "ws frame"), 9);
    CHECK(strstr(log, "SECRET") == NULL); /* never the payload */
    CHECK(strstr(log, "part2") == NULL);
    logcap_stop();
    fx_close(&f);
}

/* An upgrade the server declines resumes HTTP; one it accepts (here
 * without "Connection: upgrade" in the 101) becomes a raw relay. */
static void upgrade_other(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    mem_send_str(f.cli, "GET /a HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n"
                        "Connection: Upgrade, HTTP2-Settings\r\n\r\n"
                        "GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "GET /a", 1);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA");
    fx_wait_count(&f, &f.srv_in,
                  "GET /b HTTP/1.1\r\nHost: h\r\n"
                  "x-nectar-observed: test\r\n\r\n",
                  1);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB");
    fx_wait_count(&f, &f.cli_in, "\r\n\r\nB", 1);
    mem_send_str(f.cli, "GET /c HTTP/1.1\r\nHost: h\r\nUpgrade: foo\r\n"
                        "Connection: upgrade\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "GET /c", 1);
    mem_send_str(f.srv, "HTTP/1.1 101 Switching\r\nUpgrade: foo\r\n\r\n"
                        "\x01raw-from-server");
    fx_wait_count(&f, &f.cli_in, "\x01raw-from-server", 1);
    mem_send_str(f.cli, "\x02not http at all\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "\x02not http at all\r\n\r\n", 1);
    fx_close(&f);
}

/* ---- CONNECT ------------------------------------------------------------- */

static int hook_calls;

static int decline_hook(void *data, svc_stream_t *ci, svc_stream_t *si,
                        const char *authority, const svc_http_opts_t *opts)
{
    (void)data;
    (void)ci;
    (void)si;
    CHECK_STR_EQ(authority, "inner.test:80");
    CHECK(opts->within_connect);
    hook_calls++;
    return NECTAR_ENOTSUP;
}

static void connect_one_level(void)
{
    fx_t f;
    fx_init(&f);
    f.opts.connect_hook = decline_hook;
    fx_start(&f, false);
    /* CONNECT, with the first inner request in the same write. */
    mem_send_str(f.cli, "CONNECT inner.test:80 HTTP/1.1\r\n"
                        "Host: inner.test:80\r\n\r\n"
                        "GET /in HTTP/1.1\r\nHost: inner.test\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "CONNECT inner.test:80 HTTP/1.1\r\n", 1);
    mem_send_str(f.srv, "HTTP/1.1 200 Connection established\r\n\r\n");
    /* The inner request is relayed by a nested relay: observed once. */
    fx_wait_count(&f, &f.srv_in, "GET /in HTTP/1.1\r\n", 1);
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 2);
    CHECK_EQ(hook_calls, 1);
    const char *s = mem_sink_str(&f.srv_in);
    CHECK_EQ(count_of(s, f.srv_in.len, "x-nectar-observed: test"), 2);
    mem_send_str(f.srv,
                 "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                 "Content-Length: 27\r\n\r\n<html><body>x</body></html>");
    fx_wait_count(&f, &f.cli_in, "</html>", 1);
    const char *c = mem_sink_str(&f.cli_in);
    CHECK(strstr(c, "HTTP/1.1 200 Connection established\r\n") == c);
    CHECK_EQ(count_of(c, f.cli_in.len, badge_id), 1);
    /* A CONNECT inside the tunnel is relayed raw (one level only). */
    mem_send_str(f.cli, "CONNECT deeper.test:80 HTTP/1.1\r\nHost: d\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "CONNECT deeper.test:80", 1);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\n\r\n");
    mem_send_str(f.cli, "GET /raw HTTP/1.1\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "GET /raw HTTP/1.1\r\n\r\n", 1);
    CHECK_EQ(
        count_of(mem_sink_str(&f.srv_in), f.srv_in.len, "x-nectar-observed"),
        3);
    svc_shutdown(f.cli);
    svc_shutdown(f.srv);
    fx_wait_done(&f);
    CHECK_EQ(f.status, 0);
    fx_close(&f);
}

static void connect_refused(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    mem_send_str(f.cli, "CONNECT nope.test:443 HTTP/1.1\r\nHost: n\r\n\r\n"
                        "GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "CONNECT nope", 1);
    mem_send_str(f.srv, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    /* The request after the refused CONNECT is parsed as HTTP again. */
    fx_wait_count(&f, &f.srv_in,
                  "GET /after HTTP/1.1\r\nHost: h\r\n"
                  "x-nectar-observed: test\r\n\r\n",
                  1);
    fx_close(&f);
}

/* ---- hijack -------------------------------------------------------------- */

static const char test_pem[] =
    "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

static int ca_cb(void *data, char **pem, size_t *len)
{
    (void)data;
    *pem = nectar_memdup(test_pem, strlen(test_pem));
    *len = strlen(test_pem);
    return 0;
}

static void hijack_routes(void)
{
    fx_t f;
    fx_init(&f);
    f.opts.ca_pem = ca_cb;
    fx_start(&f, false);
    mem_send_str(f.cli, "GET / HTTP/1.1\r\nHost: Nectar.Localhost:80\r\n\r\n"
                        "GET /ping HTTP/1.1\r\nHost: nectar.localhost\r\n\r\n"
                        "GET /data/root.ca.pem HTTP/1.1\r\n"
                        "Host: nectar.localhost\r\n\r\n"
                        "GET /nope HTTP/1.1\r\nHost: nectar.localhost\r\n\r\n"
                        "POST / HTTP/1.1\r\nHost: nectar.localhost\r\n"
                        "Content-Length: 3\r\n\r\nabc");
    fx_wait_count(&f, &f.cli_in, "HTTP/1.1 ", 5);
    resp_t r[6];
    int n = 0;
    for (int i = 0; i < 500 && n < 5; i++) {
        mem_run_turns(&f.loop, 2);
        n = parse_responses(f.cli_in.data, f.cli_in.len, r, 6, false);
        if (n < 5)
            resp_free(r, n);
    }
    CHECK_EQ(n, 5);
    char v[128];
    CHECK_EQ(r[0].status, 200);
    CHECK(strstr(resp_header(&r[0], "content-type", v, sizeof(v)),
                 "text/html") != NULL);
    CHECK(memmem(r[0].body, r[0].body_len, "/data/root.ca.pem", 17) != NULL);
    CHECK_EQ(r[1].status, 200);
    CHECK_STR_EQ(resp_header(&r[1], "content-type", v, sizeof(v)),
                 "application/json");
    CHECK(memmem(r[1].body, r[1].body_len, "\"ok\":true", 9) != NULL);
    CHECK_EQ(r[2].status, 200);
    CHECK_STR_EQ(resp_header(&r[2], "content-type", v, sizeof(v)),
                 "application/x-pem-file");
    CHECK_EQ(r[2].body_len, strlen(test_pem));
    CHECK_MEM_EQ(r[2].body, test_pem, strlen(test_pem));
    CHECK_EQ(r[3].status, 404);
    CHECK_EQ(r[4].status, 405);
    CHECK_STR_EQ(resp_header(&r[4], "x-nectar-observed", v, sizeof(v)), "test");
    resp_free(r, n);
    /* Nothing reached the server. */
    CHECK_EQ(f.srv_in.len, 0);
    fx_close(&f);
}

/* "Connection: close" to the hijack host: the answer, then the end. */
static void hijack_close(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    mem_send_str(f.cli, "GET /ping HTTP/1.1\r\nHost: nectar.localhost\r\n"
                        "Connection: close\r\n\r\n");
    fx_wait_eof(&f, &f.cli_in);
    fx_wait_done(&f);
    const char *c = mem_sink_str(&f.cli_in);
    CHECK(strstr(c, "Connection: close\r\n") != NULL);
    CHECK(strstr(c, "\"ok\":true") != NULL);
    CHECK_EQ(f.status, 0);
    fx_close(&f);
}

/* Hijack answers stay in order with relayed responses. */
static void hijack_ordering(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    mem_send_str(f.cli, "GET /up HTTP/1.1\r\nHost: h\r\n\r\n"
                        "GET /ping HTTP/1.1\r\nHost: nectar.localhost\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "GET /up", 1);
    mem_run_turns(&f.loop, 20);
    CHECK_EQ(f.cli_in.len, 0); /* the local answer waits for /up's */
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nup");
    fx_wait_count(&f, &f.cli_in, "\"ok\":true", 1);
    const char *c = mem_sink_str(&f.cli_in);
    CHECK(strstr(c, "up") < strstr(c, "\"ok\":true"));
    fx_close(&f);
}

/* ---- a CONNECT hook that takes the tunnel (as the TLS layer does) -------- */

typedef struct hooked {
    svc_stream_t *v[2]; /* client view, server view */
    bool eof[2];
    bool closed;
    char authority[64];
} hooked_t;

static hooked_t hk;

static void hooked_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                        void *data)
{
    (void)data;
    int i = s == hk.v[0] ? 0 : 1;
    if (nread < 0) {
        hk.eof[i] = true;
        svc_shutdown(hk.v[1 - i]);
        if (hk.eof[0] && hk.eof[1] && !hk.closed) {
            hk.closed = true;
            svc_close(hk.v[0]);
            svc_close(hk.v[1]);
        }
        return;
    }
    /* Tag what crosses the tunnel so the test sees the hook relayed it. */
    char tagged[512];
    int n = snprintf(tagged, sizeof(tagged), "[%.*s]", (int)nread, buf);
    mem_send(hk.v[1 - i], tagged, (size_t)n);
}

static int owning_hook(void *data, svc_stream_t *ci, svc_stream_t *si,
                       const char *authority, const svc_http_opts_t *opts)
{
    (void)data;
    (void)opts;
    memset(&hk, 0, sizeof(hk));
    hk.v[0] = ci;
    hk.v[1] = si;
    snprintf(hk.authority, sizeof(hk.authority), "%s", authority);
    svc_read_start(ci, hooked_read, NULL);
    svc_read_start(si, hooked_read, NULL);
    return 0;
}

static void connect_hook_owns(void)
{
    fx_t f;
    fx_init(&f);
    f.opts.connect_hook = owning_hook;
    fx_start(&f, false);
    mem_send_str(f.cli, "CONNECT tls.test:443 HTTP/1.1\r\nHost: tls.test\r\n"
                        "\r\nhello");
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 1);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\n\r\nworld");
    fx_wait_count(&f, &f.srv_in, "[hello]", 1);
    fx_wait_count(&f, &f.cli_in, "[world]", 1);
    CHECK_STR_EQ(hk.authority, "tls.test:443");
    CHECK(strstr(mem_sink_str(&f.cli_in), "HTTP/1.1 200 OK\r\n") ==
          mem_sink_str(&f.cli_in));
    mem_send_str(f.cli, "more");
    fx_wait_count(&f, &f.srv_in, "[more]", 1);
    /* Both ends finish; the hook closes its views; then the relay ends. */
    svc_shutdown(f.cli);
    svc_shutdown(f.srv);
    fx_wait_done(&f);
    CHECK(hk.closed);
    CHECK_EQ(f.status, 0);
    fx_close(&f);
}

/* HTTP/1.0 client: a badged body cannot be chunked, so it is delimited by
 * closing the connection. */
static void http10_badge(void)
{
    fx_t f;
    fx_init(&f);
    f.opts.badge_label = "nectar <test>";
    fx_start(&f, false);
    mem_send_str(f.cli, "GET / HTTP/1.0\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "GET / HTTP/1.0\r\n", 1);
    char hdr[128];
    snprintf(hdr, sizeof(hdr),
             "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
             "Content-Length: %zu\r\n\r\n",
             strlen(html_page));
    mem_send_str(f.srv, hdr);
    mem_send_str(f.srv, html_page);
    fx_wait_eof(&f, &f.cli_in);
    const char *c = mem_sink_str(&f.cli_in);
    CHECK(strstr(c, "Connection: close\r\n") != NULL);
    CHECK(strstr(c, "Transfer-Encoding") == NULL);
    CHECK(strstr(c, "Content-Length") == NULL);
    const char *body = strstr(c, "\r\n\r\n") + 4;
    check_badged_plain(body, strlen(body));
    fx_close(&f);
}

/* No server stream: the hijack host is served, anything else gets 502. */
static void no_server(void)
{
    fx_t f;
    fx_init(&f);
    svc_close(f.rs);
    f.rs = NULL;
    fx_start(&f, false);
    mem_send_str(f.cli, "GET /ping HTTP/1.1\r\nHost: nectar.localhost\r\n\r\n"
                        "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n");
    fx_wait_count(&f, &f.cli_in, "HTTP/1.1 502", 1);
    CHECK(strstr(mem_sink_str(&f.cli_in), "HTTP/1.1 200 OK") != NULL);
    svc_shutdown(f.cli);
    fx_wait_done(&f);
    CHECK_EQ(f.status, 0);
    fx_close(&f);
}

static void cancel_done(int status, void *data)
{
    (void)status;
    (void)data;
    NECTAR_FAIL_AT("done_cb ran after svc_http_cancel");
}

/* Cancel: both streams close at once and done_cb never runs. */
static void cancel(void)
{
    fx_t f;
    fx_init(&f);
    svc_http_t *h = NULL;
    CHECK_EQ(svc_http1_start(f.rc, f.rs, &f.opts, NULL, NULL, &h),
             NECTAR_EINVAL);
    CHECK_EQ(svc_http1_start(f.rc, f.rs, &f.opts, cancel_done, &f, &h), 0);
    mem_send_str(f.cli, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 1);
    svc_http_cancel(h);
    fx_wait_eof(&f, &f.cli_in);
    fx_wait_eof(&f, &f.srv_in);
    mem_run_turns(&f.loop, 10);
    CHECK(!f.done);
    f.done = true; /* nothing to wait for in fx_close */
    fx_close(&f);
}

/* The CONNECT hook gives up on the whole flow: cancelling from inside the
 * relay's own callback is safe and runs no done_cb. */
static svc_http_t *hook_relay;

static int cancelling_hook(void *data, svc_stream_t *ci, svc_stream_t *si,
                           const char *authority, const svc_http_opts_t *opts)
{
    (void)data;
    (void)authority;
    (void)opts;
    svc_http_cancel(hook_relay);
    svc_close(ci);
    svc_close(si);
    return 0;
}

static void cancel_in_hook(void)
{
    fx_t f;
    fx_init(&f);
    f.opts.connect_hook = cancelling_hook;
    CHECK_EQ(svc_http1_start(f.rc, f.rs, &f.opts, cancel_done, &f, &hook_relay),
             0);
    mem_send_str(f.cli, "CONNECT x.test:443 HTTP/1.1\r\n\r\nhello");
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 1);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\n\r\n");
    fx_wait_eof(&f, &f.cli_in);
    fx_wait_eof(&f, &f.srv_in);
    mem_run_turns(&f.loop, 10);
    f.done = true;
    fx_close(&f);
}

/* Every allocation of the relay fails from the Nth on, for each N along
 * a gzip badge exchange and a WebSocket upgrade: the relay must end (with
 * an error or not), never crash, leak or hang (ASan build). */
static int client_done(void *arg)
{
    fx_t *f = arg;
    return f->done || f->cli_in.eof;
}

static int request_seen(void *arg)
{
    fx_t *f = arg;
    return f->done ||
           count_of(mem_sink_str(&f->srv_in), f->srv_in.len, "GET /ws") == 1;
}

static int exchange_over(void *arg)
{
    fx_t *f = arg;
    return f->done ||
           count_of(mem_sink_str(&f->cli_in), f->cli_in.len, "\x81\x01x") == 1;
}

static void alloc_failures(void)
{
    uint8_t comp[4096];
    size_t clen =
        zcompress(html_page, strlen(html_page), comp, sizeof(comp), 15 + 16);
    int completed = 0;
    bool last_ok = false;
    for (long n = 0; n < 400; n++) {
        fx_t f;
        fx_init(&f);
        nectar__alloc_fail_after(n);
        svc_http_t *h = NULL;
        if (svc_http1_start(f.rc, f.rs, &f.opts, fx_on_done, &f, &h) != 0) {
            nectar__alloc_fail_after(-1);
            svc_close(f.rc);
            svc_close(f.rs);
            f.done = true;
            fx_close(&f);
            continue;
        }
        mem_send_str(f.cli, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
                            "GET /ws HTTP/1.1\r\nHost: a\r\n"
                            "Upgrade: websocket\r\nConnection: upgrade\r\n"
                            "\r\n\x81\x80"
                            "abcd");
        /* A server answers only what it was asked. */
        mem_run_until(&f.loop, request_seen, &f, 2000);
        char hdr[160];
        snprintf(hdr, sizeof(hdr),
                 "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                 "Content-Encoding: gzip\r\nContent-Length: %zu\r\n\r\n",
                 clen);
        mem_send_str(f.srv, hdr);
        mem_send(f.srv, comp, clen);
        mem_send_str(f.srv, "HTTP/1.1 101 S\r\nUpgrade: websocket\r\n"
                            "Connection: upgrade\r\n\r\n\x81\x01x");
        mem_run_until(&f.loop, exchange_over, &f, 2000);
        nectar__alloc_fail_after(-1);
        svc_shutdown(f.cli);
        svc_shutdown(f.srv);
        mem_run_until(&f.loop, client_done, &f, 2000);
        last_ok =
            count_of(mem_sink_str(&f.cli_in), f.cli_in.len, "\x81\x01x") == 1;
        completed += last_ok;
        fx_close(&f); /* waits for done: the relay must end */
    }
    /* The last N leave the whole exchange room enough: the loop covered
     * every allocation on the way. */
    CHECK(last_ok);
    CHECK_GT(completed, 0);
}

/* After a good exchange, a malformed request gets 400 and an oversized
 * head 431; then the connection closes and the relay reports the error. */
static void refuse_bad(const char *bad, const char *want, int status)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    mem_send_str(f.cli, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 1);
    mem_send_str(f.srv, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    fx_wait_count(&f, &f.cli_in, "ok", 1);
    mem_send_str(f.cli, bad);
    fx_wait_eof(&f, &f.cli_in);
    fx_wait_done(&f);
    CHECK_EQ(f.status, status);
    const char *c = mem_sink_str(&f.cli_in);
    CHECK(strstr(c, want) != NULL);
    CHECK(strstr(c, "Connection: close\r\n") != NULL);
    CHECK_EQ(count_of(mem_sink_str(&f.srv_in), f.srv_in.len, "GET "), 1);
    fx_close(&f);
}

static void bad_requests(void)
{
    refuse_bad("GET /b HTTP/1.1\r\nBad Header\r\n\r\n",
               "HTTP/1.1 400 Bad Request\r\n", NECTAR_EPARSE);
    size_t n = 70 * 1024;
    char *big = malloc(n + 64);
    int k = snprintf(big, 64, "GET /c HTTP/1.1\r\nX-Big: ");
    memset(big + k, 'a', n);
    memcpy(big + k + n, "\r\n\r\n", 5);
    refuse_bad(big, "HTTP/1.1 431 Request Header Fields Too Large\r\n",
               NECTAR_ELIMIT);
    free(big);
}

/* Non-HTTP bytes from the start are relayed unchanged. */
static void raw_fallback(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    static const uint8_t junk[] = {0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5};
    mem_send(f.cli, junk, sizeof(junk));
    for (int i = 0; i < 500 && f.srv_in.len < sizeof(junk); i++)
        mem_run_turns(&f.loop, 2);
    CHECK_EQ(f.srv_in.len, sizeof(junk));
    CHECK_MEM_EQ(f.srv_in.data, junk, sizeof(junk));
    mem_send_str(f.srv, "reply");
    fx_wait_count(&f, &f.cli_in, "reply", 1);
    fx_close(&f);
}

/* The server refuses an upload and goes away while the relay still has
 * body bytes for it: the refusal already on its way to the client still
 * arrives, then the relay ends with the write error. */
static void upload_rejected(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    static uint8_t chunk[1000];
    mem_send_str(f.cli, "POST /up HTTP/1.1\r\nHost: h\r\n"
                        "Content-Length: 100000\r\n\r\n");
    mem_send(f.cli, chunk, sizeof(chunk));
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 1);
    svc_read_stop(f.cli); /* the answer waits in the relay's write */
    svc_read_stop(f.srv); /* so do the next body bytes */
    mem_send_str(f.srv, "HTTP/1.1 413 Payload Too Large\r\n"
                        "Content-Length: 0\r\nConnection: close\r\n\r\n");
    mem_send(f.cli, chunk, sizeof(chunk));
    mem_run_turns(&f.loop, 50);
    CHECK_GT(svc_write_queue_size(f.rc), 0);
    CHECK_GT(svc_write_queue_size(f.rs), 0);
    svc_close(f.srv); /* the relay's pending upload writes fail */
    f.srv = NULL;
    mem_run_turns(&f.loop, 50);
    CHECK(!f.done); /* still delivering the answer */
    mem_collect(f.cli, &f.cli_in);
    fx_wait_done(&f);
    CHECK_NE(f.status, 0);
    CHECK(strstr(mem_sink_str(&f.cli_in), "HTTP/1.1 413 Payload Too Large") !=
          NULL);
    svc_close(f.cli);
    mem_sink_free(&f.cli_in);
    mem_sink_free(&f.srv_in);
    CHECK_EQ(mem_loop_close(&f.loop), 0);
}

/* A large body streams through with back-pressure and arrives intact. */
static void large_body(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    size_t total = 4u << 20;
    uint8_t *body = malloc(total);
    for (size_t i = 0; i < total; i++)
        body[i] = (uint8_t)(i * 31 + (i >> 12));
    char hdr[128];
    snprintf(hdr, sizeof(hdr),
             "PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\n\r\n",
             total);
    mem_send_str(f.cli, hdr);
    /* Many writes queued at once; the test server reads slowly. */
    for (size_t off = 0; off < total; off += 65536)
        svc_write(f.cli, body + off, 65536, NULL, NULL);
    svc_read_stop(f.srv);
    mem_run_turns(&f.loop, 200);
    /* The relay stopped reading the client: most bytes wait there. */
    CHECK_GT(svc_write_queue_size(f.cli), total / 2);
    mem_collect(f.srv, &f.srv_in);
    for (int i = 0; i < 100000 && f.srv_in.len < total + strlen(hdr); i++)
        mem_run_turns(&f.loop, 1);
    const char *end = strstr(mem_sink_str(&f.srv_in), "\r\n\r\n") + 4;
    size_t off = (size_t)(end - (const char *)f.srv_in.data);
    CHECK_EQ(f.srv_in.len - off, total);
    CHECK_MEM_EQ(f.srv_in.data + off, body, total);
    fx_close(&f);
    free(body);
}

/* The same towards a client that reads slowly: the relay stops reading
 * the server, and the download arrives intact once the client reads. */
static void large_download(void)
{
    fx_t f;
    fx_init(&f);
    fx_start(&f, false);
    size_t total = 4u << 20;
    uint8_t *body = malloc(total);
    for (size_t i = 0; i < total; i++)
        body[i] = (uint8_t)(i * 29 + (i >> 13));
    mem_send_str(f.cli, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    fx_wait_count(&f, &f.srv_in, "\r\n\r\n", 1);
    svc_read_stop(f.cli);
    char hdr[128];
    snprintf(hdr, sizeof(hdr),
             "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
             "Content-Length: %zu\r\n\r\n",
             total);
    mem_send_str(f.srv, hdr);
    for (size_t off = 0; off < total; off += 65536)
        svc_write(f.srv, body + off, 65536, NULL, NULL);
    mem_run_turns(&f.loop, 200);
    CHECK_GT(svc_write_queue_size(f.srv), total / 2);
    mem_collect(f.cli, &f.cli_in);
    for (int i = 0; i < 100000 && f.cli_in.len < total + strlen(hdr); i++)
        mem_run_turns(&f.loop, 1);
    const char *end = strstr(mem_sink_str(&f.cli_in), "\r\n\r\n") + 4;
    size_t off = (size_t)(end - (const char *)f.cli_in.data);
    CHECK_EQ(f.cli_in.len - off, total);
    CHECK_MEM_EQ(f.cli_in.data + off, body, total);
    fx_close(&f);
    free(body);
}

static const nectar_test_t tests[] = {
    {"header_once", header_once},
    {"keepalive_pipelining", keepalive_pipelining},
    {"pipeline_bound", pipeline_bound},
    {"chunked_and_length", chunked_and_length},
    {"bodiless_answers", bodiless_answers},
    {"badge_once", badge_once},
    {"badge_split", badge_split},
    {"badge_absent", badge_absent},
    {"badge_no_body_tag", badge_no_body_tag},
    {"badge_after_decoys", badge_after_decoys},
    {"badge_gzip", badge_gzip},
    {"badge_deflate", badge_deflate},
    {"websocket", websocket},
    {"upgrade_other", upgrade_other},
    {"connect_one_level", connect_one_level},
    {"connect_refused", connect_refused},
    {"hijack_routes", hijack_routes},
    {"hijack_close", hijack_close},
    {"hijack_ordering", hijack_ordering},
    {"connect_hook_owns", connect_hook_owns},
    {"http10_badge", http10_badge},
    {"no_server", no_server},
    {"cancel", cancel},
    {"cancel_in_hook", cancel_in_hook},
    {"alloc_failures", alloc_failures},
    {"bad_requests", bad_requests},
    {"raw_fallback", raw_fallback},
    {"upload_rejected", upload_rejected},
    {"large_body", large_body},
    {"large_download", large_download},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
