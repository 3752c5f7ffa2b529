/*
 * sim.c - the sim host front: a listener thread (own libuv loop) that
 * accepts loopback TCP clients and receives UDP datagrams, and hands them
 * to the host core with the fixed target as the flow's remote endpoint.
 * UDP flows are keyed by client address; replies go back with sendto from
 * the listening socket (a loopback sim cannot spoof the reply's source, so
 * the engine's `source` peer is not used; the Linux host sends from a
 * transparent socket bound to it).  Clients the engine passes through are
 * relayed by the sim itself, as the kernel would.
 */
#include "host/sim/sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TAG "sim"
#define ASSOC_BUCKETS 1024

/* One UDP client address and what the engine decided for it. */
struct assoc {
    struct assoc *next;
    struct sockaddr_storage client;
    socklen_t clen;
    nectar_host_udp_t *flow; /* NULL when not intercepted */
    nectar_sim_t *sim;
    int pt_fd;               /* passthrough: own socket to the target */
    uv_poll_t pt_poll;       /* listener loop: replies on pt_fd */
};

struct nectar_sim {
    nectar_host_t *host;
    struct sockaddr_storage listen, target;
    int tcp_fd, udp_fd;
    uv_loop_t loop;
    uv_poll_t tcp_poll, udp_poll;
    uv_async_t stop_async;
    pthread_t thread;
    bool thread_started;
    void (*on_flow_closed)(void *ctx, const nectar_host_flow_report_t *r);
    int (*tcp_direct)(void *ctx, nectar_host_direct_t *d,
                      const nectar_host_direct_info_t *info);
    void *ctx;
    pthread_mutex_t map_lock; /* guards the buckets */
    struct assoc *buckets[ASSOC_BUCKETS];
    uint8_t rbuf[65536];      /* listener thread only */
};

/* ---- addresses ---------------------------------------------------------- */

int nectar_sim_parse_addr(const char *text, struct sockaddr_storage *out)
{
    char host[64];
    const char *port;
    memset(out, 0, sizeof(*out));
    if (text == NULL)
        return NECTAR_EINVAL;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - text - 1) >= sizeof(host))
            return NECTAR_EINVAL;
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL || (size_t)(colon - text) >= sizeof(host))
            return NECTAR_EINVAL;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        port = colon + 1;
    }
    char *endp;
    errno = 0;
    unsigned long p = strtoul(port, &endp, 10);
    if (*port == '\0' || *endp != '\0' || errno != 0 || p > 65535)
        return NECTAR_EINVAL;
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
        return 0;
    }
    return NECTAR_EINVAL;
}

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                    : sizeof(struct sockaddr_in6);
}

/* ---- UDP associations --------------------------------------------------- */

static unsigned assoc_hash(const struct sockaddr_storage *ss, socklen_t len)
{
    const uint8_t *b = (const uint8_t *)ss;
    uint32_t h = 2166136261u;
    for (socklen_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 16777619u;
    return h % ASSOC_BUCKETS;
}

/* Caller holds map_lock. */
static struct assoc *assoc_find(nectar_sim_t *s,
                                const struct sockaddr_storage *ss,
                                socklen_t len, unsigned *bucket)
{
    *bucket = assoc_hash(ss, len);
    for (struct assoc *a = s->buckets[*bucket]; a != NULL; a = a->next) {
        if (a->clen == len && memcmp(&a->client, ss, len) == 0)
            return a;
    }
    return NULL;
}

static void assoc_unlink(nectar_sim_t *s, struct assoc *a)
{
    unsigned b = assoc_hash(&a->client, a->clen);
    for (struct assoc **pp = &s->buckets[b]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            return;
        }
    }
}

