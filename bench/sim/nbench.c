/*
 * nbench.c - load generator and peer for the sim benchmarks
 * (bench/sim/run.sh).  Every mode prints one "key=value ..." line.
 *
 *   nbench server PORT                 epoll echo/sink server (2 threads)
 *   nbench stream ADDR SECONDS FLOWS   upload throughput to the sink
 *   nbench pingpong ADDR COUNT         1-byte round trips, p50/p99 in us
 *   nbench short ADDR SECONDS THREADS  connect/1-byte echo/close per second
 *   nbench idle ADDR FLOWS PID         RSS growth of PID per idle flow
 *   nbench engine-idle FLOWS           engine-only memory per idle session
 *
 * ADDR is 127.0.0.1:port.  The first byte a client sends picks the
 * server's behaviour: 'E' echo, 'S' sink.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nectar/ne_abi.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

/* A non-negative decimal argument; exits on garbage. */
static int num(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > 1000000000) {
        fprintf(stderr, "nbench: bad number %s\n", s);
        exit(2);
    }
    return (int)v;
}

static struct sockaddr_in parse(const char *text)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof(host)) {
        fprintf(stderr, "nbench: bad address %s\n", text);
        exit(2);
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    inet_pton(AF_INET, host, &a.sin_addr);
    a.sin_port = htons((uint16_t)num(colon + 1));
    return a;
}

static int dial(const struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)a, sizeof(*a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- server ------------------------------------------------------------- */

struct sconn {
    int fd;
    char mode;
    char *pend; /* echo bytes not yet written */
    size_t pend_len;
};

static void server_drop(int ep, struct sconn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pend);
    free(c);
}

/* Returns false when the connection is done. */
static bool server_io(int ep, struct sconn *c, char *buf, size_t cap)
{
    if (c->pend_len > 0) {
        ssize_t w = send(c->fd, c->pend, c->pend_len, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN;
        memmove(c->pend, c->pend + w, c->pend_len - (size_t)w);
        c->pend_len -= (size_t)w;
        if (c->pend_len > 0)
            return true;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    for (int i = 0; i < 16; i++) {
        ssize_t r = recv(c->fd, buf, cap, 0);
        if (r == 0)
            return false;
        if (r < 0)
            return errno == EAGAIN;
        size_t off = 0;
        if (c->mode == 0) {
            c->mode = buf[0];
            off = 1;
        }
        if (c->mode != 'E' || (size_t)r == off)
            continue;
        ssize_t w = send(c->fd, buf + off, (size_t)r - off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
            return false;
        size_t done = w < 0 ? 0 : (size_t)w;
        if (done < (size_t)r - off) {
            c->pend_len = (size_t)r - off - done;
            c->pend = malloc(c->pend_len);
            memcpy(c->pend, buf + off + done, c->pend_len);
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return true;
        }
    }
    return true;
}

static void *server_thread(void *arg)
{
    int port = *(int *)arg;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(lfd, 4096) != 0) {
        perror("nbench server");
        exit(1);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static __thread char buf[65536];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct sconn *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
                               sizeof(one));
                    c = calloc(1, sizeof(*c));
                    c->fd = fd;
                    struct epoll_event e2 = {.events = EPOLLIN,
                                             .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            if (!server_io(ep, c, buf, sizeof(buf)))
                server_drop(ep, c);
        }
    }
    return NULL;
}

static int cmd_server(int port)
{
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, server_thread, &port);
    printf("server=ready port=%d\n", port);
    fflush(stdout);
    pthread_join(t[0], NULL);
    return 0;
}

/* ---- stream ------------------------------------------------------------- */

struct stream_job {
    struct sockaddr_in a;
    double until;
    uint64_t bytes;
};

static void *stream_main(void *arg)
{
    struct stream_job *j = arg;
    int fd = dial(&j->a);
    if (fd < 0)
        return NULL;
    static __thread char buf[131072];
    memset(buf, 'x', sizeof(buf));
    buf[0] = 'S';
    while (now_s() < j->until) {
        ssize_t w = send(fd, buf, sizeof(buf), MSG_NOSIGNAL);
        if (w <= 0)
            break;
        j->bytes += (uint64_t)w;
        buf[0] = 'x';
    }
    close(fd);
    return NULL;
}

