/*
 * codec.c - IPC values <-> CBOR bytes (libcbor), with the limits of
 * ipc.h enforced while decoding.  The format is specified in
 * docs/ipc-protocol.md ("Value encoding"); keep the two in step.
 *
 * Decoding uses libcbor's allocation-free streaming decoder and an
 * explicit stack of open containers, so hostile nesting can never recurse
 * deeper than NECTAR_IPC_MAX_DEPTH and a bogus length never allocates more
 * than the input could hold.
 */
#include "ipc/ipc_int.h"

#include <cbor.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"

/* Tags; see docs/ipc-protocol.md.  37 is the registered binary UUID tag;
 * the others are nectar's, from the first-come-first-served range. */
#define TAG_UUID   37u
#define TAG_UINT64 51001u
#define TAG_DATE   51002u
#define TAG_FD     51003u

/* ---- encoding -------------------------------------------------------- */

struct enc {
    struct ipc_buf *out;
    int *fds;
    size_t nfds;
    int rc;
    nectar_error_t *err;
};

/* Writes one CBOR head through a libcbor encoder function. */
static void put_head(struct enc *e,
                     size_t (*fn)(uint64_t, unsigned char *, size_t),
                     uint64_t v)
{
    unsigned char tmp[9];
    size_t n = fn(v, tmp, sizeof(tmp));
    nectar__ipc_buf_put(e->out, tmp, n);
}

static size_t head_string(uint64_t n, unsigned char *b, size_t s)
{
    return cbor_encode_string_start((size_t)n, b, s);
}

static size_t head_bytes(uint64_t n, unsigned char *b, size_t s)
{
    return cbor_encode_bytestring_start((size_t)n, b, s);
}

static size_t head_array(uint64_t n, unsigned char *b, size_t s)
{
    return cbor_encode_array_start((size_t)n, b, s);
}

static size_t head_map(uint64_t n, unsigned char *b, size_t s)
{
    return cbor_encode_map_start((size_t)n, b, s);
}

static void put_int(struct enc *e, int64_t v)
{
    if (v >= 0)
        put_head(e, cbor_encode_uint, (uint64_t)v);
    else
        put_head(e, cbor_encode_negint, (uint64_t)(-(v + 1)));
}

static void put_simple(struct enc *e, size_t (*fn)(unsigned char *, size_t))
{
    unsigned char tmp[1];
    size_t n = fn(tmp, sizeof(tmp));
    nectar__ipc_buf_put(e->out, tmp, n);
}

static size_t enc_true(unsigned char *b, size_t s)
{
    return cbor_encode_bool(true, b, s);
}

static size_t enc_false(unsigned char *b, size_t s)
{
    return cbor_encode_bool(false, b, s);
}

static void enc_value(struct enc *e, const nectar_ipc_obj_t *o);

static void enc_fd(struct enc *e, const nectar_ipc_obj_t *o)
{
    if (e->nfds >= NECTAR_IPC_MAX_FDS) {
        e->rc = nectar_error_set(e->err, NECTAR_ELIMIT,
                                 "ipc: more than %d fds in one message",
                                 NECTAR_IPC_MAX_FDS);
        return;
    }
    put_head(e, cbor_encode_tag, TAG_FD);
    put_head(e, cbor_encode_uint, e->nfds);
    e->fds[e->nfds++] = o->v.fd;
}

static void enc_container(struct enc *e, const nectar_ipc_obj_t *o)
{
    if (o->type == NECTAR_IPC_ARRAY) {
        put_head(e, head_array, o->v.arr.n);
        for (size_t i = 0; i < o->v.arr.n && e->rc == 0; i++)
            enc_value(e, o->v.arr.items[i]);
        return;
    }
    put_head(e, head_map, o->v.dict.n);
    for (size_t i = 0; i < o->v.dict.n && e->rc == 0; i++) {
        const char *k = o->v.dict.items[i].key;
        size_t klen = strlen(k);
        put_head(e, head_string, klen);
        nectar__ipc_buf_put(e->out, k, klen);
        enc_value(e, o->v.dict.items[i].val);
    }
}

