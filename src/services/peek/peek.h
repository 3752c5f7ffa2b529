/*
 * peek.h - read the first bytes of an svc_stream_t until a judge decides
 * what protocol it carries, a byte limit is reached, the stream ends or a
 * timeout passes; then stop reading and hand the bytes over, so they can
 * be replayed (svc_stream_prefix) or flushed to the other side.
 *
 * Threading: the stream's loop thread only.
 */
#ifndef NECTAR_SERVICES_PEEK_PEEK_H
#define NECTAR_SERVICES_PEEK_PEEK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/stream.h"

typedef struct svc_peek svc_peek_t;

/* Called after every read with all bytes so far; `final` is true when no
 * more will come (timeout, limit, EOF): the judge must then decide.
 * Returns true once decided. */
typedef bool (*svc_peek_judge_fn)(const uint8_t *buf, size_t len, bool final,
                                  void *data);

/*
 * The peek is over.  status: 0 (the judge decided), NECTAR_ETIMEDOUT,
 * NECTAR_ELIMIT (max_bytes read), NECTAR_EOF or another read error (the
 * stream ended: it will deliver nothing more).  buf (len bytes, may be
 * NULL when empty) is handed over: free it with nectar_free.  The peek
 * object is freed after the callback; reading is stopped.
 */
typedef void (*svc_peek_done_cb)(int status, uint8_t *buf, size_t len,
                                 void *data);

/* Start peeking s (borrowed; it must outlive the peek).  timeout_ms 0:
 * none.  NULL on ENOMEM (nothing started). */
svc_peek_t *svc_peek_start(svc_stream_t *s, uint64_t timeout_ms,
                           size_t max_bytes, svc_peek_judge_fn judge,
                           svc_peek_done_cb done, void *data);

/* Stop now without a callback; returns the bytes read so far (hand-over,
 * *len set; NULL when none). */
uint8_t *svc_peek_cancel(svc_peek_t *p, size_t *len);

#endif
