/*
 * backend_unix.c - the Linux IPC backend: SOCK_SEQPACKET Unix sockets, a
 * libuv event thread per listener and per client connection, peers
 * identified by SO_PEERCRED plus a pidfd, fds as SCM_RIGHTS.  The wire
 * format (packet header, fragments, verdict handshake) is specified in
 * docs/ipc-protocol.md.
 *
 * Packet framing, credentials, addresses and activation are in
 * unix_sock.c.  Map of this file
 *   1. the event loop (thread, command queue, request timer)
 *   2. connections: state, pending requests, receive path, detach
 *   3. client connect (lazy) and writes
 *   4. direct mode: clients whose callers read their own replies
 *   5. listener: bind, socket activation, accept
 *   6. public slots and the backend table
 *
 * Connection states (conn->state, guarded by conn->lock):
 *
 *     IDLE --first send--> CONNECTING --verdict ok--> OPEN
 *       ^                      | refused                | peer EOF (client)
 *       |                      v                        v
 *       +------------------ PEER_FAILED (final)      IDLE (INTERRUPTED)
 *     any --cancel / protocol error / peer EOF (server side)--> INVALID
 *
 * Lock order: conn->send_lock, then conn->lock, then loop->lock.  The
 * loop thread owns the uv handles, the receive assembly buffer and the
 * loop's conn list; other threads reach them only through commands.
 */
#if !defined(__APPLE__)

#include "ipc/ipc_int.h"
#include "ipc/unix_sock.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TAG "ipc"

/* ---- 1. the event loop ----------------------------------------------- */

enum cmd_kind { CMD_ATTACH, CMD_CANCEL, CMD_PEERFAIL, CMD_REARM, CMD_STOP };

struct ux_cmd {
    struct ux_cmd *next;
    enum cmd_kind kind;
    struct nectar_ipc_conn *conn; /* holds a reference */
    int fd;
    uint64_t gen;
};

struct ux_loop {
    atomic_uint refs;
    uv_loop_t uv;
    uv_async_t wake;
    uv_timer_t timer;
    pthread_t thread;
    atomic_bool running;  /* the thread is inside uv_run */
    pthread_mutex_t lock; /* guards cmds and closed */
    struct ux_cmd *cmd_head, *cmd_tail;
    bool closed;                          /* no more commands accepted */
    struct nectar_ipc_conn *conns;        /* loop thread only */
    struct nectar_ipc_listener *listener; /* set for a listener's loop */
};

struct ux_pending;

struct nectar_ipc_conn {
    atomic_uint refs;      /* memory */
    atomic_uint user_refs; /* handed to users (creator + retains) */
    atomic_uint live_msgs; /* delivered, not yet replied or released */
    bool is_client;
    /* Client: created on first connect or upgrade; atomic because the
     * "am I on its thread" checks read it without the lock. */
    struct ux_loop *_Atomic loop;

    pthread_mutex_t send_lock;
    pthread_mutex_t lock; /* everything below up to "loop thread only" */
    pthread_cond_t cv;    /* state changes, sync replies */
    enum {
        ST_IDLE,
        ST_CONNECTING,
        ST_OPEN,
        ST_PEER_FAILED,
        ST_INVALID,
    } state;
    int fd;
    uint64_t gen;
    char *fail_reason; /* for ST_PEER_FAILED */
    struct ux_pending *pending;
    uint64_t next_id;
    struct ux_cred cred;
    bool has_cred;
    bool final_done;    /* the final event (if any) has run */
    bool direct;        /* client without event thread (see below) */
    bool stalled;       /* a write timed out: no more writes */
    bool reader_active; /* direct mode: a caller is reading the socket */
    void *user_ctx;

    /* Fixed after creation. */
    char *service_name;
    struct ux_req req;
    nectar_ipc_message_cb on_message;
    nectar_ipc_event_cb on_event;
    void *ctx;
    uint32_t call_timeout_ms;
    uint32_t connect_timeout_ms;

    /* Loop thread only. */
    struct nectar_ipc_conn *loop_next, *loop_prev;
    bool in_loop;
    struct ux_io *io;
    struct ipc_buf rx;
    int rx_fds[NECTAR_IPC_MAX_FDS];
    size_t rx_nfds;
    bool rx_busy;
    struct pkt_header rx_hdr;
    bool drop_logged; /* the pending-message bound was hit (logged once) */
};

struct ux_io {
    uv_poll_t poll;
    struct nectar_ipc_conn *conn; /* reference */
    int fd;
};

struct ux_pending {
    struct ux_pending *next, *prev;
    uint64_t id;
    uint64_t gen;
    uint64_t deadline; /* 0 = none */
    nectar_ipc_reply_cb cb;
    void *cb_ctx;
    /* sync waiters */
    bool sync;
    bool done;
    int status;
    nectar_ipc_obj_t *reply;
    nectar_error_t err;
};

static void conn_unref(struct nectar_ipc_conn *c);
static void loop_unref(struct ux_loop *l);
static void direct_close(struct nectar_ipc_conn *c, bool as_reader, bool final,
                         int status, const char *why);

/* The loop whose thread this is (NULL on other threads). */
static _Thread_local struct ux_loop *current_loop;

static bool on_loop_thread(const struct ux_loop *l)
{
    return l != NULL && current_loop == l;
}

/* Queues a command for the loop thread; consumes the conn reference in
 * cmd on failure.  Returns false when the loop no longer takes commands. */
static bool loop_post(struct ux_loop *l, enum cmd_kind kind,
                      struct nectar_ipc_conn *c, int fd, uint64_t gen)
{
    struct ux_cmd *cmd = nectar_calloc(1, sizeof(*cmd));
    if (cmd == NULL)
        return false;
    cmd->kind = kind;
    cmd->conn = c;
    cmd->fd = fd;
    cmd->gen = gen;
    if (c != NULL)
        atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&l->lock);
    bool ok = !l->closed;
    if (ok) {
        if (l->cmd_tail != NULL)
            l->cmd_tail->next = cmd;
        else
            l->cmd_head = cmd;
        l->cmd_tail = cmd;
    }
    pthread_mutex_unlock(&l->lock);
    if (!ok) {
        if (c != NULL)
            conn_unref(c);
        nectar_free(cmd);
        return false;
    }
    uv_async_send(&l->wake);
    return true;
}

static void conn_detach(struct nectar_ipc_conn *c, nectar_ipc_event_t ev,
                        const char *reason, bool final);
static void fire_event(struct nectar_ipc_conn *c, nectar_ipc_event_t ev,
                       const char *reason);
static void conn_attach(struct nectar_ipc_conn *c, int fd, uint64_t gen);
static void loop_cancel_conn(struct nectar_ipc_conn *c);
static void timer_rearm(struct ux_loop *l);
static void loop_stop_all(struct ux_loop *l);

/* CMD_PEERFAIL: the refused client's one final event. */
static void conn_peer_failed(struct nectar_ipc_conn *c)
{
    fire_event(c, NECTAR_IPC_EVENT_PEER_REQUIREMENT_FAILED, c->fail_reason);
    pthread_mutex_lock(&c->lock);
    c->final_done = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->lock);
}

static void run_cmd(struct ux_loop *l, struct ux_cmd *cmd)
{
    switch (cmd->kind) {
    case CMD_ATTACH:
        conn_attach(cmd->conn, cmd->fd, cmd->gen);
        break;
    case CMD_CANCEL:
        loop_cancel_conn(cmd->conn);
        break;
    case CMD_PEERFAIL:
        conn_peer_failed(cmd->conn);
        break;
    case CMD_REARM:
        timer_rearm(l);
        break;
    case CMD_STOP:
        loop_stop_all(l);
        break;
    }
    if (cmd->conn != NULL)
        conn_unref(cmd->conn);
    nectar_free(cmd);
}

