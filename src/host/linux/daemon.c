/*
 * daemon.c - the `nectar run` front: TPROXY sockets in, host core out.
 *
 * Map:
 *   1. state and counters
 *   2. flow metadata (original destination, process identity, interface)
 *   3. TCP: accept, hand over to the core, sticky passthrough
 *   4. UDP: flows keyed by (client, original destination), reply sockets,
 *      passthrough relay, idle sweep, hooks from the core
 *   5. core hooks (egress socket, splice hand-off, flow log)
 *   6. signals, start-up and the ordered shutdown
 *
 * Threads: one front loop (libuv, the thread calling nectar__linux_run)
 * owns the listeners, the UDP flow table and every UDP socket.  The core's
 * loop threads call the hooks; udp_send only writes to a reply socket that
 * stays open until the front has seen udp_closed, and udp_closed only links
 * the flow into `closed` under `lock` and wakes the front.  Passthrough
 * and promoted TCP flows leave the core for the splicer (splice.c, its own
 * thread) through hooks.tcp_direct; its done callback only reports back
 * to the core (nectar__host_tcp_direct_done, any thread).
 */
#include "host/linux/linux_host.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "host/core/host.h"
#include "host/linux/splice.h"
#include "nectar/log.h"
#include "nectar/process.h"

#define TAG "linux-host"
#define ACCEPT_BATCH 64    /* accepts per readiness event (bounded work) */
#define UDP_BATCH 64       /* datagrams per readiness event */
#define UDP_BUCKETS 4096   /* flow table buckets (chained) */
#define UDP_MAX_DGRAM 65536
#define ROUTE_CACHE 256
#define ROUTE_TTL_MS 10000
#define STICKY_CACHE 1024

/* ---- 1. state and counters ---------------------------------------------- */

struct udp_flow;

struct route_entry {
    struct sockaddr_storage dst;
    uint64_t at_ms;
    int ifindex;
};

/* A destination recently made sticky (sticky_add). */
struct sticky_entry {
    struct sockaddr_storage dst; /* with port */
    int protocol;
    uint64_t at_ms;
};

struct counters {
    atomic_uint_fast64_t tcp_accepted, tcp_accept_errors;
    atomic_uint_fast64_t udp_flows, udp_datagrams, udp_dropped;
    atomic_uint_fast64_t sticky_added, sticky_errors;
    atomic_uint_fast64_t owner_found, owner_missing;
    atomic_uint_fast64_t splice_flows, splice_errors;
};

struct daemon {
    const nectar_linux_config_t *cfg;
    nectar_host_t *host;
    nectar_linux_splicer_t *splicer; /* passthrough and promoted TCP */
    nectar_linux_control_t *control; /* control.c; NULL when off */
    uv_loop_t loop;
    int tcp_fd[2], udp_fd[2];
    int claim_fd; /* the per-namespace run claim (claim_namespace) */
    uv_poll_t tcp_poll[2], udp_poll[2];
    uv_signal_t sig[3];
    uv_timer_t sweep;
    uv_async_t wake;
    bool stopping;
    /* UDP flow table: front thread only. */
    struct udp_flow *buckets[UDP_BUCKETS];
    struct udp_flow *lru_head, *lru_tail; /* oldest activity first */
    size_t udp_live;
    /* Flows the core ended: guarded by lock. */
    pthread_mutex_t lock;
    struct udp_flow *closed;
    struct route_entry routes[ROUTE_CACHE];
    struct sticky_entry sticky[STICKY_CACHE];
    struct counters n;
    uint8_t dgram[UDP_MAX_DGRAM];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static socklen_t sa_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                    : sizeof(struct sockaddr_in6);
}

/* IPv4-mapped IPv6 -> IPv4, so keys and nft elements have one form. */
static void normalize(struct sockaddr_storage *ss)
{
    if (ss->ss_family != AF_INET6)
        return;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (!IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
        return;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = in6->sin6_port};
    memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, &in, sizeof(in));
}

static bool same_addr(const struct sockaddr_storage *a,
                      const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static void ip_text(const struct sockaddr *sa, char *buf, size_t n)
{
    const void *a = sa->sa_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (inet_ntop(sa->sa_family, a, buf, (socklen_t)n) == NULL)
        snprintf(buf, n, "?");
}

static uint16_t sa_port(const struct sockaddr *sa)
{
    return ntohs(sa->sa_family == AF_INET
                     ? ((const struct sockaddr_in *)sa)->sin_port
                     : ((const struct sockaddr_in6 *)sa)->sin6_port);
}

/* ---- 2. flow metadata ----------------------------------------------------- */

/* Text that must outlive the meta for the duration of one core call. */
struct meta_text {
    char exe[512];
    char unit[256];
    char ifname[IF_NAMESIZE];
    char app[600]; /* for our own log lines: "exe uid=U pid=P" */
};

static int route_ifindex(struct daemon *d, const struct sockaddr_storage *dst)
{
    /* The route depends on the address only: key and hash without port. */
    struct sockaddr_storage key = *dst;
    if (key.ss_family == AF_INET)
        ((struct sockaddr_in *)&key)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&key)->sin6_port = 0;
    uint32_t h = 2166136261u;
    const uint8_t *p = (const uint8_t *)&key;
    for (size_t i = 0; i < sa_len((const struct sockaddr *)&key); i++)
        h = (h ^ p[i]) * 16777619u;
    struct route_entry *e = &d->routes[h % ROUTE_CACHE];
    uint64_t now = now_ms();
    if (e->at_ms != 0 && now - e->at_ms < ROUTE_TTL_MS &&
        same_addr(&e->dst, &key))
        return e->ifindex;
    int oif = nectar__linux_route_oif((const struct sockaddr *)&key,
                                      d->cfg->bypass_mark);
    e->dst = key;
    e->at_ms = now;
    e->ifindex = oif > 0 ? oif : 0;
    return e->ifindex;
}

