/*
 * test_control.c - the daemon's control service (src/host/linux/control.c)
 * over a real host core and engine, without nftables: a loopback TCP flow
 * handed to the core is listed (host core listing) with its destination,
 * app and growing bytes while other threads move its data; a UDP flow is
 * listed too; then the same through IPC routes (status, flows, message,
 * the application routes refused by the built-in handler).  The IPC part
 * needs root (the default requirement admits root or group nectar).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness/test.h"
#include "host/core/host.h"
#include "host/linux/linux_host.h"
#include "nectar/ipc.h"

/* ---- a slow server and a draining client -------------------------------- */

struct rig {
    int server_l;          /* the "destination" listener */
    struct sockaddr_in dst;
    int client;            /* the application's socket */
    int front_fd;          /* its accepted end, handed to the core */
    atomic_bool stop;
    pthread_t writer, reader;
    nectar_host_t *host;
};

static int listen_loopback(int type, struct sockaddr_in *a)
{
    int fd = socket(AF_INET, type, 0);
    CHECK(fd >= 0);
    *a = (struct sockaddr_in){.sin_family = AF_INET};
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(*a);
    CHECK_EQ(bind(fd, (struct sockaddr *)a, len), 0);
    CHECK_EQ(getsockname(fd, (struct sockaddr *)a, &len), 0);
    if (type == SOCK_STREAM)
        CHECK_EQ(listen(fd, 4), 0);
    return fd;
}

