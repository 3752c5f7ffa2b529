/*
 * unix_sock.c - socket-level helpers of the Linux IPC backend: packet
 * framing, blocking-bounded writes, the verdict packet, peer credentials
 * (SO_PEERCRED, SO_PEERGROUPS, pidfd), service-name addresses and systemd
 * socket activation.  Everything here works on a bare descriptor; the
 * connection state machine lives in backend_unix.c.  Wire format:
 * docs/ipc-protocol.md.  Built only with backend_unix.c (see CMakeLists).
 */
#include "ipc/unix_sock.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; older headers lack it */
#endif

/* ---- packet framing and socket I/O ---------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

void nectar__ux_header_write(uint8_t *p, const struct pkt_header *h)
{
    p[0] = PKT_MAGIC;
    p[1] = PKT_VERSION;
    p[2] = h->type;
    p[3] = h->flags;
    put_be32(p + 4, h->total);
    put_be64(p + 8, h->id);
}

bool nectar__ux_header_read(const uint8_t *p, size_t n, struct pkt_header *h)
{
    if (n < PKT_HEADER || p[0] != PKT_MAGIC || p[1] != PKT_VERSION)
        return false;
    h->type = p[2];
    h->flags = p[3];
    h->total = (uint32_t)get_be(p + 4, 4);
    h->id = get_be(p + 8, 8);
    return (h->flags & ~PKT_MORE) == 0 && h->type >= PKT_VERDICT &&
           h->type <= PKT_REPLY;
}

uint64_t nectar__ux_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits for fd to become ready for `events` until deadline (ms, monotonic).
 * Returns 0 when ready, NECTAR_ETIMEDOUT, or -errno. */
int nectar__ux_wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = nectar__ux_now_ms();
        if (now >= deadline)
            return NECTAR_ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, (int)(deadline - now));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

/* Sends one packet (header + chunk, fds on it if any), waiting while the
 * peer's buffer is full.  Returns 0 or a negative code. */
static int send_packet(int fd, const uint8_t *hdr, const uint8_t *chunk,
                       size_t len, const int *fds, size_t nfds,
                       uint64_t deadline)
{
    /* Small packets without fds (most calls) are copied into one buffer:
     * a plain send() is cheaper for the kernel than a two-part msghdr. */
    uint8_t small[1024];
    struct iovec iov[2] = {{(void *)hdr, PKT_HEADER}, {(void *)chunk, len}};
    if (nfds == 0 && PKT_HEADER + len <= sizeof(small)) {
        memcpy(small, hdr, PKT_HEADER);
        if (len != 0)
            memcpy(small + PKT_HEADER, chunk, len);
        iov[0] = (struct iovec){small, PKT_HEADER + len};
        len = 0;
    }
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * NECTAR_IPC_MAX_FDS)];
    } ctl;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
    if (nfds != 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    for (;;) {
        ssize_t n = mh.msg_iovlen == 1 && nfds == 0
                        ? send(fd, iov[0].iov_base, iov[0].iov_len,
                               MSG_NOSIGNAL | MSG_DONTWAIT)
                        : sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rc = nectar__ux_wait_fd(fd, POLLOUT, deadline);
        if (rc != 0)
            return rc;
    }
}

/* Writes a whole message as one or more packets.  The caller holds the
 * connection's send lock, so fragments of two messages never interleave. */
int nectar__ux_write_message(int fd, uint8_t type, uint64_t id,
                             const uint8_t *payload, size_t len, const int *fds,
                             size_t nfds, uint32_t timeout_ms)
{
    uint64_t deadline = nectar__ux_now_ms() + timeout_ms;
    size_t off = 0;
    do {
        size_t chunk = len - off > PKT_PAYLOAD ? PKT_PAYLOAD : len - off;
        uint8_t hdr[PKT_HEADER];
        struct pkt_header h = {
            .type = type,
            .flags = off + chunk < len ? PKT_MORE : 0,
            .total = (uint32_t)len,
            .id = id,
        };
        nectar__ux_header_write(hdr, &h);
        int rc =
            send_packet(fd, hdr, payload + off, chunk, off == 0 ? fds : NULL,
                        off == 0 ? nfds : 0, deadline);
        if (rc != 0)
            return rc;
        off += chunk;
    } while (off < len);
    return 0;
}

