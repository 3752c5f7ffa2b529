/*
 * message.h - the built-in handler's app messages (the provider-message
 * channel, spec ne-engine §2.2):
 *   {"op":"ping", "source":..., "sent_at":...}  =>
 *     {"op":"pong","source":"transparent-proxy-provider",
 *      "received_bytes":N,"acknowledged_source":...,
 *      "acknowledged_sent_at":...}
 *   {"op":"stats"}  =>  the counters (stats.h)
 *   anything else, or bytes that are not a JSON object  =>  no reply.
 * Any thread; stats are read atomically.
 */
#ifndef NECTAR_APP_MESSAGE_H
#define NECTAR_APP_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "app/stats.h"

/* The `source` we report in a pong, as the reference example does. */
#define APP_PONG_SOURCE "transparent-proxy-provider"

/*
 * Build the reply to msg.  Returns 0 with *out (nectar_malloc'd, free with
 * nectar_free) and *out_len set, or with *out = NULL and *out_len = 0 when
 * there is no reply; NECTAR_ENOMEM when out of memory.
 */
int nectar__app_message_reply(const uint8_t *msg, size_t len,
                              const struct app_stats *stats, uint8_t **out,
                              size_t *out_len);

/* Serialise json compactly into a nectar_malloc'd NUL-terminated string;
 * *len excludes the NUL.  NULL when json is NULL or out of memory. */
char *nectar__app_json_dump(const struct json_t *json, size_t *len);

#endif