/* Fill meta from the client and original destination addresses. */
static void build_meta(struct daemon *d, int protocol,
                       const struct sockaddr_storage *client,
                       const struct sockaddr_storage *orig,
                       nectar_host_flow_meta_t *m, struct meta_text *t)
{
    memset(m, 0, sizeof(*m));
    t->exe[0] = t->unit[0] = t->ifname[0] = '\0';
    m->remote = (const struct sockaddr *)orig;
    m->local = (const struct sockaddr *)client;
    m->pid = -1;
    snprintf(t->app, sizeof(t->app), "-");
    /* Forwarded traffic has no local owner: only look when local capture
     * is on (a lookup that finds nothing still costs two netlink trips). */
    if (d->cfg->process_identity && d->cfg->capture_local) {
        nectar_process_owner_t o;
        if (nectar_process_socket_owner(protocol, m->local, m->remote, &o,
                                        NULL) == 0) {
            atomic_fetch_add(&d->n.owner_found, 1);
            m->pid = o.pid;
            if (o.pid > 0 &&
                nectar_process_exe_path(o.pid, t->exe, sizeof(t->exe),
                                        NULL) == 0)
                m->signing_identifier = t->exe;
            /* The unit names the service; else the cgroup path, unless it
             * is the root (which says nothing). */
            if (o.pid > 0 &&
                nectar_process_systemd_unit(o.pid, t->unit, sizeof(t->unit),
                                            NULL) != 0 &&
                (nectar_process_cgroup_path(o.pid, t->unit, sizeof(t->unit),
                                            NULL) != 0 ||
                 strcmp(t->unit, "/") == 0))
                t->unit[0] = '\0';
            if (t->unit[0] != '\0')
                m->bundle_identifier = t->unit;
            snprintf(t->app, sizeof(t->app), "%.511s uid=%u pid=%d",
                     t->exe[0] ? t->exe : "?", o.uid, (int)o.pid);
        } else {
            atomic_fetch_add(&d->n.owner_missing, 1);
        }
    }
    int oif = route_ifindex(d, orig);
    if (oif > 0 && if_indextoname((unsigned)oif, t->ifname) != NULL) {
        m->interface_name = t->ifname;
        m->interface_index = (uint32_t)oif;
    }
}

/* ---- 3. TCP ----------------------------------------------------------------- */

/* Was (protocol, dst) made sticky in the first half of its timeout?  Then
 * the kernel entry still stands and another nft transaction (a few hundred
 * microseconds on the front thread) is skipped.  Records it otherwise. */
static bool sticky_recent(struct daemon *d, int protocol,
                          const struct sockaddr_storage *dst)
{
    uint32_t h = 2166136261u ^ (uint32_t)protocol;
    const uint8_t *p = (const uint8_t *)dst;
    for (size_t i = 0; i < sa_len((const struct sockaddr *)dst); i++)
        h = (h ^ p[i]) * 16777619u;
    struct sticky_entry *e = &d->sticky[h % STICKY_CACHE];
    uint64_t now = now_ms();
    uint64_t half = (uint64_t)d->cfg->sticky_timeout_s * 500u;
    if (e->at_ms != 0 && e->protocol == protocol && now - e->at_ms < half &&
        same_addr(&e->dst, dst))
        return true;
    e->dst = *dst;
    e->protocol = protocol;
    e->at_ms = now;
    return false;
}

static void sticky_add(struct daemon *d, int protocol,
                       const struct sockaddr_storage *dst)
{
    if (!d->cfg->sticky_passthrough || sticky_recent(d, protocol, dst))
        return;
    char ip[INET6_ADDRSTRLEN];
    ip_text((const struct sockaddr *)dst, ip, sizeof(ip));
    nectar_error_t err = {0};
    if (nectar__linux_nft_sticky_add(dst->ss_family, ip, protocol,
                                     sa_port((const struct sockaddr *)dst),
                                     &err) == 0) {
        atomic_fetch_add(&d->n.sticky_added, 1);
        nectar_log(NECTAR_LOG_DEBUG, TAG, "sticky passthrough %s %s port %u",
                   protocol == IPPROTO_TCP ? "tcp" : "udp", ip,
                   sa_port((const struct sockaddr *)dst));
    } else {
        atomic_fetch_add(&d->n.sticky_errors, 1);
        nectar_log(NECTAR_LOG_WARN, TAG, "%s", err.message);
    }
}

/* The flow's application is known at its start only (the core's report at
 * close carries no identity): say it then, at info level when a local
 * process was found, else at debug. */
static void log_open(struct daemon *d, const char *proto,
                     const struct sockaddr_storage *orig,
                     const struct meta_text *t)
{
    nectar_log_level_t lvl = t->exe[0] ? NECTAR_LOG_INFO : NECTAR_LOG_DEBUG;
    if (!d->cfg->log_flows || nectar_log_get_level() < lvl)
        return;
    char dst[96];
    nectar__host_addr_text((const struct sockaddr *)orig, dst, sizeof(dst));
    nectar_log(lvl, TAG, "flow open %s dst=%s app=%s%s%s", proto, dst, t->app,
               t->unit[0] ? " unit=" : "", t->unit);
}

