/* test_common.c - unit tests for src/common: errors, allocator, log. */
#include <stdarg.h>

#include "common/alloc.h"
#include "harness/test.h"
#include "nectar/error.h"
#include "nectar/log.h"

static void test_error_table(void)
{
    CHECK_STR_EQ(nectar_err_name(NECTAR_EINVAL), "NECTAR_EINVAL");
    CHECK_STR_EQ(nectar_err_name(NECTAR_EAUTH), "NECTAR_EAUTH");
    CHECK_STR_EQ(nectar_err_name(12345), "NECTAR_UNKNOWN");
    CHECK_EQ(NECTAR_ENOENT, -ENOENT);
    CHECK_STR_EQ(nectar_strerror(NECTAR_ENOTSUP),
                 "operation not supported by this backend");
    CHECK_STR_EQ(nectar_strerror(0), "success");
    /* A code outside the table but inside the errno range reads as errno. */
    CHECK_STR_EQ(nectar_strerror(-ENOTDIR), strerror(ENOTDIR));
    nectar_error_t err;
    CHECK_EQ(nectar_error_set(&err, NECTAR_EPARSE, "key %s: %d", "a.b", 7),
             NECTAR_EPARSE);
    CHECK_EQ(err.code, NECTAR_EPARSE);
    CHECK_STR_EQ(err.message, "key a.b: 7");
    CHECK_EQ(nectar_error_set(NULL, NECTAR_EIO, "ignored"), NECTAR_EIO);
}

static void test_alloc_fail_injection(void)
{
    nectar__alloc_fail_after(2);
    void *a = nectar_malloc(8);
    char *b = nectar_strdup("x");
    void *c = nectar_malloc(8);
    void *d = nectar_calloc(1, 8);
    nectar__alloc_fail_after(-1);
    void *e = nectar_malloc(8);
    CHECK(a != NULL);
    CHECK(b != NULL);
    CHECK(c == NULL);
    CHECK(d == NULL);
    CHECK(e != NULL);
    CHECK_STR_EQ(b, "x");
    nectar_free(a);
    nectar_free(b);
    nectar_free(e);
    CHECK(nectar_strdup(NULL) == NULL);
    char *n = nectar_strndup("abcdef", 3);
    CHECK_STR_EQ(n, "abc");
    nectar_wipe(n, 3);
    CHECK_EQ(n[0], 0);
    CHECK_EQ(n[2], 0);
    nectar_free(n);
}

static int sink_calls;
static char sink_line[256];

static void sink(void *ctx, nectar_log_level_t level, const char *tag,
                 const char *line)
{
    (void)ctx;
    (void)level;
    (void)tag;
    sink_calls++;
    snprintf(sink_line, sizeof(sink_line), "%s", line);
}

static void test_log_level_and_sink(void)
{
    nectar_log_set_sink(sink, NULL);
    nectar_log_set_level(NECTAR_LOG_WARN);
    nectar_log(NECTAR_LOG_INFO, "t", "dropped %d", 1);
    CHECK_EQ(sink_calls, 0);
    nectar_log(NECTAR_LOG_ERROR, "t", "kept %d", 2);
    CHECK_EQ(sink_calls, 1);
    CHECK_STR_EQ(sink_line, "kept 2");
    nectar_log_set_sink(NULL, NULL);
}

static const nectar_test_t tests[] = {
    {"error_table", test_error_table},
    {"alloc_fail_injection", test_alloc_fail_injection},
    {"log_level_and_sink", test_log_level_and_sink},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
