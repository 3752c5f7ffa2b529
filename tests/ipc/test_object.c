/* test_object.c - the value model and the CBOR codec, without sockets. */
#include "ipc_tests.h"

#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>

/* Encodes v, decodes the bytes and returns the copy (fds pass through
 * the same array, as they would through SCM_RIGHTS). */
static nectar_ipc_obj_t *roundtrip(const nectar_ipc_obj_t *v)
{
    struct ipc_buf b = {0};
    int fds[NECTAR_IPC_MAX_FDS];
    size_t nfds = 0;
    nectar_error_t err = {0};
    int rc = nectar__ipc_encode(v, &b, fds, &nfds, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("encode: %s", err.message);
    nectar_ipc_obj_t *out = NULL;
    rc = nectar__ipc_decode(b.p, b.len, fds, nfds, &out, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("decode: %s", err.message);
    nectar__ipc_buf_free(&b);
    return out;
}

static void check_roundtrip(nectar_ipc_obj_t *v)
{
    CHECK(v != NULL);
    nectar_ipc_obj_t *back = roundtrip(v);
    CHECK_EQ(nectar_ipc_type(back), nectar_ipc_type(v));
    if (!nectar_ipc_equal(v, back)) {
        char *a = nectar_ipc_to_json(v), *b = nectar_ipc_to_json(back);
        NECTAR_FAIL_AT("round trip differs: %s vs %s", a, b);
    }
    nectar_ipc_release(back);
    nectar_ipc_release(v);
}

static int decode_bytes(const uint8_t *p, size_t n, nectar_ipc_obj_t **out)
{
    nectar_error_t err = {0};
    int rc = nectar__ipc_decode(p, n, NULL, 0, out, &err);
    return rc;
}

void test_types_roundtrip(void)
{
    check_roundtrip(nectar_ipc_null());
    check_roundtrip(nectar_ipc_bool(true));
    check_roundtrip(nectar_ipc_bool(false));
    const int64_t ints[] = {0,     1,         -1,        23,        24,
                            -24,   -25,       255,       256,       65535,
                            65536, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        check_roundtrip(nectar_ipc_int64(ints[i]));
        check_roundtrip(nectar_ipc_date(ints[i]));
    }
    const uint64_t uints[] = {0, 1, 255, UINT32_MAX, UINT64_MAX};
    for (size_t i = 0; i < sizeof(uints) / sizeof(uints[0]); i++)
        check_roundtrip(nectar_ipc_uint64(uints[i]));
    const double dbls[] = {0.0,     1.0,      -1.0,      0.1, 1e308,
                           -1e-308, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof(dbls) / sizeof(dbls[0]); i++)
        check_roundtrip(nectar_ipc_double(dbls[i]));
    check_roundtrip(nectar_ipc_string(""));
    check_roundtrip(nectar_ipc_string("hello"));
    check_roundtrip(nectar_ipc_string("caf\xc3\xa9 \xf0\x9f\xa6\x80"));
    check_roundtrip(nectar_ipc_data(NULL, 0));
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    check_roundtrip(nectar_ipc_data(all, sizeof(all)));
    uint8_t zeros[16] = {0}, ones[16];
    memset(ones, 0xff, sizeof(ones));
    check_roundtrip(nectar_ipc_uuid(zeros));
    check_roundtrip(nectar_ipc_uuid(ones));
    check_roundtrip(nectar_ipc_uuid(all + 100));

    /* Distinct types never collapse: int64 5, uint64 5 and date 5. */
    nectar_ipc_obj_t *u5 = nectar_ipc_uint64(5);
    nectar_ipc_obj_t *u = roundtrip(u5);
    CHECK_EQ(nectar_ipc_type(u), NECTAR_IPC_UINT64);
    nectar_ipc_release(u);
    nectar_ipc_release(u5);

    /* An fd comes back as a different descriptor for the same file. */
    int pfd[2];
    CHECK_EQ(pipe(pfd), 0);
    nectar_ipc_obj_t *fdv = nectar_ipc_fd(pfd[0]);
    nectar_ipc_obj_t *fdb = roundtrip(fdv);
    CHECK(nectar_ipc_equal(fdv, fdb));
    int d1 = nectar_ipc_fd_dup(fdb);
    CHECK_GE(d1, 0);
    CHECK_NE(d1, pfd[0]);
    close(d1);
    nectar_ipc_release(fdv);
    nectar_ipc_release(fdb);
    close(pfd[0]);
    close(pfd[1]);

    /* Containers: empty, mixed, nested, dict of array of dicts. */
    check_roundtrip(nectar_ipc_array());
    check_roundtrip(nectar_ipc_dict());
    nectar_ipc_obj_t *arr = nectar_ipc_array();
    nectar_ipc_array_append(arr, nectar_ipc_int64(1), NULL);
    nectar_ipc_array_append(arr, nectar_ipc_string("two"), NULL);
    nectar_ipc_array_append(arr, nectar_ipc_null(), NULL);
    nectar_ipc_obj_t *inner = nectar_ipc_dict();
    nectar_ipc_dict_set(inner, "z", nectar_ipc_bool(true), NULL);
    nectar_ipc_dict_set(inner, "a", nectar_ipc_double(2.5), NULL);
    nectar_ipc_array_append(arr, inner, NULL);
    nectar_ipc_obj_t *top = nectar_ipc_dict();
    CHECK_EQ(nectar_ipc_dict_set(top, "list", arr, NULL), 0);
    CHECK_EQ(nectar_ipc_dict_set(top, "n", nectar_ipc_uint64(9), NULL), 0);
    check_roundtrip(top);

    /* A 10 000-element array. */
    nectar_ipc_obj_t *big = nectar_ipc_array();
    for (int i = 0; i < 10000; i++)
        CHECK_EQ(nectar_ipc_array_append(big, nectar_ipc_int64(i), NULL), 0);
    check_roundtrip(big);
}

void test_string_rules(void)
{
    CHECK(nectar_ipc_string_len("foo\0bar", 7) == NULL);
    CHECK(nectar_ipc_string("\xc3") == NULL);         /* truncated */
    CHECK(nectar_ipc_string("\xc0\xaf") == NULL);     /* overlong */
    CHECK(nectar_ipc_string("\xed\xa0\x80") == NULL); /* surrogate */
    CHECK(nectar_ipc_string("\xf4\x90\x80\x80") == NULL);
    nectar_ipc_obj_t *d = nectar_ipc_dict();
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ipc_dict_set(d, "\xff", nectar_ipc_null(), &err),
             NECTAR_EINVAL);
    CHECK_EQ(nectar_ipc_dict_set(d, "k", NULL, &err), NECTAR_EINVAL);
    CHECK(strstr(err.message, "NULL") != NULL);
    /* A later set of the same key wins. */
    CHECK_EQ(nectar_ipc_dict_set(d, "k", nectar_ipc_int64(1), NULL), 0);
    CHECK_EQ(nectar_ipc_dict_set(d, "k", nectar_ipc_int64(2), NULL), 0);
    CHECK_EQ(nectar_ipc_count(d), 1);
    CHECK_EQ(nectar_ipc_int64_value(nectar_ipc_dict_get(d, "k")), 2);
    nectar_ipc_release(d);
    /* A text string with bad UTF-8 on the wire is refused. */
    const uint8_t bad[] = {0x62, 0xc3, 0x28};
    nectar_ipc_obj_t *out = NULL;
    CHECK_EQ(decode_bytes(bad, sizeof(bad), &out), NECTAR_EPARSE);
}

static nectar_ipc_obj_t *nest_arrays(int levels)
{
    nectar_ipc_obj_t *v = nectar_ipc_int64(7);
    for (int i = 0; i < levels && v != NULL; i++) {
        nectar_ipc_obj_t *a = nectar_ipc_array();
        if (nectar_ipc_array_append(a, v, NULL) != 0) {
            nectar_ipc_release(a);
            return NULL;
        }
        v = a;
    }
    return v;
}

void test_depth_limits(void)
{
    /* 256 arrays around a scalar: the scalar sits at depth 256, fine. */
    nectar_ipc_obj_t *ok = nest_arrays(256);
    CHECK(ok != NULL);
    check_roundtrip(ok);
    /* 257 fails to build, with ELIMIT. */
    nectar_ipc_obj_t *v = nest_arrays(256);
    nectar_ipc_obj_t *a = nectar_ipc_array();
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ipc_array_append(a, v, &err), NECTAR_ELIMIT);
    nectar_ipc_release(a);
    /* Same for dictionaries. */
    nectar_ipc_obj_t *d = nectar_ipc_int64(1);
    for (int i = 0; i < 256; i++) {
        nectar_ipc_obj_t *n = nectar_ipc_dict();
        CHECK_EQ(nectar_ipc_dict_set(n, "x", d, NULL), 0);
        d = n;
    }
    nectar_ipc_obj_t *n = nectar_ipc_dict();
    CHECK_EQ(nectar_ipc_dict_set(n, "x", d, NULL), NECTAR_ELIMIT);
    nectar_ipc_release(n);
    /* Decoding 257 nested arrays (hand-made bytes) fails with ELIMIT;
     * 256 decodes. */
    uint8_t buf[300];
    memset(buf, 0x81, 257);
    buf[257] = 0x07;
    nectar_ipc_obj_t *out = NULL;
    CHECK_EQ(decode_bytes(buf, 258, &out), NECTAR_ELIMIT);
    CHECK_EQ(decode_bytes(buf + 1, 257, &out), 0);
    nectar_ipc_release(out);
    /* A very deep hostile input is refused without deep recursion. */
    static uint8_t deep[1 << 20];
    memset(deep, 0x81, sizeof(deep));
    CHECK_EQ(decode_bytes(deep, sizeof(deep), &out), NECTAR_ELIMIT);
}