/* A reply for a passthrough client: send it back from the listener. */
static void on_passthrough_reply(uv_poll_t *p, int status, int events)
{
    struct assoc *a = p->data;
    nectar_sim_t *s = a->sim;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < 64; i++) {
        ssize_t n = recv(a->pt_fd, s->rbuf, sizeof(s->rbuf), 0);
        if (n < 0)
            return;
        sendto(s->udp_fd, s->rbuf, (size_t)n, MSG_DONTWAIT,
               (const struct sockaddr *)&a->client, a->clen);
    }
}

/* Listener thread. */
static void passthrough_open(nectar_sim_t *s, struct assoc *a)
{
    int fd = socket(s->target.ss_family,
                    SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (connect(fd, (const struct sockaddr *)&s->target,
                sa_len(&s->target)) != 0 ||
        uv_poll_init(&s->loop, &a->pt_poll, fd) != 0) {
        close(fd);
        return;
    }
    a->pt_fd = fd;
    a->pt_poll.data = a;
    uv_poll_start(&a->pt_poll, UV_READABLE, on_passthrough_reply);
}

static struct assoc *assoc_open(nectar_sim_t *s,
                                const struct sockaddr_storage *ss,
                                socklen_t len, unsigned bucket)
{
    struct assoc *a = nectar_calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    memcpy(&a->client, ss, len);
    a->clen = len;
    a->sim = s;
    nectar_host_flow_meta_t meta = {
        .remote = (const struct sockaddr *)&s->target,
        .local = (const struct sockaddr *)ss,
        .pid = -1,
    };
    nectar_host_decision_t d = NECTAR_HOST_BLOCKED;
    a->pt_fd = -1;
    nectar__host_udp_open(s->host, &meta, a, &d, &a->flow);
    /* Non-intercepted clients keep an entry without a flow, so the engine
     * is asked once per client, as the OS asks the provider once per flow.
     * Passthrough clients are relayed by the sim itself ("the kernel
     * handles it"); blocked clients' datagrams are dropped. */
    if (d == NECTAR_HOST_PASSTHROUGH)
        passthrough_open(s, a);
    a->next = s->buckets[bucket];
    s->buckets[bucket] = a;
    return a;
}

static void on_udp(uv_poll_t *p, int status, int events)
{
    nectar_sim_t *s = p->data;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < 64; i++) { /* bounded work per turn */
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(s->udp_fd, s->rbuf, sizeof(s->rbuf), 0,
                             (struct sockaddr *)&from, &flen);
        if (n < 0)
            return;
        unsigned b;
        pthread_mutex_lock(&s->map_lock);
        struct assoc *a = assoc_find(s, &from, flen, &b);
        if (a == NULL)
            a = assoc_open(s, &from, flen, b);
        /* Delivered under map_lock so udp_closed cannot free a meanwhile. */
        if (a != NULL && a->flow != NULL)
            nectar__host_udp_deliver(a->flow, s->rbuf, (size_t)n,
                                     (const struct sockaddr *)&s->target);
        else if (a != NULL && a->pt_fd >= 0)
            send(a->pt_fd, s->rbuf, (size_t)n, MSG_DONTWAIT);
        pthread_mutex_unlock(&s->map_lock);
    }
}

static int hook_udp_send(void *ctx, void *flow_ctx, const uint8_t *buf,
                         size_t len, const struct sockaddr *source)
{
    nectar_sim_t *s = ctx;
    struct assoc *a = flow_ctx;
    (void)source;
    ssize_t n = sendto(s->udp_fd, buf, len, MSG_DONTWAIT,
                       (const struct sockaddr *)&a->client, a->clen);
    if (n >= 0)
        return 0;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS
               ? NECTAR_EAGAIN
               : -errno;
}

static void hook_udp_closed(void *ctx, void *flow_ctx)
{
    nectar_sim_t *s = ctx;
    struct assoc *a = flow_ctx;
    pthread_mutex_lock(&s->map_lock);
    assoc_unlink(s, a);
    pthread_mutex_unlock(&s->map_lock);
    nectar__host_udp_release(a->flow);
    nectar_free(a);
}

