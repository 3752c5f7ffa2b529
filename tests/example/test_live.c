/*
 * test_live.c - live settings under load: HTTP flows through the sim host
 * and the example while another thread flips the badge, replaces the
 * excluded domains and rotates the CA.  Every response must be whole and
 * either badged or not (the snapshot a flow took at its decision); run
 * under TSan (label tsan) this also checks the snapshot swap for races.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "harness/test.h"
#include "host/sim/sim.h"
#include "nectar/example.h"
#include "nectar/log.h"
#include "tcp_stream.h"

#define CLIENTS  4
#define REQUESTS 40

static const char page[] = "<html><body><p>live</p></body></html>";
static atomic_bool stop;
static int upstream_fd;

/* One request per connection: read the head, answer, close. */
static void *upstream(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(upstream_fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char buf[4096];
        size_t got = 0;
        while (got < sizeof(buf) - 1) {
            ssize_t n = recv(c, buf + got, sizeof(buf) - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
            buf[got] = '\0';
            if (strstr(buf, "\r\n\r\n") != NULL)
                break;
        }
        char resp[512];
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         strlen(page), page);
        ssize_t w = send(c, resp, (size_t)n, MSG_NOSIGNAL);
        (void)w;
        close(c);
    }
}

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    CHECK_EQ(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    CHECK_EQ(listen(fd, 128), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

static uint16_t sim_port;
static atomic_int badged, plain;

static void *client(void *arg)
{
    (void)arg;
    for (int i = 0; i < REQUESTS; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons(sim_port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        const char req[] = "GET / HTTP/1.1\r\nHost: live.test\r\n"
                           "Connection: close\r\n\r\n";
        CHECK_EQ(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL),
                 (ssize_t)sizeof(req) - 1);
        char buf[8192];
        size_t got = 0;
        ssize_t n;
        while (got < sizeof(buf) - 1 &&
               (n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0)
            got += (size_t)n;
        buf[got] = '\0';
        close(fd);
        CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0);
        CHECK(strstr(buf, "<p>live</p></body></html>") != NULL);
        if (strstr(buf, "nectar-proxy-badge") != NULL)
            atomic_fetch_add(&badged, 1);
        else
            atomic_fetch_add(&plain, 1);
    }
    return NULL;
}

static int responses(void)
{
    return atomic_load(&badged) + atomic_load(&plain);
}

/* Changes the settings every few responses, so flows see both states
 * whatever the speed of this machine. */
static void *controller(void *arg)
{
    (void)arg;
    nectar_error_t e;
    for (int i = 0; !atomic_load(&stop); i++) {
        int seen = responses();
        while (!atomic_load(&stop) && responses() < seen + 5)
            usleep(500);
        char json[128];
        int n = snprintf(json, sizeof(json),
                         "{\"html_badge_enabled\":%s,"
                         "\"exclude_domains\":[\"x%d.test\"]}",
                         i % 2 ? "true" : "false", i);
        CHECK_EQ(nectar_example_update_settings(json, (size_t)n, &e), 0);
        if (i % 8 == 7) {
            uint8_t *der, *prev;
            size_t dl, pl;
            CHECK_EQ(nectar_example_ca_rotate(&der, &dl, &prev, &pl, &e), 0);
            nectar_example_free(der);
            nectar_example_free(prev);
        }
        nectar_example_set_tls_keylog(i % 3 == 0);
    }
    return NULL;
}

static void live_swap_under_load(void)
{
    nectar_log_set_level(NECTAR_LOG_WARN);
    uint16_t up_port;
    upstream_fd = listen_any(&up_port);
    pthread_t up;
    pthread_create(&up, NULL, upstream, NULL);
    nectar_error_t err;
    const char cfg[] = "{\"peek_duration_s\": 1.0}";
    RamaTransparentProxyEngine *eng =
        nectar_engine_new(nectar_example_handler(), NULL, (const uint8_t *)cfg,
                          sizeof(cfg) - 1, &err);
    CHECK(eng != NULL);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%u", up_port);
    nectar_sim_options_t o = {
        .listen = "127.0.0.1:0", .target = target, .tcp = true, .engine = eng};
    nectar_sim_t *sim = NULL;
    CHECK_EQ(nectar_sim_start(&o, &sim, &err), 0);
    sim_port = nectar_sim_port(sim);
    pthread_t ctl, cl[CLIENTS];
    pthread_create(&ctl, NULL, controller, NULL);
    for (int i = 0; i < CLIENTS; i++)
        pthread_create(&cl[i], NULL, client, NULL);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(cl[i], NULL);
    atomic_store(&stop, true);
    pthread_join(ctl, NULL);
    nectar_sim_stop(sim);
    shutdown(upstream_fd, SHUT_RDWR);
    close(upstream_fd);
    pthread_join(up, NULL);
    CHECK_EQ(atomic_load(&badged) + atomic_load(&plain), CLIENTS * REQUESTS);
    /* Both settings were seen by some flow. */
    CHECK_GT(atomic_load(&badged), 0);
    CHECK_GT(atomic_load(&plain), 0);
}

static const nectar_test_t tests[] = {
    {"live_swap_under_load", live_swap_under_load},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
