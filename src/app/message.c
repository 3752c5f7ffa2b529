/* message.c - answering app messages (ping and stats) for the built-in
 * handler; see message.h.  Richer control goes over IPC, not here. */
#include "app/message.h"

#include <jansson.h>
#include <string.h>

#include "common/alloc.h"

char *nectar__app_json_dump(const json_t *json, size_t *len)
{
    const size_t flags = JSON_COMPACT;
    size_t need;
    char *out;

    if (json == NULL)
        return NULL;
    /* Sizing pass, then the real one, so the buffer comes from our own
     * allocator rather than jansson's. */
    need = json_dumpb(json, NULL, 0, flags);
    if (need == 0)
        return NULL;
    out = nectar_malloc(need + 1);
    if (out == NULL)
        return NULL;
    if (json_dumpb(json, out, need, flags) != need) {
        nectar_free(out);
        return NULL;
    }
    out[need] = '\0';
    *len = need;
    return out;
}

/* A copy of obj[key], or JSON null when absent. */
static json_t *echo(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    return v != NULL ? json_deep_copy(v) : json_null();
}

static json_t *pong(json_t *req, size_t len)
{
    return json_pack("{s:s, s:s, s:I, s:o, s:o}", "op", "pong", "source",
                     APP_PONG_SOURCE, "received_bytes", (json_int_t)len,
                     "acknowledged_source", echo(req, "source"),
                     "acknowledged_sent_at", echo(req, "sent_at"));
}

int nectar__app_message_reply(const uint8_t *msg, size_t len,
                              const struct app_stats *stats, uint8_t **out,
                              size_t *out_len)
{
    json_t *req, *reply = NULL;
    const char *op;

    *out = NULL;
    *out_len = 0;
    if (msg == NULL || len == 0)
        return 0;
    req = json_loadb((const char *)msg, len, JSON_DECODE_ANY, NULL);
    if (req == NULL)
        return 0;
    op = json_string_value(json_object_get(req, "op"));
    if (op != NULL && strcmp(op, "ping") == 0)
        reply = pong(req, len);
    else if (op != NULL && strcmp(op, "stats") == 0)
        reply = nectar__app_stats_json(stats);
    else {
        json_decref(req);
        return 0;
    }
    json_decref(req);
    *out = (uint8_t *)nectar__app_json_dump(reply, out_len);
    json_decref(reply);
    if (*out == NULL) {
        *out_len = 0;
        return NECTAR_ENOMEM;
    }
    return 0;
}