static void enc_value(struct enc *e, const nectar_ipc_obj_t *o)
{
    unsigned char tmp[9];
    switch (o->type) {
    case NECTAR_IPC_NULL:
        put_simple(e, cbor_encode_null);
        break;
    case NECTAR_IPC_BOOL:
        put_simple(e, o->v.b ? enc_true : enc_false);
        break;
    case NECTAR_IPC_INT64:
        put_int(e, o->v.i);
        break;
    case NECTAR_IPC_UINT64:
        put_head(e, cbor_encode_tag, TAG_UINT64);
        put_head(e, cbor_encode_uint, o->v.u);
        break;
    case NECTAR_IPC_DOUBLE:
        nectar__ipc_buf_put(e->out, tmp,
                            cbor_encode_double(o->v.d, tmp, sizeof(tmp)));
        break;
    case NECTAR_IPC_STRING:
        put_head(e, head_string, o->v.bytes.len);
        nectar__ipc_buf_put(e->out, o->v.bytes.p, o->v.bytes.len);
        break;
    case NECTAR_IPC_DATA:
        put_head(e, head_bytes, o->v.bytes.len);
        nectar__ipc_buf_put(e->out, o->v.bytes.p, o->v.bytes.len);
        break;
    case NECTAR_IPC_DATE:
        put_head(e, cbor_encode_tag, TAG_DATE);
        put_int(e, o->v.i);
        break;
    case NECTAR_IPC_UUID:
        put_head(e, cbor_encode_tag, TAG_UUID);
        put_head(e, head_bytes, 16);
        nectar__ipc_buf_put(e->out, o->v.uuid, 16);
        break;
    case NECTAR_IPC_FD:
        enc_fd(e, o);
        break;
    default:
        enc_container(e, o);
        break;
    }
}

