/*
 * test_host_unit.c - unit tests of host core pieces without an engine: the
 * write pump's budget contract (first chunk always accepted, then PAUSED,
 * drain edge, CLOSED after close/cancel, FIFO bytes on the socket), the
 * egress option mapping onto socket options, and address text.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "harness/test.h"
#include "host/core/core_int.h"
#include "host/core/host.h"
#include "host/core/wpump.h"

/* ---- write pump --------------------------------------------------------- */

struct probe {
    int flush_posts, drain_edges, engine_edges, drained, errors;
    size_t written;
};

static void p_edge(struct wpump *p, bool engine, bool fwd)
{
    struct probe *pr = p->owner;
    (void)fwd;
    pr->drain_edges++;
    pr->engine_edges += engine;
}

static void p_written(struct wpump *p, size_t n)
{
    ((struct probe *)p->owner)->written += n;
}

static void p_error(struct wpump *p, int err)
{
    (void)err;
    ((struct probe *)p->owner)->errors++;
}

static void p_post(void *owner)
{
    ((struct probe *)owner)->flush_posts++;
}

static void p_drained(struct wpump *p)
{
    ((struct probe *)p->owner)->drained++;
}

static const struct wpump_ops probe_ops = {p_edge, p_written, p_error};

static void read_exact(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        CHECK_GT(r, 0);
        got += (size_t)r;
    }
}

static void test_wpump_budget(void)
{
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_pipe_t pipe;
    uv_pipe_init(&loop, &pipe, 0);
    CHECK_EQ(uv_pipe_open(&pipe, sv[0]), 0);

    struct probe pr = {0};
    struct wpump p;
    atomic_uint_fast64_t paused = 0;
    wpump_init(&p, 100, &pr, &probe_ops, p_post);
    p.paused_count = &paused;
    uint8_t big[1000], small[10];
    memset(big, 'a', sizeof(big));
    memset(small, 'b', sizeof(small));

    /* The first chunk is taken even though it is 10x the budget. */
    CHECK_EQ(wpump_enqueue(&p, big, sizeof(big)), RAMA_TCP_DELIVER_ACCEPTED);
    CHECK_EQ(pr.flush_posts, 1);
    /* Over budget now: refused, not taken. */
    CHECK_EQ(wpump_enqueue(&p, small, sizeof(small)), RAMA_TCP_DELIVER_PAUSED);
    CHECK_EQ(paused, 1);
    CHECK_EQ(p.pending, sizeof(big));
    /* Empty is always accepted. */
    CHECK_EQ(wpump_enqueue(&p, NULL, 0), RAMA_TCP_DELIVER_ACCEPTED);

    /* Still pending (not opened): nothing written, no edge. */
    wpump_flush(&p);
    CHECK_EQ(pr.drain_edges, 0);
    /* Open: the chunk goes to the socket and the drain edge fires at once,
     * before the write completes. */
    wpump_open(&p, (uv_stream_t *)&pipe);
    CHECK_EQ(pr.engine_edges, 1);
    CHECK_EQ(p.pending, 0);
    /* The replayed bytes are now accepted. */
    CHECK_EQ(wpump_enqueue(&p, small, sizeof(small)),
             RAMA_TCP_DELIVER_ACCEPTED);
    uv_run(&loop, UV_RUN_NOWAIT);
    wpump_flush(&p);
    for (int i = 0; i < 100 && pr.written < 1010; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK_EQ(pr.written, 1010);
    uint8_t got[1010];
    read_exact(sv[1], got, sizeof(got));
    CHECK_MEM_EQ(got, big, sizeof(big));
    CHECK_MEM_EQ(got + 1000, small, sizeof(small));

    /* Idle and open: the fast path writes on the calling thread, no loop
     * turn needed. */
    CHECK_EQ(wpump_enqueue(&p, small, 7), RAMA_TCP_DELIVER_ACCEPTED);
    CHECK(p.head == NULL);
    read_exact(sv[1], got, 7);
    CHECK_MEM_EQ(got, small, 7);
    CHECK_EQ(wpump_written(&p), 1017);

    /* Close when drained: fires once the queue is empty; then CLOSED. */
    CHECK_EQ(wpump_enqueue(&p, small, 5), RAMA_TCP_DELIVER_ACCEPTED);
    wpump_close_when_drained(&p, p_drained);
    for (int i = 0; i < 100 && pr.drained == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK_EQ(pr.drained, 1);
    CHECK_EQ(wpump_enqueue(&p, small, 5), RAMA_TCP_DELIVER_CLOSED);
    CHECK_EQ(pr.errors, 0);

    wpump_destroy(&p);
    uv_close((uv_handle_t *)&pipe, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&loop), 0);
    close(sv[1]);
}

static void test_wpump_cancel(void)
{
    struct probe pr = {0};
    struct wpump p;
    wpump_init(&p, 64, &pr, &probe_ops, p_post);
    uint8_t b[32] = {0};
    CHECK_EQ(wpump_enqueue(&p, b, sizeof(b)), RAMA_TCP_DELIVER_ACCEPTED);
    CHECK_EQ(wpump_enqueue(&p, b, sizeof(b)), RAMA_TCP_DELIVER_ACCEPTED);
    CHECK_EQ(wpump_enqueue(&p, b, sizeof(b)), RAMA_TCP_DELIVER_PAUSED);
    p.drained = p_drained;
    wpump_cancel(&p);
    /* Closed synchronously, bytes dropped, a stored drained callback
     * still fires exactly once so a teardown chain resolves. */
    CHECK_EQ(p.pending, 0);
    CHECK_EQ(pr.drained, 1);
    CHECK_EQ(wpump_enqueue(&p, b, sizeof(b)), RAMA_TCP_DELIVER_CLOSED);
    wpump_cancel(&p);
    CHECK_EQ(pr.drained, 1);
    /* close_when_drained on a closed pump calls back immediately. */
    wpump_close_when_drained(&p, p_drained);
    CHECK_EQ(pr.drained, 2);
    wpump_destroy(&p);
}

static void test_wpump_forwarder(void)
{
    struct probe pr = {0};
    struct wpump p;
    wpump_init(&p, 100, &pr, &probe_ops, p_post);
    struct wchunk *c = wchunk_new(60);
    c->len = 60;
    CHECK(!wpump_push(&p, c)); /* under budget: keep reading */
    c = wchunk_new(60);
    c->len = 60;
    CHECK(wpump_push(&p, c)); /* over: stop reading until the edge */
    CHECK(p.fwd_waiting);
    wpump_cancel(&p);
    c = wchunk_new(1);
    c->len = 1;
    CHECK(!wpump_push(&p, c)); /* closed: chunk freed, nothing queued */
    CHECK(p.head == NULL);
    wpump_destroy(&p);
}

/* ---- egress options ----------------------------------------------------- */

static int get_int(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof(v);
    CHECK_EQ(getsockopt(fd, level, name, &v, &l), 0);
    return v;
}

static void test_egress_defaults(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_GT(nectar__host_apply_egress_options(fd, NULL), 0);
    CHECK_EQ(get_int(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_KEEPIDLE), 15);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_KEEPINTVL), 5);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_KEEPCNT), 3);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_NODELAY), 1);
    close(fd);
}

