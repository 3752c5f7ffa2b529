/*
 * swtpm_helper.h - a private software TPM for one test process.
 *
 * swtpm listens on 127.0.0.1 ports P and P+1 (the swtpm TCTI's
 * convention); start returns once both answer.  Skips (or fails under
 * CI=true) without swtpm.  A TPM still running when the test exits (a
 * failed CHECK) is stopped by an atexit handler.
 */
#ifndef NECTAR_TEST_SWTPM_HELPER_H
#define NECTAR_TEST_SWTPM_HELPER_H

#include <sys/types.h>

struct test_swtpm {
    pid_t pid;
    int port;
    char dir[64];  /* TPM state directory, removed by stop */
    char tcti[96]; /* "swtpm:host=127.0.0.1,port=P" */
};

/* Starts swtpm; exits the test (skip/fail) when it cannot. */
void test_swtpm_start(struct test_swtpm *t);

/* Stops it (SIGTERM, wait) and removes its state; safe to call twice. */
void test_swtpm_stop(struct test_swtpm *t);

#endif
