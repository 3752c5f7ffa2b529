/*
 * http_peer.c - a tiny HTTP/1.1 origin for the curl tests: GET returns
 * `size` bytes of pattern(HTTP_GET_SEED); PUT/POST reads Content-Length
 * bytes, checks them against pattern(HTTP_PUT_SEED) and answers
 * "ok <count>" or "bad <count>".  One connection at a time, then close.
 */
#include "http_peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "helpers.h"

struct http_peer {
    int fd;
    uint64_t size;
    pthread_t thread;
    atomic_bool stop;
};

static int send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
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

/* Reads the request head into buf; returns bytes of body already read
 * (placed at *body), or -1. */
static ssize_t read_head(int fd, char *buf, size_t cap, char **body)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            *body = end + 4;
            return (ssize_t)(n - (size_t)(end + 4 - buf));
        }
    }
    return -1;
}

static void serve_get(int fd, uint64_t size)
{
    char head[128];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n"
                      "Connection: close\r\n\r\n",
                      (unsigned long long)size);
    if (send_all(fd, head, (size_t)hl) != 0)
        return;
    uint8_t buf[65536];
    for (uint64_t off = 0; off < size;) {
        size_t k = size - off < sizeof(buf) ? (size_t)(size - off)
                                            : sizeof(buf);
        pat_fill(HTTP_GET_SEED, off, buf, k);
        if (send_all(fd, buf, k) != 0)
            return;
        off += k;
    }
}

static void serve_put(int fd, const char *head, const uint8_t *pre,
                      size_t pre_n)
{
    const char *cl = strcasestr(head, "content-length:");
    uint64_t want = cl ? strtoull(cl + 15, NULL, 10) : 0;
    uint64_t got = 0;
    bool ok = true;
    uint8_t buf[65536];
    for (size_t k = 0; k < pre_n; k++, got++)
        ok = ok && pre[k] == pat_byte(HTTP_PUT_SEED, got);
    while (got < want) {
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r <= 0)
            break;
        for (ssize_t k = 0; k < r; k++, got++)
            ok = ok && buf[k] == pat_byte(HTTP_PUT_SEED, got);
    }
    char body[64], resp[192];
    int bl = snprintf(body, sizeof(body), "%s %llu", ok ? "ok" : "bad",
                      (unsigned long long)got);
    int rl = snprintf(resp, sizeof(resp),
                      "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n%s",
                      bl, body);
    send_all(fd, resp, (size_t)rl);
}

static void *http_main(void *arg)
{
    struct http_peer *p = arg;
    static char head[8192];
    while (!atomic_load(&p->stop)) {
        struct pollfd pf = {p->fd, POLLIN, 0};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        int fd = accept4(p->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        char *body = NULL;
        ssize_t pre = read_head(fd, head, sizeof(head), &body);
        if (pre >= 0 && strncmp(head, "GET ", 4) == 0)
            serve_get(fd, p->size);
        else if (pre >= 0)
            serve_put(fd, head, (const uint8_t *)body, (size_t)pre);
        shutdown(fd, SHUT_WR);
        char sink[1024];
        while (recv(fd, sink, sizeof(sink), 0) > 0)
            ;
        close(fd);
    }
    return NULL;
}

struct http_peer *http_peer_start(uint64_t size, uint16_t *port)
{
    struct http_peer *p = calloc(1, sizeof(*p));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    p->size = size;
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(p->fd, (struct sockaddr *)&a, len) != 0 ||
        listen(p->fd, 64) != 0) {
        perror("http_peer_start");
        exit(1);
    }
    getsockname(p->fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    pthread_create(&p->thread, NULL, http_main, p);
    return p;
}

void http_peer_stop(struct http_peer *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    close(p->fd);
    free(p);
}
