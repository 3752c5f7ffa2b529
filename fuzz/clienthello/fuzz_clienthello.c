/*
 * fuzz_clienthello.c - feeds arbitrary bytes to the peek recognisers, as
 * a whole and as every prefix length the peek service could see, checking
 * that a match always yields a terminated, bounded result.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    return 0;
}