static void tcp_one(struct daemon *d, int fd)
{
    struct sockaddr_storage client, orig;
    socklen_t cl = sizeof(client), ol = sizeof(orig);
    if (getpeername(fd, (struct sockaddr *)&client, &cl) != 0 ||
        getsockname(fd, (struct sockaddr *)&orig, &ol) != 0) {
        close(fd);
        atomic_fetch_add(&d->n.tcp_accept_errors, 1);
        return;
    }
    normalize(&client);
    normalize(&orig);
    nectar_host_flow_meta_t m;
    struct meta_text t;
    build_meta(d, IPPROTO_TCP, &client, &orig, &m, &t);
    nectar_host_decision_t decision = NECTAR_HOST_BLOCKED;
    atomic_fetch_add(&d->n.tcp_accepted, 1);
    if (nectar__host_tcp_accept(d->host, fd, &m, &decision) != 0)
        return; /* the core closed fd */
    if (decision == NECTAR_HOST_PASSTHROUGH)
        sticky_add(d, IPPROTO_TCP, &orig);
    log_open(d, "tcp", &orig, &t);
}

static void on_tcp_listener(uv_poll_t *p, int status, int events)
{
    struct daemon *d = p->data;
    (void)events;
    if (status < 0 || d->stopping)
        return;
    int lfd;
    uv_fileno((uv_handle_t *)p, &lfd);
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                atomic_fetch_add(&d->n.tcp_accept_errors, 1);
                nectar_log(NECTAR_LOG_WARN, TAG, "accept: %s",
                           strerror(errno));
            }
            return;
        }
        tcp_one(d, fd);
    }
}

/* ---- 4. UDP ----------------------------------------------------------------- */

struct udp_flow {
    struct daemon *d;
    struct udp_flow *hnext;        /* bucket chain */
    struct udp_flow *lprev, *lnext; /* LRU list */
    struct udp_flow *cnext;        /* closed list, under d->lock */
    struct sockaddr_storage client, orig;
    unsigned bucket;
    nectar_host_decision_t decision;
    nectar_host_udp_t *u;          /* intercept only; our reference */
    int reply_fd, egress_fd;       /* -1 when absent */
    uv_poll_t reply_poll, egress_poll;
    int handles;                   /* poll handles still to close */
    bool removed;                  /* out of table and LRU */
    bool core_closed;              /* udp_closed seen (under d->lock) */
    uint64_t start_ms, last_ms, up, down;
    char app[96 + 1];
};

static unsigned flow_hash(const struct sockaddr_storage *c,
                          const struct sockaddr_storage *o)
{
    uint32_t h = 2166136261u;
    const struct sockaddr_storage *both[2] = {c, o};
    for (int k = 0; k < 2; k++) {
        const uint8_t *p = (const uint8_t *)both[k];
        size_t n = sa_len((const struct sockaddr *)both[k]);
        for (size_t i = 0; i < n; i++)
            h = (h ^ p[i]) * 16777619u;
    }
    return h % UDP_BUCKETS;
}

static struct udp_flow *udp_find(struct daemon *d,
                                 const struct sockaddr_storage *client,
                                 const struct sockaddr_storage *orig)
{
    unsigned b = flow_hash(client, orig);
    for (struct udp_flow *f = d->buckets[b]; f != NULL; f = f->hnext)
        if (same_addr(&f->client, client) && same_addr(&f->orig, orig))
            return f;
    return NULL;
}

static void lru_unlink(struct daemon *d, struct udp_flow *f)
{
    if (f->lprev)
        f->lprev->lnext = f->lnext;
    else
        d->lru_head = f->lnext;
    if (f->lnext)
        f->lnext->lprev = f->lprev;
    else
        d->lru_tail = f->lprev;
    f->lprev = f->lnext = NULL;
}

static void lru_append(struct daemon *d, struct udp_flow *f)
{
    f->lprev = d->lru_tail;
    f->lnext = NULL;
    if (d->lru_tail)
        d->lru_tail->lnext = f;
    else
        d->lru_head = f;
    d->lru_tail = f;
}

static void touch(struct udp_flow *f)
{
    f->last_ms = now_ms();
    if (f->d->lru_tail != f) {
        lru_unlink(f->d, f);
        lru_append(f->d, f);
    }
}

static void udp_free_if_done(struct udp_flow *f)
{
    if (f->handles > 0)
        return;
    if (f->u != NULL)
        nectar__host_udp_release(f->u);
    nectar_free(f);
}

static void on_poll_closed(uv_handle_t *h)
{
    struct udp_flow *f = h->data;
    f->handles--;
    udp_free_if_done(f);
}

static const char *decision_name(nectar_host_decision_t d)
{
    return d == NECTAR_HOST_INTERCEPT     ? "intercept"
           : d == NECTAR_HOST_PASSTHROUGH ? "passthrough"
                                          : "blocked";
}

/* Remove from the table, stop I/O, close sockets; freed once the poll
 * handles are closed.  Front thread. */
