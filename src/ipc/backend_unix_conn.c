/*
 * backend_unix_conn.c - the Linux IPC backend's connection object: its
 * lifetime, the pending-request list, the end of a socket (detach,
 * cancel) and delivery of received messages and replies to handlers.
 */
#if !defined(__APPLE__)

#include "ipc/backend_unix.h"

#include <unistd.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TAG "ipc"

struct nectar_ipc_conn *nectar__ux_conn_new(void)
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

void nectar__ux_conn_unref(struct nectar_ipc_conn *c)
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
    nectar__ux_loop_unref(c->loop);
    nectar_free(c);
}

/* Pending list helpers; conn->lock held. */
void nectar__ux_pending_add(struct nectar_ipc_conn *c, struct ux_pending *p)
{
    p->prev = NULL;
    p->next = c->pending;
    if (c->pending != NULL)
        c->pending->prev = p;
    c->pending = p;
}

void nectar__ux_pending_unlink(struct nectar_ipc_conn *c, struct ux_pending *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        c->pending = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

struct ux_pending *nectar__ux_pending_find(struct nectar_ipc_conn *c,
                                           uint64_t id)
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
void nectar__ux_pending_complete(struct nectar_ipc_conn *c,
                                 struct ux_pending *p, int status,
                                 nectar_ipc_obj_t *reply, const char *why)
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
 * nectar__ux_pending_run_failed, to be called once every lock is dropped. */
struct ux_pending *nectar__ux_pending_fail_all(struct nectar_ipc_conn *c,
                                               int status, const char *why)
{
    struct ux_pending *async = NULL;
    while (c->pending != NULL) {
        struct ux_pending *p = c->pending;
        nectar__ux_pending_unlink(c, p);
        if (p->sync) {
            nectar__ux_pending_complete(c, p, status, NULL, why);
            continue;
        }
        p->next = async;
        async = p;
    }
    return async;
}

void nectar__ux_pending_run_failed(struct ux_pending *list, int status,
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

void nectar__ux_fire_event(struct nectar_ipc_conn *c, nectar_ipc_event_t ev,
                           const char *reason)
{
    if (c->on_event != NULL)
        c->on_event(c, ev, reason, c->ctx);
}

void nectar__ux_loop_list_add(struct ux_loop *l, struct nectar_ipc_conn *c)
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
    nectar__ux_conn_unref(c);
}

static void on_io_closed(uv_handle_t *h)
{
    struct ux_io *io = h->data;
    close(io->fd);
    nectar__ux_conn_unref(io->conn);
    nectar_free(io);
}

/* Ends the current socket of c (loop thread).  final: the connection is
 * invalid for good; otherwise (a client whose server left) it returns to
 * IDLE and reconnects on the next send.  Pending requests fail, then the
 * event fires; both outside the lock. */
void nectar__ux_conn_detach(struct nectar_ipc_conn *c, nectar_ipc_event_t ev,
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
    struct ux_pending *failed = nectar__ux_pending_fail_all(c, status, why);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->send_lock);
    nectar__ux_pending_run_failed(failed, status, why);
    if (c->io != NULL) {
        uv_poll_stop(&c->io->poll);
        uv_close((uv_handle_t *)&c->io->poll, on_io_closed);
        c->io = NULL;
    }
    nectar__ux_rx_reset(c);
    atomic_fetch_add(&c->refs, 1);
    nectar__ux_fire_event(c, ev, reason);
    if (final) {
        pthread_mutex_lock(&c->lock);
        c->final_done = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->lock);
        loop_list_remove(l, c);
    }
    nectar__ux_conn_unref(c);
}

/* CMD_CANCEL, listener shutdown, or a cancel from a callback. */
void nectar__ux_loop_cancel_conn(struct nectar_ipc_conn *c)
{
    pthread_mutex_lock(&c->lock);
    bool done = c->state == ST_INVALID || c->state == ST_PEER_FAILED;
    pthread_mutex_unlock(&c->lock);
    if (done) {
        loop_list_remove(c->loop, c);
        return;
    }
    nectar__ux_conn_detach(c, NECTAR_IPC_EVENT_INVALIDATED,
                           "connection cancelled", true);
}

void nectar__ux_protocol_error(struct nectar_ipc_conn *c, const char *what)
{
    nectar_log(NECTAR_LOG_WARN, TAG, "closing peer (uid %u): %s",
               (unsigned)c->cred.uid, what);
    nectar__ux_conn_detach(c, NECTAR_IPC_EVENT_INVALIDATED, what, true);
}

void nectar__ux_deliver_message(struct nectar_ipc_conn *c,
                                nectar_ipc_obj_t *body, uint8_t type,
                                uint64_t id, uint64_t gen)
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

void nectar__ux_deliver_reply(struct nectar_ipc_conn *c, nectar_ipc_obj_t *body,
                              uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    struct ux_pending *p = nectar__ux_pending_find(c, id);
    if (p != NULL) {
        nectar__ux_pending_unlink(c, p);
        nectar__ux_pending_complete(c, p, 0, body, "");
    }
    pthread_mutex_unlock(&c->lock);
    /* An unknown id is a request that was cancelled or timed out. */
    nectar_ipc_release(body);
}

#endif /* !__APPLE__ */
