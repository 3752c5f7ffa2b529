/* test.c - runner for the nectar test harness (see test.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test.h"

#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

int nectar_test_main(int argc, char **argv, const nectar_test_t *tests)
{
    /* A peer closing a socket must give EPIPE, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        for (const nectar_test_t *t = tests; t->name != NULL; t++) {
            fprintf(stderr, "== %s\n", t->name);
            t->fn();
        }
        return 0;
    }
    for (const nectar_test_t *t = tests; t->name != NULL; t++) {
        if (strcmp(t->name, argv[1]) == 0) {
            t->fn();
            return 0;
        }
    }
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
}

void nectar_test_skip_or_fail(const char *why)
{
    const char *ci = getenv("CI");
    if (ci != NULL && strcmp(ci, "true") == 0) {
        fprintf(stderr, "FAIL (CI=true, cannot skip): %s\n", why);
        exit(1);
    }
    fprintf(stderr, "SKIP: %s\n", why);
    exit(77);
}

void nectar_test_require_tool(const char *tool)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
    if (system(cmd) != 0) {
        char why[300];
        snprintf(why, sizeof(why), "tool not found: %s", tool);
        nectar_test_skip_or_fail(why);
    }
}

uint64_t nectar_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int nectar_test_poll(int (*cond_fn)(void *), void *arg, int timeout_ms)
{
    uint64_t deadline = nectar_test_now_ms() + (uint64_t)timeout_ms;
    int v = cond_fn(arg);
    while (!v && nectar_test_now_ms() < deadline) {
        usleep(2000);
        v = cond_fn(arg);
    }
    return v;
}
