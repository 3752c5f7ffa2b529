/*
 * backend_linux.c - process identity on Linux.
 *
 * socket -> uid, inode: one NETLINK_SOCK_DIAG exact lookup (inet_diag).
 * inode -> pid: the first /proc/PID/fd/N link reading "socket:[inode]";
 *   the kernel has no reverse index, so this is a scan, paid only when the
 *   socket was found locally (forwarded flows stop at the lookup).
 * pid -> exe, cgroup: /proc/PID/exe and the "0::" line of /proc/PID/cgroup.
 */
#if defined(__linux__)
#include "process/process_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One address of a lookup, in the diag layout (network byte order). */
struct diag_addr {
    int family;
    uint32_t addr[4];
    uint16_t port; /* network order */
};

static void to_diag_addr(const struct sockaddr *sa, struct diag_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        out->family = AF_INET;
        out->addr[0] = in->sin_addr.s_addr;
        out->port = in->sin_port;
        return;
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        /* A dual-stack peer shows IPv4 traffic as ::ffff:a.b.c.d; the
         * owning socket is found in the IPv4 tables. */
        out->family = AF_INET;
        memcpy(&out->addr[0], &in6->sin6_addr.s6_addr[12], 4);
    } else {
        out->family = AF_INET6;
        memcpy(out->addr, &in6->sin6_addr, 16);
    }
    out->port = in6->sin6_port;
}

/* Sends one exact inet_diag request for a socket with source `src` and
 * destination `dst` (as the kernel's lookup takes them) and reads the
 * answer.  0 + *msg filled, NECTAR_ENOENT, or another code. */
static int diag_query(int protocol, const struct diag_addr *src,
                      const struct diag_addr *dst, struct inet_diag_msg *msg,
                      nectar_error_t *err)
{
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return nectar_error_set(err, -errno, "sock_diag socket: %s",
                                strerror(errno));
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 req;
    } q;
    memset(&q, 0, sizeof(q));
    q.nlh.nlmsg_len = sizeof(q);
    q.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    q.nlh.nlmsg_flags = NLM_F_REQUEST;
    q.nlh.nlmsg_seq = 1;
    q.req.sdiag_family = (uint8_t)src->family;
    q.req.sdiag_protocol = (uint8_t)protocol;
    q.req.idiag_states = ~0u;
    q.req.id.idiag_sport = src->port;
    q.req.id.idiag_dport = dst->port;
    memcpy(q.req.id.idiag_src, src->addr, sizeof(src->addr));
    memcpy(q.req.id.idiag_dst, dst->addr, sizeof(dst->addr));
    q.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    q.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    int rc = 0;
    if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *)&kernel,
               sizeof(kernel)) < 0) {
        rc = nectar_error_set(err, -errno, "sock_diag send: %s",
                              strerror(errno));
        goto out;
    }
    uint32_t buf[2048];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
        rc = nectar_error_set(err, -errno, "sock_diag recv: %s",
                              strerror(errno));
        goto out;
    }
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (!NLMSG_OK(h, (size_t)n)) {
        rc = nectar_error_set(err, NECTAR_EPARSE, "sock_diag: short reply");
        goto out;
    }
    if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = NLMSG_DATA(h);
        rc = e->error == -ENOENT ? NECTAR_ENOENT : e->error;
        if (rc == NECTAR_ENOENT)
            nectar_error_set(err, rc, "no such socket");
        else
            nectar_error_set(err, rc, "sock_diag: %s", strerror(-e->error));
        goto out;
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
        h->nlmsg_len < NLMSG_LENGTH(sizeof(*msg))) {
        rc = nectar_error_set(err, NECTAR_EPARSE, "sock_diag: bad reply");
        goto out;
    }
    memcpy(msg, NLMSG_DATA(h), sizeof(*msg));
out:
    close(fd);
    return rc;
}

static int same_endpoint(const struct inet_diag_sockid *id,
                         const struct diag_addr *a)
{
    size_t len = a->family == AF_INET ? 4 : 16;
    return id->idiag_sport == a->port &&
           memcmp(id->idiag_src, a->addr, len) == 0;
}

/* The kernel's exact lookup takes (src, dst) in socket order for TCP and
 * swapped for UDP ("for historical reasons", udp_diag.c).  Ask in the
 * natural order first, then swapped, and accept only an answer whose own
 * address is `local`, so neither order can return the wrong socket. */