static void udp_remove(struct udp_flow *f, const char *reason)
{
    struct daemon *d = f->d;
    if (f->removed)
        return;
    f->removed = true;
    struct udp_flow **pp = &d->buckets[f->bucket];
    while (*pp != f)
        pp = &(*pp)->hnext;
    *pp = f->hnext;
    lru_unlink(d, f);
    d->udp_live--;
    /* The core reports intercepted flows itself; log the others here. */
    if (f->decision != NECTAR_HOST_INTERCEPT && d->cfg->log_flows) {
        char dst[96];
        nectar__host_addr_text((const struct sockaddr *)&f->orig, dst,
                               sizeof(dst));
        nectar_log(NECTAR_LOG_INFO, TAG,
                   "flow udp %s app=%s dst=%s up=%" PRIu64 " down=%" PRIu64
                   " duration_ms=%" PRIu64 " reason=%s",
                   decision_name(f->decision), f->app, dst, f->up, f->down,
                   now_ms() - f->start_ms, reason);
    }
    if (f->reply_fd >= 0) {
        uv_poll_stop(&f->reply_poll);
        close(f->reply_fd);
        f->reply_fd = -1;
        uv_close((uv_handle_t *)&f->reply_poll, on_poll_closed);
    }
    if (f->egress_fd >= 0) {
        uv_poll_stop(&f->egress_poll);
        close(f->egress_fd);
        f->egress_fd = -1;
        uv_close((uv_handle_t *)&f->egress_poll, on_poll_closed);
    }
    udp_free_if_done(f);
}

/* A client datagram for flow f. */
static void udp_client_datagram(struct udp_flow *f, const uint8_t *buf,
                                size_t n)
{
    struct daemon *d = f->d;
    touch(f);
    f->up += n;
    if (f->decision == NECTAR_HOST_INTERCEPT) {
        nectar__host_udp_deliver(f->u, buf, n,
                                 (const struct sockaddr *)&f->orig);
    } else if (f->decision == NECTAR_HOST_PASSTHROUGH && f->egress_fd >= 0) {
        if (send(f->egress_fd, buf, n, MSG_DONTWAIT) < 0)
            atomic_fetch_add(&d->n.udp_dropped, 1);
    } else {
        atomic_fetch_add(&d->n.udp_dropped, 1);
    }
}

static struct udp_flow *udp_new(struct daemon *d,
                                const struct sockaddr_storage *client,
                                const struct sockaddr_storage *orig);

/* A datagram from `client` to `orig` that reached the front: to its flow,
 * or a new one. */
static void udp_dispatch(struct daemon *d, const struct sockaddr_storage *client,
                         const struct sockaddr_storage *orig, size_t n)
{
    atomic_fetch_add(&d->n.udp_datagrams, 1);
    struct udp_flow *f = udp_find(d, client, orig);
    if (f == NULL)
        f = udp_new(d, client, orig);
    if (f == NULL) {
        atomic_fetch_add(&d->n.udp_dropped, 1);
        return;
    }
    udp_client_datagram(f, d->dgram, n);
}

/* Client datagrams arriving on a flow's reply socket.  tproxy's
 * established-socket lookup may queue another client's datagram here while
 * the socket is bound but not yet connected, so the source decides the
 * flow, never the socket. */
static void on_reply_readable(uv_poll_t *p, int status, int events)
{
    struct udp_flow *f = p->data;
    struct daemon *d = f->d;
    (void)events;
    if (status < 0 || f->removed)
        return;
    int fd = f->reply_fd;
    struct sockaddr_storage orig = f->orig;
    for (int i = 0; i < UDP_BATCH && !f->removed; i++) {
        struct sockaddr_storage src;
        socklen_t sl = sizeof(src);
        ssize_t n = recvfrom(fd, d->dgram, sizeof(d->dgram), MSG_DONTWAIT,
                             (struct sockaddr *)&src, &sl);
        if (n < 0)
            return; /* EAGAIN, or an ICMP error: keep the flow */
        normalize(&src);
        if (same_addr(&src, &f->client)) {
            atomic_fetch_add(&d->n.udp_datagrams, 1);
            udp_client_datagram(f, d->dgram, (size_t)n);
        } else {
            udp_dispatch(d, &src, &orig, (size_t)n);
        }
    }
}

static void on_egress_readable(uv_poll_t *p, int status, int events)
{
    struct udp_flow *f = p->data;
    struct daemon *d = f->d;
    (void)events;
    if (status < 0 || f->removed)
        return;
    for (int i = 0; i < UDP_BATCH; i++) {
        ssize_t n = recv(f->egress_fd, d->dgram, sizeof(d->dgram),
                         MSG_DONTWAIT);
        if (n < 0)
            return;
        touch(f);
        f->down += (uint64_t)n;
        if (send(f->reply_fd, d->dgram, (size_t)n, MSG_DONTWAIT) < 0)
            atomic_fetch_add(&d->n.udp_dropped, 1);
    }
}

static int start_poll(struct udp_flow *f, uv_poll_t *p, int fd, uv_poll_cb cb)
{
    if (uv_poll_init(&f->d->loop, p, fd) != 0)
        return -1;
    p->data = f;
    f->handles++;
    uv_poll_start(p, UV_READABLE, cb);
    return 0;
}

/* Sockets for an intercepted or passthrough flow; false when they could
 * not be made (the flow is then dropped). */