/* ---- peer credentials ----------------------------------------------- */

void nectar__ux_cred_clear(struct ux_cred *c)
{
    if (c->pidfd >= 0)
        close(c->pidfd);
    nectar_free(c->exe);
    nectar_free(c->groups);
    memset(c, 0, sizeof(*c));
    c->pidfd = -1;
    c->pid = -1;
}

/* The pid a pidfd refers to, from /proc/self/fdinfo; -1 when the process
 * is gone.  Reading it back from the pidfd is what makes the pid safe to
 * use: SO_PEERCRED's pid could have been recycled by now. */
static pid_t pidfd_pid(int pidfd)
{
    char path[64], line[128];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    pid_t pid = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "Pid:", 4) == 0) {
            pid = (pid_t)strtol(line + 4, NULL, 10);
            break;
        }
    }
    fclose(f);
    return pid > 0 ? pid : -1;
}

static int open_pidfd(int sock, pid_t cred_pid)
{
    int pidfd = -1;
    socklen_t len = sizeof(pidfd);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 &&
        pidfd >= 0)
        return pidfd;
    /* Kernels before 6.5: open by the credential pid.  That is racy only
     * if the peer exited and its pid was reused since it connected; the
     * uid/gid checks do not depend on it, only the executable does. */
    pidfd = (int)syscall(SYS_pidfd_open, cred_pid, 0);
    return pidfd;
}

static char *read_exe(pid_t pid, int pidfd)
{
    char path[64], target[PATH_MAX];
    snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n <= 0)
        return NULL;
    target[n] = '\0';
    /* Still the same process?  If it died, the pid may name another.
     * (EPERM means alive but not ours to signal.) */
    if (syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) != 0 &&
        errno != EPERM)
        return NULL;
    return nectar_strdup(target);
}

static void read_groups(int sock, struct ux_cred *c)
{
    gid_t tmp[256];
    socklen_t len = sizeof(tmp);
    if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, tmp, &len) != 0)
        return;
    size_t n = len / sizeof(gid_t);
    if (n == 0)
        return;
    c->groups = nectar_memdup(tmp, n * sizeof(gid_t));
    if (c->groups != NULL)
        c->ngroups = n;
}

int nectar__ux_cred_read(int sock, struct ux_cred *c)
{
    struct ucred uc;
    socklen_t len = sizeof(uc);
    memset(c, 0, sizeof(*c));
    c->pidfd = -1;
    c->pid = -1;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0)
        return -errno;
    c->uid = uc.uid;
    c->gid = uc.gid;
    read_groups(sock, c);
    c->pidfd = open_pidfd(sock, uc.pid);
    if (c->pidfd >= 0) {
        c->pid = pidfd_pid(c->pidfd);
        if (c->pid > 0)
            c->exe = read_exe(c->pid, c->pidfd);
    }
    return 0;
}

void nectar__ux_cred_to_peer(const struct ux_cred *c, nectar_ipc_peer_t *p)
{
    p->uid = c->uid;
    p->gid = c->gid;
    p->pid = c->pid;
    p->pidfd = c->pidfd;
    p->exe = c->exe;
    p->groups = c->groups;
    p->ngroups = c->ngroups;
}

int nectar__ux_req_copy(struct ux_req *dst, const nectar_ipc_requirement_t *src)
{
    memset(dst, 0, sizeof(*dst));
    if (src == NULL)
        return 0;
    dst->r = *src;
    dst->set = true;
    dst->r.exe_path = NULL;
    if (src->exe_path != NULL) {
        dst->r.exe_path = nectar_strdup(src->exe_path);
        if (dst->r.exe_path == NULL)
            return NECTAR_ENOMEM;
    }
    return 0;
}

void nectar__ux_req_free(struct ux_req *r)
{
    nectar_free((char *)r->r.exe_path);
    memset(r, 0, sizeof(*r));
}

int nectar__ux_make_addr(const char *name, struct sockaddr_un *sa,
                         socklen_t *len)
{
    size_t n = strlen(name);
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (n + 1 > sizeof(sa->sun_path))
        return NECTAR_EINVAL;
    if (name[0] == '/') {
        memcpy(sa->sun_path, name, n + 1);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    } else {
        memcpy(sa->sun_path + 1, name, n);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    }
    return 0;
}