static void on_wake(uv_async_t *h)
{
    struct ux_loop *l = h->data;
    pthread_mutex_lock(&l->lock);
    struct ux_cmd *cmd = l->cmd_head;
    l->cmd_head = l->cmd_tail = NULL;
    pthread_mutex_unlock(&l->lock);
    while (cmd != NULL) {
        struct ux_cmd *next = cmd->next;
        run_cmd(l, cmd);
        cmd = next;
    }
}

static void *loop_main(void *arg)
{
    struct ux_loop *l = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    current_loop = l;
    uv_run(&l->uv, UV_RUN_DEFAULT);
    current_loop = NULL;
    loop_unref(l); /* the thread's own reference */
    return NULL;
}

static void on_timer(uv_timer_t *t);

static struct ux_loop *loop_new(nectar_error_t *err)
{
    struct ux_loop *l = nectar_calloc(1, sizeof(*l));
    if (l == NULL) {
        nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
        return NULL;
    }
    atomic_init(&l->refs, 1);
    pthread_mutex_init(&l->lock, NULL);
    int rc = uv_loop_init(&l->uv);
    if (rc == 0)
        rc = uv_async_init(&l->uv, &l->wake, on_wake);
    if (rc != 0) {
        nectar_error_set(err, NECTAR_EIO, "ipc: libuv init: %s",
                         uv_strerror(rc));
        pthread_mutex_destroy(&l->lock);
        nectar_free(l);
        return NULL;
    }
    l->wake.data = l;
    uv_timer_init(&l->uv, &l->timer);
    l->timer.data = l;
    return l;
}

static int loop_start(struct ux_loop *l, nectar_error_t *err)
{
    atomic_store(&l->running, true);
    atomic_fetch_add(&l->refs, 1);
    int rc = pthread_create(&l->thread, NULL, loop_main, l);
    if (rc != 0) {
        atomic_fetch_sub(&l->refs, 1);
        atomic_store(&l->running, false);
        return nectar_error_set(err, -rc, "ipc: cannot start event thread");
    }
    return 0;
}

static void loop_unref(struct ux_loop *l)
{
    if (l == NULL || atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    uv_loop_close(&l->uv);
    pthread_mutex_destroy(&l->lock);
    nectar_free(l);
}

/* Stops the loop thread and waits for it.  From a thread other than the
 * loop's own. */
static void loop_shutdown(struct ux_loop *l)
{
    if (!atomic_load(&l->running))
        return;
    if (loop_post(l, CMD_STOP, NULL, -1, 0))
        pthread_join(l->thread, NULL);
    atomic_store(&l->running, false);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void listener_stop_io(struct nectar_ipc_listener *ls);

/* CMD_STOP: invalidate every connection, close our handles, refuse
 * further commands; uv_run then returns. */
static void loop_stop_all(struct ux_loop *l)
{
    pthread_mutex_lock(&l->lock);
    l->closed = true;
    struct ux_cmd *cmd = l->cmd_head;
    l->cmd_head = l->cmd_tail = NULL;
    pthread_mutex_unlock(&l->lock);
    /* Commands queued behind STOP still run, so none leaks. */
    while (cmd != NULL) {
        struct ux_cmd *next = cmd->next;
        if (cmd->kind == CMD_STOP)
            nectar_free(cmd);
        else
            run_cmd(l, cmd);
        cmd = next;
    }
    while (l->conns != NULL)
        loop_cancel_conn(l->conns);
    if (l->listener != NULL)
        listener_stop_io(l->listener);
    uv_close((uv_handle_t *)&l->timer, on_handle_closed);
    uv_close((uv_handle_t *)&l->wake, on_handle_closed);
}

/* ---- 2. connections -------------------------------------------------- */

static struct nectar_ipc_conn *conn_new(void)
{
    struct nectar_ipc_conn *c = nectar_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    atomic_init(&c->refs, 1);
    atomic_init(&c->user_refs, 0);
    atomic_init(&c->live_msgs, 0);
    pthread_mutex_init(&c->send_lock, NULL);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->fd = -1;
    c->next_id = 1;
    c->cred.pidfd = -1;
    c->cred.pid = -1;
    return c;
}

static void conn_unref(struct nectar_ipc_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    if (c->fd >= 0)
        close(c->fd);
    nectar__ux_cred_clear(&c->cred);
    nectar_free(c->fail_reason);
    nectar_free(c->service_name);
    nectar__ux_req_free(&c->req);
    nectar__ipc_buf_free(&c->rx);
    for (size_t i = 0; i < c->rx_nfds; i++)
        close(c->rx_fds[i]);
    pthread_mutex_destroy(&c->send_lock);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cv);
    loop_unref(c->loop);
    nectar_free(c);
}

/* Pending list helpers; conn->lock held. */
static void pending_add(struct nectar_ipc_conn *c, struct ux_pending *p)
{
    p->prev = NULL;
    p->next = c->pending;
    if (c->pending != NULL)
        c->pending->prev = p;
    c->pending = p;
}

static void pending_unlink(struct nectar_ipc_conn *c, struct ux_pending *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        c->pending = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

static struct ux_pending *pending_find(struct nectar_ipc_conn *c, uint64_t id)
{
    for (struct ux_pending *p = c->pending; p != NULL; p = p->next) {
        if (p->id == id)
            return p;
    }
    return NULL;
}

/* Completes a pending request.  conn->lock held on entry and exit.  A
 * sync waiter is woken; an async callback runs with the lock dropped and
 * the entry freed.  reply is borrowed. */
static void pending_complete(struct nectar_ipc_conn *c, struct ux_pending *p,
                             int status, nectar_ipc_obj_t *reply,
                             const char *why)
{
    if (p->sync) {
        p->done = true;
        p->status = status;
        p->reply = nectar_ipc_retain(reply);
        if (status != 0)
            nectar_error_set(&p->err, status, "ipc: %s", why);
        pthread_cond_broadcast(&c->cv);
        return;
    }
    nectar_error_t err = {0};
    if (status != 0)
        nectar_error_set(&err, status, "ipc: %s", why);
    pthread_mutex_unlock(&c->lock);
    p->cb(status, reply, status != 0 ? &err : NULL, p->cb_ctx);
    nectar_free(p);
    pthread_mutex_lock(&c->lock);
}

/* Fails every pending request.  conn->lock held.  Sync waiters are
 * completed at once (under the lock, so a waiter never returns while its
 * entry is still in use); async ones are returned as a list for
 * pending_run_failed, to be called once every lock is dropped. */
static struct ux_pending *pending_fail_all(struct nectar_ipc_conn *c,
                                           int status, const char *why)
{
    struct ux_pending *async = NULL;
    while (c->pending != NULL) {
        struct ux_pending *p = c->pending;
        pending_unlink(c, p);
        if (p->sync) {
            pending_complete(c, p, status, NULL, why);
            continue;
        }
        p->next = async;
        async = p;
    }
    return async;
}

static void pending_run_failed(struct ux_pending *list, int status,
                               const char *why)
{
    nectar_error_t err = {0};
    nectar_error_set(&err, status, "ipc: %s", why);
    while (list != NULL) {
        struct ux_pending *next = list->next;
        list->cb(status, NULL, &err, list->cb_ctx);
        nectar_free(list);
        list = next;
    }
}

static void fire_event(struct nectar_ipc_conn *c, nectar_ipc_event_t ev,
                       const char *reason)
{
    if (c->on_event != NULL)
        c->on_event(c, ev, reason, c->ctx);
}

static void loop_list_add(struct ux_loop *l, struct nectar_ipc_conn *c)
{
    if (c->in_loop)
        return;
    atomic_fetch_add(&c->refs, 1);
    c->in_loop = true;
    c->loop_prev = NULL;
    c->loop_next = l->conns;
    if (l->conns != NULL)
        l->conns->loop_prev = c;
    l->conns = c;
}

static void loop_list_remove(struct ux_loop *l, struct nectar_ipc_conn *c)
{
    if (!c->in_loop)
        return;
    if (c->loop_prev != NULL)
        c->loop_prev->loop_next = c->loop_next;
    else
        l->conns = c->loop_next;
    if (c->loop_next != NULL)
        c->loop_next->loop_prev = c->loop_prev;
    c->in_loop = false;
    conn_unref(c);
}

static void on_io_closed(uv_handle_t *h)
{
    struct ux_io *io = h->data;
    close(io->fd);
    conn_unref(io->conn);
    nectar_free(io);
}

static void rx_reset(struct nectar_ipc_conn *c)
{
    c->rx.len = 0;
    c->rx_busy = false;
    for (size_t i = 0; i < c->rx_nfds; i++)
        close(c->rx_fds[i]);
    c->rx_nfds = 0;
}

/* Ends the current socket of c (loop thread).  final: the connection is
 * invalid for good; otherwise (a client whose server left) it returns to
 * IDLE and reconnects on the next send.  Pending requests fail, then the
 * event fires; both outside the lock. */
static void conn_detach(struct nectar_ipc_conn *c, nectar_ipc_event_t ev,
                        const char *reason, bool final)
{
    struct ux_loop *l = c->loop;
    pthread_mutex_lock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    c->fd = -1; /* the io handle closes the descriptor */
    c->state = final ? ST_INVALID : ST_IDLE;
    if (ev == NECTAR_IPC_EVENT_PEER_REQUIREMENT_FAILED)
        c->state = ST_PEER_FAILED;
    int status = final ? NECTAR_ECLOSED : NECTAR_ECONNRESET;
    const char *why =
        final ? "connection invalidated" : "connection interrupted";
    struct ux_pending *failed = pending_fail_all(c, status, why);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->send_lock);
    pending_run_failed(failed, status, why);
    if (c->io != NULL) {
        uv_poll_stop(&c->io->poll);
        uv_close((uv_handle_t *)&c->io->poll, on_io_closed);
        c->io = NULL;
    }
    rx_reset(c);
    atomic_fetch_add(&c->refs, 1);
    fire_event(c, ev, reason);
    if (final) {
        pthread_mutex_lock(&c->lock);
        c->final_done = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->lock);
        loop_list_remove(l, c);
    }
    conn_unref(c);
}