static int hook_tcp_direct(void *ctx, nectar_host_direct_t *d,
                           const nectar_host_direct_info_t *info)
{
    struct nectar_sim *s = ctx;
    return s->tcp_direct(s->ctx, d, info);
}

static void hook_flow_closed(void *ctx, const nectar_host_flow_report_t *r)
{
    nectar_sim_t *s = ctx;
    if (s->on_flow_closed != NULL)
        s->on_flow_closed(s->ctx, r);
}

/* ---- TCP ---------------------------------------------------------------- */

static void on_accept(uv_poll_t *p, int status, int events)
{
    nectar_sim_t *s = p->data;
    (void)events;
    if (status < 0)
        return;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(s->tcp_fd, (struct sockaddr *)&peer, &plen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                nectar_log(NECTAR_LOG_WARN, TAG, "accept: %s",
                           strerror(errno));
            return;
        }
        nectar_host_flow_meta_t meta = {
            .remote = (const struct sockaddr *)&s->target,
            .local = (const struct sockaddr *)&peer,
            .pid = -1,
        };
        nectar__host_tcp_accept(s->host, fd, &meta, NULL);
    }
}

/* ---- listener thread ---------------------------------------------------- */

static void close_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_stop(uv_async_t *a)
{
    uv_walk(a->loop, close_cb, NULL);
}

