/*
 * test_real.c - the HTTP relays between real programs over loopback TCP,
 * without the engine: curl (HTTP/1.1 and HTTP/2 prior knowledge) and
 * h2load as clients, python3's http.server (HTTP/1.0, close-delimited) and
 * nghttpd (h2c) as servers.  A tiny proxy (one libuv loop on its own
 * thread) accepts each client connection, connects to the server and runs
 * svc_http1_start or svc_h2_start over the two sockets.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "example/tcp_stream.h"
#include "harness/test.h"
#include "http_fixture.h"
#include "services/http/http.h"

static uv_loop_t loop;
static uv_tcp_t listener;
static uv_async_t stopper;
static pthread_t proxy_thread;
static int proxy_port;
static int backend_port;
static bool use_h2;
static svc_http_opts_t opts;
static char dir[64];
static pid_t backend;

static void relay_done(int status, void *data)
{
    (void)status;
    (void)data;
}

static void on_backend(svc_stream_t *s, int status, void *data)
{
    svc_stream_t *c = data;
    if (status != 0) {
        svc_close(c);
        return;
    }
    int rc = use_h2 ? svc_h2_start(c, s, &opts, relay_done, NULL, NULL)
                    : svc_http1_start(c, s, &opts, relay_done, NULL, NULL);
    if (rc != 0) {
        svc_close(c);
        svc_close(s);
    }
}

static void on_client(svc_stream_t *c, void *data)
{
    (void)data;
    test_connect(&loop, backend_port, on_backend, c);
}

static void close_all(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_stop(uv_async_t *a)
{
    (void)a;
    uv_walk(&loop, close_all, NULL);
}

static void *proxy_main(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK_EQ(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static int port_open(void *arg)
{
    int port = *(int *)arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static void write_file(const char *name, const void *data, size_t len)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK_EQ(fwrite(data, 1, len, f), len);
    fclose(f);
}

static const char page[] = "<!DOCTYPE html>\n<html><head><title>real</title>"
                           "</head>\n<body class=\"x\">\n<p>hello</p>\n"
                           "</body></html>\n";

/* A failed check exits at once: do not leave the server running. */
static void kill_backend(void)
{
    if (backend > 0) {
        kill(backend, SIGTERM);
        waitpid(backend, NULL, 0);
        backend = 0;
    }
    if (dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
        dir[0] = '\0';
    }
}

/* Docroot with a page and a 1 MiB binary; backend started; proxy up. */
static void setup(bool h2, char *const argv_template[])
{
    snprintf(dir, sizeof(dir), "/tmp/nectar-http-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    write_file("index.html", page, strlen(page));
    uint8_t *bin = malloc(1 << 20);
    for (size_t i = 0; i < (1 << 20); i++)
        bin[i] = (uint8_t)(i * 7 + (i >> 11));
    write_file("data.bin", bin, 1 << 20);
    free(bin);

    backend_port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", backend_port);
    char *argv[16];
    int i = 0;
    for (; argv_template[i] != NULL; i++) {
        if (strcmp(argv_template[i], "PORT") == 0)
            argv[i] = port;
        else if (strcmp(argv_template[i], "DIR") == 0)
            argv[i] = dir;
        else
            argv[i] = argv_template[i];
    }
    argv[i] = NULL;
    atexit(kill_backend);
    backend = fork();
    if (backend == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    if (!nectar_test_poll(port_open, &backend_port, 10000))
        NECTAR_FAIL_AT("backend %s did not start", argv[0]);

    use_h2 = h2;
    svc_http_opts_defaults(&opts);
    opts.observed_value = "real";
    CHECK_EQ(uv_loop_init(&loop), 0);
    proxy_port = test_listen(&loop, &listener, on_client, NULL);
    uv_async_init(&loop, &stopper, on_stop);
    CHECK_EQ(pthread_create(&proxy_thread, NULL, proxy_main, NULL), 0);
}

static void teardown(void)
{
    uv_async_send(&stopper);
    pthread_join(proxy_thread, NULL);
    uv_loop_close(&loop);
    kill_backend();
}

/* Run a shell command; its stdout as a malloc'd string. */
static char *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *run(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            out = realloc(out, cap);
        }
    }
    out[len] = 0;
    pclose(p);
    return out;
}

static void check_page(const char *out)
{
    if (count_of(out, strlen(out), "id=\"nectar-proxy-badge\"") != 1)
        NECTAR_FAIL_AT("badge not exactly once in:\n%s", out);
    CHECK(strstr(out, "<body class=\"x\"><div id=\"nectar-proxy-badge\"") !=
          NULL);
    CHECK(strstr(out, "proxied by nectar</div>\n<p>hello</p>") != NULL);
}

