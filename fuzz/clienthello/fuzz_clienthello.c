/*
 * fuzz_clienthello.c - feeds arbitrary bytes to the peek recognisers, as
 * a whole and as every prefix length the peek service could see, checking
 * that a match always yields a terminated, bounded result; also the SOCKS5
 * framing and the domain lists of the example.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "example/domains.h"
#include "example/socks5.h"
#include "services/peek/clienthello.h"
#include "services/peek/sniff.h"

static void check_hello(const uint8_t *data, size_t size)
{
    peek_tls_hello_t h;
    if (peek_tls_parse(data, size, &h) != PEEK_YES)
        return;
    if (strnlen(h.sni, sizeof(h.sni)) == sizeof(h.sni) ||
        h.alpn_len > sizeof(h.alpn) || h.consumed > size)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_hello(data, size);
    /* The peek service parses again after each read: try a few cuts. */
    for (size_t cut = 1; cut < size && cut < 64; cut += 7)
        check_hello(data, size - cut);
    peek_http_req_t r;
    if (peek_http_parse(data, size, size % 2 == 0, &r) == PEEK_YES &&
        (strnlen(r.host, sizeof(r.host)) == sizeof(r.host) ||
         r.line_len > size))
        abort();
    peek_socks5_greeting(data, size, NULL);
    /* The SOCKS5 framing the example relays by. */
    uint8_t cmd, rep;
    uint16_t port;
    char host[256];
    long n = socks5_request(data, size, &cmd, host, sizeof(host), &port);
    if ((n > 0 && ((size_t)n > size || strnlen(host, 256) == 256)) ||
        socks5_reply(data, size, &rep) > (long)size ||
        socks5_auth_request(data, size) > (long)size)
        abort();
    /* Host names matched against an exclusion list. */
    if (size < 300) {
        char name[300];
        memcpy(name, data, size);
        name[size] = '\0';
        const char *list[] = {name, "*.fuzz.test"};
        ex_domains_t *d = ex_domains_new(list, 2);
        if (d != NULL) {
            ex_domains_match(d, name);
            ex_domains_match(d, "a.fuzz.test");
            ex_domains_free(d);
        }
    }
    return 0;
}