/* Reads the listener's verdict (first packet).  Returns 0 when accepted,
 * NECTAR_EPEER (reason in err) when refused, another code otherwise. */
int nectar__ux_read_verdict(int fd, uint64_t deadline, nectar_error_t *err)
{
    uint8_t buf[4096];
    int rc = nectar__ux_wait_fd(fd, POLLIN, deadline);
    if (rc != 0)
        return nectar_error_set(err, rc, "ipc: no verdict from the listener");
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0)
        return nectar_error_set(err, NECTAR_ECONNRESET,
                                "ipc: listener closed the connection "
                                "during the handshake");
    struct pkt_header h;
    nectar_ipc_obj_t *v = NULL;
    if (!nectar__ux_header_read(buf, (size_t)n, &h) || h.type != PKT_VERDICT ||
        h.total != (size_t)n - PKT_HEADER ||
        nectar__ipc_decode(buf + PKT_HEADER, h.total, NULL, 0, &v, NULL) != 0)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "ipc: malformed verdict from the listener");
    nectar_ipc_obj_t *acc = nectar_ipc_dict_get(v, "accepted");
    const char *reason =
        nectar_ipc_string_ptr(nectar_ipc_dict_get(v, "reason"), NULL);
    rc = 0;
    if (nectar_ipc_type(acc) != NECTAR_IPC_BOOL)
        rc = nectar_error_set(err, NECTAR_EPARSE,
                              "ipc: malformed verdict from the listener");
    else if (!nectar_ipc_bool_value(acc))
        rc = nectar_error_set(err, NECTAR_EPEER, "peer requirement failed: %s",
                              reason ? reason : "refused by the listener");
    nectar_ipc_release(v);
    return rc;
}

void nectar__ux_send_verdict(int fd, bool ok, const char *reason)
{
    nectar_ipc_obj_t *v = nectar_ipc_dict();
    nectar_ipc_dict_set(v, "accepted", nectar_ipc_bool(ok), NULL);
    if (reason != NULL)
        nectar_ipc_dict_set(v, "reason", nectar_ipc_string(reason), NULL);
    struct ipc_buf b = {0};
    if (v != NULL && nectar__ipc_encode(v, &b, NULL, NULL, NULL) == 0 &&
        b.len <= PKT_PAYLOAD)
        nectar__ux_write_message(fd, PKT_VERDICT, 0, b.p, b.len, NULL, 0,
                                 LOOP_SEND_TIMEOUT_MS);
    nectar__ipc_buf_free(&b);
    nectar_ipc_release(v);
}

/* Picks the socket systemd passed for this service, or -1. */
int nectar__ux_activation_fd(const char *name, nectar_error_t *err)
{
    const char *pid_s = getenv("LISTEN_PID");
    const char *n_s = getenv("LISTEN_FDS");
    if (pid_s == NULL || n_s == NULL ||
        strtol(pid_s, NULL, 10) != (long)getpid())
        return -1;
    long n = strtol(n_s, NULL, 10);
    if (n <= 0 || n > 64)
        return -1;
    /* Named sockets: only ours.  One unnamed socket: that one.  Sockets
     * meant for other services are left alone (we bind ourselves). */
    const char *names = getenv("LISTEN_FDNAMES");
    int pick = n == 1 && names == NULL ? 3 : -1;
    for (long i = 0; names != NULL && i < n; i++) {
        size_t len = strcspn(names, ":");
        if (len == strlen(name) && strncmp(names, name, len) == 0)
            pick = 3 + (int)i;
        names += len;
        if (*names == ':')
            names++;
    }
    if (pick < 0)
        return -1;
    int type = 0, acc = 0;
    socklen_t len = sizeof(type);
    getsockopt(pick, SOL_SOCKET, SO_TYPE, &type, &len);
    len = sizeof(acc);
    getsockopt(pick, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len);
    if (type != SOCK_SEQPACKET || !acc)
        return nectar_error_set(err, NECTAR_ECONFIG,
                                "ipc: activation fd %d is not a listening "
                                "SOCK_SEQPACKET socket",
                                pick);
    fcntl(pick, F_SETFD, FD_CLOEXEC);
    fcntl(pick, F_SETFL, fcntl(pick, F_GETFL) | O_NONBLOCK);
    return pick;
}
