/*
 * consumer.c - a host written only against the rama Apple NE ABI as the
 * spec describes it: its own declarations, no nectar header.  Built by
 * run.sh against an installed nectar (`pkg-config --libs nectar`).
 *
 * It proves the "done when": create an engine from JSON, get
 * INTERCEPT/PASSTHROUGH/BLOCKED as configured, relay TCP bytes both ways
 * with PAUSED/drain honoured, relay UDP to a real peer, get a pong, and
 * tear down with no callback after cancel.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- declarations written from the spec (ne-engine.md §1) ---- */
typedef struct Engine Engine;
typedef struct TcpSession TcpSession;
typedef struct UdpSession UdpSession;
typedef struct { const uint8_t *ptr; size_t len; } View;
typedef struct { uint8_t *ptr; size_t len; size_t cap; } Owned;
typedef struct { const char *host; size_t host_len; uint16_t port; } Endpoint;
typedef struct {
    uint32_t protocol;
    Endpoint remote, local;
    const char *sign; size_t sign_len;
    const char *bundle; size_t bundle_len;
    const uint8_t *token; size_t token_len;
    int32_t pid; bool pid_set;
    const char *hostname; size_t hostname_len;
    const char *ifname; size_t ifname_len;
    uint32_t ifindex; bool ifindex_set;
    uint8_t iftype; bool iftype_set;
    bool bound; bool bound_set;
} Meta;
typedef struct { int action; void *session; } Result;
typedef struct {
    bool present; const uint8_t *host; size_t host_len; uint16_t port;
    uint32_t scope_id;
} Peer;
typedef struct {
    void *ctx;
    uint8_t (*on_server_bytes)(void *, View);
    void (*on_server_closed)(void *);
    void (*on_client_read_demand)(void *);
} TcpCbs;
typedef struct {
    void *ctx;
    uint8_t (*on_write_to_egress)(void *, View);
    void (*on_close_egress)(void *);
    void (*on_egress_read_demand)(void *);
} EgressCbs;
typedef struct {
    void *ctx;
    void (*on_server_datagram)(void *, View, Peer);
    void (*on_client_read_demand)(void *);
    void (*on_server_closed)(void *);
} UdpCbs;

_Static_assert(sizeof(Meta) == 160, "meta layout");
_Static_assert(sizeof(Peer) == 32, "peer layout");

Engine *rama_transparent_proxy_engine_new_with_config(View cfg);
void rama_transparent_proxy_engine_stop(Engine *e, int32_t reason);
Result rama_transparent_proxy_engine_new_tcp_session(Engine *e,
                                                     const Meta *m, TcpCbs cb);
void rama_transparent_proxy_tcp_session_activate(TcpSession *s, EgressCbs cb);
uint8_t rama_transparent_proxy_tcp_session_on_client_bytes(TcpSession *s,
                                                           View b);
uint8_t rama_transparent_proxy_tcp_session_on_egress_bytes(TcpSession *s,
                                                           View b);
void rama_transparent_proxy_tcp_session_on_client_eof(TcpSession *s);
void rama_transparent_proxy_tcp_session_on_egress_eof(TcpSession *s);
void rama_transparent_proxy_tcp_session_signal_egress_drain(TcpSession *s);
void rama_transparent_proxy_tcp_session_cancel(TcpSession *s);
void rama_transparent_proxy_tcp_session_free(TcpSession *s);
Result rama_transparent_proxy_engine_new_udp_session(Engine *e,
                                                     const Meta *m, UdpCbs cb);
void rama_transparent_proxy_udp_session_activate(UdpSession *s);
void rama_transparent_proxy_udp_session_on_client_datagram(UdpSession *s,
                                                           View b, Peer p);
void rama_transparent_proxy_udp_session_on_client_close(UdpSession *s);
void rama_transparent_proxy_udp_session_free(UdpSession *s);
Owned rama_transparent_proxy_engine_handle_app_message(Engine *e, View m);
void rama_owned_bytes_free(Owned b);