void test_size_limits(void)
{
    nectar_ipc_obj_t *out = NULL;
    /* Array claiming 2^32 elements in a 9-byte input. */
    const uint8_t huge_arr[] = {0x9b, 0, 0, 0, 1, 0, 0, 0, 0};
    CHECK_EQ(decode_bytes(huge_arr, sizeof(huge_arr), &out), NECTAR_ELIMIT);
    /* Map claiming more entries than bytes remain. */
    const uint8_t lying_map[] = {0xa5, 0x61, 0x61, 0x01};
    CHECK_EQ(decode_bytes(lying_map, sizeof(lying_map), &out), NECTAR_ELIMIT);
    /* Byte string claiming 4 GiB. */
    const uint8_t huge_bytes[] = {0x5a, 0xff, 0xff, 0xff, 0xff, 0x00};
    CHECK_NE(decode_bytes(huge_bytes, sizeof(huge_bytes), &out), 0);
    /* Input over the message limit. */
    uint8_t *big = calloc(1, NECTAR_IPC_MAX_MESSAGE + 1);
    CHECK_EQ(nectar__ipc_decode(big, NECTAR_IPC_MAX_MESSAGE + 1, NULL, 0, &out,
                                NULL),
             NECTAR_ELIMIT);
    free(big);
    /* Data over the limit cannot be built. */
    CHECK(nectar_ipc_data("x", (size_t)NECTAR_IPC_MAX_MESSAGE + 1) == NULL);
    /* An encoding over the limit is refused: 5 x 1 MiB. */
    static uint8_t mib[1 << 20];
    nectar_ipc_obj_t *arr = nectar_ipc_array();
    for (int i = 0; i < 5; i++)
        nectar_ipc_array_append(arr, nectar_ipc_data(mib, sizeof(mib)), NULL);
    struct ipc_buf b = {0};
    int fds[NECTAR_IPC_MAX_FDS];
    CHECK_EQ(nectar__ipc_encode(arr, &b, fds, NULL, NULL), NECTAR_ELIMIT);
    nectar__ipc_buf_free(&b);
    nectar_ipc_release(arr);
}

