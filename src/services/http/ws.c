/*
 * ws.c - WebSocket frame observer (RFC 6455 §5.2) for the HTTP/1 relay.
 * Bytes are relayed unchanged; this only walks the frame headers in each
 * direction (headers may be split across reads) and logs one line per
 * frame: direction, kind, payload size, FIN and MASK bits.  The payload
 * is skipped, never copied and never logged.
 */
#include <string.h>

#include "services/http/http_int.h"

const char *nectar__http_ws_kind_name(unsigned opcode)
{
    switch (opcode) {
    case 0x0:
        return "continuation";
    case 0x1:
        return "text";
    case 0x2:
        return "binary";
    case 0x8:
        return "close";
    case 0x9:
        return "ping";
    case 0xA:
        return "pong";
    default:
        return "reserved";
    }
}

/* Header bytes needed once the first two are known. */
static unsigned header_size(const uint8_t *h)
{
    unsigned n = 2;
    unsigned len7 = h[1] & 0x7f;
    if (len7 == 126)
        n += 2;
    else if (len7 == 127)
        n += 8;
    if (h[1] & 0x80)
        n += 4;
    return n;
}

static uint64_t payload_size(const uint8_t *h)
{
    unsigned len7 = h[1] & 0x7f;
    if (len7 < 126)
        return len7;
    uint64_t v = 0;
    unsigned bytes = len7 == 126 ? 2 : 8;
    for (unsigned i = 0; i < bytes; i++)
        v = v << 8 | h[2 + i];
    return v;
}

static void frame_done(http_base_t *b, ws_parser_t *p, const char *dir)
{
    unsigned opcode = p->hdr[0] & 0x0f;
    p->remaining = payload_size(p->hdr);
    p->frames++;
    nectar__http_log(b, NECTAR_LOG_TRACE,
                     "ws frame dir=%s kind=%s size=%llu fin=%d masked=%d", dir,
                     nectar__http_ws_kind_name(opcode),
                     (unsigned long long)p->remaining,
                     (p->hdr[0] & 0x80) ? 1 : 0, (p->hdr[1] & 0x80) ? 1 : 0);
    p->hlen = 0;
    p->hneed = 2;
    p->in_payload = p->remaining > 0;
}

void nectar__http_ws_observe(http_base_t *b, ws_parser_t *p, const char *dir,
                             const uint8_t *buf, size_t len)
{
    if (p->hneed == 0)
        p->hneed = 2;
    while (len > 0) {
        if (p->in_payload) {
            uint64_t skip = p->remaining < len ? p->remaining : len;
            p->remaining -= skip;
            buf += skip;
            len -= (size_t)skip;
            if (p->remaining == 0)
                p->in_payload = false;
            continue;
        }
        p->hdr[p->hlen++] = *buf++;
        len--;
        if (p->hlen == 2)
            p->hneed = header_size(p->hdr);
        if (p->hlen >= 2 && p->hlen == p->hneed)
            frame_done(b, p, dir);
    }
}