static bool udp_open_sockets(struct udp_flow *f)
{
    struct daemon *d = f->d;
    int fd = nectar__linux_udp_reply_socket(
        (const struct sockaddr *)&f->orig, (const struct sockaddr *)&f->client,
        d->cfg->bypass_mark);
    if (fd < 0) {
        nectar_log(NECTAR_LOG_WARN, TAG, "udp reply socket: %s",
                   strerror(-fd));
        return false;
    }
    f->reply_fd = fd;
    if (start_poll(f, &f->reply_poll, fd, on_reply_readable) != 0)
        return false;
    if (f->decision != NECTAR_HOST_PASSTHROUGH)
        return true;
    fd = nectar__linux_egress_socket(f->orig.ss_family, SOCK_DGRAM,
                                     d->cfg->bypass_mark);
    if (fd < 0)
        return false;
    f->egress_fd = fd;
    if (connect(fd, (const struct sockaddr *)&f->orig,
                sa_len((const struct sockaddr *)&f->orig)) != 0)
        return false;
    return start_poll(f, &f->egress_poll, fd, on_egress_readable) == 0;
}

static struct udp_flow *udp_new(struct daemon *d,
                                const struct sockaddr_storage *client,
                                const struct sockaddr_storage *orig)
{
    struct udp_flow *f = nectar_calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->d = d;
    f->client = *client;
    f->orig = *orig;
    f->reply_fd = f->egress_fd = -1;
    f->start_ms = f->last_ms = now_ms();
    f->bucket = flow_hash(client, orig);
    f->hnext = d->buckets[f->bucket];
    d->buckets[f->bucket] = f;
    lru_append(d, f);
    d->udp_live++;
    atomic_fetch_add(&d->n.udp_flows, 1);

    nectar_host_flow_meta_t m;
    struct meta_text t;
    build_meta(d, IPPROTO_UDP, client, orig, &m, &t);
    snprintf(f->app, sizeof(f->app), "%.95s", t.app);
    log_open(d, "udp", orig, &t);
    f->decision = NECTAR_HOST_BLOCKED;
    if (nectar__host_udp_open(d->host, &m, f, &f->decision, &f->u) != 0)
        f->decision = NECTAR_HOST_BLOCKED;
    if (f->decision == NECTAR_HOST_PASSTHROUGH)
        sticky_add(d, IPPROTO_UDP, orig);
    if (f->decision != NECTAR_HOST_BLOCKED && !udp_open_sockets(f)) {
        if (f->u != NULL)
            nectar__host_udp_close(f->u); /* udp_closed follows */
        else
            udp_remove(f, "socket-error");
        return NULL;
    }
    return f;
}

static void on_udp_listener(uv_poll_t *p, int status, int events)
{
    struct daemon *d = p->data;
    (void)events;
    if (status < 0 || d->stopping)
        return;
    int lfd;
    uv_fileno((uv_handle_t *)p, &lfd);
    for (int i = 0; i < UDP_BATCH; i++) {
        struct sockaddr_storage client, orig;
        long n = nectar__linux_recv_orig(lfd, d->dgram, sizeof(d->dgram),
                                         &client, &orig);
        if (n == -EAGAIN || n == -EWOULDBLOCK)
            return;
        if (n < 0 || (size_t)n > sizeof(d->dgram)) {
            atomic_fetch_add(&d->n.udp_dropped, 1);
            continue;
        }
        normalize(&client);
        normalize(&orig);
        udp_dispatch(d, &client, &orig, (size_t)n);
    }
}

/* The core ended an intercepted flow (core loop thread). */
static void hook_udp_closed(void *ctx, void *flow_ctx)
{
    struct daemon *d = ctx;
    struct udp_flow *f = flow_ctx;
    pthread_mutex_lock(&d->lock);
    f->core_closed = true;
    f->cnext = d->closed;
    d->closed = f;
    pthread_mutex_unlock(&d->lock);
    uv_async_send(&d->wake);
}

/* Front thread: forget flows the core has ended. */
static void drain_closed(struct daemon *d)
{
    pthread_mutex_lock(&d->lock);
    struct udp_flow *list = d->closed;
    d->closed = NULL;
    pthread_mutex_unlock(&d->lock);
    while (list != NULL) {
        struct udp_flow *f = list;
        list = f->cnext;
        udp_remove(f, "closed");
    }
}

static void on_wake(uv_async_t *a)
{
    drain_closed(a->data);
}

/* Core loop thread: one engine datagram to the client.  reply_fd stays
 * open until the front has processed udp_closed, which the core calls only
 * after its last send. */
static int hook_udp_send(void *ctx, void *flow_ctx, const uint8_t *buf,
                         size_t len, const struct sockaddr *source)
{
    struct udp_flow *f = flow_ctx;
    (void)ctx;
    (void)source; /* the reply socket is bound to the original destination */
    if (send(f->reply_fd, buf, len, MSG_DONTWAIT) >= 0)
        return 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
        return NECTAR_EAGAIN;
    /* ICMP unreachable from the client: UDP is lossy, keep the flow. */
    if (errno == ECONNREFUSED)
        return 0;
    return -errno;
}

/* Idle sweep of the flows the front relays itself (intercepted flows have
 * the core's idle watchdog).  The LRU list makes it stop at the first
 * flow still in budget. */
static void on_sweep(uv_timer_t *t)
{
    struct daemon *d = t->data;
    uint64_t now = now_ms();
    uint32_t idle = d->cfg->udp_idle_timeout_ms;
    if (idle == 0)
        return;
    struct udp_flow *f = d->lru_head;
    while (f != NULL && now - f->last_ms >= idle) {
        struct udp_flow *next = f->lnext;
        if (f->decision == NECTAR_HOST_INTERCEPT) {
            /* Keep it in the LRU order; the core decides its end. */
            f = next;
            continue;
        }
        udp_remove(f, "idle");
        f = next;
    }
}

