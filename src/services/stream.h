/*
 * stream.h - the byte-stream interface per-flow services compose over.
 *
 * A TCP service sees two nectar_stream_t (ingress, egress).  Layers such as
 * TLS termination, peeked-byte replay and HTTP relays need the same shape
 * over other transports, so services are written against svc_stream_t:
 * a small vtable with libuv-like semantics.  Implementations:
 *   stream.c        svc_stream_wrap()    over a nectar_stream_t
 *   stream.c        svc_stream_prefix()  replays peeked bytes, then reads on
 *   tls.c           TLS client/server over another svc_stream_t
 *
 * Threading: every call and every callback on the owning flow's loop
 * thread.  Read contract as nectar_stream_read_cb (nread > 0 data borrowed
 * until return; NECTAR_EOF; other negative = error; nothing after EOF or
 * error).  Writes are all-or-nothing, complete in FIFO order on the loop,
 * never inside the write call; buf is borrowed until the write callback.
 * close() releases the stream object; callbacks never run after it, and
 * pending writes are dropped without their callbacks.
 */
#ifndef NECTAR_SERVICES_STREAM_H
#define NECTAR_SERVICES_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "nectar/handler.h"

typedef struct svc_stream svc_stream_t;

typedef void (*svc_read_cb)(svc_stream_t *s, ssize_t nread,
                            const uint8_t *buf, void *data);
typedef void (*svc_write_cb)(svc_stream_t *s, int status, void *data);

typedef struct svc_stream_ops {
    const char *name;
    int (*read_start)(svc_stream_t *s, svc_read_cb cb, void *data);
    int (*read_stop)(svc_stream_t *s);
    int (*write)(svc_stream_t *s, const uint8_t *buf, size_t len,
                 svc_write_cb cb, void *data);
    /* Close the write half after queued writes; idempotent. */
    int (*shutdown)(svc_stream_t *s);
    /* Bytes queued and not yet accepted by the layer below. */
    size_t (*write_queue_size)(const svc_stream_t *s);
    void (*close)(svc_stream_t *s);
} svc_stream_ops_t;

struct svc_stream {
    const svc_stream_ops_t *ops;
    uv_loop_t *loop;
};

static inline int svc_read_start(svc_stream_t *s, svc_read_cb cb, void *d)
{
    return s->ops->read_start(s, cb, d);
}
static inline int svc_read_stop(svc_stream_t *s)
{
    return s->ops->read_stop(s);
}
static inline int svc_write(svc_stream_t *s, const uint8_t *buf, size_t len,
                            svc_write_cb cb, void *d)
{
    return s->ops->write(s, buf, len, cb, d);
}
static inline int svc_shutdown(svc_stream_t *s)
{
    return s->ops->shutdown(s);
}
static inline size_t svc_write_queue_size(const svc_stream_t *s)
{
    return s->ops->write_queue_size(s);
}
static inline void svc_close(svc_stream_t *s)
{
    s->ops->close(s);
}

/* Wrap a flow stream.  Returns NULL on allocation failure.  Closing the
 * wrapper does not finish the flow. */
svc_stream_t *svc_stream_wrap(nectar_stream_t *s);

/* True when s copies the bytes inside svc_write, so `buf` need only stay
 * valid for the call (the wrap and prefix-over-wrap streams do).  Lets a
 * relay forward a borrowed read buffer without copying it first. */
bool svc_stream_copies_writes(const svc_stream_t *s);

/* A stream that first delivers a copy of `bytes` (already read from
 * `inner`, e.g. by a protocol peek), then inner's own reads.  Writes,
 * shutdown go to inner.  Takes ownership of inner (closes it on close). */
svc_stream_t *svc_stream_prefix(svc_stream_t *inner, const uint8_t *bytes,
                                size_t len);

/*
 * Bidirectional relay between a and b: bytes read from one are written to
 * the other with back-pressure (reading pauses while a write is pending
 * beyond `max_pending` bytes), EOF on one side shuts down the other's write
 * half (half-close preserved), done_cb runs once when both directions have
 * ended or on error (status 0 or a NECTAR_* code).  The relay does not
 * close a or b; the caller does in done_cb.  Returns NULL on allocation
 * failure.
 */
typedef struct svc_relay svc_relay_t;
typedef void (*svc_relay_done_cb)(svc_relay_t *r, int status, void *data);
svc_relay_t *svc_relay_start(svc_stream_t *a, svc_stream_t *b,
                             size_t max_pending, svc_relay_done_cb done_cb,
                             void *data);
/* Stop relaying (no more callbacks); frees the relay. */
void svc_relay_free(svc_relay_t *r);
uint64_t svc_relay_bytes(const svc_relay_t *r, int a_to_b);

#endif
