/*
 * test_splice.c - the splice(2) forwarder: bytes arrive exactly, in both
 * directions at once, half-close passes through, a reset ends the flow,
 * no fd outlives its flow, and free ends live flows; a promoted flow's
 * carryover goes out first and its start state (eof, done, reset) holds.
 * No root needed.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness/test.h"
#include "host/linux/splice.h"

struct done {
    atomic_int calls;
    uint64_t c2s, s2c;
    int error;
};

static void on_done(void *arg, uint64_t c2s, uint64_t s2c, int error)
{
    struct done *d = arg;
    d->c2s = c2s;
    d->s2c = s2c;
    d->error = error;
    atomic_fetch_add(&d->calls, 1);
}

static int done_called(void *arg)
{
    return atomic_load(&((struct done *)arg)->calls) > 0;
}

/* A connected loopback TCP pair: *outer is the connecting end. */
static void tcp_pair(int *outer, int *inner)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    CHECK_EQ(bind(l, (struct sockaddr *)&a, len), 0);
    CHECK_EQ(getsockname(l, (struct sockaddr *)&a, &len), 0);
    CHECK_EQ(listen(l, 1), 0);
    *outer = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_EQ(connect(*outer, (struct sockaddr *)&a, len), 0);
    *inner = accept(l, NULL, NULL);
    CHECK(*inner >= 0);
    close(l);
    fcntl(*inner, F_SETFL, fcntl(*inner, F_GETFL) | O_NONBLOCK);
}

/* app <-> [client_fd  splicer  egress_fd] <-> server */
struct rig {
    int app, client_fd, egress_fd, server;
};

static void rig_make(struct rig *r)
{
    tcp_pair(&r->app, &r->client_fd);
    tcp_pair(&r->server, &r->egress_fd);
}

static uint8_t pattern(uint64_t i, unsigned seed)
{
    return (uint8_t)((i * 2654435761u) >> 13) ^ (uint8_t)seed;
}

struct sender {
    int fd;
    uint64_t n;
    unsigned seed;
    uint64_t start; /* pattern offset of the first byte */
};

static void *send_then_halfclose(void *arg)
{
    struct sender *s = arg;
    uint8_t buf[65536];
    uint64_t off = 0;
    while (off < s->n) {
        size_t k = s->n - off < sizeof(buf) ? (size_t)(s->n - off) : sizeof(buf);
        for (size_t i = 0; i < k; i++)
            buf[i] = pattern(s->start + off + i, s->seed);
        ssize_t w = send(s->fd, buf, k, MSG_NOSIGNAL);
        CHECK_GT(w, 0);
        off += (uint64_t)w;
    }
    shutdown(s->fd, SHUT_WR);
    return NULL;
}

/* Read to EOF, checking every byte against the pattern; returns count. */
static uint64_t recv_check(int fd, unsigned seed)
{
    uint8_t buf[65536];
    uint64_t off = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        CHECK_GE(n, 0);
        if (n == 0)
            return off;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(off + (uint64_t)i, seed))
                NECTAR_FAIL_AT("byte %llu differs",
                               (unsigned long long)(off + (uint64_t)i));
        off += (uint64_t)n;
    }
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* 32 MiB up while 8 MiB come down, each side half-closing on its own. */
static void both_ways_exact(void)
{
    nectar_linux_splicer_t *s;
    CHECK_EQ(nectar__linux_splicer_new(&s, NULL), 0);
    struct rig r;
    rig_make(&r);
    struct done d = {0};
    CHECK_EQ(nectar__linux_splice_start(s, r.client_fd, r.egress_fd, on_done,
                                        &d),
             0);
    struct sender up = {r.app, 32u << 20, 1, 0},
                  down = {r.server, 8u << 20, 2, 0};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, send_then_halfclose, &up);
    pthread_create(&t2, NULL, send_then_halfclose, &down);
    CHECK_EQ(recv_check(r.server, 1), 32u << 20);
    CHECK_EQ(recv_check(r.app, 2), 8u << 20);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(nectar_test_poll(done_called, &d, 5000));
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.c2s, 32u << 20);
    CHECK_EQ(d.s2c, 8u << 20);
    CHECK_EQ(d.error, 0);
    close(r.app);
    close(r.server);
    nectar__linux_splicer_free(s);
}