/* The destination: 16 KiB every 5 ms until told to stop. */
static void *writer_main(void *arg)
{
    struct rig *r = arg;
    int fd = accept(r->server_l, NULL, NULL);
    static const char chunk[16384];
    while (fd >= 0 && !atomic_load(&r->stop)) {
        if (send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL) < 0)
            break;
        usleep(5000);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void *reader_main(void *arg)
{
    struct rig *r = arg;
    char buf[65536];
    while (!atomic_load(&r->stop) && recv(r->client, buf, sizeof(buf), 0) > 0)
        ;
    return NULL;
}

static int no_udp_send(void *ctx, void *flow_ctx, const uint8_t *buf,
                       size_t len, const struct sockaddr *source)
{
    (void)ctx, (void)flow_ctx, (void)buf, (void)len, (void)source;
    return 0;
}

static void no_udp_closed(void *ctx, void *flow_ctx)
{
    (void)ctx, (void)flow_ctx;
}

static void rig_start(struct rig *r)
{
    memset(r, 0, sizeof(*r));
    r->server_l = listen_loopback(SOCK_STREAM, &r->dst);
    RamaTransparentProxyEngine *e = rama_transparent_proxy_engine_new();
    CHECK(e != NULL);
    nectar_host_hooks_t hooks = {.udp_send = no_udp_send,
                                 .udp_closed = no_udp_closed};
    nectar_host_options_t opts = {.loops = 2};
    nectar_error_t err = {0};
    CHECK_EQ(nectar__host_new(e, &hooks, &opts, &r->host, &err), 0);
    CHECK_EQ(pthread_create(&r->writer, NULL, writer_main, r), 0);

    /* The application's connection, accepted as a TPROXY front would. */
    struct sockaddr_in fa;
    int front_l = listen_loopback(SOCK_STREAM, &fa);
    r->client = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_EQ(connect(r->client, (struct sockaddr *)&fa, sizeof(fa)), 0);
    r->front_fd = accept4(front_l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    CHECK(r->front_fd >= 0);
    close(front_l);
    nectar_host_flow_meta_t m = {
        .remote = (struct sockaddr *)&r->dst,
        .bundle_identifier = "test.unit",
        .pid = -1,
    };
    nectar_host_decision_t d = 0;
    CHECK_EQ(nectar__host_tcp_accept(r->host, r->front_fd, &m, &d), 0);
    CHECK_EQ(d, NECTAR_HOST_INTERCEPT);
    CHECK_EQ(pthread_create(&r->reader, NULL, reader_main, r), 0);
}

static void rig_stop(struct rig *r)
{
    atomic_store(&r->stop, true);
    shutdown(r->client, SHUT_RDWR);
    nectar__host_free(r->host);
    pthread_join(r->writer, NULL);
    pthread_join(r->reader, NULL);
    close(r->client);
    close(r->server_l);
}

/* ---- listing straight from the core -------------------------------------- */

struct seen {
    char dst_want[64];
    int tcp, udp;
    uint64_t tcp_in, tcp_age, udp_out;
    char app[64];
    nectar_host_decision_t decision;
};

static void collect(void *ctx, const nectar_host_flow_info_t *f)
{
    struct seen *s = ctx;
    if (f->protocol == IPPROTO_UDP) {
        s->udp++;
        s->udp_out = f->bytes_c2s;
        return;
    }
    if (strcmp(f->remote, s->dst_want) != 0)
        return;
    s->tcp++;
    s->tcp_in = f->bytes_s2c;
    s->tcp_age = f->age_ms;
    s->decision = f->decision;
    snprintf(s->app, sizeof(s->app), "%s", f->app ? f->app : "(null)");
}

static void look(struct rig *r, struct seen *s)
{
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%u", ntohs(r->dst.sin_port));
    memset(s, 0, sizeof(*s));
    snprintf(s->dst_want, sizeof(s->dst_want), "%s", want);
    nectar__host_flows(r->host, collect, s);
}

static int tcp_bytes_over(void *arg)
{
    void **a = arg;
    struct seen s;
    look(a[0], &s);
    return s.tcp == 1 && s.tcp_in > *(uint64_t *)a[1];
}

static void host_listing(void)
{
    struct rig r;
    rig_start(&r);
    uint64_t mark = 0;
    void *args[2] = {&r, &mark};
    CHECK(nectar_test_poll(tcp_bytes_over, args, 5000));
    struct seen s;
    look(&r, &s);
    CHECK_EQ(s.tcp, 1);
    CHECK_STR_EQ(s.app, "test.unit");
    CHECK_EQ(s.decision, NECTAR_HOST_INTERCEPT);
    /* Bytes keep growing while the flow lives; so does its age. */
    mark = s.tcp_in;
    uint64_t age = s.tcp_age;
    CHECK(nectar_test_poll(tcp_bytes_over, args, 5000));
    look(&r, &s);
    CHECK_GT(s.tcp_in, mark);
    CHECK_GE(s.tcp_age, age);

    /* A UDP flow the engine intercepts is listed with its bytes. */
    struct sockaddr_in ua;
    int usrv = listen_loopback(SOCK_DGRAM, &ua);
    nectar_host_flow_meta_t m = {.remote = (struct sockaddr *)&ua, .pid = -1};
    nectar_host_udp_t *u = NULL;
    nectar_host_decision_t d = 0;
    static int flow_ctx;
    CHECK_EQ(nectar__host_udp_open(r.host, &m, &flow_ctx, &d, &u), 0);
    CHECK_EQ(d, NECTAR_HOST_INTERCEPT);
    nectar__host_udp_deliver(u, (const uint8_t *)"hello", 5, NULL);
    look(&r, &s);
    CHECK_EQ(s.udp, 1);
    nectar__host_udp_close(u);
    nectar__host_udp_release(u);
    close(usrv);

    /* An app message reaches the engine's handler; none after stop. */
    static const char ping[] = "{\"op\":\"ping\"}";
    RamaBytesOwned rep;
    CHECK_EQ(nectar__host_app_message(r.host, (const uint8_t *)ping,
                                      sizeof(ping) - 1, &rep),
             0);
    CHECK(rep.ptr != NULL && memmem(rep.ptr, rep.len, "pong", 4) != NULL);
    rama_owned_bytes_free(rep);
    nectar__host_stop(r.host, 0);
    CHECK_EQ(nectar__host_app_message(r.host, (const uint8_t *)ping,
                                      sizeof(ping) - 1, &rep),
             NECTAR_ESTATE);
    rig_stop(&r);
}

/* ---- the control service over IPC ---------------------------------------- */

static nectar_ipc_obj_t *call(nectar_ipc_conn_t *c, const char *sel,
                              nectar_ipc_obj_t *arg)
{
    nectar_ipc_obj_t *res = NULL;
    nectar_ipc_remote_t remote;
    nectar_error_t err = {0};
    int rc = nectar_ipc_call(c, sel, arg, 5000, &res, &remote, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("%s: %s", sel, err.message);
    nectar_ipc_release(arg);
    return res;
}

static uint64_t u64(const nectar_ipc_obj_t *d, const char *key)
{
    uint64_t v = 0;
    CHECK_EQ(nectar_ipc_get_uint64(nectar_ipc_field(d, key), key, &v, NULL),
             0);
    return v;
}

static const char *str(const nectar_ipc_obj_t *d, const char *key)
{
    const char *s = nectar_ipc_string_ptr(nectar_ipc_field(d, key), NULL);
    return s ? s : "(none)";
}

static void control_routes(void)
{
    NECTAR_REQUIRE_ROOT();
    struct rig r;
    rig_start(&r);
    uint64_t zero = 0;
    void *args[2] = {&r, &zero};
    CHECK(nectar_test_poll(tcp_bytes_over, args, 5000));

    char name[64];
    snprintf(name, sizeof(name), "org.nectar.test.control.%d", (int)getpid());
    nectar_linux_config_t cfg;
    nectar__linux_config_defaults(&cfg);
    cfg.control_service = name; /* borrowed: not freed below */
    nectar_linux_control_t *ctl = NULL;
    nectar_error_t err = {0};
    CHECK_EQ(nectar__linux_control_start(&cfg, r.host, &ctl, &err), 0);
    CHECK(ctl != NULL);
    /* The name is taken now: a second start names it in the error. */
    nectar_linux_control_t *again = NULL;
    CHECK(nectar__linux_control_start(&cfg, r.host, &again, &err) != 0);
    CHECK(strstr(err.message, name) != NULL);

    nectar_ipc_client_config_t cc = {.service_name = name};
    nectar_ipc_conn_t *c = NULL;
    CHECK_EQ(nectar_ipc_connect(&cc, &c, &err), 0);

    nectar_ipc_obj_t *st = call(c, "status:withReply:", NULL);
    CHECK_EQ(u64(st, "tcp_flows"), 1);
    CHECK_STR_EQ(str(st, "handler"), "builtin");
    nectar_ipc_release(st);

    nectar_ipc_obj_t *fl = call(c, "flows:withReply:", NULL);
    nectar_ipc_obj_t *list = nectar_ipc_field(fl, "flows");
    CHECK_EQ(nectar_ipc_count(list), 1);
    nectar_ipc_obj_t *f = nectar_ipc_array_get(list, 0);
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%u", ntohs(r.dst.sin_port));
    CHECK_STR_EQ(str(f, "destination"), want);
    CHECK_STR_EQ(str(f, "protocol"), "tcp");
    CHECK_STR_EQ(str(f, "app"), "test.unit");
    CHECK_GT(u64(f, "bytes_in"), 0);
    nectar_ipc_release(fl);

    nectar_ipc_obj_t *arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "message", nectar_ipc_string("{\"op\":\"ping\"}"),
                        NULL);
    nectar_ipc_obj_t *msg = call(c, "message:withReply:", arg);
    size_t len = 0;
    const void *p = nectar_ipc_data_ptr(nectar_ipc_field(msg, "reply"), &len);
    CHECK(p != NULL && memmem(p, len, "\"pong\"", 6) != NULL);
    nectar_ipc_release(msg);

    /* The built-in handler has no CA or settings: refused in-band. */
    nectar_ipc_obj_t *ca = call(c, "rotateRootCA:withReply:", NULL);
    CHECK(!nectar_ipc_bool_value(nectar_ipc_field(ca, "ok")));
    CHECK(strstr(str(ca, "error"), "not supported by the built-in") != NULL);
    nectar_ipc_release(ca);
    arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "html_badge_label", nectar_ipc_string("x"), NULL);
    nectar_ipc_obj_t *set = call(c, "updateSettings:withReply:", arg);
    CHECK(!nectar_ipc_bool_value(nectar_ipc_field(set, "ok")));
    CHECK(strstr(str(set, "error"), "not supported by the built-in") != NULL);
    nectar_ipc_release(set);

    nectar_ipc_conn_release(c);
    nectar__linux_control_stop(ctl);
    rig_stop(&r);
}

/* host.control false: nothing is served and *out stays NULL. */
static void control_off(void)
{
    nectar_linux_config_t cfg;
    nectar__linux_config_defaults(&cfg);
    cfg.control = false;
    nectar_linux_control_t *ctl = (nectar_linux_control_t *)&cfg;
    nectar_error_t err = {0};
    CHECK_EQ(nectar__linux_control_start(&cfg, NULL, &ctl, &err), 0);
    CHECK(ctl == NULL);
    nectar__linux_control_stop(NULL);
}

static const nectar_test_t tests[] = {
    {"host_listing", host_listing},
    {"control_routes", control_routes},
    {"control_off", control_off},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