static int find_socket(int protocol, const struct diag_addr *local,
                       const struct diag_addr *remote,
                       struct inet_diag_msg *msg, nectar_error_t *err)
{
    const struct diag_addr *order[2][2] = {{local, remote}, {remote, local}};
    int first = protocol == IPPROTO_UDP ? 1 : 0;
    int rc = NECTAR_ENOENT;
    for (int i = 0; i < 2; i++) {
        const struct diag_addr *const *o = order[(first + i) % 2];
        rc = diag_query(protocol, o[0], o[1], msg, err);
        if (rc == 0 && same_endpoint(&msg->id, local))
            return 0;
        if (rc != 0 && rc != NECTAR_ENOENT)
            return rc;
        rc = NECTAR_ENOENT;
    }
    return nectar_error_set(err, rc, "no local socket for this flow");
}

static int fd_is_socket(int dirfd, const char *name, const char *want)
{
    char link[64];
    ssize_t n = readlinkat(dirfd, name, link, sizeof(link) - 1);
    if (n <= 0)
        return 0;
    link[n] = '\0';
    return strcmp(link, want) == 0;
}

/* Does process `pid` hold an fd that is the socket `want`? */
static int pid_holds(const char *pid, const char *want)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%s/fd", pid);
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return 0;
    DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return 0;
    }
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            found = fd_is_socket(dfd, e->d_name, want);
    }
    closedir(d);
    return found;
}

static int32_t pid_of_inode(uint64_t inode)
{
    char want[48];
    snprintf(want, sizeof(want), "socket:[%" PRIu64 "]", inode);
    /* Our own process first: the common case in tests, and cheap. */
    char self[16];
    snprintf(self, sizeof(self), "%d", (int)getpid());
    if (pid_holds(self, want))
        return (int32_t)getpid();
    DIR *d = opendir("/proc");
    if (d == NULL)
        return -1;
    int32_t pid = -1;
    struct dirent *e;
    while (pid < 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        if (pid_holds(e->d_name, want))
            pid = (int32_t)strtol(e->d_name, NULL, 10);
    }
    closedir(d);
    return pid;
}

static int lx_socket_owner(int protocol, const struct sockaddr *local,
                           const struct sockaddr *remote,
                           nectar_process_owner_t *out, nectar_error_t *err)
{
    struct diag_addr l, r;
    to_diag_addr(local, &l);
    to_diag_addr(remote, &r);
    if (l.family != r.family)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "socket_owner: mixed IPv4/IPv6 endpoints");
    struct inet_diag_msg msg;
    int rc = find_socket(protocol, &l, &r, &msg, err);
    if (rc != 0)
        return rc;
    out->uid = msg.idiag_uid;
    out->inode = msg.idiag_inode;
    /* inode 0: a socket in TIME_WAIT or a request socket; it has no fd. */
    out->pid = msg.idiag_inode != 0 ? pid_of_inode(msg.idiag_inode) : -1;
    return 0;
}

static int lx_exe_path(int32_t pid, char *buf, size_t cap,
                       nectar_error_t *err)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
    char tmp[4096];
    ssize_t n = readlink(path, tmp, sizeof(tmp) - 1);
    if (n < 0) {
        int e = errno;
        if (e == ENOENT || e == ESRCH)
            return nectar_error_set(err, NECTAR_ENOENT, "pid %d is gone",
                                    (int)pid);
        return nectar_error_set(err, -e, "readlink %s: %s", path,
                                strerror(e));
    }
    tmp[n] = '\0';
    snprintf(buf, cap, "%s", tmp);
    return 0;
}

static int lx_cgroup_path(int32_t pid, char *buf, size_t cap,
                          nectar_error_t *err)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return nectar_error_set(err, NECTAR_ENOENT, "pid %d is gone",
                                (int)pid);
    char line[1024];
    int rc = NECTAR_ENOENT;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "0::", 3) != 0)
            continue;
        line[strcspn(line, "\n")] = '\0';
        snprintf(buf, cap, "%s", line + 3);
        rc = 0;
        break;
    }
    fclose(f);
    if (rc != 0)
        nectar_error_set(err, rc, "pid %d has no cgroup v2 path", (int)pid);
    return rc;
}

const struct nectar__process_backend nectar__process_backend_linux = {
    "linux",
    NECTAR_PROCESS_CAP_SOCKET_OWNER | NECTAR_PROCESS_CAP_EXE_PATH |
        NECTAR_PROCESS_CAP_CGROUP,
    lx_socket_owner, /* socket_owner */
    lx_exe_path,     /* exe_path */
    lx_cgroup_path,  /* cgroup_path */
    NULL,            /* audit_token_to_pid: no audit tokens on Linux */
};
#endif