static void test_egress_options(void)
{
    RamaTcpEgressConnectOptions o;
    memset(&o, 0, sizeof(o));
    o.tcp_keepalive_enabled = true;
    o.has_tcp_keepalive_idle_secs = true;
    o.tcp_keepalive_idle_secs = 40;
    o.tcp_keepalive_interval_secs = 99; /* has_ false: must not leak */
    o.tcp_no_delay = false;
    o.has_tcp_maximum_segment_size = true;
    o.tcp_maximum_segment_size = 1200;
    o.has_tcp_connection_drop_time_secs = true;
    o.tcp_connection_drop_time_secs = 7;
    o.has_tcp_no_push = true;
    o.tcp_no_push = true;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    nectar__host_apply_egress_options(fd, &o);
    CHECK_EQ(get_int(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_KEEPIDLE), 40);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_KEEPINTVL), 5);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_KEEPCNT), 3);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_NODELAY), 0);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_MAXSEG), 1200);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 7000);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_CORK), 1);
    close(fd);

    memset(&o, 0, sizeof(o)); /* keepalive explicitly off */
    o.tcp_no_delay = true;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    nectar__host_apply_egress_options(fd, &o);
    CHECK_EQ(get_int(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    CHECK_EQ(get_int(fd, IPPROTO_TCP, TCP_NODELAY), 1);
    close(fd);
}

static void test_addr_text(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "10.1.2.3", &a.sin_addr);
    struct sockaddr_in6 b = {.sin6_family = AF_INET6,
                             .sin6_port = htons(443)};
    inet_pton(AF_INET6, "fe80::1", &b.sin6_addr);
    char buf[80];
    CHECK_STR_EQ(nectar__host_addr_text((struct sockaddr *)&a, buf,
                                        sizeof(buf)),
                 "10.1.2.3:80");
    CHECK_STR_EQ(nectar__host_addr_text((struct sockaddr *)&b, buf,
                                        sizeof(buf)),
                 "[fe80::1]:443");
    CHECK_STR_EQ(nectar__host_addr_text(NULL, buf, sizeof(buf)), "-");
}

