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

/* One mode's samples, gathered over interleaved rounds so that load from
 * other processes on the machine hits every mode alike. */
struct mode {
    const char *name;
    int (*one_call)(void *);
    void *ctx;
    uint32_t *lat;
    size_t n;
    uint64_t busy_ns;
    double round_rate[64];
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

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs one round of `ns` nanoseconds for mode m. */
static void run_round(struct mode *m, uint64_t ns, int round)
{
    uint64_t start = now_ns(), end = start + ns, t = start;
    size_t before = m->n;
    while (t < end && m->n < MAX_SAMPLES) {
        if (m->one_call(m->ctx) != 0) {
            fprintf(stderr, "bench_ipc: %s: call failed\n", m->name);
            exit(1);
        }
        uint64_t t2 = now_ns();
        m->lat[m->n++] = (uint32_t)(t2 - t);
        t = t2;
    }
    m->busy_ns += t - start;
    m->round_rate[round] =
        (double)(m->n - before) / ((double)(t - start) / 1e9);
}

static struct result summarize(struct mode *m)
{
    struct result r = {0};
    if (m->n == 0)
        return r;
    qsort(m->lat, m->n, sizeof(*m->lat), cmp_u32);
    r.calls_per_s = (double)m->n / ((double)m->busy_ns / 1e9);
    r.p50_us = m->lat[m->n / 2] / 1e3;
    r.p99_us = m->lat[(m->n * 99) / 100] / 1e3;
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
    nectar_ipc_dict_set(
        r, "value", nectar_ipc_retain(nectar_ipc_dict_get(arg, "value")), NULL);
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
    int rc = nectar_ipc_call(c->conn, "ping:withReply:", c->arg, 0, &res, NULL,
                             NULL);
    nectar_ipc_release(res);
    return rc;
}

struct nectar_side {
    nectar_ipc_router_t *router;
    nectar_ipc_listener_t *ls;
    struct nectar_ctx c;
};

static void nectar_setup(struct nectar_side *n, bool router)
{
    char name[64];
    snprintf(name, sizeof(name), "nectar-bench.%d.%d", (int)getpid(), router);
    n->router = nectar_ipc_router_new();
    nectar_ipc_router_add(n->router, "ping:withReply:", route_ping, NULL);
    nectar_ipc_listener_config_t cfg = {
        .service_name = name,
        .on_message = router ? nectar_ipc_router_on_message : echo_message,
        .ctx = n->router,
    };
    nectar_error_t err = {0};
    if (nectar_ipc_listen(&cfg, &n->ls, &err) != 0) {
        fprintf(stderr, "bench_ipc: listen: %s\n", err.message);
        exit(1);
    }
    nectar_ipc_client_config_t ccfg = {.service_name = name};
    nectar_ipc_connect(&ccfg, &n->c.conn, NULL);
    /* About the size of a small control call. */
    n->c.msg = nectar_ipc_dict();
    nectar_ipc_dict_set(n->c.msg, "op", nectar_ipc_string("ping"), NULL);
    nectar_ipc_dict_set(n->c.msg, "value", nectar_ipc_int64(12345), NULL);
    n->c.arg = nectar_ipc_dict();
    nectar_ipc_dict_set(n->c.arg, "value", nectar_ipc_int64(12345), NULL);
}

static void nectar_teardown(struct nectar_side *n)
{
    nectar_ipc_release(n->c.msg);
    nectar_ipc_release(n->c.arg);
    nectar_ipc_conn_release(n->c.conn);
    nectar_ipc_listener_close(n->ls);
    nectar_ipc_router_free(n->router);
}

static double median_ratio(const struct mode *m, const struct mode *base,
                           int rounds)
{
    double r[64];
    for (int i = 0; i < rounds; i++)
        r[i] = base->round_rate[i] > 0 ? m->round_rate[i] / base->round_rate[i]
                                       : 0;
    qsort(r, (size_t)rounds, sizeof(r[0]), cmp_dbl);
    return r[rounds / 2];
}

/* Ratios against raw: total calls/s, the median of per-round calls/s
 * ratios (robust to load bursts from other processes), and the inverse
 * ratio of median latencies. */
static void print(const struct mode *m, struct mode *base, int rounds)
{
    struct mode tmp = *m;
    struct result r = summarize(&tmp);
    struct result b = summarize(base);
    printf("%-34s %9.0f calls/s  p50 %6.1f us  p99 %7.1f us  "
           "x raw: %4.2f calls/s, %4.2f median round, %4.2f p50\n",
           m->name, r.calls_per_s, r.p50_us, r.p99_us,
           r.calls_per_s / b.calls_per_s, median_ratio(m, base, rounds),
           b.p50_us / r.p50_us);
}

int main(int argc, char **argv)
{
    int secs = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 3;
    if (secs <= 0)
        secs = 3;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0)
        return 1;
    pthread_t t;
    pthread_create(&t, NULL, raw_server, &sv[1]);
    struct nectar_side plain, routed;
    nectar_setup(&plain, false);
    nectar_setup(&routed, true);
    struct mode modes[3] = {
        {.name = "raw SOCK_SEQPACKET ping-pong",
         .one_call = raw_call,
         .ctx = &sv[0]},
        {.name = "nectar_ipc_send_sync (dict echo)",
         .one_call = plain_call,
         .ctx = &plain.c},
        {.name = "nectar_ipc_call ($selector route)",
         .one_call = router_call,
         .ctx = &routed.c},
    };
    for (int i = 0; i < 3; i++) {
        modes[i].lat = malloc(sizeof(uint32_t) * MAX_SAMPLES);
        for (int w = 0; w < 2000; w++)
            modes[i].one_call(modes[i].ctx); /* warm-up */
    }
    /* Rounds of 100 ms, modes interleaved. */
    int rounds = secs * 10 / 3;
    if (rounds > 64)
        rounds = 64;
    if (rounds < 3)
        rounds = 3;
    /* BENCH_IPC_ONLY=0|1|2 runs one mode alone (for profiling). */
    const char *only = getenv("BENCH_IPC_ONLY");
    int pick = only ? (int)strtol(only, NULL, 10) : -1;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 3; i++) {
            if (pick < 0 || pick == i || i == 0)
                run_round(&modes[i],
                          pick == i || pick < 0 ? 100000000u : 1000000u, r);
        }
    }
    for (int i = 0; i < 3; i++)
        print(&modes[i], &modes[0], rounds);
    nectar_teardown(&plain);
    nectar_teardown(&routed);
    shutdown(sv[0], SHUT_RDWR);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
    for (int i = 0; i < 3; i++)
        free(modes[i].lat);
    return 0;
}
