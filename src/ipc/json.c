/*
 * json.c - renders an IPC value as JSON for logs and `nectarctl --json`.
 * Types JSON lacks become one-key objects ({"$data": base64}, ...).
 */
#include "ipc/ipc_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

static void json_string(struct ipc_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    nectar__ipc_buf_put(b, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            nectar__ipc_buf_put(b, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            nectar__ipc_buf_put(b, esc, 6);
        } else {
            nectar__ipc_buf_put(b, &s[i], 1);
        }
    }
    nectar__ipc_buf_put(b, "\"", 1);
}

void nectar__ipc_base64(struct ipc_buf *b, const uint8_t *p, size_t len)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        char out[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63],
                       i + 1 < len ? tbl[(v >> 6) & 63] : '=',
                       i + 2 < len ? tbl[v & 63] : '='};
        nectar__ipc_buf_put(b, out, 4);
    }
}

static void json_num(struct ipc_buf *b, const char *fmt_prefix, double d)
{
    char tmp[64];
    if (isnan(d) || isinf(d))
        snprintf(tmp, sizeof(tmp), "%s\"%s\"}", fmt_prefix,
                 isnan(d) ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"));
    else
        snprintf(tmp, sizeof(tmp), "%.17g", d);
    nectar__ipc_buf_puts(b, tmp);
}

static void json_value(struct ipc_buf *b, const nectar_ipc_obj_t *o);

static void json_container(struct ipc_buf *b, const nectar_ipc_obj_t *o)
{
    bool arr = o->type == NECTAR_IPC_ARRAY;
    nectar__ipc_buf_put(b, arr ? "[" : "{", 1);
    size_t n = nectar_ipc_count(o);
    for (size_t i = 0; i < n; i++) {
        if (i != 0)
            nectar__ipc_buf_put(b, ",", 1);
        if (arr) {
            json_value(b, o->v.arr.items[i]);
            continue;
        }
        const char *k = o->v.dict.items[i].key;
        json_string(b, k, strlen(k));
        nectar__ipc_buf_put(b, ":", 1);
        json_value(b, o->v.dict.items[i].val);
    }
    nectar__ipc_buf_put(b, arr ? "]" : "}", 1);
}

static void json_value(struct ipc_buf *b, const nectar_ipc_obj_t *o)
{
    char tmp[96];
    switch (o->type) {
    case NECTAR_IPC_NULL:
        nectar__ipc_buf_puts(b, "null");
        break;
    case NECTAR_IPC_BOOL:
        nectar__ipc_buf_puts(b, o->v.b ? "true" : "false");
        break;
    case NECTAR_IPC_INT64:
        snprintf(tmp, sizeof(tmp), "%" PRId64, o->v.i);
        nectar__ipc_buf_puts(b, tmp);
        break;
    case NECTAR_IPC_UINT64:
        snprintf(tmp, sizeof(tmp), "%" PRIu64, o->v.u);
        nectar__ipc_buf_puts(b, tmp);
        break;
    case NECTAR_IPC_DOUBLE:
        json_num(b, "{\"$double\":", o->v.d);
        break;
    case NECTAR_IPC_STRING:
        json_string(b, o->v.bytes.p, o->v.bytes.len);
        break;
    case NECTAR_IPC_DATA:
        nectar__ipc_buf_puts(b, "{\"$data\":\"");
        nectar__ipc_base64(b, (const uint8_t *)o->v.bytes.p, o->v.bytes.len);
        nectar__ipc_buf_puts(b, "\"}");
        break;
    case NECTAR_IPC_DATE:
        snprintf(tmp, sizeof(tmp), "{\"$date\":%" PRId64 "}", o->v.i);
        nectar__ipc_buf_puts(b, tmp);
        break;
    case NECTAR_IPC_UUID: {
        const uint8_t *u = o->v.uuid;
        snprintf(tmp, sizeof(tmp),
                 "{\"$uuid\":\"%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                 "%02x%02x%02x%02x%02x%02x\"}",
                 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
                 u[10], u[11], u[12], u[13], u[14], u[15]);
        nectar__ipc_buf_puts(b, tmp);
        break;
    }
    case NECTAR_IPC_FD:
        snprintf(tmp, sizeof(tmp), "{\"$fd\":%d}", o->v.fd);
        nectar__ipc_buf_puts(b, tmp);
        break;
    default:
        json_container(b, o);
        break;
    }
}

char *nectar_ipc_to_json(const nectar_ipc_obj_t *obj)
{
    struct ipc_buf b = {0};
    if (obj == NULL)
        nectar__ipc_buf_puts(&b, "null");
    else
        json_value(&b, obj);
    nectar__ipc_buf_put(&b, "", 1);
    if (b.oom) {
        nectar__ipc_buf_free(&b);
        return NULL;
    }
    return (char *)b.p;
}
