/*
 * backend_unix_loop.c - the Linux IPC backend's event loop: one libuv
 * thread per listener and per client connection, the command queue other
 * threads use to reach it, and the timer that expires asynchronous
 * requests.
 */
#if !defined(__APPLE__)

#include "ipc/backend_unix.h"

#include <signal.h>

#include "common/alloc.h"

/* The loop whose thread this is (NULL on other threads). */
static _Thread_local struct ux_loop *current_loop;

static void timer_rearm(struct ux_loop *l);

bool nectar__ux_on_loop_thread(const struct ux_loop *l)
{
    return l != NULL && current_loop == l;
}

/* Queues a command for the loop thread; consumes the conn reference in
 * cmd on failure.  Returns false when the loop no longer takes commands. */
bool nectar__ux_loop_post(struct ux_loop *l, enum cmd_kind kind,
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
            nectar__ux_conn_unref(c);
        nectar_free(cmd);
        return false;
    }
    uv_async_send(&l->wake);
    return true;
}

/* CMD_PEERFAIL: the refused client's one final event. */
static void conn_peer_failed(struct nectar_ipc_conn *c)
{
    nectar__ux_fire_event(c, NECTAR_IPC_EVENT_PEER_REQUIREMENT_FAILED,
                          c->fail_reason);
    pthread_mutex_lock(&c->lock);
    c->final_done = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->lock);
}

static void run_cmd(struct ux_loop *l, struct ux_cmd *cmd)
{
    switch (cmd->kind) {
    case CMD_ATTACH:
        nectar__ux_conn_attach(cmd->conn, cmd->fd, cmd->gen);
        break;
    case CMD_CANCEL:
        nectar__ux_loop_cancel_conn(cmd->conn);
        break;
    case CMD_PEERFAIL:
        conn_peer_failed(cmd->conn);
        break;
    case CMD_REARM:
        timer_rearm(l);
        break;
    case CMD_STOP:
        nectar__ux_loop_stop_all(l);
        break;
    }
    if (cmd->conn != NULL)
        nectar__ux_conn_unref(cmd->conn);
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
    nectar__ux_loop_unref(l); /* the thread's own reference */
    return NULL;
}

static void on_timer(uv_timer_t *t);

struct ux_loop *nectar__ux_loop_new(nectar_error_t *err)
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

int nectar__ux_loop_start(struct ux_loop *l, nectar_error_t *err)
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

void nectar__ux_loop_unref(struct ux_loop *l)
{
    if (l == NULL || atomic_fetch_sub(&l->refs, 1) != 1)
        return;
    uv_loop_close(&l->uv);
    pthread_mutex_destroy(&l->lock);
    nectar_free(l);
}

/* Stops the loop thread and waits for it.  From a thread other than the
 * loop's own. */
void nectar__ux_loop_shutdown(struct ux_loop *l)
{
    if (!atomic_load(&l->running))
        return;
    if (nectar__ux_loop_post(l, CMD_STOP, NULL, -1, 0))
        pthread_join(l->thread, NULL);
    atomic_store(&l->running, false);
}

void nectar__ux_on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* CMD_STOP: invalidate every connection, close our handles, refuse
 * further commands; uv_run then returns. */
void nectar__ux_loop_stop_all(struct ux_loop *l)
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
        nectar__ux_loop_cancel_conn(l->conns);
    if (l->listener != NULL)
        nectar__ux_listener_stop_io(l->listener);
    uv_close((uv_handle_t *)&l->timer, nectar__ux_on_handle_closed);
    uv_close((uv_handle_t *)&l->wake, nectar__ux_on_handle_closed);
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
            nectar__ux_pending_unlink(c, p);
            nectar__ux_pending_complete(c, p, NECTAR_ETIMEDOUT, NULL,
                                        "call timed out");
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

#endif /* !__APPLE__ */