int nectar__ipc_encode(const nectar_ipc_obj_t *obj, struct ipc_buf *out,
                       int *fds, size_t *nfds, nectar_error_t *err)
{
    size_t start = out->len;
    struct enc e = {.out = out, .fds = fds, .nfds = 0, .rc = 0, .err = err};
    if (obj == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ipc: NULL value");
    /* Values cannot exceed the depth limit (the builders refuse), so this
     * recursion is bounded by NECTAR_IPC_MAX_DEPTH. */
    enc_value(&e, obj);
    if (e.rc != 0)
        return e.rc;
    if (out->oom)
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    if (out->len - start > NECTAR_IPC_MAX_MESSAGE)
        return nectar_error_set(err, NECTAR_ELIMIT,
                                "ipc: encoded message is %zu bytes, the "
                                "limit is %u",
                                out->len - start, NECTAR_IPC_MAX_MESSAGE);
    if (nfds != NULL)
        *nfds = e.nfds;
    return 0;
}

/* ---- decoding -------------------------------------------------------- */

struct frame {
    nectar_ipc_obj_t *container;
    size_t remaining; /* items (arrays) or entries (maps) still to come */
    char *key;        /* maps: key read, value pending */
};

struct dec {
    size_t depth; /* open containers */
    nectar_ipc_obj_t *root;
    bool have_tag;
    uint64_t tag;
    size_t left;   /* input bytes not yet consumed */
    int callbacks; /* callbacks run during the current item */
    const int *fds;
    size_t nfds;
    int rc;
    nectar_error_t *err;
    /* Last, so set-up only clears the fields above; entries are written
     * before they are read. */
    struct frame stack[NECTAR_IPC_MAX_DEPTH + 1];
};

static void fail(struct dec *d, int code, const char *what)
{
    if (d->rc == 0)
        d->rc = nectar_error_set(d->err, code, "ipc decode: %s", what);
}

static void frame_pop_done(struct dec *d);

/* Attaches a finished value to the open container (or makes it the root).
 * Consumes v. */
static void attach(struct dec *d, nectar_ipc_obj_t *v)
{
    if (v == NULL) {
        fail(d, NECTAR_ENOMEM, "out of memory");
        return;
    }
    if (d->depth == 0) {
        d->root = v;
        return;
    }
    struct frame *f = &d->stack[d->depth - 1];
    int rc;
    if (f->container->type == NECTAR_IPC_ARRAY) {
        rc = nectar_ipc_array_append(f->container, v, d->err);
    } else if (f->key == NULL) {
        nectar_ipc_release(v);
        fail(d, NECTAR_ETYPE, "dictionary key is not a text string");
        return;
    } else if (nectar_ipc_dict_get(f->container, f->key) != NULL) {
        nectar_ipc_release(v);
        fail(d, NECTAR_EPARSE, "duplicate dictionary key");
        return;
    } else {
        rc = nectar__ipc_dict_set_owned(f->container, f->key, v, d->err);
        f->key = NULL;
    }
    if (rc != 0) {
        d->rc = rc;
        return;
    }
    f->remaining--;
    if (f->remaining == 0)
        frame_pop_done(d);
}

static void frame_pop_done(struct dec *d)
{
    d->depth--;
    attach(d, d->stack[d->depth].container);
}

/* Common prologue of every callback: counts it, refuses a second root and
 * a dangling tag where one is not allowed. */
static bool begin(struct dec *d, bool tag_ok)
{
    d->callbacks++;
    if (d->rc != 0)
        return false;
    if (d->root != NULL) {
        fail(d, NECTAR_EPARSE, "trailing data after the value");
        return false;
    }
    if (d->have_tag && !tag_ok) {
        fail(d, NECTAR_ETYPE, "tag on an item of the wrong type");
        return false;
    }
    if (d->depth > NECTAR_IPC_MAX_DEPTH) {
        fail(d, NECTAR_ELIMIT, "nesting deeper than 256");
        return false;
    }
    return true;
}

static bool expecting_key(const struct dec *d)
{
    if (d->depth == 0)
        return false;
    const struct frame *f = &d->stack[d->depth - 1];
    return f->container->type == NECTAR_IPC_DICT && f->key == NULL;
}

/* begin() for an item that can only be a value: where a dictionary key
 * is due it fails, since keys must be text strings (cb_text). */
static bool begin_value(struct dec *d, bool tag_ok)
{
    if (!begin(d, tag_ok))
        return false;
    if (expecting_key(d)) {
        fail(d, NECTAR_ETYPE, "dictionary key is not a text string");
        return false;
    }
    return true;
}

static void on_uint(struct dec *d, uint64_t v)
{
    if (!begin_value(d, true))
        return;
    bool tagged = d->have_tag;
    d->have_tag = false;
    if (!tagged) {
        if (v > INT64_MAX)
            fail(d, NECTAR_ETYPE, "untagged integer above INT64_MAX");
        else
            attach(d, nectar_ipc_int64((int64_t)v));
        return;
    }
    switch (d->tag) {
    case TAG_UINT64:
        attach(d, nectar_ipc_uint64(v));
        break;
    case TAG_DATE:
        if (v > INT64_MAX)
            fail(d, NECTAR_ETYPE, "date out of int64 range");
        else
            attach(d, nectar_ipc_date((int64_t)v));
        break;
    case TAG_FD:
        if (v >= d->nfds) {
            fail(d, NECTAR_EPARSE, "fd index without a passed descriptor");
        } else {
            int fd = fcntl(d->fds[v], F_DUPFD_CLOEXEC, 0);
            if (fd < 0) {
                fail(d, NECTAR_EPARSE, "bad passed descriptor");
                return;
            }
            nectar_ipc_obj_t *o = nectar__ipc_fd_adopt(fd);
            if (o == NULL)
                close(fd);
            attach(d, o);
        }
        break;
    default:
        fail(d, NECTAR_ETYPE, "tag not allowed on an unsigned integer");
        break;
    }
}

static void on_negint(struct dec *d, uint64_t v)
{
    if (!begin_value(d, true))
        return;
    bool tagged = d->have_tag;
    d->have_tag = false;
    if (tagged && d->tag != TAG_DATE) {
        fail(d, NECTAR_ETYPE, "tag not allowed on a negative integer");
        return;
    }
    if (v > INT64_MAX) {
        fail(d, NECTAR_ETYPE, "negative integer below INT64_MIN");
        return;
    }
    int64_t i = -1 - (int64_t)v;
    attach(d, tagged ? nectar_ipc_date(i) : nectar_ipc_int64(i));
}

/* libcbor reports each integer width through its own callback type;
 * these adapters funnel them into on_uint / on_negint. */
static void cb_u8(void *c, uint8_t v)
{
    on_uint(c, v);
}
static void cb_u16(void *c, uint16_t v)
{
    on_uint(c, v);
}
static void cb_u32(void *c, uint32_t v)
{
    on_uint(c, v);
}
static void cb_u64(void *c, uint64_t v)
{
    on_uint(c, v);
}
static void cb_n8(void *c, uint8_t v)
{
    on_negint(c, v);
}
static void cb_n16(void *c, uint16_t v)
{
    on_negint(c, v);
}
static void cb_n32(void *c, uint32_t v)
{
    on_negint(c, v);
}
static void cb_n64(void *c, uint64_t v)
{
    on_negint(c, v);
}

static void cb_text(void *c, cbor_data p, size_t len)
{
    struct dec *d = c;
    if (!begin(d, false))
        return;
    if (!nectar__ipc_utf8_ok((const char *)p, len)) {
        fail(d, NECTAR_EPARSE, "text string is not UTF-8 without NUL");
        return;
    }
    if (expecting_key(d)) {
        char *k = nectar_strndup((const char *)p, len);
        if (k == NULL)
            fail(d, NECTAR_ENOMEM, "out of memory");
        d->stack[d->depth - 1].key = k;
        return;
    }
    attach(d, nectar__ipc_string_checked((const char *)p, len));
}

static void cb_bytes(void *c, cbor_data p, size_t len)
{
    struct dec *d = c;
    if (!begin_value(d, true))
        return;
    bool tagged = d->have_tag;
    d->have_tag = false;
    if (!tagged) {
        attach(d, nectar_ipc_data(p, len));
        return;
    }
    if (d->tag != TAG_UUID || len != 16) {
        fail(d, NECTAR_ETYPE, "tagged byte string is not a 16-byte uuid");
        return;
    }
    attach(d, nectar_ipc_uuid(p));
}

static void open_container(struct dec *d, size_t n, bool is_map)
{
    if (!begin_value(d, false))
        return;
    /* Every item takes at least one byte (two per map entry), so a count
     * the remaining input cannot hold is a lie: reject it before it can
     * size anything. */
    if (n > NECTAR_IPC_MAX_ELEMENTS || n > d->left / (is_map ? 2 : 1)) {
        fail(d, NECTAR_ELIMIT, "container count over the limit or input");
        return;
    }
    if (d->depth >= NECTAR_IPC_MAX_DEPTH && n != 0) {
        fail(d, NECTAR_ELIMIT, "nesting deeper than 256");
        return;
    }
    nectar_ipc_obj_t *o = is_map ? nectar_ipc_dict() : nectar_ipc_array();
    if (o == NULL) {
        fail(d, NECTAR_ENOMEM, "out of memory");
        return;
    }
    if (n == 0) {
        attach(d, o);
        return;
    }
    d->stack[d->depth++] = (struct frame){.container = o, .remaining = n};
}

static void cb_array(void *c, size_t n)
{
    open_container(c, n, false);
}
static void cb_map(void *c, size_t n)
{
    open_container(c, n, true);
}

static void cb_tag(void *c, uint64_t tag)
{
    struct dec *d = c;
    if (!begin(d, false))
        return;
    if (tag != TAG_UUID && tag != TAG_UINT64 && tag != TAG_DATE &&
        tag != TAG_FD) {
        fail(d, NECTAR_ETYPE, "unknown tag");
        return;
    }
    d->have_tag = true;
    d->tag = tag;
}

static void on_double(struct dec *d, double v)
{
    if (begin_value(d, false))
        attach(d, nectar_ipc_double(v));
}

static void cb_f2(void *c, float v)
{
    on_double(c, v);
}
static void cb_f4(void *c, float v)
{
    on_double(c, v);
}
static void cb_f8(void *c, double v)
{
    on_double(c, v);
}

static void cb_null(void *c)
{
    struct dec *d = c;
    if (begin_value(d, false))
        attach(d, nectar_ipc_null());
}

static void cb_bool(void *c, bool v)
{
    struct dec *d = c;
    if (begin_value(d, false))
        attach(d, nectar_ipc_bool(v));
}

static void cb_refuse(void *c)
{
    struct dec *d = c;
    d->callbacks++;
    fail(d, NECTAR_EPARSE,
         "indefinite length, undefined or break item (not allowed)");
}

static const struct cbor_callbacks dec_callbacks = {
    .uint8 = cb_u8,
    .uint16 = cb_u16,
    .uint32 = cb_u32,
    .uint64 = cb_u64,
    .negint8 = cb_n8,
    .negint16 = cb_n16,
    .negint32 = cb_n32,
    .negint64 = cb_n64,
    .byte_string = cb_bytes,
    .byte_string_start = cb_refuse,
    .string = cb_text,
    .string_start = cb_refuse,
    .array_start = cb_array,
    .indef_array_start = cb_refuse,
    .map_start = cb_map,
    .indef_map_start = cb_refuse,
    .tag = cb_tag,
    .float2 = cb_f2,
    .float4 = cb_f4,
    .float8 = cb_f8,
    .undefined = cb_refuse,
    .null = cb_null,
    .boolean = cb_bool,
    .indef_break = cb_refuse,
};

static void dec_cleanup(struct dec *d)
{
    for (size_t i = 0; i < d->depth; i++) {
        nectar_free(d->stack[i].key);
        nectar_ipc_release(d->stack[i].container);
    }
    d->depth = 0;
    nectar_ipc_release(d->root);
    d->root = NULL;
}

/* Runs the streaming decoder item by item until the input is used up. */
static void dec_run(struct dec *d, const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (off < len && d->rc == 0) {
        d->left = len - off;
        d->callbacks = 0;
        struct cbor_decoder_result r =
            cbor_stream_decode(p + off, len - off, &dec_callbacks, d);
        if (r.status == CBOR_DECODER_NEDATA) {
            fail(d, NECTAR_EPARSE, "truncated input");
            return;
        }
        /* Exactly one callback per item: anything else is an item the
         * format does not allow (reserved or unassigned simple values). */
        if (r.status != CBOR_DECODER_FINISHED || r.read == 0 ||
            d->callbacks != 1) {
            fail(d, NECTAR_EPARSE, "malformed or unsupported CBOR item");
            return;
        }
        off += r.read;
    }
}

int nectar__ipc_decode(const uint8_t *p, size_t len, const int *fds,
                       size_t nfds, nectar_ipc_obj_t **out, nectar_error_t *err)
{
    *out = NULL;
    if (len > NECTAR_IPC_MAX_MESSAGE)
        return nectar_error_set(err, NECTAR_ELIMIT,
                                "ipc decode: message over the size limit");
    /* About 6 KiB: on the stack, as zeroing a heap copy per message would
     * cost more than the decoding of a small one. */
    struct dec dec_storage;
    struct dec *d = &dec_storage;
    memset(d, 0, offsetof(struct dec, stack));
    d->fds = fds;
    d->nfds = nfds;
    d->err = err;
    dec_run(d, p, len);
    if (d->rc == 0 && (d->depth != 0 || d->have_tag || d->root == NULL))
        fail(d, NECTAR_EPARSE, "truncated input");
    int rc = d->rc;
    if (rc == 0) {
        *out = d->root;
        d->root = NULL;
    }
    dec_cleanup(d);
    return rc;
}