/* The client half-closes first; the download keeps flowing after it. */
static void half_close_keeps_other_way(void)
{
    nectar_linux_splicer_t *s;
    CHECK_EQ(nectar__linux_splicer_new(&s, NULL), 0);
    struct rig r;
    rig_make(&r);
    struct done d = {0};
    CHECK_EQ(nectar__linux_splice_start(s, r.client_fd, r.egress_fd, on_done,
                                        &d),
             0);
    CHECK_EQ(send(r.app, "GET", 3, 0), 3);
    shutdown(r.app, SHUT_WR);
    char buf[8];
    CHECK_EQ(recv(r.server, buf, sizeof(buf), MSG_WAITALL), 3);
    CHECK_EQ(recv(r.server, buf, sizeof(buf), 0), 0); /* EOF passed on */
    CHECK_EQ(atomic_load(&d.calls), 0);
    struct sender down = {r.server, 4u << 20, 3, 0};
    send_then_halfclose(&down);
    CHECK_EQ(recv_check(r.app, 3), 4u << 20);
    CHECK(nectar_test_poll(done_called, &d, 5000));
    CHECK_EQ(d.c2s, 3);
    CHECK_EQ(d.error, 0);
    close(r.app);
    close(r.server);
    nectar__linux_splicer_free(s);
}

static void reset_ends_flow(void)
{
    nectar_linux_splicer_t *s;
    CHECK_EQ(nectar__linux_splicer_new(&s, NULL), 0);
    struct rig r;
    rig_make(&r);
    struct done d = {0};
    CHECK_EQ(nectar__linux_splice_start(s, r.client_fd, r.egress_fd, on_done,
                                        &d),
             0);
    CHECK_EQ(send(r.app, "x", 1, 0), 1);
    char c;
    CHECK_EQ(recv(r.server, &c, 1, MSG_WAITALL), 1);
    struct linger l = {1, 0};
    setsockopt(r.server, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(r.server);
    /* The app sees the flow end (reset, or EOF if the reset raced). */
    ssize_t n = recv(r.app, &c, 1, 0);
    CHECK_LE(n, 0);
    CHECK(nectar_test_poll(done_called, &d, 5000));
    CHECK_NE(d.error, 0);
    close(r.app);
    CHECK_EQ(nectar__linux_splicer_live(s), 0);
    nectar__linux_splicer_free(s);
}

/* 300 short flows: every fd (sockets, pipes) is gone afterwards. */
static void no_fd_outlives_flow(void)
{
    nectar_linux_splicer_t *s;
    CHECK_EQ(nectar__linux_splicer_new(&s, NULL), 0);
    int before = count_fds();
    static struct done d[300];
    for (int i = 0; i < 300; i++) {
        struct rig r;
        rig_make(&r);
        CHECK_EQ(nectar__linux_splice_start(s, r.client_fd, r.egress_fd,
                                            on_done, &d[i]),
                 0);
        CHECK_EQ(send(r.app, "ping", 4, 0), 4);
        shutdown(r.app, SHUT_WR);
        char buf[4];
        CHECK_EQ(recv(r.server, buf, 4, MSG_WAITALL), 4);
        CHECK_EQ(send(r.server, "pong", 4, 0), 4);
        shutdown(r.server, SHUT_WR);
        CHECK_EQ(recv(r.app, buf, 4, MSG_WAITALL), 4);
        CHECK(nectar_test_poll(done_called, &d[i], 5000));
        close(r.app);
        close(r.server);
    }
    CHECK_EQ(nectar__linux_splicer_live(s), 0);
    CHECK_EQ(count_fds(), before);
    nectar__linux_splicer_free(s);
}

static void free_ends_live_flows(void)
{
    nectar_linux_splicer_t *s;
    CHECK_EQ(nectar__linux_splicer_new(&s, NULL), 0);
    int before = count_fds();
    struct rig r;
    rig_make(&r);
    struct done d = {0};
    CHECK_EQ(nectar__linux_splice_start(s, r.client_fd, r.egress_fd, on_done,
                                        &d),
             0);
    CHECK_EQ(nectar__linux_splicer_live(s), 1);
    nectar__linux_splicer_free(s);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.error, NECTAR_ECANCELED);
    char c;
    CHECK_LE(recv(r.app, &c, 1, 0), 0);
    close(r.app);
    close(r.server);
    /* `before` counted the splicer's epoll and eventfd, now closed. */
    CHECK_EQ(count_fds(), before - 2);
}

