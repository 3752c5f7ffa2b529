/*
 * egress_opts.c - RamaTcpEgressConnectOptions mapped onto Linux socket
 * options (ne-host §4.3, "Linux mapping"), and socket address text.
 *
 * Accessor rule: a has_X/X pair is "unset" whenever has_X is false; the raw
 * X is then never read.  Options with no Linux counterpart (no-options,
 * retransmit-FIN-drop, ACK stretching, ECN per socket, persist timeout,
 * service class, multipath, interface type, attribution) are skipped.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "host/core/host.h"
#include "nectar/log.h"

#define TAG "host"

static int set_int(int fd, int level, int name, int value, const char *what)
{
    if (setsockopt(fd, level, name, &value, sizeof(value)) != 0) {
        nectar_log(NECTAR_LOG_DEBUG, TAG, "egress option %s=%d: %s", what,
                   value, strerror(errno));
        return 0;
    }
    return 1;
}

int nectar__host_apply_egress_options(int fd,
                                      const RamaTcpEgressConnectOptions *o)
{
    int n = 0;
    /* Keepalive on unless explicitly disabled: ~30 s to detect a dead
     * path (15 s idle + 3 probes 5 s apart).  Each knob falls back on its
     * own. */
    bool keepalive = o == NULL || o->tcp_keepalive_enabled;
    n += set_int(fd, SOL_SOCKET, SO_KEEPALIVE, keepalive ? 1 : 0, "keepalive");
    if (keepalive) {
        int idle = o && o->has_tcp_keepalive_idle_secs
                       ? (int)o->tcp_keepalive_idle_secs
                       : 15;
        int intvl = o && o->has_tcp_keepalive_interval_secs
                        ? (int)o->tcp_keepalive_interval_secs
                        : 5;
        int cnt = o && o->has_tcp_keepalive_count ? (int)o->tcp_keepalive_count
                                                  : 3;
        n += set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle, "keepidle");
        n += set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, intvl, "keepintvl");
        n += set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, cnt, "keepcnt");
    }
    /* tcp_no_delay has no has_ flag: always applied; default on. */
    bool nodelay = o == NULL || o->tcp_no_delay;
    n += set_int(fd, IPPROTO_TCP, TCP_NODELAY, nodelay ? 1 : 0, "nodelay");
    if (o == NULL)
        return n;
    if (o->has_tcp_no_push)
        n += set_int(fd, IPPROTO_TCP, TCP_CORK, o->tcp_no_push ? 1 : 0,
                     "cork");
    if (o->has_tcp_maximum_segment_size)
        n += set_int(fd, IPPROTO_TCP, TCP_MAXSEG,
                     (int)o->tcp_maximum_segment_size, "maxseg");
    if (o->has_tcp_enable_fast_open)
        n += set_int(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT,
                     o->tcp_enable_fast_open ? 1 : 0, "fastopen_connect");
    if (o->has_tcp_connection_drop_time_secs)
        n += set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT,
                     (int)(o->tcp_connection_drop_time_secs * 1000u),
                     "user_timeout");
    return n;
}

char *nectar__host_addr_text(const struct sockaddr *sa, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    if (n == 0)
        return buf;
    buf[0] = '\0';
    if (sa == NULL) {
        snprintf(buf, n, "-");
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, n, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, n, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, n, "?");
    }
    return buf;
}