/* CMD_CANCEL, listener shutdown, or a cancel from a callback. */
static void loop_cancel_conn(struct nectar_ipc_conn *c)
{
    pthread_mutex_lock(&c->lock);
    bool done = c->state == ST_INVALID || c->state == ST_PEER_FAILED;
    pthread_mutex_unlock(&c->lock);
    if (done) {
        loop_list_remove(c->loop, c);
        return;
    }
    conn_detach(c, NECTAR_IPC_EVENT_INVALIDATED, "connection cancelled", true);
}

static void protocol_error(struct nectar_ipc_conn *c, const char *what)
{
    nectar_log(NECTAR_LOG_WARN, TAG, "closing peer (uid %u): %s",
               (unsigned)c->cred.uid, what);
    conn_detach(c, NECTAR_IPC_EVENT_INVALIDATED, what, true);
}

/* A received message waiting for its handler's reply or release. */
struct nectar_ipc_message {
    struct nectar_ipc_conn *conn; /* reference */
    nectar_ipc_obj_t *body;
    uint64_t id;
    uint64_t gen;
    bool expects_reply;
};

static void deliver_message(struct nectar_ipc_conn *c, nectar_ipc_obj_t *body,
                            uint8_t type, uint64_t id, uint64_t gen)
{
    /* rama bounds each peer's events and drops the newest when full; here
     * the bound is on messages a handler holds without finishing them. */
    if (atomic_load(&c->live_msgs) >= NECTAR_IPC_MAX_PENDING_MESSAGES) {
        if (!c->drop_logged)
            nectar_log(NECTAR_LOG_WARN, TAG,
                       "peer has %u unfinished messages: dropping new ones",
                       NECTAR_IPC_MAX_PENDING_MESSAGES);
        c->drop_logged = true;
        nectar_ipc_release(body);
        return;
    }
    c->drop_logged = false;
    struct nectar_ipc_message *m = nectar_calloc(1, sizeof(*m));
    if (m == NULL || c->on_message == NULL) {
        nectar_free(m);
        nectar_ipc_release(body);
        return;
    }
    atomic_fetch_add(&c->live_msgs, 1);
    atomic_fetch_add(&c->refs, 1);
    m->conn = c;
    m->body = body;
    m->id = id;
    m->gen = gen;
    m->expects_reply = type == PKT_REQUEST;
    c->on_message(c, m, c->ctx);
}

static void deliver_reply(struct nectar_ipc_conn *c, nectar_ipc_obj_t *body,
                          uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    struct ux_pending *p = pending_find(c, id);
    if (p != NULL) {
        pending_unlink(c, p);
        pending_complete(c, p, 0, body, "");
    }
    pthread_mutex_unlock(&c->lock);
    /* An unknown id is a request that was cancelled or timed out. */
    nectar_ipc_release(body);
}

/* Decodes the message assembled in c->rx (and resets the assembly).
 * Returns 0 with *body (frozen dictionary) and *h, or an error. */
static int rx_decode(struct nectar_ipc_conn *c, nectar_ipc_obj_t **body,
                     struct pkt_header *h, nectar_error_t *err)
{
    int rc = nectar__ipc_decode(c->rx.p, c->rx.len, c->rx_fds, c->rx_nfds, body,
                                err);
    *h = c->rx_hdr;
    rx_reset(c);
    if (rc == 0 && nectar_ipc_type(*body) != NECTAR_IPC_DICT) {
        nectar_ipc_release(*body);
        *body = NULL;
        rc = nectar_error_set(err, NECTAR_ETYPE,
                              "top-level message is not a dictionary");
    }
    if (rc == 0)
        nectar__ipc_freeze(*body);
    return rc;
}

static void rx_dispatch(struct nectar_ipc_conn *c, uint64_t gen)
{
    nectar_error_t err = {0};
    nectar_ipc_obj_t *body = NULL;
    struct pkt_header h;
    if (rx_decode(c, &body, &h, &err) != 0) {
        protocol_error(c, err.message);
        return;
    }
    if (h.type == PKT_REPLY)
        deliver_reply(c, body, h.id);
    else
        deliver_message(c, body, h.type, h.id, gen);
}

static void close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

/* Collects SCM_RIGHTS descriptors of one packet into c->rx_fds.  Returns
 * false (descriptors closed) on anything unexpected. */
static bool rx_take_fds(struct nectar_ipc_conn *c, struct msghdr *mh)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm != NULL;
         cm = CMSG_NXTHDR(mh, cm)) {
        bool rights =
            cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS;
        size_t n = rights ? (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int) : 0;
        int fds[NECTAR_IPC_MAX_FDS + 8];
        if (n > sizeof(fds) / sizeof(fds[0]))
            n = sizeof(fds) / sizeof(fds[0]);
        memcpy(fds, CMSG_DATA(cm), n * sizeof(int));
        if (!rights || c->rx_nfds + n > NECTAR_IPC_MAX_FDS) {
            close_fds(fds, n);
            return false;
        }
        memcpy(c->rx_fds + c->rx_nfds, fds, n * sizeof(int));
        c->rx_nfds += n;
    }
    return true;
}

