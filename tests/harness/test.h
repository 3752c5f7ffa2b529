/*
 * test.h - nectar's minimal test harness.
 *
 * A test binary lists its tests in one table and calls nectar_test_main;
 * CTest runs each test in its own process (`binary test_name`), with a
 * timeout, via nectar_add_tests() in cmake/NectarTesting.cmake.
 *
 * Checks print both operands and the location, then fail the test (the
 * process exits 1).  A test that needs root or a tool calls
 * NECTAR_REQUIRE_ROOT()/NECTAR_REQUIRE_TOOL(): outside CI the test is
 * skipped (exit 77); under CI=true it fails loudly, never silently passes.
 */
#ifndef NECTAR_TEST_H
#define NECTAR_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct nectar_test {
    const char *name;
    void (*fn)(void);
} nectar_test_t;

/* Runs argv[1] (or every test when absent); returns the exit status. */
int nectar_test_main(int argc, char **argv, const nectar_test_t *tests);

/* Exit 77 (skip) or, when CI=true, print why and exit 1. */
void nectar_test_skip_or_fail(const char *why);

/* Milliseconds from a monotonic clock. */
uint64_t nectar_test_now_ms(void);

/* Poll cond_fn(arg) every 2 ms until it returns nonzero or timeout_ms
 * passes; returns the last value.  Use this instead of fixed sleeps. */
int nectar_test_poll(int (*cond_fn)(void *), void *arg, int timeout_ms);

#define NECTAR_FAIL_AT(...)                                                  \
    do {                                                                     \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                      \
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, "\n");                                               \
        exit(1);                                                             \
    } while (0)

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond))                                                         \
            NECTAR_FAIL_AT("CHECK(%s) failed", #cond);                       \
    } while (0)

#define CHECK_INT_OP(a, op, b)                                               \
    do {                                                                     \
        long long va_ = (long long)(a), vb_ = (long long)(b);                \
        if (!(va_ op vb_))                                                   \
            NECTAR_FAIL_AT("CHECK(%s %s %s) failed: %lld vs %lld", #a, #op,  \
                           #b, va_, vb_);                                    \
    } while (0)

#define CHECK_EQ(a, b) CHECK_INT_OP(a, ==, b)
#define CHECK_NE(a, b) CHECK_INT_OP(a, !=, b)
#define CHECK_LT(a, b) CHECK_INT_OP(a, <, b)
#define CHECK_LE(a, b) CHECK_INT_OP(a, <=, b)
#define CHECK_GT(a, b) CHECK_INT_OP(a, >, b)
#define CHECK_GE(a, b) CHECK_INT_OP(a, >=, b)

#define CHECK_STR_EQ(a, b)                                                   \
    do {                                                                     \
        const char *sa_ = (a), *sb_ = (b);                                   \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0)             \
            NECTAR_FAIL_AT("CHECK_STR_EQ(%s, %s) failed: \"%s\" vs \"%s\"",  \
                           #a, #b, sa_ ? sa_ : "(null)",                     \
                           sb_ ? sb_ : "(null)");                            \
    } while (0)

#define CHECK_MEM_EQ(a, b, n)                                                \
    do {                                                                     \
        if (memcmp((a), (b), (n)) != 0)                                      \
            NECTAR_FAIL_AT("CHECK_MEM_EQ(%s, %s, %s) failed", #a, #b, #n);   \
    } while (0)

#define NECTAR_REQUIRE_ROOT()                                                \
    do {                                                                     \
        if (geteuid() != 0)                                                  \
            nectar_test_skip_or_fail("this test needs root");                \
    } while (0)

/* Skips/fails unless `tool` is found on PATH. */
void nectar_test_require_tool(const char *tool);
#define NECTAR_REQUIRE_TOOL(tool) nectar_test_require_tool(tool)

#endif
