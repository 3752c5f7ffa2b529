/*
 * route.c - the policy routing TPROXY needs, over rtnetlink.
 *
 * A diverted packet keeps its foreign destination, so the kernel would
 * forward it; the fwmark rule sends marked packets to a table whose only
 * route is "local default dev lo", which delivers them to the local socket
 * that tproxy picked.  Both families get the pair.  Spoken directly over
 * NETLINK_ROUTE (no `ip` shell-out), one request and its ack at a time.
 */
#include "host/linux/linux_host.h"

#include <errno.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct nlreq {
    struct nlmsghdr h;
    union {
        struct rtmsg rt;
        struct fib_rule_hdr rule;
    } u;
    char attrs[128];
};

static void add_u32(struct nlreq *r, unsigned short type, uint32_t v)
{
    struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(sizeof(v));
    memcpy(RTA_DATA(a), &v, sizeof(v));
    r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Send one request and wait for its ack; returns 0 or -errno. */
static int talk(struct nlreq *r)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -errno;
    struct sockaddr_nl k = {.nl_family = AF_NETLINK};
    r->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    r->h.nlmsg_seq = 1;
    int rc = 0;
    if (sendto(fd, r, r->h.nlmsg_len, 0, (struct sockaddr *)&k, sizeof(k)) <
        0) {
        rc = -errno;
        goto out;
    }
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
        rc = -errno;
        goto out;
    }
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (NLMSG_OK(h, (size_t)n) && h->nlmsg_type == NLMSG_ERROR)
        rc = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
out:
    close(fd);
    return rc;
}

static int rule_req(const nectar_linux_config_t *cfg, int family, bool add)
{
    struct nlreq r;
    memset(&r, 0, sizeof(r));
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct fib_rule_hdr));
    r.h.nlmsg_type = add ? RTM_NEWRULE : RTM_DELRULE;
    r.h.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_EXCL : 0;
    r.u.rule.family = (unsigned char)family;
    r.u.rule.action = FR_ACT_TO_TBL;
    r.u.rule.table = RT_TABLE_UNSPEC;
    add_u32(&r, FRA_FWMARK, cfg->fwmark);
    add_u32(&r, FRA_FWMASK, 0xffffffffu);
    add_u32(&r, FRA_TABLE, cfg->route_table);
    add_u32(&r, FRA_PRIORITY, cfg->rule_priority);
    return talk(&r);
}

static int route_req(const nectar_linux_config_t *cfg, int family, bool add)
{
    struct nlreq r;
    memset(&r, 0, sizeof(r));
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    r.h.nlmsg_type = add ? RTM_NEWROUTE : RTM_DELROUTE;
    r.h.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_EXCL : 0;
    r.u.rt.rtm_family = (unsigned char)family;
    r.u.rt.rtm_table = RT_TABLE_UNSPEC;
    r.u.rt.rtm_protocol = RTPROT_BOOT;
    r.u.rt.rtm_scope = RT_SCOPE_HOST;
    r.u.rt.rtm_type = RTN_LOCAL;
    add_u32(&r, RTA_TABLE, cfg->route_table);
    add_u32(&r, RTA_OIF, if_nametoindex("lo"));
    return talk(&r);
}

int nectar__linux_routes_add(const nectar_linux_config_t *cfg,
                             nectar_error_t *err)
{
    static const int fams[2] = {AF_INET, AF_INET6};
    for (int i = 0; i < 2; i++) {
        const char *fam = fams[i] == AF_INET ? "IPv4" : "IPv6";
        int rc = route_req(cfg, fams[i], true);
        if (rc != 0 && rc != -EEXIST) {
            nectar__linux_routes_del(cfg);
            return nectar_error_set(err, rc,
                                    "adding the %s local route to table %u: "
                                    "%s",
                                    fam, cfg->route_table, strerror(-rc));
        }
        rc = rule_req(cfg, fams[i], true);
        if (rc != 0 && rc != -EEXIST) {
            nectar__linux_routes_del(cfg);
            return nectar_error_set(err, rc,
                                    "adding the %s fwmark rule: %s", fam,
                                    strerror(-rc));
        }
    }
    return 0;
}

int nectar__linux_routes_del(const nectar_linux_config_t *cfg)
{
    static const int fams[2] = {AF_INET, AF_INET6};
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        /* A rule may have been added twice by hand; remove every copy. */
        int r, guard = 0;
        while ((r = rule_req(cfg, fams[i], false)) == 0 && guard++ < 16)
            ;
        if (r != 0 && r != -ENOENT && rc == 0)
            rc = r;
        r = route_req(cfg, fams[i], false);
        if (r != 0 && r != -ESRCH && r != -ENOENT && rc == 0)
            rc = r;
    }
    return rc;
}

/* Parse the RTA_OIF of an RTM_NEWROUTE answer; 0 when absent. */
static int answer_oif(const struct nlmsghdr *h, size_t n)
{
    if (!NLMSG_OK(h, n) || h->nlmsg_type != RTM_NEWROUTE)
        return 0;
    const struct rtmsg *rt = NLMSG_DATA(h);
    size_t alen = RTM_PAYLOAD(h);
    for (const struct rtattr *a = RTM_RTA(rt); RTA_OK(a, alen);
         a = RTA_NEXT(a, alen)) {
        if (a->rta_type == RTA_OIF) {
            uint32_t oif;
            memcpy(&oif, RTA_DATA(a), sizeof(oif));
            return (int)oif;
        }
    }
    return 0;
}

int nectar__linux_route_oif(const struct sockaddr *dst, uint32_t mark)
{
    struct {
        struct nlmsghdr h;
        struct rtmsg rt;
        char attrs[64];
    } q;
    memset(&q, 0, sizeof(q));
    q.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    q.h.nlmsg_type = RTM_GETROUTE;
    q.h.nlmsg_flags = NLM_F_REQUEST;
    q.rt.rtm_family = (unsigned char)dst->sa_family;
    const void *addr;
    size_t alen;
    if (dst->sa_family == AF_INET) {
        addr = &((const struct sockaddr_in *)dst)->sin_addr;
        alen = 4;
    } else {
        addr = &((const struct sockaddr_in6 *)dst)->sin6_addr;
        alen = 16;
    }
    q.rt.rtm_dst_len = (unsigned char)(alen * 8);
    struct rtattr *a = (struct rtattr *)((char *)&q + q.h.nlmsg_len);
    a->rta_type = RTA_DST;
    a->rta_len = RTA_LENGTH(alen);
    memcpy(RTA_DATA(a), addr, alen);
    q.h.nlmsg_len += RTA_ALIGN(a->rta_len);
    /* The egress carries the bypass mark, so policy routing must see it. */
    a = (struct rtattr *)((char *)&q + q.h.nlmsg_len);
    a->rta_type = RTA_MARK;
    a->rta_len = RTA_LENGTH(sizeof(mark));
    memcpy(RTA_DATA(a), &mark, sizeof(mark));
    q.h.nlmsg_len += RTA_ALIGN(a->rta_len);

    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -errno;
    struct sockaddr_nl k = {.nl_family = AF_NETLINK};
    int rc = -EIO;
    if (sendto(fd, &q, q.h.nlmsg_len, 0, (struct sockaddr *)&k, sizeof(k)) >=
        0) {
        char buf[2048];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
            if (h->nlmsg_type == NLMSG_ERROR)
                rc = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
            else
                rc = answer_oif(h, (size_t)n);
        }
    }
    close(fd);
    return rc;
}