/* ---- 5. core hooks -------------------------------------------------------- */

static int hook_egress_socket(void *ctx, const struct sockaddr *remote)
{
    struct daemon *d = ctx;
    return nectar__linux_egress_socket(remote->sa_family, SOCK_STREAM,
                                       d->cfg->bypass_mark);
}

/* The splicer ended a flow (splicer thread, or its free): report back. */
static void on_splice_done(void *arg, uint64_t c2s, uint64_t s2c, int error)
{
    nectar__host_tcp_direct_done(arg, c2s, s2c, error);
}

static void put_carry(nectar_linux_splice_carry_t *out,
                      const nectar_host_direct_dir_t *in)
{
    out->buf = in->carry;
    out->len = in->carry_len;
    out->eof = in->eof;
    out->error = in->error;
    out->done = in->done;
}

/* Passthrough and promoted flows: the kernel moves the bytes. */
static int hook_tcp_direct(void *ctx, nectar_host_direct_t *hd,
                           const nectar_host_direct_info_t *info)
{
    struct daemon *d = ctx;
    nectar_linux_splice_carry_t carry[2];
    put_carry(&carry[0], &info->c2s);
    put_carry(&carry[1], &info->s2c);
    int rc = nectar__linux_splice_start_carry(d->splicer, info->client_fd,
                                              info->egress_fd, carry,
                                              on_splice_done, hd);
    atomic_fetch_add(rc == 0 ? &d->n.splice_flows : &d->n.splice_errors, 1);
    return rc;
}

/* "app=" of the close line: executable, unit and pid when known. */
static void app_text(const nectar_host_flow_report_t *r, char *buf, size_t n)
{
    const char *exe = r->app_signing ? r->app_signing : "-";
    if (r->app_bundle != NULL && r->pid >= 0)
        snprintf(buf, n, "%s unit=%s pid=%d", exe, r->app_bundle, (int)r->pid);
    else if (r->pid >= 0)
        snprintf(buf, n, "%s pid=%d", exe, (int)r->pid);
    else
        snprintf(buf, n, "%s", exe);
}

static void hook_flow_closed(void *ctx, const nectar_host_flow_report_t *r)
{
    struct daemon *d = ctx;
    if (!d->cfg->log_flows)
        return;
    char app[640];
    app_text(r, app, sizeof(app));
    nectar_log(NECTAR_LOG_INFO, TAG,
               "flow id=%" PRIu64 " %s %s%s app=%s dst=%s up=%" PRIu64
               " down=%" PRIu64 " duration_ms=%" PRIu64 " reason=%s%s%s%s",
               r->id, r->protocol == IPPROTO_TCP ? "tcp" : "udp",
               decision_name(r->decision), r->promoted ? " promoted" : "",
               app, r->remote ? r->remote : "?", r->bytes_c2s, r->bytes_s2c,
               r->duration_ms, r->reason ? r->reason : "closed",
               r->forwarded_by_front ? " forward=splice" : "",
               r->error ? " error=" : "",
               r->error ? nectar_err_name(r->error) : "");
}

/* ---- 6. signals, start-up, shutdown ------------------------------------- */

static void log_counters(struct daemon *d)
{
    nectar_host_stats_t s;
    nectar__host_stats(d->host, &s);
    nectar_log(NECTAR_LOG_INFO, TAG,
               "counters tcp_live=%" PRIu64 " udp_live=%" PRIu64
               " tcp_total=%" PRIu64 " udp_total=%" PRIu64
               " intercepted=%" PRIu64 " passthrough=%" PRIu64
               " blocked=%" PRIu64 " promoted=%" PRIu64 " bytes_up=%" PRIu64
               " bytes_down=%" PRIu64 " tcp_accepted=%" PRIuFAST64
               " accept_errors=%" PRIuFAST64 " udp_flows=%" PRIuFAST64
               " udp_front_live=%zu udp_datagrams=%" PRIuFAST64
               " udp_dropped=%" PRIuFAST64 " sticky_added=%" PRIuFAST64
               " sticky_errors=%" PRIuFAST64 " owner_found=%" PRIuFAST64
               " owner_missing=%" PRIuFAST64 " splice_flows=%" PRIuFAST64
               " splice_errors=%" PRIuFAST64 " splice_live=%zu",
               s.tcp_live, s.udp_live, s.tcp_total, s.udp_total,
               s.intercepted, s.passthrough, s.blocked, s.promoted,
               s.bytes_c2s, s.bytes_s2c, atomic_load(&d->n.tcp_accepted),
               atomic_load(&d->n.tcp_accept_errors),
               atomic_load(&d->n.udp_flows), d->udp_live,
               atomic_load(&d->n.udp_datagrams),
               atomic_load(&d->n.udp_dropped),
               atomic_load(&d->n.sticky_added),
               atomic_load(&d->n.sticky_errors),
               atomic_load(&d->n.owner_found),
               atomic_load(&d->n.owner_missing),
               atomic_load(&d->n.splice_flows),
               atomic_load(&d->n.splice_errors),
               d->splicer ? nectar__linux_splicer_live(d->splicer) : 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;
    if (signum == SIGUSR1) {
        log_counters(d);
        return;
    }
    nectar_log(NECTAR_LOG_INFO, TAG, "%s: stopping",
               signum == SIGINT ? "SIGINT" : "SIGTERM");
    d->stopping = true;
    uv_stop(&d->loop);
}

static int open_listeners(struct daemon *d, nectar_error_t *err)
{
    static const int fams[2] = {AF_INET, AF_INET6};
    for (int i = 0; i < 2; i++) {
        d->tcp_fd[i] = nectar__linux_listen(fams[i], SOCK_STREAM,
                                            d->cfg->tcp_port,
                                            d->cfg->bypass_mark, err);
        if (d->tcp_fd[i] < 0)
            return d->tcp_fd[i];
        if (d->cfg->udp_port == 0)
            continue;
        d->udp_fd[i] = nectar__linux_listen(fams[i], SOCK_DGRAM,
                                            d->cfg->udp_port,
                                            d->cfg->bypass_mark, err);
        if (d->udp_fd[i] < 0)
            return d->udp_fd[i];
    }
    return 0;
}

static void start_polls(struct daemon *d)
{
    for (int i = 0; i < 2; i++) {
        uv_poll_init(&d->loop, &d->tcp_poll[i], d->tcp_fd[i]);
        d->tcp_poll[i].data = d;
        uv_poll_start(&d->tcp_poll[i], UV_READABLE, on_tcp_listener);
        if (d->udp_fd[i] < 0)
            continue;
        uv_poll_init(&d->loop, &d->udp_poll[i], d->udp_fd[i]);
        d->udp_poll[i].data = d;
        uv_poll_start(&d->udp_poll[i], UV_READABLE, on_udp_listener);
    }
    static const int signums[3] = {SIGINT, SIGTERM, SIGUSR1};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&d->loop, &d->sig[i]);
        d->sig[i].data = d;
        uv_signal_start(&d->sig[i], on_signal, signums[i]);
    }
    uv_timer_init(&d->loop, &d->sweep);
    d->sweep.data = d;
    uv_timer_start(&d->sweep, on_sweep, 1000, 1000);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Remove every UDP flow the front still holds (after the core stopped,
 * so no hook runs any more). */
