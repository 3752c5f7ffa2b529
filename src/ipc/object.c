/*
 * object.c - the IPC value model: build, read, copy, compare, freeze and
 * the nesting/size limits (the same limits the decoder enforces).
 *
 * Map: builders, containers, reference counting, readers, copy/equal.
 * JSON rendering lives in json.c.
 */
#include "ipc/ipc_int.h"

#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"

/* ---- buffer ---------------------------------------------------------- */

void nectar__ipc_buf_put(struct ipc_buf *b, const void *p, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *np = nectar_realloc(b->p, cap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void nectar__ipc_buf_puts(struct ipc_buf *b, const char *s)
{
    nectar__ipc_buf_put(b, s, strlen(s));
}

void nectar__ipc_buf_free(struct ipc_buf *b)
{
    nectar_free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- UTF-8 ----------------------------------------------------------- */

/* Length of the sequence starting with lead byte c, 0 if c cannot lead. */
static size_t utf8_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

/* Checks one multi-byte sequence, rejecting overlongs, surrogates and
 * values above U+10FFFF. */
static bool utf8_seq_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return false;
    }
    if (n == 3) {
        if (s[0] == 0xE0 && s[1] < 0xA0)
            return false;
        if (s[0] == 0xED && s[1] > 0x9F)
            return false;
    }
    if (n == 4) {
        if (s[0] == 0xF0 && s[1] < 0x90)
            return false;
        if (s[0] == 0xF4 && s[1] > 0x8F)
            return false;
    }
    return true;
}

bool nectar__ipc_utf8_ok(const char *p, size_t len)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < len) {
        if (s[i] == 0)
            return false;
        size_t n = utf8_seq_len(s[i]);
        if (n == 0 || i + n > len || !utf8_seq_ok(s + i, n))
            return false;
        i += n;
    }
    return true;
}

/* ---- builders -------------------------------------------------------- */

/* A value with `extra` bytes after it (the payload of strings and data,
 * kept in the same block: one allocation per value). */
static nectar_ipc_obj_t *obj_new_extra(nectar_ipc_type_t type, size_t extra)
{
    nectar_ipc_obj_t *o = nectar_malloc(sizeof(*o) + extra);
    if (o == NULL)
        return NULL;
    memset(o, 0, sizeof(*o));
    atomic_init(&o->refs, 1);
    atomic_init(&o->frozen, false);
    o->type = (uint8_t)type;
    return o;
}

static nectar_ipc_obj_t *obj_new(nectar_ipc_type_t type)
{
    return obj_new_extra(type, 0);
}

nectar_ipc_obj_t *nectar_ipc_null(void)
{
    return obj_new(NECTAR_IPC_NULL);
}

nectar_ipc_obj_t *nectar_ipc_bool(bool v)
{
    nectar_ipc_obj_t *o = obj_new(NECTAR_IPC_BOOL);
    if (o != NULL)
        o->v.b = v;
    return o;
}

/* Integers and dates share the int64 payload. */
static nectar_ipc_obj_t *int64_new(nectar_ipc_type_t type, int64_t v)
{
    nectar_ipc_obj_t *o = obj_new(type);
    if (o != NULL)
        o->v.i = v;
    return o;
}

nectar_ipc_obj_t *nectar_ipc_int64(int64_t v)
{
    return int64_new(NECTAR_IPC_INT64, v);
}

nectar_ipc_obj_t *nectar_ipc_uint64(uint64_t v)
{
    nectar_ipc_obj_t *o = obj_new(NECTAR_IPC_UINT64);
    if (o != NULL)
        o->v.u = v;
    return o;
}

nectar_ipc_obj_t *nectar_ipc_double(double v)
{
    nectar_ipc_obj_t *o = obj_new(NECTAR_IPC_DOUBLE);
    if (o != NULL)
        o->v.d = v;
    return o;
}

nectar_ipc_obj_t *nectar_ipc_date(int64_t ns)
{
    return int64_new(NECTAR_IPC_DATE, ns);
}

nectar_ipc_obj_t *nectar_ipc_uuid(const uint8_t bytes[16])
{
    if (bytes == NULL)
        return NULL;
    nectar_ipc_obj_t *o = obj_new(NECTAR_IPC_UUID);
    if (o != NULL)
        memcpy(o->v.uuid, bytes, 16);
    return o;
}

