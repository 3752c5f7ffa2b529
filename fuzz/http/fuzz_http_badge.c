/*
 * fuzz_http_badge.c - libFuzzer target for the HTML badge rewriter alone:
 * arbitrary bodies in arbitrary pieces, identity, gzip or deflate.  For
 * identity bodies it also checks the rewriter's promise: the output is the
 * input with at most one badge element inserted, nothing else changed.
 *
 * Input layout: byte 0 = encoding (mod 3), byte 1 = piece size (0: 1 byte),
 * then the body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/http/http_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int enc = data[0] % 3;
    size_t piece = data[1] ? data[1] : 1;
    data += 2;
    size -= 2;
    badge_t *bd = nectar__http_badge_new(enc, "fuzz");
    if (bd == NULL)
        return 0;
    hbuf_t out = {0};
    for (size_t off = 0; off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        if (nectar__http_badge_feed(bd, data + off, n, &out) != 0)
            abort();
    }
    if (nectar__http_badge_finish(bd, &out) != 0)
        abort();
    if (enc == BADGE_ENC_IDENTITY) {
        hbuf_t el = {0};
        nectar__http_badge_element("fuzz", &el);
        bool ins = nectar__http_badge_inserted(bd);
        if (out.len != size + (ins ? el.len : 0))
            abort();
        if (ins) {
            uint8_t *at = memmem(out.data, out.len, el.data, el.len);
            if (at == NULL)
                abort();
            size_t pre = (size_t)(at - out.data);
            if (memcmp(out.data, data, pre) != 0 ||
                memcmp(at + el.len, data + pre, size - pre) != 0)
                abort();
        } else if (size > 0 && memcmp(out.data, data, size) != 0) {
            abort();
        }
        nectar__http_buf_free(&el);
    }
    nectar__http_buf_free(&out);
    nectar__http_badge_free(bd);
    return 0;
}
