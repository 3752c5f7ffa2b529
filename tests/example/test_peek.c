/*
 * test_peek.c - the pure recognisers of the peek service: TLS ClientHello
 * (real hellos from OpenSSL, re-fragmented, truncated and corrupted),
 * SOCKS5 greetings and HTTP/1.x request heads.
 */
#include <openssl/ssl.h>
#include <stdlib.h>

#include "harness/test.h"
#include "services/peek/clienthello.h"
#include "services/peek/sniff.h"

/* A real ClientHello as OpenSSL sends it (one record). */
static size_t make_hello(const char *sni, const uint8_t *alpn,
                         unsigned alpn_len, uint8_t *out, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, r, w);
    if (sni != NULL)
        SSL_set_tlsext_host_name(ssl, sni);
    if (alpn != NULL)
        SSL_set_alpn_protos(ssl, alpn, alpn_len);
    SSL_set_connect_state(ssl);
    SSL_do_handshake(ssl);
    int n = BIO_read(w, out, (int)cap);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    CHECK_GT(n, 0);
    return (size_t)n;
}

static const uint8_t alpn_both[] = {2,   'h', '2', 8,   'h', 't',
                                    't', 'p', '/', '1', '.', '1'};

static void tls_real_hello(void)
{
    uint8_t buf[4096];
    size_t n = make_hello("WWW.Example.COM.", alpn_both, sizeof(alpn_both), buf,
                          sizeof(buf));
    peek_tls_hello_t h;
    CHECK_EQ(peek_tls_parse(buf, n, &h), PEEK_YES);
    CHECK(h.has_sni);
    CHECK_STR_EQ(h.sni, "www.example.com");
    CHECK(h.offers_h2);
    CHECK(h.offers_http11);
    CHECK_EQ(h.alpn_len, sizeof(alpn_both));
    CHECK_MEM_EQ(h.alpn, alpn_both, sizeof(alpn_both));
    CHECK_EQ(h.consumed, n);
    /* Every strict prefix asks for more. */
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(peek_tls_parse(buf, i, &h), PEEK_MORE);
}

static void tls_no_sni_no_alpn(void)
{
    uint8_t buf[4096];
    size_t n = make_hello(NULL, NULL, 0, buf, sizeof(buf));
    peek_tls_hello_t h;
    CHECK_EQ(peek_tls_parse(buf, n, &h), PEEK_YES);
    CHECK(!h.has_sni);
    CHECK_EQ(h.alpn_len, 0);
    CHECK(!h.offers_h2);
}

/* Re-frames the handshake payload of one record into records of `step`
 * bytes, as a middlebox or a client with tiny records may send. */
static size_t refragment(const uint8_t *in, size_t n, size_t step, uint8_t *out)
{
    size_t payload = n - 5, o = 0;
    for (size_t off = 0; off < payload; off += step) {
        size_t k = payload - off < step ? payload - off : step;
        out[o++] = 22;
        out[o++] = 3;
        out[o++] = 1;
        out[o++] = (uint8_t)(k >> 8);
        out[o++] = (uint8_t)k;
        memcpy(out + o, in + 5 + off, k);
        o += k;
    }
    return o;
}

static void tls_fragmented(void)
{
    uint8_t buf[4096], frag[16384];
    size_t n =
        make_hello("frag.test", alpn_both, sizeof(alpn_both), buf, sizeof(buf));
    size_t steps[] = {1, 3, 7, 100, 1000};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        size_t m = refragment(buf, n, steps[s], frag);
        peek_tls_hello_t h;
        for (size_t i = 0; i < m; i += 1 + m / 200)
            CHECK_EQ(peek_tls_parse(frag, i, &h), PEEK_MORE);
        CHECK_EQ(peek_tls_parse(frag, m, &h), PEEK_YES);
        CHECK_STR_EQ(h.sni, "frag.test");
        CHECK(h.offers_h2);
        CHECK_EQ(h.consumed, m);
    }
}

