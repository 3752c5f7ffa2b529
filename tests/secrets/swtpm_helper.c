/* swtpm_helper.c - start and stop a private swtpm (see swtpm_helper.h). */
#include "secrets/swtpm_helper.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness/test.h"

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(fd, 8) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Two listening sockets on consecutive ports P, P+1, below the ephemeral
 * range (32768+): a busy machine's client sockets in TIME-WAIT sit on
 * ephemeral ports and would block the fixed P+1. */
static int bind_pair(int *server, int *ctrl)
{
    unsigned seed = (unsigned)getpid() ^ (unsigned)nectar_test_now_ms();
    for (int attempt = 0; attempt < 200; attempt++) {
        int port = 20000 + (int)(rand_r(&seed) % 12000);
        *server = listen_on(port);
        if (*server < 0)
            continue;
        *ctrl = listen_on(port + 1);
        if (*ctrl >= 0)
            return port;
        close(*server);
    }
    return -1;
}

/* Can we connect to 127.0.0.1:port? */
static int reachable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

struct ready_arg {
    struct test_swtpm *t;
    int exited;
};

static int swtpm_ready(void *arg)
{
    struct ready_arg *r = arg;
    if (waitpid(r->t->pid, NULL, WNOHANG) == r->t->pid) {
        r->exited = 1;
        return 1;
    }
    return reachable(r->t->port) && reachable(r->t->port + 1);
}

/* swtpm closes a listening socket handed over with fd= after its first
 * client, and the TCTI reconnects per command, so swtpm must bind the
 * ports itself: find a free pair, release it, start swtpm on it, and
 * retry on the rare lost race. */
static int try_start(struct test_swtpm *t)
{
    int server = -1, ctrl = -1;
    t->port = bind_pair(&server, &ctrl);
    CHECK_GT(t->port, 0);
    close(server);
    close(ctrl);
    t->pid = fork();
    CHECK_GE(t->pid, 0);
    if (t->pid == 0) {
        char state[128], srv[64], ctl[64];
        snprintf(state, sizeof(state), "dir=%s", t->dir);
        snprintf(srv, sizeof(srv), "type=tcp,port=%d", t->port);
        snprintf(ctl, sizeof(ctl), "type=tcp,port=%d", t->port + 1);
        execlp("swtpm", "swtpm", "socket", "--tpmstate", state, "--server", srv,
               "--ctrl", ctl, "--tpm2", "--flags",
               "not-need-init,startup-clear", "--log", "file=/dev/null",
               (char *)NULL);
        _exit(127);
    }
    struct ready_arg r = {t, 0};
    if (!nectar_test_poll(swtpm_ready, &r, 5000) || r.exited) {
        if (!r.exited) {
            kill(t->pid, SIGKILL);
            waitpid(t->pid, NULL, 0);
        }
        t->pid = 0;
        return -1;
    }
    return 0;
}

/* A test that fails exits through CHECK; this reaps the TPMs it left. */
static struct test_swtpm *running[4];

static void stop_all(void)
{
    for (int i = 0; i < 4; i++) {
        if (running[i] != NULL)
            test_swtpm_stop(running[i]);
    }
}

void test_swtpm_start(struct test_swtpm *t)
{
    memset(t, 0, sizeof(*t));
    NECTAR_REQUIRE_TOOL("swtpm");
    snprintf(t->dir, sizeof(t->dir), "/tmp/nectar-swtpm-XXXXXX");
    CHECK(mkdtemp(t->dir) != NULL);
    int rc = -1;
    for (int attempt = 0; attempt < 5 && rc != 0; attempt++)
        rc = try_start(t);
    CHECK_EQ(rc, 0);
    snprintf(t->tcti, sizeof(t->tcti), "swtpm:host=127.0.0.1,port=%d", t->port);
    static int registered;
    if (!registered) {
        atexit(stop_all);
        registered = 1;
    }
    for (int i = 0; i < 4; i++) {
        if (running[i] == NULL) {
            running[i] = t;
            break;
        }
    }
}

void test_swtpm_stop(struct test_swtpm *t)
{
    for (int i = 0; i < 4; i++) {
        if (running[i] == t)
            running[i] = NULL;
    }
    if (t->pid > 0) {
        kill(t->pid, SIGTERM);
        waitpid(t->pid, NULL, 0);
        t->pid = 0;
    }
    if (t->dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
        CHECK_EQ(system(cmd), 0);
        t->dir[0] = '\0';
    }
}