static int cmd_stream(const char *addr, double secs, int flows)
{
    struct stream_job *jobs = calloc((size_t)flows, sizeof(*jobs));
    pthread_t *t = calloc((size_t)flows, sizeof(*t));
    double t0 = now_s();
    for (int i = 0; i < flows; i++) {
        jobs[i].a = parse(addr);
        jobs[i].until = t0 + secs;
        pthread_create(&t[i], NULL, stream_main, &jobs[i]);
    }
    uint64_t total = 0;
    for (int i = 0; i < flows; i++) {
        pthread_join(t[i], NULL);
        total += jobs[i].bytes;
    }
    double el = now_s() - t0;
    printf("stream flows=%d mbit_s=%.1f\n", flows, (double)total * 8 / el / 1e6);
    return 0;
}

/* ---- ping-pong latency -------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_pingpong(const char *addr, int count)
{
    struct sockaddr_in a = parse(addr);
    int fd = dial(&a);
    if (fd < 0 || send_all(fd, "E", 1) != 0) {
        fprintf(stderr, "nbench: connect failed\n");
        return 1;
    }
    double *lat = calloc((size_t)count, sizeof(double));
    char c = 'p';
    for (int i = -100; i < count; i++) { /* 100 warm-up rounds */
        double t0 = now_s();
        if (send_all(fd, &c, 1) != 0 || recv(fd, &c, 1, MSG_WAITALL) != 1) {
            fprintf(stderr, "nbench: ping-pong broke at %d\n", i);
            return 1;
        }
        if (i >= 0)
            lat[i] = (now_s() - t0) * 1e6;
    }
    close(fd);
    qsort(lat, (size_t)count, sizeof(double), cmp_double);
    printf("pingpong n=%d p50_us=%.1f p99_us=%.1f\n", count,
           lat[count / 2], lat[(int)(count * 0.99)]);
    return 0;
}

/* ---- short flows -------------------------------------------------------- */

struct short_job {
    struct sockaddr_in a;
    double until;
    uint64_t flows, failed;
};

static void *short_main(void *arg)
{
    struct short_job *j = arg;
    while (now_s() < j->until) {
        int fd = dial(&j->a);
        char c;
        if (fd < 0 || send_all(fd, "Ex", 2) != 0 ||
            recv(fd, &c, 1, MSG_WAITALL) != 1) {
            j->failed++;
        } else {
            j->flows++;
        }
        if (fd >= 0) {
            /* Half-close, wait for the server's close, so the flow really
             * ends before the next one starts. */
            shutdown(fd, SHUT_WR);
            while (recv(fd, &c, 1, 0) > 0)
                ;
            close(fd);
        }
    }
    return NULL;
}

static int cmd_short(const char *addr, double secs, int threads)
{
    struct short_job *jobs = calloc((size_t)threads, sizeof(*jobs));
    pthread_t *t = calloc((size_t)threads, sizeof(*t));
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        jobs[i].a = parse(addr);
        jobs[i].until = t0 + secs;
        pthread_create(&t[i], NULL, short_main, &jobs[i]);
    }
    uint64_t flows = 0, failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        flows += jobs[i].flows;
        failed += jobs[i].failed;
    }
    double el = now_s() - t0;
    printf("short flows_s=%.0f failed=%llu\n", (double)flows / el,
           (unsigned long long)failed);
    return 0;
}

/* ---- idle flows memory -------------------------------------------------- */

static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    }
    if (f != NULL)
        fclose(f);
    return kib;
}

