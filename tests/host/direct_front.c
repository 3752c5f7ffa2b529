/*
 * direct_front.c - a minimal front-side forwarder for the host core's
 * tcp_direct hook, standing in for the Linux splicer in the core tests:
 * it writes each direction's carryover first, honours the eof/done/error
 * state it is handed, then copies bytes with read/write until both
 * directions ended, and reports back with nectar__host_tcp_direct_done.
 * Non-blocking sockets and one pending buffer per direction, so a peer
 * that echoes cannot deadlock it.
 */
#include "direct_front.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"

atomic_int front_calls, front_promoted, front_running, front_refuse;
atomic_uint_fast64_t front_carry;

#define BUF 65536

struct fdir {
    int from, to;
    uint8_t *buf;     /* pending bytes for `to` (carryover first) */
    size_t len, off;
    bool eof;         /* source ended: FIN once buf is empty */
    int error;        /* with eof: reset after buf */
    bool done;
    uint64_t bytes;
};

struct fflow {
    nectar_host_direct_t *hd;
    int fd[2]; /* client, egress */
    struct fdir dir[2];
};

void direct_front_reset(void)
{
    atomic_store(&front_calls, 0);
    atomic_store(&front_promoted, 0);
    atomic_store(&front_carry, 0);
    atomic_store(&front_refuse, 0);
}

static void rst(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/* One step of a direction; returns a negative errno on failure. */
static int step(struct fdir *d, short rev_from, short rev_to)
{
    if (d->done)
        return 0;
    if (d->off < d->len && (rev_to & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t n = send(d->to, d->buf + d->off, d->len - d->off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN)
            return -errno;
        if (n > 0) {
            d->off += (size_t)n;
            d->bytes += (uint64_t)n;
        }
    }
    if (d->off < d->len)
        return 0;
    d->off = d->len = 0;
    if (d->eof) {
        if (d->error != 0)
            return d->error;
        shutdown(d->to, SHUT_WR);
        d->done = true;
        return 0;
    }
    if (!(rev_from & (POLLIN | POLLERR | POLLHUP)))
        return 0;
    ssize_t n = recv(d->from, d->buf, BUF, MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN ? 0 : -errno;
    if (n == 0)
        d->eof = true;
    d->len = (size_t)n;
    return 0;
}

static void *flow_main(void *arg)
{
    struct fflow *f = arg;
    int err = 0;
    while (err == 0 && !(f->dir[0].done && f->dir[1].done)) {
        struct pollfd p[2] = {{f->fd[0], 0, 0}, {f->fd[1], 0, 0}};
        for (int i = 0; i < 2; i++) {
            struct fdir *d = &f->dir[i];
            if (d->done)
                continue;
            int src = i, dst = 1 - i;
            if (d->off < d->len)
                p[dst].events |= POLLOUT;
            else if (!d->eof)
                p[src].events |= POLLIN;
        }
        /* eof with an empty buffer needs no wait: step finishes it. */
        bool now = (!f->dir[0].done && f->dir[0].eof &&
                    f->dir[0].off == f->dir[0].len) ||
                   (!f->dir[1].done && f->dir[1].eof &&
                    f->dir[1].off == f->dir[1].len);
        if (!now && poll(p, 2, 1000) < 0 && errno != EINTR)
            err = -errno;
        for (int i = 0; i < 2 && err == 0; i++)
            err = step(&f->dir[i], p[i].revents, p[1 - i].revents);
    }
    if (err != 0) {
        rst(f->fd[0]);
        rst(f->fd[1]);
    }
    close(f->fd[0]);
    close(f->fd[1]);
    nectar__host_tcp_direct_done(f->hd, f->dir[0].bytes, f->dir[1].bytes,
                                 err);
    nectar_free(f->dir[0].buf);
    nectar_free(f->dir[1].buf);
    nectar_free(f);
    atomic_fetch_sub(&front_running, 1);
    return NULL;
}

static int dir_init(struct fdir *d, int from, int to,
                    const nectar_host_direct_dir_t *in)
{
    d->from = from;
    d->to = to;
    d->buf = nectar_malloc(in->carry_len > BUF ? in->carry_len : BUF);
    if (d->buf == NULL)
        return -ENOMEM;
    if (in->carry_len > 0)
        memcpy(d->buf, in->carry, in->carry_len);
    d->len = in->carry_len;
    d->eof = in->eof;
    d->error = in->error;
    d->done = in->done;
    atomic_fetch_add(&front_carry, in->carry_len);
    return 0;
}

int direct_front_hook(void *ctx, nectar_host_direct_t *d,
                      const nectar_host_direct_info_t *info)
{
    (void)ctx;
    int refuse = atomic_exchange(&front_refuse, 0);
    struct fflow *f = refuse == 0 ? nectar_calloc(1, sizeof(*f)) : NULL;
    int rc = refuse != 0 ? refuse : f == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        f->hd = d;
        f->fd[0] = info->client_fd;
        f->fd[1] = info->egress_fd;
        rc = dir_init(&f->dir[0], f->fd[0], f->fd[1], &info->c2s);
        if (rc == 0)
            rc = dir_init(&f->dir[1], f->fd[1], f->fd[0], &info->s2c);
    }
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (rc == 0) {
        atomic_fetch_add(&front_running, 1);
        rc = -pthread_create(&t, &a, flow_main, f);
        if (rc != 0)
            atomic_fetch_sub(&front_running, 1);
    }
    pthread_attr_destroy(&a);
    if (rc != 0) {
        close(info->client_fd);
        close(info->egress_fd);
        if (f != NULL) {
            nectar_free(f->dir[0].buf);
            nectar_free(f->dir[1].buf);
            nectar_free(f);
        }
        return rc;
    }
    atomic_fetch_add(&front_calls, 1);
    if (info->promoted)
        atomic_fetch_add(&front_promoted, 1);
    return 0;
}
