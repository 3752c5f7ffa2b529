/*
 * splice.c - zero-copy TCP forwarding between two connected sockets with
 * splice(2), for flows the engine does not look at (passthrough, promoted).
 *
 * Each direction moves bytes socket -> pipe -> socket inside the kernel;
 * user space only sees readiness.  One thread with one epoll set serves
 * every flow (edge-triggered; both sockets of a flow registered with the
 * flow as data).  A direction that reads EOF drains its pipe and then
 * shuts the destination's write side (half-close is preserved); a flow
 * ends when both directions are done, or at the first hard error, when
 * both sockets are reset (SO_LINGER 0) so neither peer waits.
 *
 * Bounded work: one event moves at most SPLICE_TURN_BYTES per direction;
 * a flow with more to move goes on a ready list served before the next
 * wait (with a zero timeout), so one fast flow cannot starve the rest.
 *
 * Carryover (a promoted flow's cutover): a direction may start with bytes
 * the host already read; they are sent from user space to the destination
 * before the first splice of that direction, so order holds.  A direction
 * may also start at EOF (FIN after the carryover), at a reset, or done.
 *
 * Locking: `lock` guards the live list (start on any thread, free); all
 * other flow state belongs to the splicer thread.
 */
#include "host/linux/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"

#define SPLICE_CHUNK (256 * 1024)
#define SPLICE_TURN_BYTES (1024 * 1024)

struct sdir {
    int from, to;
    int pipe_r, pipe_w;
    size_t in_pipe;
    bool eof, done;
    uint64_t bytes;
    uint8_t *carry; /* heap; sent before anything spliced */
    size_t carry_len, carry_off;
    int carry_error; /* reset after the carryover (eof is set) */
};

struct sflow {
    struct sdir dir[2]; /* 0: client -> egress, 1: egress -> client */
    int client_fd, egress_fd;
    nectar_linux_splice_done_cb cb;
    void *arg;
    bool ready;                  /* on the ready list (thread only) */
    struct sflow *rnext;         /* ready list (thread only) */
    struct sflow *prev, *next;   /* live list (lock) */
};

struct nectar_linux_splicer {
    int epfd, wakefd;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t lock;
    struct sflow *live;
    atomic_size_t nlive;
    struct sflow *ready_head, *ready_tail;
};

static void live_unlink(struct nectar_linux_splicer *s, struct sflow *f)
{
    pthread_mutex_lock(&s->lock);
    if (f->prev)
        f->prev->next = f->next;
    else
        s->live = f->next;
    if (f->next)
        f->next->prev = f->prev;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_sub(&s->nlive, 1);
}

static void reset_close(int fd)
{
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

static void close_pipes(struct sflow *f)
{
    for (int i = 0; i < 2; i++) {
        nectar_free(f->dir[i].carry);
        f->dir[i].carry = NULL;
        if (f->dir[i].pipe_r >= 0)
            close(f->dir[i].pipe_r);
        if (f->dir[i].pipe_w >= 0)
            close(f->dir[i].pipe_w);
    }
}

/* End the flow: fds closed (reset on error), callback, memory freed. */
static void finish(struct nectar_linux_splicer *s, struct sflow *f, int err)
{
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, f->client_fd, NULL);
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, f->egress_fd, NULL);
    if (err != 0) {
        reset_close(f->client_fd);
        reset_close(f->egress_fd);
    } else {
        close(f->client_fd);
        close(f->egress_fd);
    }
    close_pipes(f);
    live_unlink(s, f);
    if (f->cb != NULL)
        f->cb(f->arg, f->dir[0].bytes, f->dir[1].bytes, err);
    nectar_free(f);
}

/* Move what can move now in one direction, up to the turn budget.
 * Returns 0 (blocked or done), 1 (budget used, more may be ready), or a
 * negative errno. */
/* Send what is left of the carryover: 0 when all sent, 1 when the socket
 * is full, or a negative errno. */
