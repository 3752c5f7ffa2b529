/*
 * backend_unix_client.c - the client side of the Linux IPC backend:
 * the lazy connect with its verdict handshake and check of the server,
 * and direct mode, where callers read their own replies.
 */
#if !defined(__APPLE__)

#include "ipc/backend_unix.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TAG "ipc"

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
    struct ux_loop *l = nectar__ux_loop_new(err);
    if (l == NULL)
        return NECTAR_ENOMEM;
    int rc = nectar__ux_loop_start(l, err);
    if (rc != 0) {
        uv_close((uv_handle_t *)&l->wake, NULL);
        uv_close((uv_handle_t *)&l->timer, NULL);
        uv_run(&l->uv, UV_RUN_DEFAULT);
        nectar__ux_loop_unref(l);
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
int nectar__ux_ensure_open(struct nectar_ipc_conn *c, uint64_t *gen,
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
                nectar__ux_loop_post(c->loop, CMD_PEERFAIL, c, -1, 0);
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
            nectar__ux_loop_post(c->loop, CMD_ATTACH, c, fd, c->gen);
    }
}

/* ---- direct mode ----------------------------------------------------
 *
 * A client with no on_message/on_event handler needs no event thread for
 * blocking calls: the waiting callers read the socket themselves, one at
 * a time (leader/follower, `reader_active` under conn->lock).  A reply
 * meant for another waiter is handed over through conn->cv.  This saves
 * a thread hop per call.  The first asynchronous request upgrades the
 * connection to an event thread for good (nectar__ux_direct_upgrade).  In
 * direct mode the connection owns its descriptor; the rx assembly belongs to
 * whoever is the reader. */

/* Ends the socket of a direct-mode connection.  as_reader: the caller is
 * the active reader; otherwise, if a reader is active, it is woken with
 * shutdown() and does the closing itself. */
void nectar__ux_direct_close(struct nectar_ipc_conn *c, bool as_reader,
                             bool final, int status, const char *why)
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
    struct ux_pending *failed = nectar__ux_pending_fail_all(c, status, why);
    nectar__ux_rx_reset(c);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->send_lock);
    nectar__ux_pending_run_failed(failed, status, why);
}

/* Handles one complete message read in direct mode. */
static void direct_message(struct nectar_ipc_conn *c)
{
    nectar_error_t err = {0};
    nectar_ipc_obj_t *body = NULL;
    struct pkt_header h;
    if (nectar__ux_rx_decode(c, &body, &h, &err) != 0) {
        nectar_log(NECTAR_LOG_WARN, TAG, "closing connection: %s", err.message);
        nectar__ux_direct_close(c, true, true, NECTAR_ECLOSED, err.message);
        return;
    }
    if (h.type == PKT_REPLY)
        nectar__ux_deliver_reply(c, body, h.id);
    else
        nectar_ipc_release(body); /* no handler to give it to */
}

/* Becomes the reader for one slice: waits for a packet until deadline
 * (ms, 0 = none) or DIRECT_SLICE_MS, reads what is there.  conn->lock is
 * held on entry and exit and dropped in between. */
void nectar__ux_direct_read(struct nectar_ipc_conn *c, uint64_t deadline)
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
            enum rx_status st =
                nectar__ux_rx_one(c, fd, i == 0 ? 0 : MSG_DONTWAIT, &why);
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
                nectar__ux_direct_close(
                    c, true, st == RX_ERROR,
                    st == RX_ERROR ? NECTAR_ECLOSED : NECTAR_ECONNRESET,
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
int nectar__ux_direct_upgrade(struct nectar_ipc_conn *c, nectar_error_t *err)
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
        nectar__ux_loop_post(c->loop, CMD_ATTACH, c, c->fd, c->gen);
    return 0;
}

int nectar__ux_connect(const nectar_ipc_client_config_t *cfg,
                       nectar_ipc_conn_t **out, nectar_error_t *err)
{
    struct nectar_ipc_conn *c = nectar__ux_conn_new();
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
        nectar__ux_conn_unref(c);
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    }
    *out = c;
    return 0;
}

#endif /* !__APPLE__ */
