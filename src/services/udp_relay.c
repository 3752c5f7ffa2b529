/*
 * udp_relay.c - the UDP relay service (see udp_relay.h for the contract).
 *
 * Lifetime: the relay object belongs to the engine (destroy frees it); its
 * sockets are separate allocations freed by their uv_close callbacks, so a
 * socket closing after destroy never touches the relay.  A socket knows
 * its relay through `owner`, cleared when the socket is detached; every
 * callback checks it first.
 */
#include "services/udp_relay.h"

#include <string.h>
#include <sys/socket.h>

#include "common/alloc.h"

struct udp_sock {
    uv_udp_t handle;
    struct udp_relay *owner; /* NULL once detached */
};

struct udp_relay {
    struct svc_counters *counters;
    nectar_udp_flow_t *flow;
    struct udp_sock *sock[2]; /* [0] IPv4, [1] IPv6; NULL until needed */
    struct sockaddr_storage initial;
    bool has_initial;
    bool ended;
};

/* A queued send (the socket would have blocked): a private copy. */
struct udp_send {
    uv_udp_send_t req;
    struct udp_sock *sock;
    size_t len;
    uint8_t bytes[];
};

static void relay_end(struct udp_relay *r, bool finish);

/* ---- sockets ------------------------------------------------------------ */

static void sock_on_closed(uv_handle_t *h)
{
    nectar_free(h->data);
}

static void sock_detach(struct udp_relay *r, int idx)
{
    struct udp_sock *s = r->sock[idx];

    if (s == NULL)
        return;
    r->sock[idx] = NULL;
    s->owner = NULL;
    uv_close((uv_handle_t *)&s->handle, sock_on_closed);
}

/* Each receive gets its own buffer, freed as soon as the datagram was
 * handed to the app (which copies it): an idle flow holds none, and no
 * per-thread storage is reserved in every thread of the host process. */
static void sock_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    char *p = nectar_malloc(SVC_UDP_RELAY_RCVBUF);

    (void)h;
    (void)hint;
    *buf = uv_buf_init(p, p != NULL ? SVC_UDP_RELAY_RCVBUF : 0);
}

static int family_index(int family)
{
    return family == AF_INET6 ? 1 : 0;
}

static void sock_deliver(struct udp_relay *r, ssize_t nread,
                         const uv_buf_t *buf, const struct sockaddr *addr,
                         unsigned flags)
{
    /* nread == 0 without an address: nothing was read.  With one, it is a
     * real zero-length datagram.  Truncated datagrams are dropped. */
    if (addr == NULL || (flags & UV_UDP_PARTIAL) != 0)
        return;
    if (nectar_udp_flow_send(r->flow, (const uint8_t *)buf->base, (size_t)nread,
                             addr) == 0 &&
        r->counters != NULL)
        svc_counters_add(&r->counters->bytes_to_app, (uint64_t)nread);
}

static void sock_on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                         const struct sockaddr *addr, unsigned flags)
{
    struct udp_sock *s = h->data;
    struct udp_relay *r = s->owner;

    if (r != NULL && nread >= 0)
        sock_deliver(r, nread, buf, addr, flags);
    nectar_free(buf->base);
    /* A receive error drops only this family's socket; the next datagram
     * for it opens a new one.  Running out of buffers is not an error of
     * the socket: that datagram is simply lost. */
    if (r != NULL && nread < 0 && nread != UV_ENOBUFS)
        sock_detach(r, s == r->sock[1] ? 1 : 0);
}

static struct udp_sock *sock_open(struct udp_relay *r, int family)
{
    uv_loop_t *loop = nectar_udp_flow_loop(r->flow);
    struct udp_sock *s = nectar_calloc(1, sizeof(*s));
    struct sockaddr_storage any;
    int size = SVC_UDP_RELAY_RCVBUF;

    if (s == NULL)
        return NULL;
    if (uv_udp_init_ex(loop, &s->handle, (unsigned)family) != 0) {
        nectar_free(s);
        return NULL;
    }
    s->handle.data = s;
    s->owner = r;
    r->sock[family_index(family)] = s;
    memset(&any, 0, sizeof(any));
    if (family == AF_INET6)
        uv_ip6_addr("::", 0, (struct sockaddr_in6 *)&any);
    else
        uv_ip4_addr("0.0.0.0", 0, (struct sockaddr_in *)&any);
    if (uv_udp_bind(&s->handle, (struct sockaddr *)&any,
                    family == AF_INET6 ? UV_UDP_IPV6ONLY : 0) != 0 ||
        uv_recv_buffer_size((uv_handle_t *)&s->handle, &size) != 0 ||
        uv_udp_recv_start(&s->handle, sock_alloc, sock_on_recv) != 0) {
        sock_detach(r, family_index(family));
        return NULL;
    }
    return s;
}

