/*
 * backend_unix.c - the Linux IPC backend: SOCK_SEQPACKET Unix sockets, a
 * libuv event thread per listener and per client connection, peers
 * identified by SO_PEERCRED plus a pidfd, fds as SCM_RIGHTS.  The wire
 * format (packet header, fragments, verdict handshake) is specified in
 * docs/ipc-protocol.md.
 *
 * This file holds the public slots and the backend table; the rest of
 * the backend shares backend_unix.h (which maps its files).  Packet
 * framing, credentials, addresses and activation are in unix_sock.c.
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

#include "ipc/backend_unix.h"

#include <time.h>

#include "common/alloc.h"

static int ux_send(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                   nectar_error_t *err)
{
    uint64_t gen;
    pthread_mutex_lock(&c->lock);
    int rc = nectar__ux_ensure_open(c, &gen, err);
    pthread_mutex_unlock(&c->lock);
    if (rc != 0)
        return rc;
    return nectar__ux_conn_write(c, PKT_MESSAGE, 0, gen, msg, err);
}

/* Registers p and sends the request.  If the send fails but p was
 * already completed by a detach, the callback reported it: return 0. */
static int request_start(struct nectar_ipc_conn *c, struct ux_pending *p,
                         const nectar_ipc_obj_t *msg, uint64_t *id_out,
                         nectar_error_t *err)
{
    pthread_mutex_lock(&c->lock);
    int rc = nectar__ux_ensure_open(c, &p->gen, err);
    if (rc != 0) {
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    uint64_t id = c->next_id++;
    uint64_t gen = p->gen;
    p->id = id;
    nectar__ux_pending_add(c, p);
    if (id_out != NULL)
        *id_out = id;
    pthread_mutex_unlock(&c->lock);
    /* From here an async p may be completed and freed by the loop. */
    rc = nectar__ux_conn_write(c, PKT_REQUEST, id, gen, msg, err);
    if (rc == 0)
        return 0;
    pthread_mutex_lock(&c->lock);
    bool still = nectar__ux_pending_find(c, id) == p;
    if (still)
        nectar__ux_pending_unlink(c, p);
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
        int rc = nectar__ux_direct_upgrade(c, err);
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
        nectar__ux_loop_post(c->loop, CMD_REARM, NULL, -1, 0);
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
    if (nectar__ux_on_loop_thread(c->loop))
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
            nectar__ux_pending_unlink(c, &p);
            pthread_mutex_unlock(&c->lock);
            return nectar_error_set(err, NECTAR_ETIMEDOUT,
                                    "ipc: call timed out after %u ms",
                                    timeout_ms);
        }
        if (c->direct && !c->reader_active && c->state == ST_OPEN &&
            p.gen == c->gen) {
            nectar__ux_direct_read(c, deadline);
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
    struct ux_pending *p = id ? nectar__ux_pending_find(c, id) : NULL;
    if (p != NULL && !p->sync)
        nectar__ux_pending_unlink(c, p);
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
    if (nectar__ux_on_loop_thread(c->loop)) {
        nectar__ux_loop_cancel_conn(c);
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
        nectar__ux_direct_close(c, true, true, NECTAR_ECLOSED,
                                "connection cancelled");
        nectar__ux_fire_event(c, NECTAR_IPC_EVENT_INVALIDATED,
                              "connection cancelled");
        return;
    }
    if (!nectar__ux_loop_post(c->loop, CMD_CANCEL, c, -1, 0))
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
            if (nectar__ux_on_loop_thread(c->loop)) {
                nectar__ux_loop_post(c->loop, CMD_STOP, NULL, -1, 0);
                pthread_detach(c->loop->thread);
            } else {
                nectar__ux_loop_shutdown(c->loop);
            }
        }
    }
    nectar__ux_conn_unref(c);
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
    nectar__ux_conn_unref(m->conn);
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
        rc = nectar__ux_conn_write(m->conn, PKT_REPLY, m->id, m->gen, reply,
                                   err);
    ux_message_release(m);
    return rc;
}

const struct nectar__ipc_backend nectar__ipc_backend_unix = {
    .name = "unix",
    .req_supported = NECTAR_IPC_REQ_UID | NECTAR_IPC_REQ_GID |
                     NECTAR_IPC_REQ_EXE_PATH | NECTAR_IPC_REQ_SAME_EXE |
                     NECTAR_IPC_REQ_PREDICATE | NECTAR_IPC_REQ_OR_ROOT,
    .listen = nectar__ux_listen,
    .listener_close = nectar__ux_listener_close,
    .connect = nectar__ux_connect,
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
