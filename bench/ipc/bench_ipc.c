/*
 * bench_ipc.c - small request/reply calls per second and latency of
 * nectar IPC, against a raw SOCK_SEQPACKET ping-pong measured in the same
 * run (two threads, blocking send/recv of a 32-byte packet: the floor any
 * request/reply over this socket type can reach).
 *
 *   bench_ipc [seconds]   (default 3 per measurement)
 *
 * Prints one line per mode: calls/s, p50 and p99 latency in microseconds,
 * and the ratio of calls/s to the raw baseline.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nectar/ipc.h"

#define MAX_SAMPLES (1u << 22)

struct result {
    double calls_per_s;
    double p50_us, p99_us;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static struct result summarize(uint32_t *lat, size_t n, uint64_t elapsed)
{
    struct result r = {0};
    if (n == 0)
        return r;
    qsort(lat, n, sizeof(*lat), cmp_u32);
    r.calls_per_s = (double)n / ((double)elapsed / 1e9);
    r.p50_us = lat[n / 2] / 1e3;
    r.p99_us = lat[(n * 99) / 100] / 1e3;
    return r;
}

/* Calls one_call(ctx) for `secs` seconds, recording each latency. */
static struct result measure(int (*one_call)(void *), void *ctx, int secs)
{
    uint32_t *lat = malloc(sizeof(uint32_t) * MAX_SAMPLES);
    size_t n = 0;
    /* Warm-up: connection set-up and first allocations are not the
     * steady state being measured. */
    for (int i = 0; i < 1000; i++)
        one_call(ctx);
    uint64_t start = now_ns(), end = start + (uint64_t)secs * 1000000000u;
    uint64_t t = start;
    while (t < end && n < MAX_SAMPLES) {
        if (one_call(ctx) != 0) {
            fprintf(stderr, "bench_ipc: call failed\n");
            exit(1);
        }
        uint64_t t2 = now_ns();
        lat[n++] = (uint32_t)(t2 - t);
        t = t2;
    }
    struct result r = summarize(lat, n, t - start);
    free(lat);
    return r;
}

/* ---- raw SOCK_SEQPACKET ping-pong ------------------------------------ */

static void *raw_server(void *arg)
{
    int fd = *(int *)arg;
    char buf[256];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) < 0)
            break;
    }
    return NULL;
}

static int raw_call(void *ctx)
{
    int fd = *(int *)ctx;
    char buf[256];
    memset(buf, 'p', 32);
    if (send(fd, buf, 32, MSG_NOSIGNAL) != 32)
        return -1;
    return recv(fd, buf, sizeof(buf), 0) == 32 ? 0 : -1;
}

static struct result bench_raw(int secs)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0)
        exit(1);
    pthread_t t;
    pthread_create(&t, NULL, raw_server, &sv[1]);
    struct result r = measure(raw_call, &sv[0], secs);
    shutdown(sv[0], SHUT_RDWR);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
    return r;
}

/* ---- nectar IPC ------------------------------------------------------ */

static void echo_message(nectar_ipc_conn_t *c, nectar_ipc_message_t *m,
                         void *ctx)
{
    (void)c;
    (void)ctx;
    nectar_ipc_message_reply(m, nectar_ipc_message_body(m), NULL);
}

static int route_ping(void *ctx, const nectar_ipc_obj_t *arg,
                      nectar_ipc_obj_t **out, nectar_error_t *err)
{
    (void)ctx;
    (void)err;
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    nectar_ipc_dict_set(r, "value",
                        nectar_ipc_retain(nectar_ipc_dict_get(arg, "value")),
                        NULL);
    *out = r;
    return 0;
}

struct nectar_ctx {
    nectar_ipc_conn_t *conn;
    nectar_ipc_obj_t *msg; /* for the plain mode */
    nectar_ipc_obj_t *arg; /* for the router mode */
};

static int plain_call(void *p)
{
    struct nectar_ctx *c = p;
    nectar_ipc_obj_t *reply = NULL;
    int rc = nectar_ipc_send_sync(c->conn, c->msg, 0, &reply, NULL);
    nectar_ipc_release(reply);
    return rc;
}

static int router_call(void *p)
{
    struct nectar_ctx *c = p;
    nectar_ipc_obj_t *res = NULL;
    int rc = nectar_ipc_call(c->conn, "ping:withReply:", c->arg, 0, &res,
                             NULL, NULL);
    nectar_ipc_release(res);
    return rc;
}

static struct result bench_nectar(int secs, bool router)
{
    char name[64];
    snprintf(name, sizeof(name), "nectar-bench.%d.%d", (int)getpid(),
             router);
    nectar_ipc_router_t *r = nectar_ipc_router_new();
    nectar_ipc_router_add(r, "ping:withReply:", route_ping, NULL);
    nectar_ipc_listener_config_t cfg = {
        .service_name = name,
        .on_message = router ? nectar_ipc_router_on_message : echo_message,
        .ctx = r,
    };
    nectar_ipc_listener_t *ls = NULL;
    nectar_error_t err = {0};
    if (nectar_ipc_listen(&cfg, &ls, &err) != 0) {
        fprintf(stderr, "bench_ipc: listen: %s\n", err.message);
        exit(1);
    }
    nectar_ipc_client_config_t ccfg = {.service_name = name};
    struct nectar_ctx c = {0};
    nectar_ipc_connect(&ccfg, &c.conn, NULL);
    /* About the size of a small control call: 32 bytes of payload. */
    c.msg = nectar_ipc_dict();
    nectar_ipc_dict_set(c.msg, "op", nectar_ipc_string("ping"), NULL);
    nectar_ipc_dict_set(c.msg, "value", nectar_ipc_int64(12345), NULL);
    c.arg = nectar_ipc_dict();
    nectar_ipc_dict_set(c.arg, "value", nectar_ipc_int64(12345), NULL);
    struct result res = measure(router ? router_call : plain_call, &c, secs);
    nectar_ipc_release(c.msg);
    nectar_ipc_release(c.arg);
    nectar_ipc_conn_release(c.conn);
    nectar_ipc_listener_close(ls);
    nectar_ipc_router_free(r);
    return res;
}

static void print(const char *mode, struct result r, double base)
{
    printf("%-34s %10.0f calls/s  p50 %7.1f us  p99 %7.1f us  %5.2fx raw\n",
           mode, r.calls_per_s, r.p50_us, r.p99_us,
           base > 0 ? r.calls_per_s / base : 1.0);
}

int main(int argc, char **argv)
{
    int secs = argc > 1 ? atoi(argv[1]) : 3;
    if (secs <= 0)
        secs = 3;
    struct result raw = bench_raw(secs);
    struct result plain = bench_nectar(secs, false);
    struct result routed = bench_nectar(secs, true);
    print("raw SOCK_SEQPACKET ping-pong", raw, raw.calls_per_s);
    print("nectar_ipc_send_sync (dict echo)", plain, raw.calls_per_s);
    print("nectar_ipc_call ($selector route)", routed, raw.calls_per_s);
    return 0;
}
