/* fuzz_config.c - arbitrary bytes into the built-in handler's config
 * parser: it must never crash or leak.  A config that parses is also used
 * (decisions over a few flows, proxy overrides), and the same bytes go to
 * the app-message decoder.
 *
 * jansson is not instrumented, so random bytes rarely form the nested
 * objects the parser walks.  Odd first bytes therefore feed the raw input;
 * even ones read the rest as choices for a small JSON generator whose
 * keys and strings come from the config's own vocabulary, which takes the
 * fuzzer straight to the deep keys and their error paths.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config.h"
#include "app/message.h"
#include "common/alloc.h"

static void use_config(const struct app_config *cfg)
{
    static const char *hosts[] = {"10.1.2.3", "2001:db8::1", "example.com",
                                  "::ffff:127.0.0.1", NULL};
    nectar_flow_meta_t meta = {.flow_id = 1};
    nectar_proxy_config_t px = {.tunnel_remote_address = "127.0.0.1"};

    for (int i = 0; hosts[i] != NULL; i++) {
        meta.protocol = (i % 2) ? NECTAR_PROTO_UDP : NECTAR_PROTO_TCP;
        meta.remote.host = hosts[i];
        meta.remote.port = (uint16_t)(443 + i);
        meta.remote_hostname = (i == 2) ? "www.example.com" : NULL;
        meta.signing_identifier = (i == 1) ? "com.apple.curl" : NULL;
        nectar_action_t a = nectar__app_config_decide(cfg, &meta);
        if (a < NECTAR_ACTION_INTERCEPT || a > NECTAR_ACTION_BLOCK)
            __builtin_trap();
    }
    nectar__app_config_apply_proxy(cfg, &px);
    if (px.tcp_write_pump_max_pending_bytes > APP_WRITE_PUMP_MAX)
        __builtin_trap();
}

/* ---- a JSON generator driven by the input bytes ------------------------ */

struct gen {
    const uint8_t *in;
    size_t in_len, pos;
    char *out;
    size_t len, cap;
};

static const char *const keys[] = {
    "default_action",
    "actions",
    "rules",
    "proxy",
    "egress",
    "match",
    "action",
    "protocol",
    "remote_port",
    "remote_host",
    "app",
    "remote_network",
    "remote_prefix",
    "local_network",
    "local_prefix",
    "exclude",
    "tunnel_remote_address",
    "tcp_write_pump_max_pending_bytes",
    "flow_pressure_soft_cap",
    "flow_refusal_action",
    "connect_timeout_ms",
    "tcp_no_delay",
    "keepalive",
    "keepalive_count",
    "maximum_segment_size",
    "fast_open",
    "op",
    "source",
    "sent_at",
    "bogus",
};

static const char *const words[] = {
    "intercept",
    "passthrough",
    "block",
    "tcp",
    "udp",
    "any",
    "ping",
    "stats",
    "10.0.0.0/8",
    "10.1.2.3",
    "::1",
    "2001:db8::/32",
    "fe80::1%eth0",
    "::ffff:0:0/96",
    "1.2.3.4/33",
    ".example.com",
    "example.com",
    "..x",
    "a b",
    "com.apple.*",
    "*",
    "",
    "0.0.0.0/0",
    "[::1]",
    "x\\u0001y",
};

static unsigned take(struct gen *g)
{
    return g->pos < g->in_len ? g->in[g->pos++] : 0;
}

static void emit(struct gen *g, const char *s)
{
    size_t n = strlen(s);

    if (g->len + n + 1 > g->cap) {
        g->cap = (g->len + n + 1) * 2;
        g->out = realloc(g->out, g->cap);
    }
    memcpy(g->out + g->len, s, n + 1);
    g->len += n;
}

static void gen_value(struct gen *g, int depth);

static void gen_object(struct gen *g, int depth)
{
    unsigned n = take(g) % 5;

    emit(g, "{");
    for (unsigned i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof(key), "%s\"%s\":", i ? "," : "",
                 keys[take(g) % (sizeof(keys) / sizeof(keys[0]))]);
        emit(g, key);
        gen_value(g, depth + 1);
    }
    emit(g, "}");
}

static void gen_value(struct gen *g, int depth)
{
    char buf[64];
    unsigned op = depth > 6 ? 0 : take(g) % 8;

    switch (op) {
    case 0: {
        long long v = (long long)(take(g) | take(g) << 8 | take(g) << 16);
        if (take(g) % 4 == 0)
            v = -v;
        snprintf(buf, sizeof(buf), "%lld", v);
        emit(g, buf);
        break;
    }
    case 1:
        snprintf(buf, sizeof(buf), "\"%s\"",
                 words[take(g) % (sizeof(words) / sizeof(words[0]))]);
        emit(g, buf);
        break;
    case 2:
        emit(g, take(g) % 2 ? "true" : "false");
        break;
    case 3:
        emit(g, take(g) % 2 ? "null" : "1.5");
        break;
    case 4:
    case 5:
        gen_object(g, depth);
        break;
    default: {
        unsigned n = take(g) % 4;
        emit(g, "[");
        for (unsigned i = 0; i < n; i++) {
            if (i > 0)
                emit(g, ",");
            gen_value(g, depth + 1);
        }
        emit(g, "]");
    }
    }
}

/* The bytes to parse (malloc'd; caller frees). */
static uint8_t *shape(const uint8_t *data, size_t size, size_t *out_len)
{
    struct gen g = {.in = data, .in_len = size, .pos = 1};

    if (size == 0 || data[0] % 2 == 1) {
        uint8_t *raw = malloc(size + 1);
        memcpy(raw, data, size);
        *out_len = size;
        return raw;
    }
    gen_object(&g, 0);
    *out_len = g.len;
    return (uint8_t *)g.out;
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t input_size)
{
    size_t size;
    uint8_t *data = shape(input, input_size, &size);
    struct app_config cfg;
    nectar_error_t err;
    struct app_stats stats;
    uint8_t *reply = NULL;
    size_t reply_len = 0;

    memset(&err, 0, sizeof(err));
    if (nectar__app_config_parse(data, size, &cfg, &err) == 0) {
        use_config(&cfg);
        nectar__app_config_free(&cfg);
    } else if (err.message[0] == '\0') {
        __builtin_trap(); /* every failure explains itself */
    }
    memset(&stats, 0, sizeof(stats));
    nectar__app_message_reply(data, size, &stats, &reply, &reply_len);
    nectar_free(reply);
    free(data);
    return 0;
}
