/* helpers.c - test peers for tests/host (see helpers.h). */
#include "helpers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- pattern ------------------------------------------------------------ */

uint8_t pat_byte(uint32_t seed, uint64_t i)
{
    uint64_t x = (i / 8 + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 17);
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return (uint8_t)(x >> ((i % 8) * 8));
}

void pat_fill(uint32_t seed, uint64_t off, uint8_t *buf, size_t n)
{
    for (size_t k = 0; k < n; k++)
        buf[k] = pat_byte(seed, off + k);
}

static bool pat_check(uint32_t seed, uint64_t off, const uint8_t *buf,
                      size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (buf[k] != pat_byte(seed, off + k))
            return false;
    }
    return true;
}

/* ---- small socket helpers ----------------------------------------------- */

void loop_addr(int family, uint16_t port, char *buf, size_t n)
{
    if (family == AF_INET6)
        snprintf(buf, n, "[::1]:%u", port);
    else
        snprintf(buf, n, "127.0.0.1:%u", port);
}

static socklen_t make_loop(int family, uint16_t port,
                           struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons(port);
        return sizeof(*a);
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons(port);
    return sizeof(*a);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r == 0)
            return -EPIPE;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

void dump_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char path[300], target[256];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = '\0';
            fprintf(stderr, "fd %s -> %s\n", e->d_name, target);
        }
    }
    if (d != NULL)
        closedir(d);
}

int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the DIR's own fd */
}

/* ---- TCP test server ---------------------------------------------------- */

#define RESULTS 256
#define BUF 65536

struct test_server {
    int fd;
    pthread_t thread;
    atomic_bool stop;
    atomic_int live;
    pthread_mutex_t lock;
    struct {
        uint32_t seed;
        uint64_t count;
        bool ok, set;
    } results[RESULTS];
};

struct conn {
    struct test_server *s;
    int fd;
};

/* Read to EOF checking pattern(seed); returns the count, *ok. */
static uint64_t sink(int fd, uint32_t seed, bool *ok)
{
    uint8_t *buf = malloc(BUF);
    uint64_t total = 0;
    *ok = true;
    for (;;) {
        ssize_t r = recv(fd, buf, BUF, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r < 0)
                *ok = false;
            free(buf);
            return total;
        }
        if (!pat_check(seed, total, buf, (size_t)r))
            *ok = false;
        total += (uint64_t)r;
    }
}

static void source(int fd, uint32_t seed, uint64_t n)
{
    uint8_t *buf = malloc(BUF);
    uint64_t off = 0;
    while (off < n) {
        size_t k = n - off < BUF ? (size_t)(n - off) : BUF;
        pat_fill(seed, off, buf, k);
        if (write_all(fd, buf, k) != 0)
            break;
        off += k;
    }
    free(buf);
}

static void echo(int fd)
{
    uint8_t *buf = malloc(BUF);
    for (;;) {
        ssize_t r = recv(fd, buf, BUF, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || write_all(fd, buf, (size_t)r) != 0)
            break;
    }
    free(buf);
}