static void *listener_main(void *arg)
{
    nectar_sim_t *s = arg;
    pthread_setname_np(pthread_self(), "sim-listener");
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int open_listener(nectar_sim_t *s, int type, nectar_error_t *err)
{
    int fd = socket(s->listen.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (fd < 0)
        return nectar_error_set(err, -errno, "sim: socket: %s",
                                strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&s->listen, sa_len(&s->listen)) != 0 ||
        (type == SOCK_STREAM && listen(fd, 4096) != 0)) {
        int e = errno;
        close(fd);
        return nectar_error_set(err, -e, "sim: bind/listen: %s", strerror(e));
    }
    /* Port 0: learn the real port, and use it for the other protocol. */
    socklen_t len = sizeof(s->listen);
    getsockname(fd, (struct sockaddr *)&s->listen, &len);
    return fd;
}

static RamaTransparentProxyEngine *make_engine(const nectar_sim_options_t *o,
                                               nectar_error_t *err)
{
    if (o->engine != NULL)
        return o->engine;
    rama_transparent_proxy_initialize(NULL);
    RamaBytesView v = {o->config, o->config != NULL ? o->config_len : 0};
    RamaTransparentProxyEngine *e =
        rama_transparent_proxy_engine_new_with_config(v);
    if (e == NULL)
        nectar_error_set(err, NECTAR_ECONFIG,
                         "sim: the engine refused its config");
    return e;
}

static void sim_free(nectar_sim_t *s)
{
    for (unsigned i = 0; i < ASSOC_BUCKETS; i++) {
        struct assoc *a = s->buckets[i];
        while (a != NULL) {
            struct assoc *n = a->next;
            nectar__host_udp_release(a->flow);
            if (a->pt_fd >= 0)
                close(a->pt_fd); /* its poll handle closed with the loop */
            nectar_free(a);
            a = n;
        }
    }
    pthread_mutex_destroy(&s->map_lock);
    nectar_free(s);
}

static int start_listening(nectar_sim_t *s, const nectar_sim_options_t *o,
                           nectar_error_t *err)
{
    bool tcp = o->tcp || !o->udp;
    if (tcp) {
        s->tcp_fd = open_listener(s, SOCK_STREAM, err);
        if (s->tcp_fd < 0)
            return s->tcp_fd;
    }
    if (o->udp) {
        s->udp_fd = open_listener(s, SOCK_DGRAM, err);
        if (s->udp_fd < 0)
            return s->udp_fd;
    }
    int rc = uv_loop_init(&s->loop);
    if (rc != 0)
        return nectar_error_set(err, rc, "sim: loop: %s", uv_strerror(rc));
    uv_async_init(&s->loop, &s->stop_async, on_stop);
    if (s->tcp_fd >= 0) {
        uv_poll_init(&s->loop, &s->tcp_poll, s->tcp_fd);
        s->tcp_poll.data = s;
        uv_poll_start(&s->tcp_poll, UV_READABLE, on_accept);
    }
    if (s->udp_fd >= 0) {
        uv_poll_init(&s->loop, &s->udp_poll, s->udp_fd);
        s->udp_poll.data = s;
        uv_poll_start(&s->udp_poll, UV_READABLE, on_udp);
    }
    rc = pthread_create(&s->thread, NULL, listener_main, s);
    if (rc != 0) {
        uv_walk(&s->loop, close_cb, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        return nectar_error_set(err, -rc, "sim: thread: %s", strerror(rc));
    }
    s->thread_started = true;
    return 0;
}

int nectar_sim_start(const nectar_sim_options_t *o, nectar_sim_t **out,
                     nectar_error_t *err)
{
    if (o == NULL || out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "sim: missing options");
    nectar_sim_t *s = nectar_calloc(1, sizeof(*s));
    if (s == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "sim: out of memory");
    s->tcp_fd = s->udp_fd = -1;
    s->on_flow_closed = o->on_flow_closed;
    s->ctx = o->ctx;
    s->tcp_direct = o->tcp_direct;
    pthread_mutex_init(&s->map_lock, NULL);
    if (nectar_sim_parse_addr(o->listen, &s->listen) != 0 ||
        nectar_sim_parse_addr(o->target, &s->target) != 0) {
        sim_free(s);
        return nectar_error_set(err, NECTAR_EINVAL,
                                "sim: bad address (listen %s, target %s)",
                                o->listen ? o->listen : "-",
                                o->target ? o->target : "-");
    }
    RamaTransparentProxyEngine *e = make_engine(o, err);
    if (e == NULL) {
        sim_free(s);
        return NECTAR_ECONFIG;
    }
    nectar_host_hooks_t hooks = {
        .ctx = s,
        .udp_send = hook_udp_send,
        .udp_closed = hook_udp_closed,
        .flow_closed = hook_flow_closed,
        .tcp_direct = o->tcp_direct != NULL ? hook_tcp_direct : NULL,
    };
    int rc = nectar__host_new(e, &hooks, &o->host, &s->host, err);
    if (rc != 0) {
        if (o->engine == NULL)
            rama_transparent_proxy_engine_free(e);
        sim_free(s);
        return rc;
    }
    rc = start_listening(s, o, err);
    if (rc != 0) {
        if (s->tcp_fd >= 0)
            close(s->tcp_fd);
        if (s->udp_fd >= 0)
            close(s->udp_fd);
        nectar__host_free(s->host);
        sim_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void nectar_sim_listen_addr(const nectar_sim_t *s, struct sockaddr_storage *out)
{
    *out = s->listen;
}

uint16_t nectar_sim_port(const nectar_sim_t *s)
{
    if (s->listen.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&s->listen)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&s->listen)->sin6_port);
}

nectar_host_t *nectar_sim_host(nectar_sim_t *s)
{
    return s->host;
}

void nectar_sim_stats(nectar_sim_t *s, nectar_host_stats_t *out)
{
    nectar__host_stats(s->host, out);
}

void nectar_sim_stop(nectar_sim_t *s)
{
    if (s == NULL)
        return;
    if (s->thread_started) {
        uv_async_send(&s->stop_async);
        pthread_join(s->thread, NULL);
        uv_loop_close(&s->loop);
    }
    if (s->tcp_fd >= 0)
        close(s->tcp_fd);
    /* The UDP socket stays open until the flows are gone: udp_send may
     * still run on a core loop until the host stops. */
    nectar__host_free(s->host);
    if (s->udp_fd >= 0)
        close(s->udp_fd);
    sim_free(s);
}