/* ---- admission and the latency breaker ---------------------------------- */

static int no_send(void *ctx, void *flow_ctx, const uint8_t *buf, size_t len,
                   const struct sockaddr *source)
{
    (void)ctx;
    (void)flow_ctx;
    (void)buf;
    (void)len;
    (void)source;
    return 0;
}

static void test_admission_breaker(void)
{
    const char *cfg = "{\"proxy\":{\"tcp_start_in_flight_hard_cap\":10,"
                      "\"tcp_start_in_flight_soft_cap\":2,"
                      "\"tcp_start_latency_breaker_p95_ms\":1000,"
                      "\"tcp_start_latency_breaker_close_p95_ms\":500,"
                      "\"tcp_breaker_connect_timeout_ms\":3000,"
                      "\"tcp_pressure_connect_timeout_ms\":5000}}";
    RamaBytesView v = {(const uint8_t *)cfg, strlen(cfg)};
    RamaTransparentProxyEngine *e =
        rama_transparent_proxy_engine_new_with_config(v);
    CHECK(e != NULL);
    nectar_host_hooks_t hooks = {.udp_send = no_send};
    nectar_host_t *h;
    nectar_error_t err = {0};
    CHECK_EQ(nectar__host_new(e, &hooks, NULL, &h, &err), 0);
    char why[128];
    nectar_host_stats_t st;
    uint64_t now = nectar_test_now_ms();

    for (int i = 0; i < 3; i++)
        CHECK(nectar__host_admit(h, why, sizeof(why)));
    /* At the soft cap: the pressure clamp, never raising a short one. */
    CHECK_EQ(nectar__host_connect_timeout(h, 10000), 5000);
    CHECK_EQ(nectar__host_connect_timeout(h, 1000), 1000);
    /* A 2 s start with 2 still in flight: p95 >= 1000 opens the breaker. */
    nectar__host_admit_finish(h, now - 2000, ADM_READY);
    nectar__host_stats(h, &st);
    CHECK(st.breaker_open);
    CHECK_EQ(st.tcp_starts_in_flight, 2);
    CHECK_EQ(nectar__host_connect_timeout(h, 10000), 3000);
    /* Breaker open and at the soft cap: refused. */
    CHECK(!nectar__host_admit(h, why, sizeof(why)));
    CHECK(strstr(why, "latency breaker open") != NULL);
    nectar__host_stats(h, &st);
    CHECK_EQ(st.admission_rejected, 1);
    nectar__host_admit_finish(h, nectar_test_now_ms(), ADM_FAILED);
    nectar__host_admit_finish(h, nectar_test_now_ms(), ADM_TIMEOUT);
    /* Under the soft cap the breaker admits; fast starts bring p95 down
     * and close it. */
    for (int i = 0; i < 40; i++) {
        CHECK(nectar__host_admit(h, why, sizeof(why)));
        nectar__host_admit_finish(h, nectar_test_now_ms(), ADM_READY);
    }
    nectar__host_stats(h, &st);
    CHECK(!st.breaker_open);
    CHECK_EQ(nectar__host_connect_timeout(h, 10000), 10000);
    /* The hard cap. */
    for (int i = 0; i < 10; i++)
        CHECK(nectar__host_admit(h, why, sizeof(why)));
    CHECK(!nectar__host_admit(h, why, sizeof(why)));
    CHECK(strstr(why, "hard start cap reached") != NULL);
    for (int i = 0; i < 10; i++)
        nectar__host_admit_finish(h, nectar_test_now_ms(), ADM_FAILED);
    nectar__host_free(h);
}

static const nectar_test_t tests[] = {
    {"wpump_budget", test_wpump_budget},
    {"wpump_cancel", test_wpump_cancel},
    {"wpump_forwarder", test_wpump_forwarder},
    {"egress_defaults", test_egress_defaults},
    {"egress_options", test_egress_options},
    {"addr_text", test_addr_text},
    {"admission_breaker", test_admission_breaker},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