static void tls_garbage(void)
{
    peek_tls_hello_t h;
    const char *http = "GET / HTTP/1.1\r\n";
    CHECK_EQ(peek_tls_parse((const uint8_t *)http, strlen(http), &h), PEEK_NO);
    uint8_t ssh[] = "SSH-2.0-OpenSSH_9.2\r\n";
    CHECK_EQ(peek_tls_parse(ssh, sizeof(ssh) - 1, &h), PEEK_NO);
    /* A handshake record carrying a ServerHello, not a ClientHello. */
    uint8_t sh[] = {22, 3, 3, 0, 4, 2, 0, 0, 0};
    CHECK_EQ(peek_tls_parse(sh, sizeof(sh), &h), PEEK_NO);
    /* Oversized record length. */
    uint8_t big[] = {22, 3, 1, 0x50, 0x00, 1};
    CHECK_EQ(peek_tls_parse(big, sizeof(big), &h), PEEK_NO);
    /* Corrupt every byte of a real hello in turn: never a crash, and a
     * YES still carries a NUL-terminated name. */
    uint8_t buf[4096], bad[4096];
    size_t n = make_hello("corrupt.test", alpn_both, sizeof(alpn_both), buf,
                          sizeof(buf));
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, buf, n);
        bad[i] ^= 0xff;
        if (peek_tls_parse(bad, n, &h) == PEEK_YES)
            CHECK_LT(strlen(h.sni), sizeof(h.sni));
    }
    srand(7);
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)(rand() % 600);
        for (size_t i = 0; i < len; i++)
            bad[i] = (uint8_t)rand();
        if (round % 2)
            bad[0] = 22, bad[1] = 3;
        peek_tls_parse(bad, len, &h);
    }
}

static void socks5(void)
{
    size_t glen = 0;
    uint8_t g[] = {5, 2, 0, 2};
    CHECK_EQ(peek_socks5_greeting(g, 0, &glen), PEEK_MORE);
    CHECK_EQ(peek_socks5_greeting(g, 1, &glen), PEEK_MORE);
    CHECK_EQ(peek_socks5_greeting(g, 3, &glen), PEEK_MORE);
    CHECK_EQ(peek_socks5_greeting(g, 4, &glen), PEEK_YES);
    CHECK_EQ(glen, 4);
    uint8_t zero[] = {5, 0};
    CHECK_EQ(peek_socks5_greeting(zero, 2, NULL), PEEK_NO);
    uint8_t more[] = {5, 1, 0, 9};
    CHECK_EQ(peek_socks5_greeting(more, 4, NULL), PEEK_NO);
    uint8_t v4[] = {4, 1, 0, 80};
    CHECK_EQ(peek_socks5_greeting(v4, 4, NULL), PEEK_NO);
}

static peek_verdict_t http(const char *s, bool final, peek_http_req_t *r)
{
    return peek_http_parse((const uint8_t *)s, strlen(s), final, r);
}

static void http_heads(void)
{
    peek_http_req_t r;
    CHECK_EQ(http("GE", false, &r), PEEK_MORE);
    CHECK_EQ(http("GET /index.html HTTP/1.", false, &r), PEEK_MORE);
    CHECK_EQ(http("GET / HTTP/1.1\r\n", false, &r), PEEK_MORE);
    CHECK_EQ(http("GET / HTTP/1.1\r\n", true, &r), PEEK_YES);
    CHECK_STR_EQ(r.method, "GET");
    CHECK_STR_EQ(r.host, "");
    CHECK_EQ(http("GET / HTTP/1.1\r\nHost: WWW.Site.Test:8080\r\n"
                  "Accept: */*\r\n\r\n",
                  false, &r),
             PEEK_YES);
    CHECK(r.head_complete);
    CHECK_STR_EQ(r.host, "www.site.test");
    CHECK_EQ(r.version_minor, 1);
    CHECK_EQ(http("GET http://abs.test/x HTTP/1.0\nHost: other\n\n", false, &r),
             PEEK_YES);
    CHECK_STR_EQ(r.host, "abs.test");
    CHECK_EQ(r.version_minor, 0);
    CHECK_EQ(http("OPTIONS * HTTP/1.1\r\nhost: [::1]:80\r\n\r\n", false, &r),
             PEEK_YES);
    CHECK_STR_EQ(r.host, "::1");
    CHECK_EQ(http("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true, &r), PEEK_NO);
    CHECK_EQ(http("get / HTTP/1.1\r\n", true, &r), PEEK_NO);
    CHECK_EQ(http("GET  / HTTP/1.1\r\n", true, &r), PEEK_NO);
    CHECK_EQ(http("GET / HTTP/1.1 extra\r\n", true, &r), PEEK_NO);
    CHECK_EQ(http("VERYVERYLONGMETHODNAME / HTTP/1.1\r\n", true, &r), PEEK_NO);
    CHECK_EQ(http("\x16\x03\x01", true, &r), PEEK_NO);
}

static const nectar_test_t tests[] = {
    {"tls_real_hello", tls_real_hello},
    {"tls_no_sni_no_alpn", tls_no_sni_no_alpn},
    {"tls_fragmented", tls_fragmented},
    {"tls_garbage", tls_garbage},
    {"socks5", socks5},
    {"http_heads", http_heads},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