static int send_carry(struct sdir *d)
{
    while (d->carry_off < d->carry_len) {
        ssize_t n = send(d->to, d->carry + d->carry_off,
                         d->carry_len - d->carry_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN ? 1 : -errno;
        d->carry_off += (size_t)n;
        d->bytes += (uint64_t)n;
    }
    return 0;
}

static int pump(struct sdir *d)
{
    size_t moved = 0;
    if (!d->done && d->carry_off < d->carry_len) {
        int rc = send_carry(d);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    if (!d->done && d->carry_error != 0 && d->eof)
        return d->carry_error; /* the source's reset, passed on */
    while (!d->done) {
        if (d->in_pipe > 0) {
            ssize_t n = splice(d->pipe_r, NULL, d->to, NULL, d->in_pipe,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0)
                return errno == EAGAIN ? 0 : -errno;
            d->in_pipe -= (size_t)n;
            d->bytes += (uint64_t)n;
            moved += (size_t)n;
            if (moved >= SPLICE_TURN_BYTES)
                return 1;
            continue;
        }
        if (d->eof) {
            shutdown(d->to, SHUT_WR);
            d->done = true;
            return 0;
        }
        ssize_t n = splice(d->from, NULL, d->pipe_w, NULL, SPLICE_CHUNK,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n == 0)
            d->eof = true;
        else if (n < 0)
            return errno == EAGAIN ? 0 : -errno;
        else
            d->in_pipe += (size_t)n;
    }
    return 0;
}

static void make_ready(struct nectar_linux_splicer *s, struct sflow *f)
{
    if (f->ready)
        return;
    f->ready = true;
    f->rnext = NULL;
    if (s->ready_tail)
        s->ready_tail->rnext = f;
    else
        s->ready_head = f;
    s->ready_tail = f;
}

static void service(struct nectar_linux_splicer *s, struct sflow *f)
{
    int more = 0;
    for (int i = 0; i < 2; i++) {
        int rc = pump(&f->dir[i]);
        if (rc < 0) {
            finish(s, f, rc);
            return;
        }
        more |= rc;
    }
    if (f->dir[0].done && f->dir[1].done) {
        finish(s, f, 0);
        return;
    }
    if (more)
        make_ready(s, f);
}

static void *splicer_main(void *arg)
{
    struct nectar_linux_splicer *s = arg;
    struct epoll_event ev[64];
    while (!atomic_load(&s->stop)) {
        int timeout = s->ready_head != NULL ? 0 : -1;
        int n = epoll_wait(s->epfd, ev, 64, timeout);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == NULL) {
                uint64_t v;
                ssize_t r = read(s->wakefd, &v, sizeof(v)); /* drain */
                (void)r;
                continue;
            }
            /* Both sockets of a flow may report in one batch: queue each
             * flow once, then serve the queue, so a flow ended by its
             * first event is never touched by its second. */
            make_ready(s, ev[i].data.ptr);
        }
        /* Serve the queue; flows made ready again while it is served (turn
         * budget used up) wait for the next pass. */
        struct sflow *list = s->ready_head;
        s->ready_head = s->ready_tail = NULL;
        while (list != NULL) {
            struct sflow *f = list;
            list = f->rnext;
            f->ready = false;
            service(s, f);
        }
    }
    return NULL;
}

