/*
 * backend_unix_io.c - the Linux IPC backend's data path: packets read
 * from a socket (SCM_RIGHTS descriptors included) assembled into one
 * message, decoded and dispatched, and messages encoded and written.
 */
#if !defined(__APPLE__)

#include "ipc/backend_unix.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TAG "ipc"

void nectar__ux_rx_reset(struct nectar_ipc_conn *c)
{
    c->rx.len = 0;
    c->rx_busy = false;
    for (size_t i = 0; i < c->rx_nfds; i++)
        close(c->rx_fds[i]);
    c->rx_nfds = 0;
}

/* Decodes the message assembled in c->rx (and resets the assembly).
 * Returns 0 with *body (frozen dictionary) and *h, or an error. */
int nectar__ux_rx_decode(struct nectar_ipc_conn *c, nectar_ipc_obj_t **body,
                         struct pkt_header *h, nectar_error_t *err)
{
    int rc = nectar__ipc_decode(c->rx.p, c->rx.len, c->rx_fds, c->rx_nfds, body,
                                err);
    *h = c->rx_hdr;
    nectar__ux_rx_reset(c);
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
    if (nectar__ux_rx_decode(c, &body, &h, &err) != 0) {
        nectar__ux_protocol_error(c, err.message);
        return;
    }
    if (h.type == PKT_REPLY)
        nectar__ux_deliver_reply(c, body, h.id);
    else
        nectar__ux_deliver_message(c, body, h.type, h.id, gen);
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
/* Reads one packet from fd into the assembly of c.  The caller is the
 * only reader (the loop thread, or the direct-mode reader). */
enum rx_status nectar__ux_rx_one(struct nectar_ipc_conn *c, int fd, int flags,
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
        switch (nectar__ux_rx_one(c, c->io->fd, MSG_DONTWAIT, &why)) {
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
            nectar__ux_conn_detach(c,
                                   c->is_client ? NECTAR_IPC_EVENT_INTERRUPTED
                                                : NECTAR_IPC_EVENT_INVALIDATED,
                                   c->is_client ? "server closed the connection"
                                                : "peer closed the connection",
                                   !c->is_client);
            return false;
        case RX_ERROR:
            nectar__ux_protocol_error(c, why);
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
        nectar__ux_protocol_error(c, uv_strerror(status));
        return;
    }
    pthread_mutex_lock(&c->lock);
    uint64_t gen = c->gen;
    pthread_mutex_unlock(&c->lock);
    conn_read(c, gen);
}

/* Starts watching fd for c (loop thread).  A stale attach (cancelled or
 * reconnected in between) just closes the descriptor. */
void nectar__ux_conn_attach(struct nectar_ipc_conn *c, int fd, uint64_t gen)
{
    pthread_mutex_lock(&c->lock);
    bool current = c->state == ST_OPEN && c->gen == gen && c->fd == fd;
    pthread_mutex_unlock(&c->lock);
    struct ux_io *io = current ? nectar_calloc(1, sizeof(*io)) : NULL;
    if (io == NULL) {
        if (current)
            nectar__ux_conn_detach(c, NECTAR_IPC_EVENT_INVALIDATED,
                                   "out of memory", true);
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
    nectar__ux_loop_list_add(c->loop, c);
    uv_poll_start(&io->poll, UV_READABLE | UV_DISCONNECT, on_io);
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
        nectar__ux_direct_close(c, false, false, NECTAR_ECONNRESET,
                                "connection interrupted");
        return;
    }
    if (rc == NECTAR_ETIMEDOUT && first && c->loop != NULL) {
        nectar_log(NECTAR_LOG_WARN, TAG,
                   "dropping a peer that does not read (uid %u)", uid);
        nectar__ux_loop_post(c->loop, CMD_CANCEL, c, -1, 0);
    }
}

/* Encodes msg and writes it with the given packet type and id on the
 * connection's live socket of generation gen (0: whatever is live). */
int nectar__ux_conn_write(struct nectar_ipc_conn *c, uint8_t type, uint64_t id,
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
        uint32_t t = nectar__ux_on_loop_thread(c->loop) ? LOOP_SEND_TIMEOUT_MS
                                                        : SEND_TIMEOUT_MS;
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

#endif /* !__APPLE__ */