static int cmd_idle(const char *addr, int flows, int pid)
{
    struct sockaddr_in a = parse(addr);
    int *fds = calloc((size_t)flows, sizeof(int));
    long before = rss_kib(pid);
    int ok = 0;
    for (int i = 0; i < flows; i++) {
        fds[i] = dial(&a);
        char c;
        /* One round trip proves the flow is intercepted and active. */
        if (fds[i] >= 0 && send_all(fds[i], "Ex", 2) == 0 &&
            recv(fds[i], &c, 1, MSG_WAITALL) == 1)
            ok++;
    }
    usleep(500000);
    long after = rss_kib(pid);
    printf("idle flows=%d ok=%d rss_before_kib=%ld rss_after_kib=%ld "
           "bytes_per_flow=%.0f\n",
           flows, ok, before, after,
           ok > 0 ? (double)(after - before) * 1024 / ok : 0.0);
    for (int i = 0; i < flows; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
    }
    return 0;
}

/* ---- engine-only idle memory -------------------------------------------- */

static RamaTcpDeliverStatus e_bytes(void *ctx, RamaBytesView b)
{
    (void)ctx;
    (void)b;
    return RAMA_TCP_DELIVER_ACCEPTED;
}

static void e_void(void *ctx)
{
    (void)ctx;
}

static int cmd_engine_idle(int flows)
{
    rama_transparent_proxy_initialize(NULL);
    RamaBytesView cfg = {(const uint8_t *)"{}", 2};
    RamaTransparentProxyEngine *e =
        rama_transparent_proxy_engine_new_with_config(cfg);
    if (e == NULL) {
        fprintf(stderr, "nbench: engine_new failed\n");
        return 1;
    }
    RamaTransparentProxyTcpSession **s = calloc((size_t)flows, sizeof(*s));
    RamaTransparentProxyFlowMeta m;
    memset(&m, 0, sizeof(m));
    m.protocol = RAMA_FLOW_PROTOCOL_TCP;
    m.remote_endpoint.host_utf8 = "127.0.0.1";
    m.remote_endpoint.host_utf8_len = 9;
    m.remote_endpoint.port = 9;
    RamaTransparentProxyTcpSessionCallbacks cb = {NULL, e_bytes, e_void,
                                                  e_void};
    RamaTransparentProxyTcpEgressCallbacks ecb = {NULL, e_bytes, e_void,
                                                  e_void};
    /* Warm the allocator and the engine threads with one session. */
    RamaTransparentProxyTcpSessionResult w =
        rama_transparent_proxy_engine_new_tcp_session(e, &m, cb);
    rama_transparent_proxy_tcp_session_activate(w.session, ecb);
    usleep(200000);
    long before = rss_kib(getpid());
    int ok = 0;
    for (int i = 0; i < flows; i++) {
        RamaTransparentProxyTcpSessionResult r =
            rama_transparent_proxy_engine_new_tcp_session(e, &m, cb);
        s[i] = r.session;
        if (s[i] != NULL) {
            rama_transparent_proxy_tcp_session_activate(s[i], ecb);
            ok++;
        }
    }
    usleep(500000);
    long after = rss_kib(getpid());
    printf("engine-idle sessions=%d rss_before_kib=%ld rss_after_kib=%ld "
           "bytes_per_flow=%.0f\n",
           ok, before, after,
           ok > 0 ? (double)(after - before) * 1024 / ok : 0.0);
    for (int i = 0; i < flows; i++)
        rama_transparent_proxy_tcp_session_free(s[i]);
    rama_transparent_proxy_tcp_session_free(w.session);
    rama_transparent_proxy_engine_stop(e, 0);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    if (argc >= 3 && strcmp(argv[1], "server") == 0)
        return cmd_server(num(argv[2]));
    if (argc >= 5 && strcmp(argv[1], "stream") == 0)
        return cmd_stream(argv[2], atof(argv[3]), num(argv[4]));
    if (argc >= 4 && strcmp(argv[1], "pingpong") == 0)
        return cmd_pingpong(argv[2], num(argv[3]));
    if (argc >= 5 && strcmp(argv[1], "short") == 0)
        return cmd_short(argv[2], atof(argv[3]), num(argv[4]));
    if (argc >= 5 && strcmp(argv[1], "idle") == 0)
        return cmd_idle(argv[2], num(argv[3]), num(argv[4]));
    if (argc >= 3 && strcmp(argv[1], "engine-idle") == 0)
        return cmd_engine_idle(num(argv[2]));
    fprintf(stderr, "usage: see the comment at the top of nbench.c\n");
    return 2;
}