static void udp_remove_all(struct daemon *d)
{
    drain_closed(d);
    while (d->lru_head != NULL)
        udp_remove(d->lru_head, "stopped");
}

static void close_fds(struct daemon *d)
{
    for (int i = 0; i < 2; i++) {
        if (d->tcp_fd[i] >= 0)
            close(d->tcp_fd[i]);
        if (d->udp_fd[i] >= 0)
            close(d->udp_fd[i]);
        d->tcp_fd[i] = d->udp_fd[i] = -1;
    }
}

/* Under local capture, switch the effective group of the whole process
 * (glibc applies setegid to every thread) so that each socket it opens from
 * now on, the engine's UDP relays included, is skipped by the output chain
 * (`meta skgid`).  Only the group changes; root keeps its privileges. */
static int adopt_bypass_gid(const nectar_linux_config_t *cfg,
                            nectar_error_t *err)
{
    if (!cfg->capture_local || cfg->bypass_gid == 0)
        return 0;
    if (setegid((gid_t)cfg->bypass_gid) != 0)
        return nectar_error_set(err, -errno, "setegid(%u): %s",
                                cfg->bypass_gid, strerror(errno));
    return 0;
}

/* One run per network namespace.  Removing "a stale table of a crashed
 * run" must never remove the table of a live one, so a run first binds an
 * abstract unix socket: the name is per network namespace and the kernel
 * frees it when the process dies, even by kill -9.  Returns the fd. */
static int claim_namespace(nectar_error_t *err)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return nectar_error_set(err, -errno, "unix socket: %s",
                                strerror(errno));
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    static const char name[] = "nectar-run-" NECTAR_LINUX_TABLE;
    memcpy(a.sun_path + 1, name, sizeof(name) - 1);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                                sizeof(name) - 1);
    if (bind(fd, (struct sockaddr *)&a, len) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            return nectar_error_set(err, NECTAR_EBUSY,
                                    "another nectar run is active in this "
                                    "network namespace");
        return nectar_error_set(err, -e, "claiming the namespace: %s",
                                strerror(e));
    }
    return fd;
}

/* nft resolves `socket cgroupv2` paths under /sys/fs/cgroup when the rule
 * is loaded; check first so the error names the config key. */
static int check_cgroups(const nectar_linux_config_t *cfg, nectar_error_t *err)
{
    for (size_t i = 0; i < cfg->n_cgroups; i++) {
        const char *p = cfg->cgroups[i];
        while (*p == '/')
            p++;
        char path[512];
        snprintf(path, sizeof(path), "/sys/fs/cgroup/%s", p);
        if (access(path, F_OK) != 0)
            return nectar_error_set(
                err, NECTAR_ECONFIG,
                "host.cgroups[%zu]: %s does not exist (nftables needs the "
                "cgroup v2 hierarchy mounted at /sys/fs/cgroup)",
                i, path);
    }
    return 0;
}