int nectar__linux_splicer_new(nectar_linux_splicer_t **out,
                              nectar_error_t *err)
{
    struct nectar_linux_splicer *s = nectar_calloc(1, sizeof(*s));
    if (s == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = 0;
    if (s->epfd < 0 || s->wakefd < 0) {
        rc = nectar_error_set(err, -errno, "splicer: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev) != 0) {
        rc = nectar_error_set(err, -errno, "splicer: %s", strerror(errno));
        goto fail;
    }
    rc = pthread_create(&s->thread, NULL, splicer_main, s);
    if (rc != 0) {
        rc = nectar_error_set(err, -rc, "splicer thread: %s", strerror(rc));
        goto fail;
    }
    s->started = true;
    *out = s;
    return 0;
fail:
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->wakefd >= 0)
        close(s->wakefd);
    pthread_mutex_destroy(&s->lock);
    nectar_free(s);
    return rc;
}

static int init_dir(struct sdir *d, int from, int to)
{
    int p[2];
    d->from = from;
    d->to = to;
    d->pipe_r = d->pipe_w = -1;
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
        return -errno;
    d->pipe_r = p[0];
    d->pipe_w = p[1];
    /* Best effort: a bigger pipe means fewer splice calls per megabyte. */
    fcntl(d->pipe_w, F_SETPIPE_SZ, SPLICE_CHUNK);
    return 0;
}

/* Start a direction from its carry (no socket call: the thread does the
 * sending, so _start never blocks). */
static int apply_carry(struct sdir *d, const nectar_linux_splice_carry_t *c)
{
    if (c->error != 0 && !c->eof)
        return NECTAR_EINVAL;
    if (c->len > 0) {
        d->carry = nectar_memdup(c->buf, c->len);
        if (d->carry == NULL)
            return NECTAR_ENOMEM;
        d->carry_len = c->len;
    }
    d->eof = c->eof || c->done;
    d->carry_error = c->eof ? c->error : 0;
    if (c->done) {
        /* Already finished: the FIN was sent; repeating it is harmless. */
        shutdown(d->to, SHUT_WR);
        d->done = true;
    }
    return 0;
}

int nectar__linux_splice_start(nectar_linux_splicer_t *s, int client_fd,
                               int egress_fd, nectar_linux_splice_done_cb cb,
                               void *arg)
{
    return nectar__linux_splice_start_carry(s, client_fd, egress_fd, NULL, cb,
                                            arg);
}

int nectar__linux_splice_start_carry(nectar_linux_splicer_t *s,
                                     int client_fd, int egress_fd,
                                     const nectar_linux_splice_carry_t *carry,
                                     nectar_linux_splice_done_cb cb,
                                     void *arg)
{
    struct sflow *f = nectar_calloc(1, sizeof(*f));
    int rc = f ? 0 : NECTAR_ENOMEM;
    if (f != NULL) {
        f->client_fd = client_fd;
        f->egress_fd = egress_fd;
        f->cb = cb;
        f->arg = arg;
        f->dir[0].pipe_r = f->dir[0].pipe_w = -1;
        f->dir[1].pipe_r = f->dir[1].pipe_w = -1;
        rc = init_dir(&f->dir[0], client_fd, egress_fd);
        if (rc == 0)
            rc = init_dir(&f->dir[1], egress_fd, client_fd);
        for (int i = 0; i < 2 && rc == 0 && carry != NULL; i++)
            rc = apply_carry(&f->dir[i], &carry[i]);
    }
    if (rc != 0) {
        if (f != NULL) {
            close_pipes(f);
            nectar_free(f);
        }
        reset_close(client_fd);
        reset_close(egress_fd);
        return rc;
    }
    pthread_mutex_lock(&s->lock);
    f->next = s->live;
    if (s->live)
        s->live->prev = f;
    s->live = f;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add(&s->nlive, 1);
    /* Registering both sockets makes the flow visible to the thread; the
     * edge-triggered ADD reports whatever is already pending. */
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.ptr = f,
    };
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, egress_fd, &ev) != 0) {
        rc = -errno;
        live_unlink(s, f);
        close_pipes(f);
        nectar_free(f);
        reset_close(client_fd);
        reset_close(egress_fd);
        return rc;
    }
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, client_fd, &ev) != 0) {
        /* The thread already sees the egress: shutting both down lets it
         * end the flow (and run the callback) the normal way. */
        shutdown(client_fd, SHUT_RDWR);
        shutdown(egress_fd, SHUT_RDWR);
    }
    return 0;
}

size_t nectar__linux_splicer_live(nectar_linux_splicer_t *s)
{
    return atomic_load(&s->nlive);
}

void nectar__linux_splicer_free(nectar_linux_splicer_t *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stop, true);
    uint64_t one = 1;
    if (write(s->wakefd, &one, sizeof(one)) < 0) {
        /* eventfd writes only fail on overflow; the thread is awake */
    }
    if (s->started)
        pthread_join(s->thread, NULL);
    /* The thread is gone: every remaining flow ends here, reset. */
    while (s->live != NULL)
        finish(s, s->live, NECTAR_ECANCELED);
    close(s->epfd);
    close(s->wakefd);
    pthread_mutex_destroy(&s->lock);
    nectar_free(s);
}