/* Validates one packet against the message being assembled and appends
 * its payload.  Returns an error text, or NULL. */
static const char *rx_packet(struct nectar_ipc_conn *c,
                             const struct pkt_header *h, const uint8_t *p,
                             size_t n)
{
    if (h->type == PKT_VERDICT)
        return "unexpected verdict packet";
    if (h->total > NECTAR_IPC_MAX_MESSAGE)
        return "message over the size limit";
    if (!c->rx_busy) {
        c->rx_hdr = *h;
        c->rx_busy = true;
    } else if (h->type != c->rx_hdr.type || h->id != c->rx_hdr.id ||
               h->total != c->rx_hdr.total) {
        return "fragment does not continue the current message";
    }
    if (c->rx.len + n > h->total)
        return "fragments longer than the declared length";
    nectar__ipc_buf_put(&c->rx, p, n);
    if (c->rx.oom)
        return "out of memory";
    if (!(h->flags & PKT_MORE) && c->rx.len != h->total)
        return "message shorter than the declared length";
    return NULL;
}

/* Reads up to READS_PER_TURN packets.  Returns false once c was detached. */
enum rx_status { RX_AGAIN, RX_PARTIAL, RX_MESSAGE, RX_EOF, RX_ERROR };

/* Reads one packet from fd into the assembly of c.  The caller is the
 * only reader (the loop thread, or the direct-mode reader). */