/* ---- app -> network ----------------------------------------------------- */

static void send_on_done(uv_udp_send_t *req, int status)
{
    struct udp_send *snd = req->data;
    struct udp_relay *r = snd->sock->owner;

    if (r != NULL && status == 0 && r->counters != NULL)
        svc_counters_add(&r->counters->bytes_to_remote, snd->len);
    nectar_free(snd);
    if (r != NULL && status < 0)
        relay_end(r, true);
}

/* Send now if the socket can take it, else queue a copy.  Returns 0 or a
 * libuv error (the flow ends). */
static int relay_send(struct udp_relay *r, struct udp_sock *s,
                      const uint8_t *buf, size_t len,
                      const struct sockaddr *dest)
{
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
    int rc = uv_udp_try_send(&s->handle, &b, 1, dest);

    if (rc >= 0) {
        if (r->counters != NULL)
            svc_counters_add(&r->counters->bytes_to_remote, len);
        return 0;
    }
    if (rc != UV_EAGAIN)
        return rc;
    struct udp_send *snd = nectar_malloc(sizeof(*snd) + len);
    if (snd == NULL)
        return UV_ENOMEM;
    snd->sock = s;
    snd->len = len;
    snd->req.data = snd;
    if (len > 0)
        memcpy(snd->bytes, buf, len);
    b = uv_buf_init((char *)snd->bytes, (unsigned)len);
    rc = uv_udp_send(&snd->req, &s->handle, &b, 1, dest, send_on_done);
    if (rc != 0)
        nectar_free(snd);
    return rc;
}

static void relay_on_app_datagram(nectar_udp_flow_t *flow, ssize_t nread,
                                  const uint8_t *buf,
                                  const struct sockaddr *peer, void *data)
{
    struct udp_relay *r = data;
    const struct sockaddr *dest = peer;
    struct udp_sock *s;

    (void)flow;
    if (r->ended)
        return;
    if (nread < 0) {
        relay_end(r, true);
        return;
    }
    if (dest == NULL && r->has_initial)
        dest = (const struct sockaddr *)&r->initial;
    if (dest == NULL ||
        (dest->sa_family != AF_INET && dest->sa_family != AF_INET6))
        return; /* nowhere to send it */
    s = r->sock[family_index(dest->sa_family)];
    if (s == NULL)
        s = sock_open(r, dest->sa_family);
    if (s == NULL || relay_send(r, s, buf, (size_t)nread, dest) != 0)
        relay_end(r, true);
}

/* ---- service ------------------------------------------------------------ */

/* The flow's initial remote endpoint, when it is an IP literal. */
static bool endpoint_addr(const nectar_endpoint_t *ep,
                          struct sockaddr_storage *out)
{
    char host[64];
    size_t n;

    if (ep->host == NULL || ep->port == 0)
        return false;
    n = strlen(ep->host);
    if (n >= sizeof(host))
        return false;
    if (ep->host[0] == '[' && n > 2 && ep->host[n - 1] == ']') {
        memcpy(host, ep->host + 1, n - 2);
        host[n - 2] = '\0';
    } else {
        memcpy(host, ep->host, n + 1);
    }
    memset(out, 0, sizeof(*out));
    if (strchr(host, ':') != NULL)
        return uv_ip6_addr(host, ep->port, (struct sockaddr_in6 *)out) == 0;
    return uv_ip4_addr(host, ep->port, (struct sockaddr_in *)out) == 0;
}

static void relay_end(struct udp_relay *r, bool finish)
{
    if (r->ended)
        return;
    r->ended = true;
    sock_detach(r, 0);
    sock_detach(r, 1);
    if (finish)
        nectar_udp_flow_finish(r->flow);
}

static void udp_relay_start(void *svc, nectar_udp_flow_t *flow)
{
    struct udp_relay *r = svc;

    r->flow = flow;
    r->has_initial =
        endpoint_addr(&nectar_udp_flow_meta(flow)->remote, &r->initial);
    if (nectar_udp_flow_recv_start(flow, relay_on_app_datagram, r) != 0)
        relay_end(r, true);
}

static void udp_relay_cancel(void *svc, nectar_udp_flow_t *flow, int reason)
{
    (void)flow;
    (void)reason;
    relay_end(svc, false);
}

static void udp_relay_destroy(void *svc)
{
    struct udp_relay *r = svc;

    relay_end(r, false);
    svc_counters_close(r->counters);
    nectar_free(r);
}

const nectar_udp_service_t svc_udp_relay_service = {
    .start = udp_relay_start,
    .cancel = udp_relay_cancel,
    .destroy = udp_relay_destroy,
};

void *svc_udp_relay_new(struct svc_counters *counters)
{
    struct udp_relay *r = nectar_calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->counters = counters;
    svc_counters_open(counters);
    return r;
}