struct bad_case {
    const char *what;
    uint8_t bytes[16];
    size_t len;
};

void test_decode_garbage(void)
{
    static const struct bad_case cases[] = {
        {"empty", {0}, 0},
        {"truncated uint16", {0x19, 0x01}, 2},
        {"truncated string", {0x63, 0x61, 0x62}, 3},
        {"unfinished array", {0x82, 0x01}, 2},
        {"trailing bytes", {0x01, 0x02}, 2},
        {"indefinite array", {0x9f, 0x01, 0xff}, 3},
        {"indefinite bytes", {0x5f, 0x41, 0x00, 0xff}, 4},
        {"undefined", {0xf7}, 1},
        {"simple value", {0xf0}, 1},
        {"reserved", {0x1c}, 1},
        {"break alone", {0xff}, 1},
        {"unknown tag", {0xc1, 0x01}, 2},
        {"tag alone", {0xd8, 0x25}, 2},
        {"uuid wrong length", {0xd8, 0x25, 0x42, 0x01, 0x02}, 5},
        {"int key", {0xa1, 0x01, 0x02}, 3},
        {"dup key", {0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02}, 7},
        {"uint above int64", {0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9},
        {"negint below int64", {0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9},
        {"fd without fds", {0xd9, 0xc7, 0x3b, 0x00}, 4},
        {"tag on string", {0xd8, 0x25, 0x61, 0x61}, 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        nectar_ipc_obj_t *out = NULL;
        int rc = decode_bytes(cases[i].bytes, cases[i].len, &out);
        if (rc == 0)
            NECTAR_FAIL_AT("case '%s' decoded", cases[i].what);
        CHECK(out == NULL);
    }
    /* A negative fd index in range check: index 1 with one fd given. */
    const uint8_t fd1[] = {0xd9, 0xc7, 0x3b, 0x01};
    int fds[1] = {0};
    nectar_ipc_obj_t *out = NULL;
    CHECK_NE(nectar__ipc_decode(fd1, sizeof(fd1), fds, 1, &out, NULL), 0);
    /* A closed descriptor number is refused. */
    int closed[1] = {999};
    const uint8_t fd0[] = {0xd9, 0xc7, 0x3b, 0x00};
    CHECK_NE(nectar__ipc_decode(fd0, sizeof(fd0), closed, 1, &out, NULL), 0);
}

void test_copy_equal_json(void)
{
    nectar_ipc_obj_t *d = nectar_ipc_dict();
    uint8_t u[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
                     0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    nectar_ipc_dict_set(d, "s", nectar_ipc_string("a\"b\n"), NULL);
    nectar_ipc_dict_set(d, "u", nectar_ipc_uuid(u), NULL);
    nectar_ipc_dict_set(d, "b", nectar_ipc_data("hi!", 3), NULL);
    nectar_ipc_dict_set(d, "t", nectar_ipc_date(-1), NULL);
    nectar_ipc_dict_set(d, "n", nectar_ipc_uint64(UINT64_MAX), NULL);
    nectar_ipc_dict_set(d, "a", nectar_ipc_array(), NULL);
    nectar_ipc_obj_t *c = nectar_ipc_copy(d);
    CHECK(nectar_ipc_equal(d, c));
    nectar_ipc_dict_set(c, "extra", nectar_ipc_null(), NULL);
    CHECK(!nectar_ipc_equal(d, c));
    char *j = nectar_ipc_to_json(d);
    CHECK_STR_EQ(j, "{\"a\":[],\"b\":{\"$data\":\"aGkh\"},"
                    "\"n\":18446744073709551615,\"s\":\"a\\\"b\\u000a\","
                    "\"t\":{\"$date\":-1},"
                    "\"u\":{\"$uuid\":\"12345678-9abc-def0-0123-"
                    "456789abcdef\"}}");
    nectar_ipc_free_string(j);
    nectar_ipc_obj_t *i5 = nectar_ipc_int64(5), *u5 = nectar_ipc_uint64(5);
    CHECK(!nectar_ipc_equal(i5, u5));
    CHECK(!nectar_ipc_equal(i5, NULL));
    nectar_ipc_release(i5);
    nectar_ipc_release(u5);
    nectar_ipc_release(c);
    nectar_ipc_release(d);
}

void test_frozen_rules(void)
{
    nectar_ipc_obj_t *outer = nectar_ipc_array();
    nectar_ipc_obj_t *inner = nectar_ipc_array();
    nectar_ipc_retain(inner);
    CHECK_EQ(nectar_ipc_array_append(outer, inner, NULL), 0);
    nectar_error_t err = {0};
    /* inner is now read-only: it cannot grow behind the parent's back. */
    CHECK_EQ(nectar_ipc_array_append(inner, nectar_ipc_int64(1), &err),
             NECTAR_ESTATE);
    /* A container cannot be put inside itself. */
    nectar_ipc_obj_t *self = nectar_ipc_array();
    nectar_ipc_retain(self);
    CHECK_EQ(nectar_ipc_array_append(self, self, &err), NECTAR_EINVAL);
    nectar_ipc_release(self);
    /* Nor inside its own child (which is frozen). */
    nectar_ipc_retain(outer);
    CHECK_EQ(nectar_ipc_array_append(inner, outer, &err), NECTAR_ESTATE);
    /* A copy is writable again. */
    nectar_ipc_obj_t *copy = nectar_ipc_copy(inner);
    CHECK_EQ(nectar_ipc_array_append(copy, nectar_ipc_int64(1), NULL), 0);
    nectar_ipc_release(copy);
    nectar_ipc_release(inner);
    nectar_ipc_release(outer);
    /* Wrong-type readers return zero values. */
    nectar_ipc_obj_t *s = nectar_ipc_string("x");
    CHECK_EQ(nectar_ipc_int64_value(s), 0);
    CHECK(nectar_ipc_data_ptr(s, NULL) == NULL);
    CHECK_EQ(nectar_ipc_fd_dup(s), NECTAR_ETYPE);
    nectar_ipc_release(s);
}

/* Builds a value with every type and some nesting; NULL when an
 * allocation failed along the way. */
static nectar_ipc_obj_t *sample_value(void)
{
    uint8_t u[16] = {7};
    nectar_ipc_obj_t *d = nectar_ipc_dict();
    nectar_ipc_obj_t *a = nectar_ipc_array();
    nectar_ipc_array_append(a, nectar_ipc_string("x"), NULL);
    nectar_ipc_array_append(a, nectar_ipc_uint64(1), NULL);
    nectar_ipc_array_append(a, nectar_ipc_uuid(u), NULL);
    nectar_ipc_dict_set(d, "a", a, NULL);
    nectar_ipc_dict_set(d, "b", nectar_ipc_data("abc", 3), NULL);
    nectar_ipc_dict_set(d, "c", nectar_ipc_date(5), NULL);
    nectar_ipc_dict_set(d, "d", nectar_ipc_double(0.5), NULL);
    nectar_ipc_dict_set(d, "$selector", nectar_ipc_string("s"), NULL);
    return d;
}

void test_alloc_failures(void)
{
    /* Fail the Nth allocation for every N a round trip makes: each step
     * must report an error (or a NULL) and leak nothing (ASan checks). */
    nectar_ipc_router_t *r = nectar_ipc_router_new();
    for (long n = 0; n < 400; n++) {
        nectar__alloc_fail_after(n);
        nectar_ipc_obj_t *v = sample_value();
        struct ipc_buf b = {0};
        int fds[NECTAR_IPC_MAX_FDS];
        size_t nfds = 0;
        nectar_ipc_obj_t *back = NULL;
        if (v != NULL && nectar__ipc_encode(v, &b, fds, &nfds, NULL) == 0 &&
            !b.oom)
            nectar__ipc_decode(b.p, b.len, fds, nfds, &back, NULL);
        nectar_ipc_obj_t *copy = nectar_ipc_copy(v);
        char *json = nectar_ipc_to_json(v);
        nectar_ipc_obj_t *reply = nectar_ipc_router_handle(r, v);
        nectar_ipc_obj_t *call = nectar_ipc_call_build("sel:", v);
        nectar__alloc_fail_after(-1);
        if (back != NULL)
            CHECK(nectar_ipc_equal(v, back));
        if (copy != NULL)
            CHECK(nectar_ipc_equal(v, copy));
        nectar_ipc_release(call);
        nectar_ipc_release(reply);
        nectar_ipc_free_string(json);
        nectar_ipc_release(copy);
        nectar_ipc_release(back);
        nectar__ipc_buf_free(&b);
        nectar_ipc_release(v);
    }
    nectar_ipc_router_free(r);
}