enum { INTERCEPT = 1, PASSTHROUGH = 2, BLOCKED = 3 };
enum { ACCEPTED = 0, PAUSED = 1, CLOSED = 2 };

#define FAIL(...)                                                           \
    do {                                                                    \
        fprintf(stderr, "consumer:%d: ", __LINE__);                         \
        fprintf(stderr, __VA_ARGS__);                                       \
        fprintf(stderr, "\n");                                              \
        exit(1);                                                            \
    } while (0)

/* ---- a tiny host: state shared with engine threads under one lock ---- */
struct host {
    pthread_mutex_t mu;
    char to_app[64], to_remote[64], udp_reply[64];
    size_t to_app_len, to_remote_len, udp_reply_len;
    int egress_pauses_left; /* return PAUSED this many times first */
    int paused_seen, server_closed, egress_closed, udp_demand;
    uint16_t udp_reply_port;
    int cancelled; /* set after cancel returned: any callback now fails */
};

static void touch(struct host *h)
{
    if (h->cancelled)
        FAIL("callback after cancel returned");
}

static uint8_t cb_server_bytes(void *ctx, View b)
{
    struct host *h = ctx;
    pthread_mutex_lock(&h->mu);
    touch(h);
    memcpy(h->to_app + h->to_app_len, b.ptr, b.len);
    h->to_app_len += b.len;
    pthread_mutex_unlock(&h->mu);
    return ACCEPTED;
}

static uint8_t cb_egress_write(void *ctx, View b)
{
    struct host *h = ctx;
    pthread_mutex_lock(&h->mu);
    touch(h);
    if (h->egress_pauses_left > 0) {
        h->egress_pauses_left--;
        h->paused_seen++;
        pthread_mutex_unlock(&h->mu);
        return PAUSED; /* bytes not taken: the engine must re-offer them */
    }
    memcpy(h->to_remote + h->to_remote_len, b.ptr, b.len);
    h->to_remote_len += b.len;
    pthread_mutex_unlock(&h->mu);
    return ACCEPTED;
}

static void cb_server_closed(void *ctx)
{
    struct host *h = ctx;
    pthread_mutex_lock(&h->mu);
    touch(h);
    h->server_closed++;
    pthread_mutex_unlock(&h->mu);
}

static void cb_egress_closed(void *ctx)
{
    struct host *h = ctx;
    pthread_mutex_lock(&h->mu);
    touch(h);
    h->egress_closed++;
    pthread_mutex_unlock(&h->mu);
}

static void cb_noop(void *ctx)
{
    struct host *h = ctx;
    pthread_mutex_lock(&h->mu);
    touch(h);
    pthread_mutex_unlock(&h->mu);
}

static void cb_udp_demand(void *ctx)
{
    struct host *h = ctx;
    pthread_mutex_lock(&h->mu);
    touch(h);
    h->udp_demand++;
    pthread_mutex_unlock(&h->mu);
}

static void cb_udp_datagram(void *ctx, View b, Peer p)
{
    struct host *h = ctx;
    pthread_mutex_lock(&h->mu);
    touch(h);
    memcpy(h->udp_reply, b.ptr, b.len < 64 ? b.len : 64);
    h->udp_reply_len = b.len;
    h->udp_reply_port = p.present ? p.port : 0;
    pthread_mutex_unlock(&h->mu);
}

/* Wait (max 5 s) until *field reaches want, reading under the lock. */
static void wait_for(struct host *h, const size_t *len, size_t want,
                     const char *what)
{
    for (int i = 0; i < 2500; i++) {
        pthread_mutex_lock(&h->mu);
        size_t v = *len;
        pthread_mutex_unlock(&h->mu);
        if (v >= want)
            return;
        usleep(2000);
    }
    FAIL("timed out waiting for %s", what);
}

