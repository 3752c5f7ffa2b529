/*
 * backend_unix_listener.c - the listener of the Linux IPC backend: bind
 * (or take a systemd-activated socket), accept on its event thread, read
 * and judge each peer's credentials, and announce the verdict.
 */
#if !defined(__APPLE__)

#include "ipc/backend_unix.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TAG "ipc"

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
    struct nectar_ipc_conn *c = nectar__ux_conn_new();
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
    nectar__ux_conn_attach(c, fd, 1);
    if (ls->on_peer != NULL && c->io != NULL)
        ls->on_peer(ls, c, ls->ctx);
    nectar__ux_conn_unref(c); /* the loop list and io hold it now */
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

void nectar__ux_listener_stop_io(struct nectar_ipc_listener *ls)
{
    uv_poll_stop(&ls->poll);
    uv_close((uv_handle_t *)&ls->poll, nectar__ux_on_handle_closed);
    uv_close((uv_handle_t *)&ls->retry, nectar__ux_on_handle_closed);
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

int nectar__ux_listen(const nectar_ipc_listener_config_t *cfg,
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
        ls->loop = nectar__ux_loop_new(err);
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
    rc = nectar__ux_loop_start(ls->loop, err);
    if (rc != 0) {
        nectar__ux_loop_stop_all(ls->loop);
        uv_run(&ls->loop->uv, UV_RUN_DEFAULT);
        nectar__ux_loop_unref(ls->loop);
        close(ls->fd);
        listener_free(ls);
        return rc;
    }
    *out = ls;
    return 0;
}

void nectar__ux_listener_close(nectar_ipc_listener_t *ls)
{
    nectar__ux_loop_shutdown(ls->loop);
    close(ls->fd);
    nectar__ux_loop_unref(ls->loop);
    listener_free(ls);
}

#endif /* !__APPLE__ */