/* Carryover: 100000 pattern bytes the host had read go out before the
 * 8 MiB that follow on the socket; the other way starts at EOF with 5
 * carried bytes and never reads the server. */
static void carry_first(void)
{
    nectar_linux_splicer_t *s;
    CHECK_EQ(nectar__linux_splicer_new(&s, NULL), 0);
    struct rig r;
    rig_make(&r);
    static uint8_t head[100000];
    for (size_t i = 0; i < sizeof(head); i++)
        head[i] = pattern(i, 4);
    nectar_linux_splice_carry_t carry[2] = {
        {.buf = head, .len = sizeof(head)},
        {.buf = (const uint8_t *)"tail!", .len = 5, .eof = true},
    };
    struct done d = {0};
    CHECK_EQ(nectar__linux_splice_start_carry(s, r.client_fd, r.egress_fd,
                                              carry, on_done, &d),
             0);
    char five[8];
    CHECK_EQ(recv(r.app, five, sizeof(five), MSG_WAITALL), 5);
    CHECK(memcmp(five, "tail!", 5) == 0);
    struct sender up = {r.app, 8u << 20, 4, sizeof(head)};
    pthread_t t;
    pthread_create(&t, NULL, send_then_halfclose, &up);
    CHECK_EQ(recv_check(r.server, 4), sizeof(head) + (8u << 20));
    pthread_join(t, NULL);
    CHECK(nectar_test_poll(done_called, &d, 5000));
    CHECK_EQ(d.c2s, sizeof(head) + (8u << 20));
    CHECK_EQ(d.s2c, 5);
    CHECK_EQ(d.error, 0);
    close(r.app);
    close(r.server);
    nectar__linux_splicer_free(s);
}

/* A direction handed over done gets its FIN again and moves nothing; a
 * carried reset goes out after its bytes and resets both sockets. */
static void carry_done_and_reset(void)
{
    nectar_linux_splicer_t *s;
    CHECK_EQ(nectar__linux_splicer_new(&s, NULL), 0);
    struct rig r;
    rig_make(&r);
    nectar_linux_splice_carry_t carry[2] = {
        {.done = true},
        {.buf = (const uint8_t *)"bye", .len = 3, .eof = true,
         .error = NECTAR_ECONNRESET},
    };
    struct done d = {0};
    CHECK_EQ(nectar__linux_splice_start_carry(s, r.client_fd, r.egress_fd,
                                              carry, on_done, &d),
             0);
    char buf[8];
    CHECK_EQ(recv(r.server, buf, sizeof(buf), 0), 0); /* the FIN */
    CHECK(nectar_test_poll(done_called, &d, 5000));
    CHECK_EQ(d.error, NECTAR_ECONNRESET);
    CHECK_EQ(d.s2c, 3);
    CHECK_EQ(d.c2s, 0);
    CHECK_EQ(recv(r.app, buf, 3, MSG_WAITALL), 3);
    CHECK(memcmp(buf, "bye", 3) == 0);
    errno = 0;
    CHECK_LE(recv(r.app, buf, 1, 0), 0); /* reset (or EOF if it raced) */
    close(r.app);
    close(r.server);
    /* error without eof is refused, and the fds are closed. */
    rig_make(&r);
    nectar_linux_splice_carry_t bad[2] = {{.error = NECTAR_EIO}, {0}};
    CHECK_EQ(nectar__linux_splice_start_carry(s, r.client_fd, r.egress_fd,
                                              bad, on_done, &d),
             NECTAR_EINVAL);
    close(r.app);
    close(r.server);
    nectar__linux_splicer_free(s);
}

static const nectar_test_t tests[] = {
    {"both_ways_exact", both_ways_exact},
    {"half_close_keeps_other_way", half_close_keeps_other_way},
    {"reset_ends_flow", reset_ends_flow},
    {"no_fd_outlives_flow", no_fd_outlives_flow},
    {"free_ends_live_flows", free_ends_live_flows},
    {"carry_first", carry_first},
    {"carry_done_and_reset", carry_done_and_reset},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