static void wait_int(struct host *h, const int *v, int want, const char *what)
{
    for (int i = 0; i < 2500; i++) {
        pthread_mutex_lock(&h->mu);
        int cur = *v;
        pthread_mutex_unlock(&h->mu);
        if (cur >= want)
            return;
        usleep(2000);
    }
    FAIL("timed out waiting for %s", what);
}

static Meta meta_for(uint32_t proto, const char *host, uint16_t port)
{
    Meta m;
    memset(&m, 0, sizeof(m));
    m.protocol = proto;
    m.remote.host = host;
    m.remote.host_len = strlen(host);
    m.remote.port = port;
    m.sign = "com.example.consumer";
    m.sign_len = strlen(m.sign);
    return m;
}

static void check_decisions(Engine *e, struct host *h)
{
    TcpCbs cbs = {h, cb_server_bytes, cb_server_closed, cb_noop};
    Meta m = meta_for(1, "192.0.2.1", 9);
    Result r = rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
    if (r.action != BLOCKED || r.session != NULL)
        FAIL("port 9: want BLOCKED, got %d", r.action);
    m = meta_for(1, "192.0.2.1", 7);
    r = rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
    if (r.action != PASSTHROUGH || r.session != NULL)
        FAIL("port 7: want PASSTHROUGH, got %d", r.action);
}

static void check_tcp_relay(Engine *e, struct host *h)
{
    TcpCbs cbs = {h, cb_server_bytes, cb_server_closed, cb_noop};
    Meta m = meta_for(1, "192.0.2.1", 80);
    Result r = rama_transparent_proxy_engine_new_tcp_session(e, &m, cbs);
    if (r.action != INTERCEPT || r.session == NULL)
        FAIL("port 80: want INTERCEPT, got %d", r.action);
    TcpSession *s = r.session;
    EgressCbs ecb = {h, cb_egress_write, cb_egress_closed, cb_noop};
    h->egress_pauses_left = 2;
    rama_transparent_proxy_tcp_session_activate(s, ecb);

    View req = {(const uint8_t *)"hello", 5};
    if (rama_transparent_proxy_tcp_session_on_client_bytes(s, req) != ACCEPTED)
        FAIL("client bytes not accepted");
    /* The relay's write to the remote is refused twice (PAUSED); each
     * drain signal must make the engine re-offer the same bytes. */
    for (int i = 1; i <= 2; i++) {
        wait_int(h, &h->paused_seen, i, "PAUSED write to egress");
        rama_transparent_proxy_tcp_session_signal_egress_drain(s);
    }
    wait_for(h, &h->to_remote_len, 5, "bytes to remote");
    View resp = {(const uint8_t *)"world!", 6};
    if (rama_transparent_proxy_tcp_session_on_egress_bytes(s, resp) != ACCEPTED)
        FAIL("egress bytes not accepted");
    wait_for(h, &h->to_app_len, 6, "bytes to app");
    if (h->to_remote_len != 5 || memcmp(h->to_remote, "hello", 5) != 0)
        FAIL("remote got %zu bytes, want exactly hello", h->to_remote_len);
    if (memcmp(h->to_app, "world!", 6) != 0)
        FAIL("app got wrong bytes");

    /* Half-close each way: client EOF => FIN to the remote, and back. */
    rama_transparent_proxy_tcp_session_on_client_eof(s);
    wait_int(h, &h->egress_closed, 1, "on_close_egress");
    rama_transparent_proxy_tcp_session_on_egress_eof(s);
    wait_int(h, &h->server_closed, 1, "on_server_closed");

    rama_transparent_proxy_tcp_session_cancel(s);
    pthread_mutex_lock(&h->mu);
    h->cancelled = 1;
    pthread_mutex_unlock(&h->mu);
    if (rama_transparent_proxy_tcp_session_on_client_bytes(s, req) != CLOSED)
        FAIL("bytes after cancel must be CLOSED");
    rama_transparent_proxy_tcp_session_free(s);
    usleep(100000); /* any late callback would now FAIL */
    h->cancelled = 0;
}