static nectar_ipc_obj_t *bytes_new(nectar_ipc_type_t type, const void *p,
                                   size_t len)
{
    if (len > NECTAR_IPC_MAX_MESSAGE || (p == NULL && len != 0))
        return NULL;
    nectar_ipc_obj_t *o = obj_new_extra(type, len + 1);
    if (o == NULL)
        return NULL;
    o->v.bytes.p = (char *)(o + 1);
    if (len != 0)
        memcpy(o->v.bytes.p, p, len);
    o->v.bytes.p[len] = '\0';
    o->v.bytes.len = len;
    return o;
}

nectar_ipc_obj_t *nectar_ipc_string_len(const char *s, size_t len)
{
    if (s == NULL || !nectar__ipc_utf8_ok(s, len))
        return NULL;
    return bytes_new(NECTAR_IPC_STRING, s, len);
}

nectar_ipc_obj_t *nectar__ipc_string_checked(const char *s, size_t len)
{
    return bytes_new(NECTAR_IPC_STRING, s, len);
}

nectar_ipc_obj_t *nectar_ipc_string(const char *s)
{
    if (s == NULL)
        return NULL;
    return nectar_ipc_string_len(s, strlen(s));
}

nectar_ipc_obj_t *nectar_ipc_data(const void *p, size_t len)
{
    return bytes_new(NECTAR_IPC_DATA, p, len);
}

nectar_ipc_obj_t *nectar__ipc_fd_adopt(int fd)
{
    nectar_ipc_obj_t *o = obj_new(NECTAR_IPC_FD);
    if (o != NULL)
        o->v.fd = fd;
    return o;
}

nectar_ipc_obj_t *nectar_ipc_fd(int fd)
{
    if (fd < 0)
        return NULL;
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return NULL;
    nectar_ipc_obj_t *o = nectar__ipc_fd_adopt(dup_fd);
    if (o == NULL)
        close(dup_fd);
    return o;
}

nectar_ipc_obj_t *nectar_ipc_array(void)
{
    return obj_new(NECTAR_IPC_ARRAY);
}

nectar_ipc_obj_t *nectar_ipc_dict(void)
{
    return obj_new(NECTAR_IPC_DICT);
}

/* ---- containers ------------------------------------------------------ */

void nectar__ipc_freeze(const nectar_ipc_obj_t *obj)
{
    if (obj != NULL)
        atomic_store(&((nectar_ipc_obj_t *)obj)->frozen, true);
}

/* Common checks before inserting val into parent.  Consumes val on
 * failure. */
static int insert_check(nectar_ipc_obj_t *parent, nectar_ipc_type_t want,
                        nectar_ipc_obj_t *val, size_t count,
                        nectar_error_t *err)
{
    int rc = 0;
    if (parent == NULL || parent->type != want)
        rc = nectar_error_set(err, NECTAR_EINVAL, "ipc: not a %s",
                              nectar_ipc_type_name(want));
    else if (val == NULL)
        rc = nectar_error_set(err, NECTAR_EINVAL,
                              "ipc: value is NULL (its builder failed)");
    else if (atomic_load(&parent->frozen))
        rc = nectar_error_set(err, NECTAR_ESTATE,
                              "ipc: container is read-only (already "
                              "inserted or sent)");
    else if (val == parent)
        rc = nectar_error_set(err, NECTAR_EINVAL,
                              "ipc: a container cannot hold itself");
    else if (count >= NECTAR_IPC_MAX_ELEMENTS)
        rc = nectar_error_set(err, NECTAR_ELIMIT, "ipc: more than %u elements",
                              NECTAR_IPC_MAX_ELEMENTS);
    else if (val->height + 1u > NECTAR_IPC_MAX_DEPTH)
        rc = nectar_error_set(err, NECTAR_ELIMIT, "ipc: nesting deeper than %d",
                              NECTAR_IPC_MAX_DEPTH);
    if (rc != 0)
        nectar_ipc_release(val);
    return rc;
}

/* Freezing the child keeps the parent's height exact: a frozen child can
 * never grow, and a frozen child cannot be an ancestor of its (unfrozen)
 * parent, so no cycle can form. */
static void adopt_child(nectar_ipc_obj_t *parent, nectar_ipc_obj_t *val)
{
    nectar__ipc_freeze(val);
    if (val->height + 1u > parent->height)
        parent->height = (uint16_t)(val->height + 1u);
}

