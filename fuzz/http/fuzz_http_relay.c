/*
 * fuzz_http_relay.c - libFuzzer target: arbitrary bytes from the client
 * and from the server through the HTTP/1.1 relay (with badge, hijack,
 * WebSocket, CONNECT paths reachable) or the HTTP/2 relay.  The relay must
 * never crash, leak or hang, whatever either side sends.
 *
 * Input layout: byte 0 = options (bit 0: HTTP/2; bits 1-3: read slice;
 * bit 4: server bytes first; bit 5: HTTP/2 connection prefaces sent
 * first, so frames get past the handshake), then the client bytes, the
 * separator "\xff\xfe\xfd", then the server bytes.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "memstream.h"
#include "services/http/http.h"

static const char pem[] = "-----BEGIN CERTIFICATE-----\nAA==\n"
                          "-----END CERTIFICATE-----\n";

static int ca_cb(void *data, char **out, size_t *len)
{
    (void)data;
    *out = nectar_memdup(pem, sizeof(pem) - 1);
    *len = sizeof(pem) - 1;
    return *out ? 0 : -1;
}

static bool excluded(void *data, const char *host)
{
    (void)data;
    return strcmp(host, "excluded.test") == 0;
}

static void on_done(int status, void *data)
{
    (void)status;
    *(bool *)data = true;
}

static int is_done(void *arg)
{
    return *(bool *)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++;
    size--;
    const uint8_t *sep = memmem(data, size, "\xff\xfe\xfd", 3);
    size_t clen = sep ? (size_t)(sep - data) : size;
    const uint8_t *sbytes = sep ? sep + 3 : data + size;
    size_t slen = sep ? size - clen - 3 : 0;

    uv_loop_t loop;
    uv_loop_init(&loop);
    svc_stream_t *cli, *rc, *rs, *srv;
    mem_pair(&loop, &cli, &rc);
    mem_pair(&loop, &rs, &srv);
    mem_set_slice(rc, (flags >> 1) & 7);
    mem_set_slice(rs, (flags >> 1) & 7);
    mem_sink_t cin = {0}, sin = {0};
    mem_collect(cli, &cin);
    mem_collect(srv, &sin);

    svc_http_opts_t o;
    svc_http_opts_defaults(&o);
    o.ca_pem = ca_cb;
    o.is_excluded = excluded;
    bool done = false;
    int r = (flags & 1) ? svc_h2_start(rc, rs, &o, on_done, &done, NULL)
                        : svc_http1_start(rc, rs, &o, on_done, &done, NULL);
    if (r != 0) {
        svc_close(rc);
        svc_close(rs);
        done = true;
    }
    if (flags & 0x20) {
        static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
        mem_send(cli, preface, sizeof(preface) - 1);
        mem_send(cli, settings, sizeof(settings));
        mem_send(srv, settings, sizeof(settings));
    }
    if (flags & 0x10) {
        mem_send(srv, sbytes, slen);
        mem_run_turns(&loop, 20);
        mem_send(cli, data, clen);
    } else {
        mem_send(cli, data, clen);
        mem_run_turns(&loop, 20);
        mem_send(srv, sbytes, slen);
    }
    mem_run_turns(&loop, 50);
    svc_shutdown(cli);
    svc_shutdown(srv);
    mem_run_until(&loop, is_done, &done, 200);
    svc_close(cli);
    svc_close(srv);
    mem_run_until(&loop, is_done, &done, 2000);
    mem_sink_free(&cin);
    mem_sink_free(&sin);
    if (!done)
        __builtin_trap(); /* the relay must end once both ends closed */
    mem_loop_close(&loop);
    return 0;
}