static void check_udp(Engine *e, struct host *h)
{
    int echo = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (bind(echo, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(echo, (struct sockaddr *)&a, &alen) != 0)
        FAIL("udp echo socket");
    uint16_t port = ntohs(a.sin_port);

    UdpCbs cbs = {h, cb_udp_datagram, cb_udp_demand, cb_noop};
    Meta m = meta_for(2, "127.0.0.1", port);
    Result r = rama_transparent_proxy_engine_new_udp_session(e, &m, cbs);
    if (r.action != INTERCEPT || r.session == NULL)
        FAIL("udp: want INTERCEPT, got %d", r.action);
    UdpSession *s = r.session;
    rama_transparent_proxy_udp_session_activate(s);
    Peer p = {true, (const uint8_t *)"127.0.0.1", 9, port, 0};
    View d = {(const uint8_t *)"ping", 4};
    rama_transparent_proxy_udp_session_on_client_datagram(s, d, p);

    char buf[64];
    struct sockaddr_in from;
    socklen_t flen = sizeof(from);
    struct timeval tv = {5, 0};
    setsockopt(echo, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t n = recvfrom(echo, buf, sizeof(buf), 0, (struct sockaddr *)&from,
                         &flen);
    if (n != 4 || memcmp(buf, "ping", 4) != 0)
        FAIL("udp peer did not receive the datagram");
    sendto(echo, "pong", 4, 0, (struct sockaddr *)&from, flen);
    wait_for(h, &h->udp_reply_len, 4, "udp reply");
    if (memcmp(h->udp_reply, "pong", 4) != 0 || h->udp_reply_port != port)
        FAIL("udp reply wrong (port %u, want %u)", h->udp_reply_port, port);
    rama_transparent_proxy_udp_session_on_client_close(s);
    pthread_mutex_lock(&h->mu);
    h->cancelled = 1;
    pthread_mutex_unlock(&h->mu);
    rama_transparent_proxy_udp_session_free(s);
    usleep(100000);
    h->cancelled = 0;
    close(echo);
}

static void check_pong(Engine *e)
{
    const char *msg = "{\"op\":\"ping\",\"source\":\"consumer\"}";
    View v = {(const uint8_t *)msg, strlen(msg)};
    Owned o = rama_transparent_proxy_engine_handle_app_message(e, v);
    if (o.ptr == NULL || o.len == 0)
        FAIL("no reply to ping");
    if (memmem(o.ptr, o.len, "\"pong\"", 6) == NULL)
        FAIL("reply has no pong: %.*s", (int)o.len, (const char *)o.ptr);
    rama_owned_bytes_free(o);
}

int main(void)
{
    const char *cfg =
        "{\"default_action\":\"intercept\",\"actions\":["
        "{\"match\":{\"remote_port\":9},\"action\":\"block\"},"
        "{\"match\":{\"remote_port\":7},\"action\":\"passthrough\"}]}";
    View v = {(const uint8_t *)cfg, strlen(cfg)};
    Engine *e = rama_transparent_proxy_engine_new_with_config(v);
    if (e == NULL)
        FAIL("engine_new_with_config returned NULL");
    struct host h;
    memset(&h, 0, sizeof(h));
    pthread_mutex_init(&h.mu, NULL);
    check_decisions(e, &h);
    check_tcp_relay(e, &h);
    check_udp(e, &h);
    check_pong(e);
    rama_transparent_proxy_engine_stop(e, 0);
    const char *bad = "{\"default_action\":42}";
    View bv = {(const uint8_t *)bad, strlen(bad)};
    if (rama_transparent_proxy_engine_new_with_config(bv) != NULL)
        FAIL("malformed config must give NULL");
    printf("consumer: all ABI checks passed\n");
    return 0;
}