static void record(struct test_server *s, uint32_t seed, uint64_t count,
                   bool ok)
{
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < RESULTS; i++) {
        if (!s->results[i].set) {
            s->results[i].seed = seed;
            s->results[i].count = count;
            s->results[i].ok = ok;
            s->results[i].set = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    uint32_t hdr[4];
    bool ok;
    if (read_full(c->fd, (uint8_t *)hdr, sizeof(hdr)) == 0) {
        uint32_t mode = hdr[0], seed = hdr[1];
        uint64_t n;
        memcpy(&n, &hdr[2], sizeof(n));
        if (mode == M_DOWNLOAD) {
            source(c->fd, seed, n);
            shutdown(c->fd, SHUT_WR);
            sink(c->fd, seed, &ok);
        } else if (mode == M_UPLOAD) {
            uint8_t reply[9];
            uint64_t got = sink(c->fd, seed, &ok);
            memcpy(reply, &got, 8);
            reply[8] = ok;
            write_all(c->fd, reply, sizeof(reply));
        } else if (mode == M_ECHO) {
            echo(c->fd);
            shutdown(c->fd, SHUT_WR);
        } else if (mode == M_HALF) {
            uint64_t got = sink(c->fd, seed, &ok);
            (void)got;
            source(c->fd, seed ^ 0x55, n);
        } else if (mode == M_RESET) {
            uint8_t *buf = malloc(BUF);
            uint64_t got = 0;
            while (got < n) {
                ssize_t r = recv(c->fd, buf, BUF, 0);
                if (r <= 0)
                    break;
                got += (uint64_t)r;
            }
            free(buf);
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        } else if (mode == M_HOLD) {
            sink(c->fd, seed, &ok);
            /* Silent and open: only a reset or close from the peer (or
             * the 10 s cap) ends it. */
            for (int i = 0; i < 1000; i++) {
                struct pollfd p = {c->fd, POLLIN | POLLRDHUP, 0};
                if (poll(&p, 1, 10) == 1 && (p.revents & (POLLERR | POLLHUP)))
                    break;
            }
        } else if (mode == M_SERVER_FIRST) {
            source(c->fd, seed, n);
            shutdown(c->fd, SHUT_WR);
            uint64_t got = sink(c->fd, seed ^ 0xaa, &ok);
            record(c->s, seed, got, ok);
        }
    }
    close(c->fd);
    atomic_fetch_sub(&c->s->live, 1);
    free(c);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct test_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {s->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        struct conn *c = malloc(sizeof(*c));
        c->s = s;
        c->fd = fd;
        atomic_fetch_add(&s->live, 1);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&t, &attr, conn_main, c) != 0) {
            close(fd);
            free(c);
            atomic_fetch_sub(&s->live, 1);
        }
        pthread_attr_destroy(&attr);
    }
    return NULL;
}

struct test_server *server_start(int family, uint16_t *port)
{
    struct test_server *s = calloc(1, sizeof(*s));
    struct sockaddr_storage ss;
    socklen_t len = make_loop(family, 0, &ss);
    s->fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s->fd, (struct sockaddr *)&ss, len) != 0 ||
        listen(s->fd, 1024) != 0) {
        perror("server_start");
        exit(1);
    }
    getsockname(s->fd, (struct sockaddr *)&ss, &len);
    *port = ntohs(family == AF_INET6
                      ? ((struct sockaddr_in6 *)&ss)->sin6_port
                      : ((struct sockaddr_in *)&ss)->sin_port);
    pthread_mutex_init(&s->lock, NULL);
    pthread_create(&s->thread, NULL, accept_main, s);
    return s;
}

void server_stop(struct test_server *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->fd);
    /* Connection threads end when their peers close. */
    for (int i = 0; i < 500 && atomic_load(&s->live) > 0; i++)
        usleep(10000);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

uint64_t server_first_result(struct test_server *s, uint32_t seed, bool *ok)
{
    for (int t = 0; t < 500; t++) {
        pthread_mutex_lock(&s->lock);
        for (int i = 0; i < RESULTS; i++) {
            if (s->results[i].set && s->results[i].seed == seed) {
                uint64_t c = s->results[i].count;
                *ok = s->results[i].ok;
                pthread_mutex_unlock(&s->lock);
                return c;
            }
        }
        pthread_mutex_unlock(&s->lock);
        usleep(10000);
    }
    *ok = false;
    return 0;
}

/* ---- client ------------------------------------------------------------- */

struct cstate {
    int fd;
    uint8_t hdr[16];
    uint64_t sent, up_total; /* header counts as the first 16 bytes */
    uint32_t seed, down_seed;
    bool wr_done, rd_done, after_eof;
    int mode;
};

static void client_send(struct cstate *c)
{
    uint8_t buf[16384];
    while (c->sent < c->up_total) {
        size_t k;
        const uint8_t *p;
        if (c->sent < 16) {
            p = c->hdr + c->sent;
            k = 16 - (size_t)c->sent;
        } else {
            uint64_t off = c->sent - 16;
            uint64_t left = c->up_total - c->sent;
            k = left < sizeof(buf) ? (size_t)left : sizeof(buf);
            pat_fill(c->seed ^ (c->mode == M_SERVER_FIRST ? 0xaa : 0), off,
                     buf, k);
            p = buf;
        }
        ssize_t w = send(c->fd, p, k, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0)
            return;
        c->sent += (uint64_t)w;
    }
    if (!c->wr_done) {
        shutdown(c->fd, SHUT_WR);
        c->wr_done = true;
    }
}

int client_rcvbuf;
int client_read_sleep_us;