static void curl_h1(void)
{
    NECTAR_REQUIRE_TOOL("curl");
    NECTAR_REQUIRE_TOOL("python3");
    char *const server[] = {"python3", "-m",        "http.server",
                            "--bind",  "127.0.0.1", "--directory",
                            "DIR",     "PORT",      NULL};
    setup(false, server);
    /* Page: headers (observed once, no length) and the badge once. */
    char *out = run("curl -s -i http://127.0.0.1:%d/index.html", proxy_port);
    CHECK(strstr(out, "HTTP/1.0 200 OK") != NULL);
    CHECK_EQ(count_of(out, strlen(out), "x-nectar-observed: real"), 1);
    CHECK(strstr(out, "Content-Length") == NULL);
    CHECK(strstr(out, "Last-Modified") == NULL);
    check_page(out);
    free(out);
    /* HEAD: untouched. */
    out = run("curl -s -I http://127.0.0.1:%d/index.html", proxy_port);
    CHECK(strstr(out, "Content-Length: ") != NULL);
    CHECK(strstr(out, "nectar-proxy-badge") == NULL);
    free(out);
    /* Binary, several requests on one curl run: byte-exact. */
    out = run("cat %s/data.bin %s/data.bin > %s/twice.bin; "
              "curl -s http://127.0.0.1:%d/data.bin "
              "http://127.0.0.1:%d/data.bin | cmp - %s/twice.bin && "
              "echo same",
              dir, dir, dir, proxy_port, proxy_port, dir);
    CHECK(strstr(out, "same") != NULL);
    free(out);
    /* The hijack host, with curl's own Host header. */
    out = run("curl -s -H 'Host: nectar.localhost' "
              "http://127.0.0.1:%d/ping",
              proxy_port);
    CHECK(strstr(out, "\"ok\":true") != NULL);
    free(out);
    teardown();
}

static void curl_h2(void)
{
    NECTAR_REQUIRE_TOOL("curl");
    NECTAR_REQUIRE_TOOL("nghttpd");
    NECTAR_REQUIRE_TOOL("h2load");
    char *const server[] = {"nghttpd", "--no-tls", "-a",   "127.0.0.1",
                            "-d",      "DIR",      "PORT", NULL};
    setup(true, server);
    char *out = run("curl -s -i --http2-prior-knowledge "
                    "http://127.0.0.1:%d/index.html",
                    proxy_port);
    CHECK(strstr(out, "HTTP/2 200") != NULL);
    CHECK_EQ(count_of(out, strlen(out), "x-nectar-observed: real"), 1);
    CHECK(strstr(out, "content-length") == NULL);
    check_page(out);
    free(out);
    out = run("curl -s --http2-prior-knowledge http://127.0.0.1:%d/data.bin "
              "| cmp - %s/data.bin && echo same",
              proxy_port, dir);
    CHECK(strstr(out, "same") != NULL);
    free(out);
    /* 64 requests, 16 concurrent streams on one connection. */
    out = run("h2load -n 64 -c 1 -m 16 http://127.0.0.1:%d/data.bin 2>&1",
              proxy_port);
    if (strstr(out, "64 succeeded, 0 failed") == NULL)
        NECTAR_FAIL_AT("h2load:\n%s", out);
    free(out);
    teardown();
}

static const char ws_server[] =
    "import asyncio, sys, websockets\n"
    "async def echo(ws, path=None):\n"
    "    async for m in ws:\n"
    "        await ws.send(m)\n"
    "async def main():\n"
    "    async with websockets.serve(echo, '127.0.0.1', int(sys.argv[1])):\n"
    "        await asyncio.Future()\n"
    "asyncio.run(main())\n";

static const char ws_client[] =
    "import asyncio, sys, websockets\n"
    "async def main():\n"
    "    url = 'ws://127.0.0.1:%s/chat' % sys.argv[1]\n"
    "    async with websockets.connect(url, compression=None) as ws:\n"
    "        await ws.send('SECRET text')\n"
    "        assert await ws.recv() == 'SECRET text'\n"
    "        await ws.send(b'SECRET' * 100)\n"
    "        assert await ws.recv() == b'SECRET' * 100\n"
    "        await (await ws.ping(b'SECRETping'))\n"
    "    print('ws ok')\n"
    "asyncio.run(main())\n";

/* A real WebSocket client and server (python3-websockets): messages of
 * each kind both ways, the frames logged without payload. */
static void websocket_python(void)
{
    NECTAR_REQUIRE_TOOL("/usr/bin/python3");
    char *out = run("/usr/bin/python3 -c 'import websockets' 2>&1 && echo ok");
    if (strstr(out, "ok") == NULL)
        nectar_test_skip_or_fail("python3-websockets is missing");
    free(out);
    char *const server[] = {"/usr/bin/python3", "-c", (char *)ws_server, "PORT",
                            NULL};
    logcap_start();
    setup(false, server);
    char script[128];
    snprintf(script, sizeof(script), "%s/client.py", dir);
    FILE *f = fopen(script, "w");
    CHECK(f != NULL);
    fputs(ws_client, f);
    fclose(f);
    out = run("timeout 20 /usr/bin/python3 %s %d 2>&1", script, proxy_port);
    if (strstr(out, "ws ok") == NULL)
        NECTAR_FAIL_AT("websocket client:\n%s", out);
    free(out);
    teardown(); /* joins the proxy thread: the log is complete */
    const char *log = logcap_text();
    static const char *const want[] = {
        "websocket tunnel started",
        "ws frame dir=client->server kind=text size=11 fin=1 masked=1",
        "ws frame dir=server->client kind=text size=11 fin=1 masked=0",
        "ws frame dir=client->server kind=binary size=600 fin=1 masked=1",
        "ws frame dir=server->client kind=binary size=600",
        "ws frame dir=client->server kind=ping size=10",
        "ws frame dir=server->client kind=pong size=10",
        "ws frame dir=client->server kind=close",
        "ws frame dir=server->client kind=close",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (strstr(log, want[i]) == NULL)
            NECTAR_FAIL_AT("missing \"%s\" in log:\n%s", want[i], log);
    }
    CHECK(strstr(log, "SECRET") == NULL);
    logcap_stop();
}

static const nectar_test_t tests[] = {
    {"curl_h1", curl_h1},
    {"curl_h2", curl_h2},
    {"websocket_python", websocket_python},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