static bool grow(void **items, size_t *cap, size_t n, size_t item_size)
{
    if (n < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 4;
    void *np = nectar_realloc(*items, ncap * item_size);
    if (np == NULL)
        return false;
    *items = np;
    *cap = ncap;
    return true;
}

int nectar_ipc_array_append(nectar_ipc_obj_t *arr, nectar_ipc_obj_t *val,
                            nectar_error_t *err)
{
    int rc =
        insert_check(arr, NECTAR_IPC_ARRAY, val, arr ? arr->v.arr.n : 0, err);
    if (rc != 0)
        return rc;
    if (!grow((void **)&arr->v.arr.items, &arr->v.arr.cap, arr->v.arr.n,
              sizeof(*arr->v.arr.items))) {
        nectar_ipc_release(val);
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    }
    adopt_child(arr, val);
    arr->v.arr.items[arr->v.arr.n++] = val;
    return 0;
}

/* Binary search; returns the index of key or where it would go. */
static size_t dict_find(const nectar_ipc_obj_t *d, const char *key, bool *found)
{
    size_t lo = 0, hi = d->v.dict.n;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(d->v.dict.items[mid].key, key);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Recomputes a dict's height after a replacement may have lowered it. */
static void dict_rehight(nectar_ipc_obj_t *d)
{
    uint16_t h = 0;
    for (size_t i = 0; i < d->v.dict.n; i++) {
        uint16_t ch = (uint16_t)(d->v.dict.items[i].val->height + 1u);
        if (ch > h)
            h = ch;
    }
    d->height = h;
}

/* Inserts val under key; key_owned (already a private copy, or NULL to
 * copy key) is consumed.  Common to the public setter and the decoder. */
static int dict_insert(nectar_ipc_obj_t *dict, const char *key, char *key_owned,
                       nectar_ipc_obj_t *val, nectar_error_t *err)
{
    int rc = insert_check(dict, NECTAR_IPC_DICT, val, dict ? dict->v.dict.n : 0,
                          err);
    if (rc != 0) {
        nectar_free(key_owned);
        return rc;
    }
    bool found;
    size_t at = dict_find(dict, key, &found);
    if (found) {
        nectar_free(key_owned);
        nectar_ipc_release(dict->v.dict.items[at].val);
        nectar__ipc_freeze(val);
        dict->v.dict.items[at].val = val;
        dict_rehight(dict);
        return 0;
    }
    char *k = key_owned ? key_owned : nectar_strdup(key);
    if (k == NULL || !grow((void **)&dict->v.dict.items, &dict->v.dict.cap,
                           dict->v.dict.n, sizeof(*dict->v.dict.items))) {
        nectar_free(k);
        nectar_ipc_release(val);
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    }
    struct ipc_kv *items = dict->v.dict.items;
    memmove(items + at + 1, items + at, (dict->v.dict.n - at) * sizeof(*items));
    items[at].key = k;
    items[at].val = val;
    dict->v.dict.n++;
    adopt_child(dict, val);
    return 0;
}

int nectar_ipc_dict_set(nectar_ipc_obj_t *dict, const char *key,
                        nectar_ipc_obj_t *val, nectar_error_t *err)
{
    if (key == NULL || !nectar__ipc_utf8_ok(key, strlen(key))) {
        nectar_ipc_release(val);
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ipc: dictionary key must be UTF-8 "
                                "without NUL");
    }
    return dict_insert(dict, key, NULL, val, err);
}

int nectar__ipc_dict_set_owned(nectar_ipc_obj_t *dict, char *key,
                               nectar_ipc_obj_t *val, nectar_error_t *err)
{
    return dict_insert(dict, key, key, val, err);
}

/* ---- reference counting ---------------------------------------------- */

nectar_ipc_obj_t *nectar_ipc_retain(nectar_ipc_obj_t *obj)
{
    if (obj != NULL)
        atomic_fetch_add_explicit(&obj->refs, 1, memory_order_relaxed);
    return obj;
}

static void obj_free(nectar_ipc_obj_t *o)
{
    switch (o->type) {
    case NECTAR_IPC_FD:
        close(o->v.fd);
        break;
    case NECTAR_IPC_ARRAY:
        for (size_t i = 0; i < o->v.arr.n; i++)
            nectar_ipc_release(o->v.arr.items[i]);
        nectar_free(o->v.arr.items);
        break;
    case NECTAR_IPC_DICT:
        for (size_t i = 0; i < o->v.dict.n; i++) {
            nectar_free(o->v.dict.items[i].key);
            nectar_ipc_release(o->v.dict.items[i].val);
        }
        nectar_free(o->v.dict.items);
        break;
    default:
        break;
    }
    nectar_free(o);
}

void nectar_ipc_release(nectar_ipc_obj_t *obj)
{
    if (obj == NULL)
        return;
    if (atomic_fetch_sub_explicit(&obj->refs, 1, memory_order_acq_rel) == 1)
        obj_free(obj);
}

/* ---- readers --------------------------------------------------------- */

nectar_ipc_type_t nectar_ipc_type(const nectar_ipc_obj_t *obj)
{
    return obj ? (nectar_ipc_type_t)obj->type : NECTAR_IPC_NULL;
}

const char *nectar_ipc_type_name(nectar_ipc_type_t type)
{
    static const char *const names[] = {
        "null", "bool", "int64", "uint64", "double", "string",
        "data", "date", "uuid",  "fd",     "array",  "dictionary",
    };
    if ((unsigned)type >= sizeof(names) / sizeof(names[0]))
        return "unknown";
    return names[type];
}

static bool is(const nectar_ipc_obj_t *o, nectar_ipc_type_t t)
{
    return o != NULL && o->type == t;
}

bool nectar_ipc_bool_value(const nectar_ipc_obj_t *o)
{
    return is(o, NECTAR_IPC_BOOL) ? o->v.b : false;
}

int64_t nectar_ipc_int64_value(const nectar_ipc_obj_t *o)
{
    return is(o, NECTAR_IPC_INT64) ? o->v.i : 0;
}

uint64_t nectar_ipc_uint64_value(const nectar_ipc_obj_t *o)
{
    return is(o, NECTAR_IPC_UINT64) ? o->v.u : 0;
}

double nectar_ipc_double_value(const nectar_ipc_obj_t *o)
{
    return is(o, NECTAR_IPC_DOUBLE) ? o->v.d : 0.0;
}

int64_t nectar_ipc_date_value(const nectar_ipc_obj_t *o)
{
    return is(o, NECTAR_IPC_DATE) ? o->v.i : 0;
}

const uint8_t *nectar_ipc_uuid_bytes(const nectar_ipc_obj_t *o)
{
    return is(o, NECTAR_IPC_UUID) ? o->v.uuid : NULL;
}

const char *nectar_ipc_string_ptr(const nectar_ipc_obj_t *o, size_t *len)
{
    if (!is(o, NECTAR_IPC_STRING)) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = o->v.bytes.len;
    return o->v.bytes.p;
}

const void *nectar_ipc_data_ptr(const nectar_ipc_obj_t *o, size_t *len)
{
    bool ok = is(o, NECTAR_IPC_DATA) && o->v.bytes.len != 0;
    if (len != NULL)
        *len = ok ? o->v.bytes.len : 0;
    return ok ? o->v.bytes.p : NULL;
}

int nectar_ipc_fd_dup(const nectar_ipc_obj_t *o)
{
    if (!is(o, NECTAR_IPC_FD))
        return NECTAR_ETYPE;
    int fd = fcntl(o->v.fd, F_DUPFD_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

size_t nectar_ipc_count(const nectar_ipc_obj_t *o)
{
    if (is(o, NECTAR_IPC_ARRAY))
        return o->v.arr.n;
    if (is(o, NECTAR_IPC_DICT))
        return o->v.dict.n;
    return 0;
}

nectar_ipc_obj_t *nectar_ipc_array_get(const nectar_ipc_obj_t *a, size_t i)
{
    if (!is(a, NECTAR_IPC_ARRAY) || i >= a->v.arr.n)
        return NULL;
    return a->v.arr.items[i];
}

nectar_ipc_obj_t *nectar_ipc_dict_get(const nectar_ipc_obj_t *d,
                                      const char *key)
{
    if (!is(d, NECTAR_IPC_DICT) || key == NULL)
        return NULL;
    bool found;
    size_t at = dict_find(d, key, &found);
    return found ? d->v.dict.items[at].val : NULL;
}

const char *nectar_ipc_dict_key_at(const nectar_ipc_obj_t *d, size_t i)
{
    if (!is(d, NECTAR_IPC_DICT) || i >= d->v.dict.n)
        return NULL;
    return d->v.dict.items[i].key;
}

nectar_ipc_obj_t *nectar_ipc_dict_value_at(const nectar_ipc_obj_t *d, size_t i)
{
    if (!is(d, NECTAR_IPC_DICT) || i >= d->v.dict.n)
        return NULL;
    return d->v.dict.items[i].val;
}

/* ---- copy and compare ------------------------------------------------ */

static nectar_ipc_obj_t *copy_container(const nectar_ipc_obj_t *o)
{
    bool arr = o->type == NECTAR_IPC_ARRAY;
    nectar_ipc_obj_t *c = arr ? nectar_ipc_array() : nectar_ipc_dict();
    size_t n = nectar_ipc_count(o);
    for (size_t i = 0; c != NULL && i < n; i++) {
        int rc;
        if (arr) {
            rc = nectar_ipc_array_append(c, nectar_ipc_copy(o->v.arr.items[i]),
                                         NULL);
        } else {
            rc = nectar_ipc_dict_set(c, o->v.dict.items[i].key,
                                     nectar_ipc_copy(o->v.dict.items[i].val),
                                     NULL);
        }
        if (rc != 0) {
            nectar_ipc_release(c);
            c = NULL;
        }
    }
    return c;
}

nectar_ipc_obj_t *nectar_ipc_copy(const nectar_ipc_obj_t *o)
{
    if (o == NULL)
        return NULL;
    switch (o->type) {
    case NECTAR_IPC_STRING:
    case NECTAR_IPC_DATA:
        return bytes_new(o->type, o->v.bytes.p, o->v.bytes.len);
    case NECTAR_IPC_FD:
        return nectar_ipc_fd(o->v.fd);
    case NECTAR_IPC_ARRAY:
    case NECTAR_IPC_DICT:
        return copy_container(o);
    default: {
        nectar_ipc_obj_t *c = obj_new(o->type);
        if (c != NULL)
            c->v = o->v;
        return c;
    }
    }
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    if (fstat(a, &sa) != 0 || fstat(b, &sb) != 0)
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static bool equal_container(const nectar_ipc_obj_t *a,
                            const nectar_ipc_obj_t *b)
{
    size_t n = nectar_ipc_count(a);
    if (n != nectar_ipc_count(b))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (a->type == NECTAR_IPC_ARRAY) {
            if (!nectar_ipc_equal(a->v.arr.items[i], b->v.arr.items[i]))
                return false;
            continue;
        }
        if (strcmp(a->v.dict.items[i].key, b->v.dict.items[i].key) != 0 ||
            !nectar_ipc_equal(a->v.dict.items[i].val, b->v.dict.items[i].val))
            return false;
    }
    return true;
}

bool nectar_ipc_equal(const nectar_ipc_obj_t *a, const nectar_ipc_obj_t *b)
{
    if (a == b)
        return true;
    if (a == NULL || b == NULL || a->type != b->type)
        return false;
    switch (a->type) {
    case NECTAR_IPC_NULL:
        return true;
    case NECTAR_IPC_BOOL:
        return a->v.b == b->v.b;
    case NECTAR_IPC_INT64:
    case NECTAR_IPC_DATE:
        return a->v.i == b->v.i;
    case NECTAR_IPC_UINT64:
        return a->v.u == b->v.u;
    case NECTAR_IPC_DOUBLE:
        return a->v.d == b->v.d || (isnan(a->v.d) && isnan(b->v.d));
    case NECTAR_IPC_UUID:
        return memcmp(a->v.uuid, b->v.uuid, 16) == 0;
    case NECTAR_IPC_STRING:
    case NECTAR_IPC_DATA:
        return a->v.bytes.len == b->v.bytes.len &&
               memcmp(a->v.bytes.p, b->v.bytes.p, a->v.bytes.len) == 0;
    case NECTAR_IPC_FD:
        return same_file(a->v.fd, b->v.fd);
    default:
        return equal_container(a, b);
    }
}

void nectar_ipc_free_string(char *s)
{
    nectar_free(s);
}