int client_run(int family, uint16_t port, int mode, uint32_t seed, uint64_t n,
               uint64_t up_n, bool send_after_eof, struct client_result *r)
{
    struct sockaddr_storage ss;
    socklen_t len = make_loop(family, port, &ss);
    memset(r, 0, sizeof(*r));
    r->down_ok = true;
    struct cstate c = {0};
    c.fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client_rcvbuf > 0)
        setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &client_rcvbuf,
                   sizeof(client_rcvbuf));
    if (connect(c.fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        close(c.fd);
        return -e;
    }
    uint32_t hdr[4] = {(uint32_t)mode, seed, 0, 0};
    memcpy(&hdr[2], &n, sizeof(n));
    memcpy(c.hdr, hdr, sizeof(hdr));
    c.mode = mode;
    c.seed = seed;
    c.up_total = 16 + up_n;
    c.down_seed = mode == M_HALF ? seed ^ 0x55 : seed;
    c.after_eof = send_after_eof;
    uint8_t *buf = malloc(BUF);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!c.rd_done) {
        bool may_send = !c.wr_done && (!c.after_eof || c.sent < 16 ||
                                       r->down >= n);
        struct pollfd p = {c.fd, POLLIN | (may_send ? POLLOUT : 0), 0};
        int pr = poll(&p, 1, 1000);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (pr <= 0 && t1.tv_sec - t0.tv_sec > 30)
            break;
        if (may_send && (p.revents & POLLOUT))
            client_send(&c);
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t got = recv(c.fd, buf, BUF, MSG_DONTWAIT);
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (got < 0) {
            r->reset = true;
            c.rd_done = true;
            break;
        }
        if (got == 0) {
            c.rd_done = true;
            /* the server-first case sends after the server's EOF */
            if (c.after_eof && !c.wr_done) {
                while (!c.wr_done) {
                    struct pollfd q = {c.fd, POLLOUT, 0};
                    if (poll(&q, 1, 5000) <= 0)
                        break;
                    client_send(&c);
                }
            }
            break;
        }
        if (mode == M_UPLOAD) {
            size_t room = sizeof(r->reply) - (size_t)r->down;
            size_t k = (size_t)got < room ? (size_t)got : room;
            memcpy(r->reply + r->down, buf, k);
        } else if (!pat_check(c.down_seed, r->down, buf, (size_t)got)) {
            r->down_ok = false;
        }
        r->down += (uint64_t)got;
        if (client_read_sleep_us > 0)
            usleep((useconds_t)client_read_sleep_us);
    }
    close(c.fd);
    free(buf);
    return 0;
}

/* ---- blackhole ---------------------------------------------------------- */

int blackhole_start(uint16_t *port, int *filler)
{
    struct sockaddr_storage ss;
    socklen_t len = make_loop(AF_INET, 0, &ss);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 0) != 0) {
        perror("blackhole_start");
        exit(1);
    }
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    /* One connection fills the accept queue; later SYNs are dropped. */
    *filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(*filler, (struct sockaddr *)&ss, len) != 0) {
        perror("blackhole_start: fill");
        exit(1);
    }
    return fd;
}

/* ---- UDP echo ----------------------------------------------------------- */

struct udp_echo {
    int fd;
    pthread_t thread;
    atomic_bool stop;
};

static void *udp_echo_main(void *arg)
{
    struct udp_echo *e = arg;
    uint8_t buf[65536];
    while (!atomic_load(&e->stop)) {
        struct pollfd p = {e->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(e->fd, buf, sizeof(buf), 0,
                             (struct sockaddr *)&from, &fl);
        if (n >= 0)
            sendto(e->fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

struct udp_echo *udp_echo_start(int family, uint16_t *port)
{
    struct udp_echo *e = calloc(1, sizeof(*e));
    struct sockaddr_storage ss;
    socklen_t len = make_loop(family, *port, &ss);
    e->fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (bind(e->fd, (struct sockaddr *)&ss, len) != 0) {
        perror("udp_echo_start");
        exit(1);
    }
    getsockname(e->fd, (struct sockaddr *)&ss, &len);
    *port = ntohs(family == AF_INET6
                      ? ((struct sockaddr_in6 *)&ss)->sin6_port
                      : ((struct sockaddr_in *)&ss)->sin_port);
    pthread_create(&e->thread, NULL, udp_echo_main, e);
    return e;
}

void udp_echo_stop(struct udp_echo *e)
{
    atomic_store(&e->stop, true);
    pthread_join(e->thread, NULL);
    close(e->fd);
    free(e);
}