static enum rx_status rx_one(struct nectar_ipc_conn *c, int fd, int flags,
                             const char **why)
{
    static _Thread_local uint8_t buf[PKT_MAX];
    union {
        struct cmsghdr align;
        char b[CMSG_SPACE(sizeof(int) * (NECTAR_IPC_MAX_FDS + 8))];
    } ctl;
    struct iovec iov = {buf, sizeof(buf)};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.b,
                        .msg_controllen = sizeof(ctl.b)};
    ssize_t n = recvmsg(fd, &mh, flags | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return RX_AGAIN;
    if (n <= 0)
        return RX_EOF;
    bool fds_ok = rx_take_fds(c, &mh);
    struct pkt_header h;
    *why = NULL;
    if (!fds_ok || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        *why = "truncated packet, control data or too many fds";
    else if (!nectar__ux_header_read(buf, (size_t)n, &h))
        *why = "bad packet header";
    else
        *why = rx_packet(c, &h, buf + PKT_HEADER, (size_t)n - PKT_HEADER);
    if (*why != NULL)
        return RX_ERROR;
    return (h.flags & PKT_MORE) ? RX_PARTIAL : RX_MESSAGE;
}

/* Reads up to READS_PER_TURN packets.  Returns false once c was detached. */
static bool conn_read(struct nectar_ipc_conn *c, uint64_t gen)
{
    for (int i = 0; i < READS_PER_TURN; i++) {
        const char *why = NULL;
        switch (rx_one(c, c->io->fd, MSG_DONTWAIT, &why)) {
        case RX_AGAIN:
            return true;
        case RX_PARTIAL:
            break;
        case RX_MESSAGE:
            /* One message per wake-up: the poll is level-triggered, so
             * more queued input brings us back, and a lone request costs
             * no extra read that would only say EAGAIN. */
            rx_dispatch(c, gen);
            return c->io != NULL;
        case RX_EOF:
            conn_detach(c,
                        c->is_client ? NECTAR_IPC_EVENT_INTERRUPTED
                                     : NECTAR_IPC_EVENT_INVALIDATED,
                        c->is_client ? "server closed the connection"
                                     : "peer closed the connection",
                        !c->is_client);
            return false;
        case RX_ERROR:
            protocol_error(c, why);
            return false;
        }
    }
    return true;
}

static void on_io(uv_poll_t *h, int status, int events)
{
    struct ux_io *io = h->data;
    struct nectar_ipc_conn *c = io->conn;
    (void)events;
    if (c->io != io)
        return;
    if (status < 0) {
        protocol_error(c, uv_strerror(status));
        return;
    }
    pthread_mutex_lock(&c->lock);
    uint64_t gen = c->gen;
    pthread_mutex_unlock(&c->lock);
    conn_read(c, gen);
}

/* Starts watching fd for c (loop thread).  A stale attach (cancelled or
 * reconnected in between) just closes the descriptor. */
static void conn_attach(struct nectar_ipc_conn *c, int fd, uint64_t gen)
{
    pthread_mutex_lock(&c->lock);
    bool current = c->state == ST_OPEN && c->gen == gen && c->fd == fd;
    pthread_mutex_unlock(&c->lock);
    struct ux_io *io = current ? nectar_calloc(1, sizeof(*io)) : NULL;
    if (io == NULL) {
        if (current)
            conn_detach(c, NECTAR_IPC_EVENT_INVALIDATED, "out of memory", true);
        else
            close(fd);
        return;
    }
    io->fd = fd;
    io->conn = c;
    atomic_fetch_add(&c->refs, 1);
    uv_poll_init(&c->loop->uv, &io->poll, fd);
    io->poll.data = io;
    c->io = io;
    loop_list_add(c->loop, c);
    uv_poll_start(&io->poll, UV_READABLE | UV_DISCONNECT, on_io);
}

/* ---- request timeouts (loop thread) ---------------------------------- */

static uint64_t earliest_deadline(struct ux_loop *l)
{
    uint64_t best = 0;
    for (struct nectar_ipc_conn *c = l->conns; c != NULL; c = c->loop_next) {
        pthread_mutex_lock(&c->lock);
        for (struct ux_pending *p = c->pending; p != NULL; p = p->next) {
            if (p->deadline != 0 && !p->sync &&
                (best == 0 || p->deadline < best))
                best = p->deadline;
        }
        pthread_mutex_unlock(&c->lock);
    }
    return best;
}

static void timer_rearm(struct ux_loop *l)
{
    uint64_t d = earliest_deadline(l);
    if (d == 0) {
        uv_timer_stop(&l->timer);
        return;
    }
    uint64_t now = nectar__ux_now_ms();
    uv_timer_start(&l->timer, on_timer, d > now ? d - now : 0, 0);
}

static void expire_conn(struct nectar_ipc_conn *c, uint64_t now)
{
    pthread_mutex_lock(&c->lock);
    struct ux_pending *p = c->pending;
    while (p != NULL) {
        struct ux_pending *next = p->next;
        if (!p->sync && p->deadline != 0 && p->deadline <= now) {
            pending_unlink(c, p);
            pending_complete(c, p, NECTAR_ETIMEDOUT, NULL, "call timed out");
            next = c->pending; /* the list may have changed unlocked */
        }
        p = next;
    }
    pthread_mutex_unlock(&c->lock);
}

static void on_timer(uv_timer_t *t)
{
    struct ux_loop *l = t->data;
    uint64_t now = nectar__ux_now_ms();
    for (struct nectar_ipc_conn *c = l->conns; c != NULL; c = c->loop_next)
        expire_conn(c, now);
    timer_rearm(l);
}

/* ---- 3. client connect and writes --------------------------------- */

/* socket + connect + verdict + our own check of the server. */
static int client_dial(struct nectar_ipc_conn *c, int *out_fd,
                       struct ux_cred *cred, nectar_error_t *err)
{
    struct sockaddr_un sa;
    socklen_t salen;
    if (nectar__ux_make_addr(c->service_name, &sa, &salen) != 0)
        return nectar_error_set(err, NECTAR_EINVAL, "ipc: bad service name");
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return nectar_error_set(err, -errno, "ipc: socket: %s",
                                strerror(errno));
    /* Bounds connect() too when the listener's backlog is full. */
    struct timeval ctv = {.tv_sec = c->connect_timeout_ms / 1000,
                          .tv_usec = (c->connect_timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &ctv, sizeof(ctv));
    if (connect(fd, (struct sockaddr *)&sa, salen) != 0) {
        int e = errno;
        close(fd);
        return nectar_error_set(err, -e, "ipc: cannot reach service '%s': %s",
                                c->service_name, strerror(e));
    }
    uint64_t deadline = nectar__ux_now_ms() + c->connect_timeout_ms;
    int rc = nectar__ux_read_verdict(fd, deadline, err);
    if (rc == 0)
        rc = nectar__ux_cred_read(fd, cred);
    if (rc == 0 && c->req.set) {
        nectar_ipc_peer_t peer;
        nectar__ux_cred_to_peer(cred, &peer);
        rc = nectar_ipc_requirement_check(&c->req.r, &peer, err);
    }
    if (rc != 0) {
        nectar__ux_cred_clear(cred);
        close(fd);
        return rc;
    }
    /* Blocking descriptor: sends pass MSG_DONTWAIT; direct-mode reads
     * block for at most one slice. */
    struct timeval tv = {.tv_sec = 0, .tv_usec = DIRECT_SLICE_MS * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    *out_fd = fd;
    return 0;
}

static int client_loop(struct nectar_ipc_conn *c, nectar_error_t *err)
{
    if (c->loop != NULL)
        return 0;
    struct ux_loop *l = loop_new(err);
    if (l == NULL)
        return NECTAR_ENOMEM;
    int rc = loop_start(l, err);
    if (rc != 0) {
        uv_close((uv_handle_t *)&l->wake, NULL);
        uv_close((uv_handle_t *)&l->timer, NULL);
        uv_run(&l->uv, UV_RUN_DEFAULT);
        loop_unref(l);
        return rc;
    }
    c->loop = l;
    return 0;
}

static int state_error(struct nectar_ipc_conn *c, nectar_error_t *err)
{
    if (c->state == ST_PEER_FAILED)
        return nectar_error_set(err, NECTAR_EPEER, "%s",
                                c->fail_reason ? c->fail_reason
                                               : "peer requirement failed");
    return nectar_error_set(err, NECTAR_ECLOSED, "ipc: connection invalidated");
}

/* Makes sure c is OPEN, connecting a client lazily.  conn->lock held on
 * entry and exit; *gen receives the live generation. */
static int ensure_open(struct nectar_ipc_conn *c, uint64_t *gen,
                       nectar_error_t *err)
{
    for (;;) {
        if (c->state == ST_OPEN) {
            *gen = c->gen;
            return 0;
        }
        if (c->state == ST_INVALID || c->state == ST_PEER_FAILED)
            return state_error(c, err);
        if (c->state == ST_CONNECTING) {
            pthread_cond_wait(&c->cv, &c->lock);
            continue;
        }
        if (!c->is_client)
            return state_error(c, err);
        int rc = c->direct ? 0 : client_loop(c, err);
        if (rc != 0)
            return rc;
        c->state = ST_CONNECTING;
        pthread_mutex_unlock(&c->lock);
        int fd = -1;
        struct ux_cred cred = {.pidfd = -1, .pid = -1};
        rc = client_dial(c, &fd, &cred, err);
        pthread_mutex_lock(&c->lock);
        bool cancelled = c->state != ST_CONNECTING;
        if (rc == 0 && cancelled) {
            close(fd);
            nectar__ux_cred_clear(&cred);
            pthread_cond_broadcast(&c->cv);
            return state_error(c, err);
        }
        if (rc == NECTAR_EPEER) {
            c->state = ST_PEER_FAILED;
            nectar_free(c->fail_reason);
            c->fail_reason =
                nectar_strdup(err ? err->message : "peer requirement failed");
            pthread_cond_broadcast(&c->cv);
            /* The event runs on the event thread, like every event; a
             * direct-mode client has no handler to tell. */
            if (c->direct)
                c->final_done = true;
            else
                loop_post(c->loop, CMD_PEERFAIL, c, -1, 0);
            return rc;
        }
        if (rc != 0) {
            if (!cancelled)
                c->state = ST_IDLE;
            pthread_cond_broadcast(&c->cv);
            return rc;
        }
        nectar__ux_cred_clear(&c->cred);
        c->cred = cred;
        c->has_cred = true;
        c->fd = fd;
        c->gen++;
        c->stalled = false;
        c->state = ST_OPEN;
        pthread_cond_broadcast(&c->cv);
        if (!c->direct)
            loop_post(c->loop, CMD_ATTACH, c, fd, c->gen);
    }
}

/* After a failed write: a direct-mode client drops its socket (the next
 * send reconnects); otherwise a peer that stopped reading is invalidated
 * by its event thread (a vanished one is noticed by the reader). */
static void write_failed(struct nectar_ipc_conn *c, int rc)
{
    pthread_mutex_lock(&c->lock);
    bool direct = c->is_client && c->direct;
    unsigned uid = (unsigned)c->cred.uid;
    bool first = !c->stalled;
    if (!direct && rc == NECTAR_ETIMEDOUT)
        c->stalled = true; /* later writes fail at once */
    pthread_mutex_unlock(&c->lock);
    if (direct) {
        direct_close(c, false, false, NECTAR_ECONNRESET,
                     "connection interrupted");
        return;
    }
    if (rc == NECTAR_ETIMEDOUT && first && c->loop != NULL) {
        nectar_log(NECTAR_LOG_WARN, TAG,
                   "dropping a peer that does not read (uid %u)", uid);
        loop_post(c->loop, CMD_CANCEL, c, -1, 0);
    }
}

/* Encodes msg and writes it with the given packet type and id on the
 * connection's live socket of generation gen (0: whatever is live). */
static int conn_write(struct nectar_ipc_conn *c, uint8_t type, uint64_t id,
                      uint64_t gen, const nectar_ipc_obj_t *msg,
                      nectar_error_t *err)
{
    struct ipc_buf b = {0};
    int fds[NECTAR_IPC_MAX_FDS];
    size_t nfds = 0;
    int rc = nectar__ipc_encode(msg, &b, fds, &nfds, err);
    if (rc != 0) {
        nectar__ipc_buf_free(&b);
        return rc;
    }
    pthread_mutex_lock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    int fd = c->fd;
    bool live =
        c->state == ST_OPEN && !c->stalled && (gen == 0 || gen == c->gen);
    pthread_mutex_unlock(&c->lock);
    if (!live || fd < 0) {
        rc = nectar_error_set(err, NECTAR_ECLOSED, "ipc: connection is closed");
    } else {
        /* An event thread serves every peer of its loop: it must not
         * wait long on one that does not read. */
        uint32_t t =
            on_loop_thread(c->loop) ? LOOP_SEND_TIMEOUT_MS : SEND_TIMEOUT_MS;
        rc = nectar__ux_write_message(fd, type, id, b.p, b.len, fds, nfds, t);
        if (rc != 0)
            rc = nectar_error_set(
                err, rc == NECTAR_ETIMEDOUT ? rc : NECTAR_ECONNRESET,
                "ipc: send failed: %s", nectar_strerror(rc));
    }
    pthread_mutex_unlock(&c->send_lock);
    nectar__ipc_buf_free(&b);
    if (rc == NECTAR_ECONNRESET || rc == NECTAR_ETIMEDOUT)
        write_failed(c, rc);
    return rc;
}

/* ---- 4. direct mode -------------------------------------------------
 *
 * A client with no on_message/on_event handler needs no event thread for
 * blocking calls: the waiting callers read the socket themselves, one at
 * a time (leader/follower, `reader_active` under conn->lock).  A reply
 * meant for another waiter is handed over through conn->cv.  This saves
 * a thread hop per call.  The first asynchronous request upgrades the
 * connection to an event thread for good (direct_upgrade).  In direct
 * mode the connection owns its descriptor; the rx assembly belongs to
 * whoever is the reader. */

/* Ends the socket of a direct-mode connection.  as_reader: the caller is
 * the active reader; otherwise, if a reader is active, it is woken with
 * shutdown() and does the closing itself. */
static void direct_close(struct nectar_ipc_conn *c, bool as_reader, bool final,
                         int status, const char *why)
{
    pthread_mutex_lock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    if (!as_reader && c->reader_active) {
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_unlock(&c->send_lock);
        return;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (final || c->state == ST_INVALID) {
        c->state = ST_INVALID;
        c->final_done = true;
    } else if (c->state == ST_OPEN) {
        c->state = ST_IDLE;
    }
    struct ux_pending *failed = pending_fail_all(c, status, why);
    rx_reset(c);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->send_lock);
    pending_run_failed(failed, status, why);
}

/* Handles one complete message read in direct mode. */
static void direct_message(struct nectar_ipc_conn *c)
{
    nectar_error_t err = {0};
    nectar_ipc_obj_t *body = NULL;
    struct pkt_header h;
    if (rx_decode(c, &body, &h, &err) != 0) {
        nectar_log(NECTAR_LOG_WARN, TAG, "closing connection: %s", err.message);
        direct_close(c, true, true, NECTAR_ECLOSED, err.message);
        return;
    }
    if (h.type == PKT_REPLY)
        deliver_reply(c, body, h.id);
    else
        nectar_ipc_release(body); /* no handler to give it to */
}

/* Becomes the reader for one slice: waits for a packet until deadline
 * (ms, 0 = none) or DIRECT_SLICE_MS, reads what is there.  conn->lock is
 * held on entry and exit and dropped in between. */
static void direct_read(struct nectar_ipc_conn *c, uint64_t deadline)
{
    c->reader_active = true;
    int fd = c->fd;
    pthread_mutex_unlock(&c->lock);
    (void)deadline; /* the socket's SO_RCVTIMEO bounds each read */
    bool closed = false;
    {
        const char *why = NULL;
        for (int i = 0; i < READS_PER_TURN && !closed; i++) {
            /* Blocking read: one syscall per reply instead of poll plus
             * read; SO_RCVTIMEO (a slice) bounds it. */
            enum rx_status st = rx_one(c, fd, i == 0 ? 0 : MSG_DONTWAIT, &why);
            if (st == RX_AGAIN)
                break;
            if (st == RX_MESSAGE) {
                direct_message(c);
                pthread_mutex_lock(&c->lock);
                closed = c->fd != fd;
                pthread_mutex_unlock(&c->lock);
                break; /* let a waiter whose reply came run */
            }
            if (st == RX_EOF || st == RX_ERROR) {
                direct_close(c, true, st == RX_ERROR,
                             st == RX_ERROR ? NECTAR_ECLOSED
                                            : NECTAR_ECONNRESET,
                             st == RX_ERROR ? why : "connection interrupted");
                closed = true;
            }
        }
    }
    pthread_mutex_lock(&c->lock);
    c->reader_active = false;
    pthread_cond_broadcast(&c->cv);
}

/* Moves a direct-mode client onto an event thread (first async request).
 * conn->lock held. */
static int direct_upgrade(struct nectar_ipc_conn *c, nectar_error_t *err)
{
    if (!c->direct)
        return 0;
    c->direct = false;
    while (c->reader_active)
        pthread_cond_wait(&c->cv, &c->lock);
    int rc = client_loop(c, err);
    if (rc != 0) {
        c->direct = true;
        return rc;
    }
    if (c->state == ST_OPEN)
        loop_post(c->loop, CMD_ATTACH, c, c->fd, c->gen);
    return 0;
}

/* ---- 5. listener ----------------------------------------------------- */

struct nectar_ipc_listener {
    struct ux_loop *loop;
    uv_poll_t poll;
    uv_timer_t retry; /* resumes accepting after running out of fds */
    int fd;
    bool unlink_path;
    char *service_name;
    struct ux_req req;
    nectar_ipc_message_cb on_message;
    nectar_ipc_event_cb on_event;
    nectar_ipc_peer_cb on_peer;
    void *ctx;
};

/* A new peer: identify, judge, announce the verdict.  A refused peer is
 * closed here, before anything it sent is read. */
static void accept_peer(struct nectar_ipc_listener *ls, int fd)
{
    struct ux_cred cred = {.pidfd = -1, .pid = -1};
    nectar_error_t err = {0};
    int rc = nectar__ux_cred_read(fd, &cred);
    if (rc == 0 && ls->req.set) {
        nectar_ipc_peer_t peer;
        nectar__ux_cred_to_peer(&cred, &peer);
        rc = nectar_ipc_requirement_check(&ls->req.r, &peer, &err);
    } else if (rc != 0) {
        nectar_error_set(&err, rc, "cannot read peer credentials");
    }
    if (rc != 0) {
        nectar_log(NECTAR_LOG_WARN, TAG, "%s: refused peer: %s",
                   ls->service_name, err.message);
        nectar__ux_send_verdict(fd, false, err.message);
        nectar__ux_cred_clear(&cred);
        close(fd);
        return;
    }
    struct nectar_ipc_conn *c = conn_new();
    if (c == NULL) {
        nectar__ux_cred_clear(&cred);
        close(fd);
        return;
    }
    nectar__ux_send_verdict(fd, true, NULL);
    c->loop = ls->loop;
    atomic_fetch_add(&ls->loop->refs, 1);
    c->cred = cred;
    c->has_cred = true;
    c->on_message = ls->on_message;
    c->on_event = ls->on_event;
    c->ctx = ls->ctx;
    c->fd = fd;
    c->gen = 1;
    c->state = ST_OPEN;
    conn_attach(c, fd, 1);
    if (ls->on_peer != NULL && c->io != NULL)
        ls->on_peer(ls, c, ls->ctx);
    conn_unref(c); /* the loop list and io hold it now */
}

static void on_accept(uv_poll_t *h, int status, int events);

static void on_accept_retry(uv_timer_t *t)
{
    struct nectar_ipc_listener *ls = t->data;
    uv_poll_start(&ls->poll, UV_READABLE, on_accept);
}

static void on_accept(uv_poll_t *h, int status, int events)
{
    struct nectar_ipc_listener *ls = h->data;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < ACCEPTS_PER_TURN; i++) {
        int fd = accept4(ls->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            accept_peer(ls, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
            errno == ENOMEM) {
            /* The pending peer stays queued and the poll would fire
             * again at once: pause instead of spinning. */
            nectar_log(NECTAR_LOG_WARN, TAG, "%s: accept: %s; retrying",
                       ls->service_name, strerror(errno));
            uv_poll_stop(&ls->poll);
            uv_timer_start(&ls->retry, on_accept_retry, 100, 0);
        }
        return;
    }
}

static void listener_stop_io(struct nectar_ipc_listener *ls)
{
    uv_poll_stop(&ls->poll);
    uv_close((uv_handle_t *)&ls->poll, on_handle_closed);
    uv_close((uv_handle_t *)&ls->retry, on_handle_closed);
}

/* A socket file at path: stale (nobody accepts) or in use. */
static bool path_in_use(const struct sockaddr_un *sa, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool used = connect(fd, (const struct sockaddr *)sa, len) == 0;
    close(fd);
    return used;
}

static int bind_listener(nectar_ipc_listener_t *ls, unsigned mode,
                         nectar_error_t *err)
{
    struct sockaddr_un sa;
    socklen_t salen;
    if (nectar__ux_make_addr(ls->service_name, &sa, &salen) != 0)
        return nectar_error_set(err, NECTAR_EINVAL, "ipc: bad service name");
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return nectar_error_set(err, -errno, "ipc: socket: %s",
                                strerror(errno));
    struct stat st;
    bool path = ls->service_name[0] == '/';
    if (path && lstat(ls->service_name, &st) == 0 && S_ISSOCK(st.st_mode)) {
        if (path_in_use(&sa, salen)) {
            close(fd);
            return nectar_error_set(err, NECTAR_EADDRINUSE,
                                    "ipc: '%s' is served by another "
                                    "listener",
                                    ls->service_name);
        }
        unlink(ls->service_name); /* stale, left by a crash */
    }
    if (bind(fd, (struct sockaddr *)&sa, salen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        return nectar_error_set(err, -e, "ipc: cannot listen on '%s': %s",
                                ls->service_name, strerror(e));
    }
    if (path) {
        chmod(ls->service_name, mode ? mode : 0666);
        ls->unlink_path = true;
    }
    ls->fd = fd;
    return 0;
}

static void listener_free(nectar_ipc_listener_t *ls)
{
    if (ls->unlink_path)
        unlink(ls->service_name);
    nectar_free(ls->service_name);
    nectar__ux_req_free(&ls->req);
    nectar_free(ls);
}

static int ux_listen(const nectar_ipc_listener_config_t *cfg,
                     nectar_ipc_listener_t **out, nectar_error_t *err)
{
    nectar_ipc_listener_t *ls = nectar_calloc(1, sizeof(*ls));
    if (ls == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    ls->fd = -1;
    ls->service_name = nectar_strdup(cfg->service_name);
    ls->on_message = cfg->on_message;
    ls->on_event = cfg->on_event;
    ls->on_peer = cfg->on_peer;
    ls->ctx = cfg->ctx;
    int rc = ls->service_name ? nectar__ux_req_copy(&ls->req, cfg->requirement)
                              : NECTAR_ENOMEM;
    if (rc == 0 && (cfg->flags & NECTAR_IPC_LISTEN_SOCKET_ACTIVATION)) {
        ls->fd = nectar__ux_activation_fd(cfg->service_name, err);
        rc = ls->fd < -1 ? ls->fd : 0;
        if (ls->fd < 0)
            ls->fd = -1;
    }
    if (rc == 0 && ls->fd < 0)
        rc = bind_listener(ls, cfg->path_mode, err);
    if (rc == 0) {
        ls->loop = loop_new(err);
        rc = ls->loop ? 0 : NECTAR_ENOMEM;
    }
    if (rc != 0) {
        if (ls->fd >= 0)
            close(ls->fd);
        listener_free(ls);
        return rc == NECTAR_ENOMEM
                   ? nectar_error_set(err, rc, "ipc: out of memory")
                   : rc;
    }
    ls->loop->listener = ls;
    uv_poll_init(&ls->loop->uv, &ls->poll, ls->fd);
    ls->poll.data = ls;
    uv_timer_init(&ls->loop->uv, &ls->retry);
    ls->retry.data = ls;
    uv_poll_start(&ls->poll, UV_READABLE, on_accept);
    rc = loop_start(ls->loop, err);
    if (rc != 0) {
        loop_stop_all(ls->loop);
        uv_run(&ls->loop->uv, UV_RUN_DEFAULT);
        loop_unref(ls->loop);
        close(ls->fd);
        listener_free(ls);
        return rc;
    }
    *out = ls;
    return 0;
}

static void ux_listener_close(nectar_ipc_listener_t *ls)
{
    loop_shutdown(ls->loop);
    close(ls->fd);
    loop_unref(ls->loop);
    listener_free(ls);
}

/* ---- 6. public slots ------------------------------------------------- */

static int ux_connect(const nectar_ipc_client_config_t *cfg,
                      nectar_ipc_conn_t **out, nectar_error_t *err)
{
    struct nectar_ipc_conn *c = conn_new();
    if (c == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    c->is_client = true;
    atomic_store(&c->user_refs, 1);
    c->service_name = nectar_strdup(cfg->service_name);
    c->on_message = cfg->on_message;
    c->on_event = cfg->on_event;
    c->ctx = cfg->ctx;
    c->call_timeout_ms = cfg->call_timeout_ms;
    c->direct = cfg->on_message == NULL && cfg->on_event == NULL;
    c->connect_timeout_ms =
        cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DEFAULT_CONNECT_MS;
    if (c->service_name == NULL ||
        nectar__ux_req_copy(&c->req, cfg->requirement) != 0) {
        conn_unref(c);
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    }
    *out = c;
    return 0;
}

static int ux_send(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                   nectar_error_t *err)
{
    uint64_t gen;
    pthread_mutex_lock(&c->lock);
    int rc = ensure_open(c, &gen, err);
    pthread_mutex_unlock(&c->lock);
    if (rc != 0)
        return rc;
    return conn_write(c, PKT_MESSAGE, 0, gen, msg, err);
}

/* Registers p and sends the request.  If the send fails but p was
 * already completed by a detach, the callback reported it: return 0. */
static int request_start(struct nectar_ipc_conn *c, struct ux_pending *p,
                         const nectar_ipc_obj_t *msg, uint64_t *id_out,
                         nectar_error_t *err)
{
    pthread_mutex_lock(&c->lock);
    int rc = ensure_open(c, &p->gen, err);
    if (rc != 0) {
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    uint64_t id = c->next_id++;
    uint64_t gen = p->gen;
    p->id = id;
    pending_add(c, p);
    if (id_out != NULL)
        *id_out = id;
    pthread_mutex_unlock(&c->lock);
    /* From here an async p may be completed and freed by the loop. */
    rc = conn_write(c, PKT_REQUEST, id, gen, msg, err);
    if (rc == 0)
        return 0;
    pthread_mutex_lock(&c->lock);
    bool still = pending_find(c, id) == p;
    if (still)
        pending_unlink(c, p);
    pthread_mutex_unlock(&c->lock);
    return still ? rc : 0;
}

static int ux_send_with_reply(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                              uint32_t timeout_ms, nectar_ipc_reply_cb cb,
                              void *ctx, uint64_t *id, nectar_error_t *err)
{
    struct ux_pending *p = nectar_calloc(1, sizeof(*p));
    if (p == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    if (timeout_ms == 0)
        timeout_ms = c->call_timeout_ms;
    if (c->is_client) {
        pthread_mutex_lock(&c->lock);
        int rc = direct_upgrade(c, err);
        pthread_mutex_unlock(&c->lock);
        if (rc != 0) {
            nectar_free(p);
            return rc;
        }
    }
    p->cb = cb;
    p->cb_ctx = ctx;
    p->deadline = timeout_ms ? nectar__ux_now_ms() + timeout_ms : 0;
    uint64_t deadline = p->deadline;
    int rc = request_start(c, p, msg, id, err);
    if (rc != 0) {
        nectar_free(p);
        return rc;
    }
    if (deadline != 0)
        loop_post(c->loop, CMD_REARM, NULL, -1, 0);
    return 0;
}

/* Waits on conn->cv until deadline (ms, 0 = none); in direct mode at most
 * one reader slice, so a waiter can take over reading.  Lock held. */
static void cond_wait_until(struct nectar_ipc_conn *c, uint64_t deadline)
{
    uint64_t until = deadline;
    if (c->direct) {
        uint64_t slice = nectar__ux_now_ms() + DIRECT_SLICE_MS;
        if (until == 0 || slice < until)
            until = slice;
    }
    if (until == 0) {
        pthread_cond_wait(&c->cv, &c->lock);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = nectar__ux_now_ms();
    uint64_t wait = until > now ? until - now : 0;
    ts.tv_sec += (time_t)(wait / 1000);
    ts.tv_nsec += (long)(wait % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->cv, &c->lock, &ts);
}

static int ux_send_sync(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                        uint32_t timeout_ms, nectar_ipc_obj_t **reply,
                        nectar_error_t *err)
{
    if (on_loop_thread(c->loop))
        return nectar_error_set(err, NECTAR_ESTATE,
                                "ipc: blocking call on the connection's "
                                "own event thread");
    struct ux_pending p = {.sync = true};
    if (timeout_ms == 0)
        timeout_ms = c->call_timeout_ms;
    int rc = request_start(c, &p, msg, NULL, err);
    if (rc != 0)
        return rc;
    uint64_t deadline = timeout_ms ? nectar__ux_now_ms() + timeout_ms : 0;
    pthread_mutex_lock(&c->lock);
    while (!p.done) {
        if (deadline != 0 && nectar__ux_now_ms() >= deadline) {
            pending_unlink(c, &p);
            pthread_mutex_unlock(&c->lock);
            return nectar_error_set(err, NECTAR_ETIMEDOUT,
                                    "ipc: call timed out after %u ms",
                                    timeout_ms);
        }
        if (c->direct && !c->reader_active && c->state == ST_OPEN &&
            p.gen == c->gen) {
            direct_read(c, deadline);
            continue;
        }
        cond_wait_until(c, deadline);
    }
    pthread_mutex_unlock(&c->lock);
    if (p.status != 0) {
        if (err != NULL)
            *err = p.err;
        return p.status;
    }
    *reply = p.reply;
    return 0;
}

static int ux_cancel_request(nectar_ipc_conn_t *c, uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    struct ux_pending *p = id ? pending_find(c, id) : NULL;
    if (p != NULL && !p->sync)
        pending_unlink(c, p);
    else
        p = NULL;
    pthread_mutex_unlock(&c->lock);
    if (p == NULL)
        return NECTAR_ENOENT;
    nectar_free(p);
    return 0;
}

static void ux_conn_cancel(nectar_ipc_conn_t *c)
{
    if (on_loop_thread(c->loop)) {
        loop_cancel_conn(c);
        return;
    }
    pthread_mutex_lock(&c->lock);
    bool done = c->final_done;
    bool no_loop = c->loop == NULL;
    if (no_loop && !done) {
        c->state = ST_INVALID;
        c->final_done = true;
    }
    pthread_mutex_unlock(&c->lock);
    if (done)
        return;
    if (no_loop) {
        /* No event thread (never connected, or direct mode): close the
         * socket once no caller reads it; the one INVALIDATED event runs
         * here. */
        pthread_mutex_lock(&c->lock);
        while (c->reader_active) {
            if (c->fd >= 0)
                shutdown(c->fd, SHUT_RDWR);
            pthread_cond_wait(&c->cv, &c->lock);
        }
        pthread_mutex_unlock(&c->lock);
        direct_close(c, true, true, NECTAR_ECLOSED, "connection cancelled");
        fire_event(c, NECTAR_IPC_EVENT_INVALIDATED, "connection cancelled");
        return;
    }
    if (!loop_post(c->loop, CMD_CANCEL, c, -1, 0))
        return;
    /* Wait for the event too: after cancel returns no callback runs. */
    pthread_mutex_lock(&c->lock);
    while (!c->final_done)
        pthread_cond_wait(&c->cv, &c->lock);
    pthread_mutex_unlock(&c->lock);
}

static nectar_ipc_conn_t *ux_conn_retain(nectar_ipc_conn_t *c)
{
    atomic_fetch_add(&c->user_refs, 1);
    atomic_fetch_add(&c->refs, 1);
    return c;
}

static void ux_conn_release(nectar_ipc_conn_t *c)
{
    unsigned prev = atomic_fetch_sub(&c->user_refs, 1);
    if (prev == 1 && c->is_client) {
        /* The last user handle of a client: end it and its thread. */
        ux_conn_cancel(c);
        if (c->loop != NULL) {
            if (on_loop_thread(c->loop)) {
                loop_post(c->loop, CMD_STOP, NULL, -1, 0);
                pthread_detach(c->loop->thread);
            } else {
                loop_shutdown(c->loop);
            }
        }
    }
    conn_unref(c);
}

static int ux_conn_peer(nectar_ipc_conn_t *c, nectar_ipc_peer_t *out)
{
    pthread_mutex_lock(&c->lock);
    bool has = c->has_cred;
    if (has)
        nectar__ux_cred_to_peer(&c->cred, out);
    pthread_mutex_unlock(&c->lock);
    return has ? 0 : NECTAR_ENOTCONN;
}

static void ux_conn_set_context(nectar_ipc_conn_t *c, void *ctx)
{
    pthread_mutex_lock(&c->lock);
    c->user_ctx = ctx;
    pthread_mutex_unlock(&c->lock);
}

static void *ux_conn_get_context(nectar_ipc_conn_t *c)
{
    pthread_mutex_lock(&c->lock);
    void *ctx = c->user_ctx;
    pthread_mutex_unlock(&c->lock);
    return ctx;
}

static nectar_ipc_obj_t *ux_message_body(const nectar_ipc_message_t *m)
{
    return m->body;
}

static bool ux_message_expects_reply(const nectar_ipc_message_t *m)
{
    return m->expects_reply;
}

static void ux_message_release(nectar_ipc_message_t *m)
{
    nectar_ipc_release(m->body);
    atomic_fetch_sub(&m->conn->live_msgs, 1);
    conn_unref(m->conn);
    nectar_free(m);
}

static int ux_message_reply(nectar_ipc_message_t *m,
                            const nectar_ipc_obj_t *reply, nectar_error_t *err)
{
    int rc;
    if (!m->expects_reply)
        rc = nectar_error_set(err, NECTAR_ESTATE,
                              "ipc: reply not expected "
                              "(fire-and-forget message)");
    else
        rc = conn_write(m->conn, PKT_REPLY, m->id, m->gen, reply, err);
    ux_message_release(m);
    return rc;
}

const struct nectar__ipc_backend nectar__ipc_backend_unix = {
    .name = "unix",
    .req_supported = NECTAR_IPC_REQ_UID | NECTAR_IPC_REQ_GID |
                     NECTAR_IPC_REQ_EXE_PATH | NECTAR_IPC_REQ_SAME_EXE |
                     NECTAR_IPC_REQ_PREDICATE | NECTAR_IPC_REQ_OR_ROOT,
    .listen = ux_listen,
    .listener_close = ux_listener_close,
    .connect = ux_connect,
    .send = ux_send,
    .send_with_reply = ux_send_with_reply,
    .send_sync = ux_send_sync,
    .cancel_request = ux_cancel_request,
    .conn_cancel = ux_conn_cancel,
    .conn_retain = ux_conn_retain,
    .conn_release = ux_conn_release,
    .conn_peer = ux_conn_peer,
    .conn_set_context = ux_conn_set_context,
    .conn_get_context = ux_conn_get_context,
    .message_body = ux_message_body,
    .message_expects_reply = ux_message_expects_reply,
    .message_reply = ux_message_reply,
    .message_release = ux_message_release,
};

#endif /* !__APPLE__ */
