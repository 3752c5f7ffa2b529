/*
 * listen.c - the sockets a TPROXY host needs.
 *
 * - Listeners: IP_TRANSPARENT lets a socket on the wildcard address accept
 *   connections tproxy diverted to it although their destination is
 *   foreign; getsockname() of an accepted socket is then the original
 *   destination.  UDP receive sockets also ask for IP(V6)_RECVORIGDSTADDR,
 *   since a datagram socket has no per-flow name.
 * - Every socket nectar owns carries the bypass mark: the ruleset returns
 *   early for it, so nectar never diverts its own egress (the Linux
 *   analogue of the Swift host's "prefer no proxies") and its replies are
 *   never rerouted.
 * - UDP reply sockets are bound to the original destination (a foreign
 *   address: IP_TRANSPARENT again) and connected to the client, so replies
 *   leave with the source address the client expects, and tproxy's
 *   established-socket lookup hands the client's later datagrams straight
 *   to them.
 */
#include "host/linux/linux_host.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static socklen_t sa_len(int family)
{
    return family == AF_INET ? sizeof(struct sockaddr_in)
                             : sizeof(struct sockaddr_in6);
}

static int set_int(int fd, int level, int opt, int v)
{
    return setsockopt(fd, level, opt, &v, sizeof(v));
}

static int set_transparent(int fd, int family)
{
    if (family == AF_INET)
        return set_int(fd, SOL_IP, IP_TRANSPARENT, 1);
    return set_int(fd, SOL_IPV6, IPV6_TRANSPARENT, 1);
}

int nectar__linux_set_mark(int fd, uint32_t mark)
{
    return setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
}

int nectar__linux_listen(int family, int type, uint16_t port,
                         uint32_t bypass_mark, nectar_error_t *err)
{
    const char *what = type == SOCK_STREAM ? "TCP" : "UDP";
    const char *fam = family == AF_INET ? "IPv4" : "IPv6";
    int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return nectar_error_set(err, -errno, "%s %s socket: %s", fam, what,
                                strerror(errno));
    int rc = 0;
    const char *step = "setsockopt";
    if (set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0)
        goto fail;
    if (family == AF_INET6 && set_int(fd, SOL_IPV6, IPV6_V6ONLY, 1) != 0)
        goto fail;
    step = "IP_TRANSPARENT (needs CAP_NET_ADMIN)";
    if (set_transparent(fd, family) != 0)
        goto fail;
    step = "SO_MARK (needs CAP_NET_ADMIN)";
    if (nectar__linux_set_mark(fd, bypass_mark) != 0)
        goto fail;
    step = "IP_RECVORIGDSTADDR";
    if (type == SOCK_DGRAM &&
        (family == AF_INET
             ? set_int(fd, SOL_IP, IP_RECVORIGDSTADDR, 1)
             : set_int(fd, SOL_IPV6, IPV6_RECVORIGDSTADDR, 1)) != 0)
        goto fail;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = (sa_family_t)family;
    if (family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
    if (bind(fd, (struct sockaddr *)&ss, sa_len(family)) != 0) {
        rc = -errno;
        if (errno == EADDRINUSE)
            nectar_error_set(err, NECTAR_EADDRINUSE,
                             "%s %s port %u is in use by another program "
                             "(choose another host.%s_port)",
                             fam, what, port,
                             type == SOCK_STREAM ? "tcp" : "udp");
        else
            nectar_error_set(err, rc, "bind %s %s port %u: %s", fam, what,
                             port, strerror(errno));
        close(fd);
        return rc;
    }
    if (type == SOCK_STREAM && listen(fd, 4096) != 0) {
        step = "listen";
        goto fail;
    }
    return fd;
fail:
    rc = -errno;
    nectar_error_set(err, rc, "%s %s listener: %s: %s", fam, what, step,
                     strerror(errno));
    close(fd);
    return rc;
}

int nectar__linux_egress_socket(int family, int type, uint32_t bypass_mark)
{
    int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (nectar__linux_set_mark(fd, bypass_mark) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int nectar__linux_udp_reply_socket(const struct sockaddr *orig_dst,
                                   const struct sockaddr *client,
                                   uint32_t bypass_mark)
{
    int family = orig_dst->sa_family;
    int fd = nectar__linux_egress_socket(family, SOCK_DGRAM, bypass_mark);
    if (fd < 0)
        return fd;
    /* SO_REUSEADDR: several clients may talk to one destination, and each
     * gets its own socket bound to that destination. */
    if (set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0 ||
        (family == AF_INET6 && set_int(fd, SOL_IPV6, IPV6_V6ONLY, 1) != 0) ||
        set_transparent(fd, family) != 0 ||
        bind(fd, orig_dst, sa_len(family)) != 0 ||
        connect(fd, client, sa_len(family)) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

long nectar__linux_recv_orig(int fd, void *buf, size_t cap,
                                struct sockaddr_storage *from,
                                struct sockaddr_storage *orig_dst)
{
    struct iovec iov = {buf, cap};
    char cbuf[256];
    struct msghdr mh = {0};
    mh.msg_name = from;
    mh.msg_namelen = sizeof(*from);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0)
        return -errno;
    memset(orig_dst, 0, sizeof(*orig_dst));
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL;
         c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR)
            memcpy(orig_dst, CMSG_DATA(c), sizeof(struct sockaddr_in));
        else if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR)
            memcpy(orig_dst, CMSG_DATA(c), sizeof(struct sockaddr_in6));
    }
    if (orig_dst->ss_family == 0)
        return -EPROTO; /* not a diverted datagram */
    return n;
}