/* Start the core around the engine (consumed in every case). */
static int start_core(struct daemon *d, RamaTransparentProxyEngine *engine,
                      nectar_error_t *err)
{
    nectar_host_hooks_t hooks = {
        .ctx = d,
        .egress_socket = hook_egress_socket,
        .udp_send = hook_udp_send,
        .udp_closed = hook_udp_closed,
        .flow_closed = hook_flow_closed,
        .tcp_direct = hook_tcp_direct,
    };
    int rc = nectar__linux_splicer_new(&d->splicer, err);
    if (rc != 0) {
        rama_transparent_proxy_engine_stop(engine, 0);
        return rc;
    }
    nectar_host_options_t opts = {0};
    opts.loops = d->cfg->loops;
    opts.connect_timeout_ms = d->cfg->connect_timeout_ms;
    opts.udp_idle_timeout_ms = d->cfg->udp_idle_timeout_ms
                                   ? d->cfg->udp_idle_timeout_ms
                                   : UINT32_MAX;
    opts.flow_refusal_action = -1;
    rc = nectar__host_new(engine, &hooks, &opts, &d->host, err);
    if (rc != 0) {
        rama_transparent_proxy_engine_stop(engine, 0);
        nectar__linux_splicer_free(d->splicer);
        d->splicer = NULL;
    }
    return rc;
}

int nectar__linux_run(const nectar_linux_config_t *cfg,
                      RamaTransparentProxyEngine *engine,
                      nectar_error_t *err)
{
    struct daemon *d = nectar_calloc(1, sizeof(*d));
    if (d == NULL) {
        rama_transparent_proxy_engine_stop(engine, 0);
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    }
    d->cfg = cfg;
    d->tcp_fd[0] = d->tcp_fd[1] = d->udp_fd[0] = d->udp_fd[1] = -1;
    d->claim_fd = -1;
    /* A peer that resets while a write is in flight must cost one flow, not
     * the daemon: stream writes (libuv's writev) raise SIGPIPE otherwise. */
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&d->lock, NULL);
    int rc = 0;

    /* Rules first (they need the engine), so a bad ruleset fails before
     * anything is installed. */
    nectar_linux_ruleset_t rs = {0};
    RamaTransparentProxyConfig *pc = rama_transparent_proxy_get_config(engine);
    if (pc == NULL) {
        rama_transparent_proxy_engine_stop(engine, 0);
        rc = nectar_error_set(err, NECTAR_ECONFIG,
                              "the engine returned no proxy config");
        goto out_free;
    }
    rc = nectar__linux_rules_build(pc->rules, pc->rules_len, cfg, &rs);
    rama_transparent_proxy_config_free(pc);
    if (rc != 0) {
        rama_transparent_proxy_engine_stop(engine, 0);
        nectar_error_set(err, rc, "building the ruleset: out of memory");
        goto out_free;
    }
    int claim = claim_namespace(err);
    if (claim < 0) {
        rc = claim;
        rama_transparent_proxy_engine_stop(engine, 0);
        goto out_free;
    }
    d->claim_fd = claim;
    nectar_error_t stale = {0};
    if (nectar__linux_nft_delete(&stale) == 0)
        nectar_log(NECTAR_LOG_WARN, TAG,
                   "removed a stale table inet %s left by an earlier run",
                   NECTAR_LINUX_TABLE);
    nectar__linux_routes_del(cfg);
    rc = nectar__linux_nft_probe_tproxy(err);
    if (rc == 0)
        rc = check_cgroups(cfg, err);
    if (rc == 0)
        rc = open_listeners(d, err);
    if (rc != 0) {
        rama_transparent_proxy_engine_stop(engine, 0);
        goto out_fds;
    }
    rc = adopt_bypass_gid(cfg, err);
    if (rc != 0) {
        rama_transparent_proxy_engine_stop(engine, 0);
        goto out_fds;
    }
    rc = start_core(d, engine, err);
    if (rc != 0)
        goto out_fds;
    uv_loop_init(&d->loop);
    uv_async_init(&d->loop, &d->wake, on_wake);
    d->wake.data = d;
    /* Control service (control.c): up once the engine runs. */
    rc = nectar__linux_control_start(cfg, d->host, &d->control, err);
    if (rc == 0)
        rc = nectar__linux_routes_add(cfg, err);
    if (rc == 0) {
        rc = nectar__linux_nft_apply(rs.nft, err);
        if (rc != 0)
            nectar__linux_routes_del(cfg);
    }
    if (rc == 0) {
        start_polls(d);
        nectar_log(NECTAR_LOG_INFO, TAG,
                   "running: tcp port %u, udp port %u, fwmark 0x%x, table %u",
                   cfg->tcp_port, cfg->udp_port, cfg->fwmark,
                   cfg->route_table);
        uv_run(&d->loop, UV_RUN_DEFAULT);
    }
    /* Ordered shutdown: stop diverting first, then end the flows, then
     * close what is left. */
    d->stopping = true;
    nectar_error_t e2 = {0};
    if (nectar__linux_nft_delete(&e2) != 0 && rc == 0)
        nectar_log(NECTAR_LOG_WARN, TAG, "%s", e2.message);
    nectar__linux_routes_del(cfg);
    nectar__linux_control_stop(d->control); /* before the engine stops */
    nectar__host_stop(d->host, 0);
    /* After the core: no hand-off can come any more; flows still spliced
     * are reset here (the core already reported them as stopped). */
    nectar__linux_splicer_free(d->splicer);
    d->splicer = NULL;
    udp_remove_all(d);
    log_counters(d);
    nectar__host_free(d->host);
    uv_walk(&d->loop, close_walk, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    uv_loop_close(&d->loop);
out_fds:
    close_fds(d);
out_free:
    if (d->claim_fd >= 0)
        close(d->claim_fd);
    nectar__linux_ruleset_free(&rs);
    pthread_mutex_destroy(&d->lock);
    nectar_free(d);
    return rc;
}
