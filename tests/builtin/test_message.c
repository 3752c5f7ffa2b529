/* test_message.c - unit tests for src/app/stats.c and message.c: the
 * ping/pong reply, the stats counters and their JSON, "no reply" cases. */
#include <jansson.h>
#include <pthread.h>

#include "app/message.h"
#include "app/stats.h"
#include "common/alloc.h"
#include "harness/test.h"

/* Reply to `msg` parsed back into JSON (NULL when there is no reply). */
static json_t *reply_to(const char *msg, const struct app_stats *st)
{
    uint8_t *out = NULL;
    size_t len = 99;

    CHECK_EQ(nectar__app_message_reply((const uint8_t *)msg, strlen(msg), st,
                                       &out, &len),
             0);
    if (out == NULL) {
        CHECK_EQ(len, 0);
        return NULL;
    }
    CHECK_GT(len, 0);
    json_t *j = json_loadb((const char *)out, len, 0, NULL);
    CHECK(j != NULL);
    nectar_free(out);
    return j;
}

static long long get_int(json_t *obj, const char *path)
{
    json_t *v = NULL;

    if (json_unpack(obj, "{s:o}", path, &v) != 0 || !json_is_integer(v))
        NECTAR_FAIL_AT("no integer at %s", path);
    return json_integer_value(v);
}

static void test_ping(void)
{
    struct app_stats st = {0};
    const char *msg = "{\"op\":\"ping\",\"sent_at\":\"2026-11-28T08:00:00Z\","
                      "\"source\":\"container-app\"}";
    json_t *j = reply_to(msg, &st);

    CHECK(j != NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "op")), "pong");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "source")),
                 "transparent-proxy-provider");
    CHECK_EQ(get_int(j, "received_bytes"), (long long)strlen(msg));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "acknowledged_source")),
                 "container-app");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "acknowledged_sent_at")),
                 "2026-11-28T08:00:00Z");
    json_decref(j);

    /* Missing fields are acknowledged as null. */
    j = reply_to("{\"op\":\"ping\"}", &st);
    CHECK(json_is_null(json_object_get(j, "acknowledged_source")));
    CHECK(json_is_null(json_object_get(j, "acknowledged_sent_at")));
    CHECK_EQ(get_int(j, "received_bytes"), 13);
    json_decref(j);
}

static void test_no_reply(void)
{
    struct app_stats st = {0};
    const char *cases[] = {"",
                           "not json",
                           "{\"op\":\"pong\"}",
                           "{\"op\":\"PING\"}",
                           "{\"op\":1}",
                           "{}",
                           "[\"ping\"]",
                           "\"ping\"",
                           "{\"op\":\"ping\"",
                           NULL};

    for (int i = 0; cases[i] != NULL; i++) {
        if (reply_to(cases[i], &st) != NULL)
            NECTAR_FAIL_AT("unexpected reply to \"%s\"", cases[i]);
    }
    uint8_t *out = (uint8_t *)"x";
    size_t len = 5;
    CHECK_EQ(nectar__app_message_reply(NULL, 0, &st, &out, &len), 0);
    CHECK(out == NULL);
    CHECK_EQ(len, 0);
}

static void test_stats(void)
{
    struct app_stats st = {0};

    nectar__app_stats_decision(&st, NECTAR_ACTION_INTERCEPT);
    nectar__app_stats_decision(&st, NECTAR_ACTION_INTERCEPT);
    nectar__app_stats_decision(&st, NECTAR_ACTION_PASSTHROUGH);
    nectar__app_stats_decision(&st, NECTAR_ACTION_BLOCK);
    nectar__app_stats_decision(&st, NECTAR_ACTION_BLOCK);
    nectar__app_stats_decision(&st, NECTAR_ACTION_BLOCK);
    nectar__app_stats_decision(&st, (nectar_action_t)0);  /* ignored */
    nectar__app_stats_decision(&st, (nectar_action_t)42); /* ignored */
    svc_counters_open(&st.tcp);
    svc_counters_open(&st.tcp);
    svc_counters_close(&st.tcp);
    svc_counters_add(&st.tcp.bytes_to_remote, 100);
    svc_counters_add(&st.tcp.bytes_to_app, 5000000000ull);
    svc_counters_open(&st.udp);
    svc_counters_add(&st.udp.bytes_to_remote, 7);

    json_t *j = reply_to("{\"op\":\"stats\"}", &st);
    CHECK(j != NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "op")), "stats");
    json_t *d = json_object_get(j, "decisions");
    CHECK_EQ(get_int(d, "intercept"), 2);
    CHECK_EQ(get_int(d, "passthrough"), 1);
    CHECK_EQ(get_int(d, "block"), 3);
    json_t *tcp = json_object_get(j, "tcp");
    CHECK_EQ(get_int(tcp, "live"), 1);
    CHECK_EQ(get_int(tcp, "opened"), 2);
    CHECK_EQ(get_int(tcp, "bytes_to_remote"), 100);
    CHECK_EQ(get_int(tcp, "bytes_to_app"), 5000000000ll);
    json_t *udp = json_object_get(j, "udp");
    CHECK_EQ(get_int(udp, "live"), 1);
    CHECK_EQ(get_int(udp, "opened"), 1);
    CHECK_EQ(get_int(udp, "bytes_to_remote"), 7);
    CHECK_EQ(get_int(udp, "bytes_to_app"), 0);
    json_decref(j);
    CHECK_EQ(nectar__app_stats_decisions(&st, (nectar_action_t)9), 0);
}

static struct app_stats shared_stats;

static void *count_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++) {
        nectar__app_stats_decision(&shared_stats, NECTAR_ACTION_PASSTHROUGH);
        svc_counters_add(&shared_stats.udp.bytes_to_app, 3);
        if (i % 100 == 0) {
            uint8_t *out = NULL;
            size_t len = 0;
            nectar__app_message_reply((const uint8_t *)"{\"op\":\"stats\"}", 14,
                                      &shared_stats, &out, &len);
            nectar_free(out);
        }
    }
    return NULL;
}

/* Counters are updated from several threads while stats are read. */
static void test_stats_threads(void)
{
    pthread_t t[4];

    for (int i = 0; i < 4; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, count_thread, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(
        nectar__app_stats_decisions(&shared_stats, NECTAR_ACTION_PASSTHROUGH),
        40000);
    CHECK_EQ(atomic_load(&shared_stats.udp.bytes_to_app), 120000);
}

static void test_alloc_failure(void)
{
    struct app_stats st = {0};
    uint8_t *out = (uint8_t *)"x";
    size_t len = 3;

    nectar__alloc_fail_after(0);
    int rc = nectar__app_message_reply((const uint8_t *)"{\"op\":\"ping\"}", 13,
                                       &st, &out, &len);
    nectar__alloc_fail_after(-1);
    CHECK_EQ(rc, NECTAR_ENOMEM);
    CHECK(out == NULL);
    CHECK_EQ(len, 0);
}

static const nectar_test_t tests[] = {
    {"ping", test_ping},
    {"no_reply", test_no_reply},
    {"stats", test_stats},
    {"stats_threads", test_stats_threads},
    {"alloc_failure", test_alloc_failure},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
