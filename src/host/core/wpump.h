/*
 * wpump.h - the TCP write pump shared by the client write pump (engine ->
 * app socket) and the egress write pump (engine -> remote socket), ne-host
 * §4.6 "Shared TCP write-pump core".
 *
 * State chart (loop side):
 *
 *   PENDING --open--> OPEN --close_when_drained--> DRAINING --empty--> closed
 *      \__________________________________________/          (drained cb)
 *   any --cancel / write error--> closed (queue dropped, pending = 0)
 *
 * Invariant: closed => queue empty and pending == 0 (asserted in flush).
 *
 * Threads: wpump_enqueue is called on engine threads (inside
 * on_server_bytes / on_write_to_egress) and never blocks beyond the pump
 * mutex; wpump_push from the loop (forwarder); everything else on the
 * flow's loop thread.
 */
#ifndef NECTAR_HOST_CORE_WPUMP_H
#define NECTAR_HOST_CORE_WPUMP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "nectar/ne_abi.h"

/* One queued buffer.  Read buffers are allocated as chunks too, so a read
 * can be handed to the engine (owned view) or to a pump (forwarder)
 * without a copy. */
struct wchunk {
    struct wchunk *next;
    size_t len;
    uint8_t data[];
};

/* Read buffer size: the spec's maximum receive (min 1, max 65 536). */
#define WCHUNK_READ_SIZE 65536
/* At most this many chunks go into one writev. */
#define WPUMP_MAX_IOV 32

struct wchunk *wchunk_new(size_t cap);
/* Shrink a mostly empty read buffer so a queued small read does not pin
 * 64 KiB; returns the (possibly moved) chunk. */
struct wchunk *wchunk_fit(struct wchunk *c);
void wchunk_free(struct wchunk *c);
/* RamaBytesOwnedView release thunk: frees the chunk, any thread. */
void wchunk_release(void *owner);

enum wpump_lifecycle { WP_PENDING, WP_OPEN, WP_DRAINING };

struct wpump;

/* One writev in flight: allocated per write so idle pumps stay small. */
struct wbatch {
    uv_write_t req;
    struct wpump *pump;
    struct wchunk *chunks;
    size_t total;
    uv_buf_t bufs[];
};

/* Callbacks, all on the loop thread, never with the pump mutex held. */
struct wpump_ops {
    /* Pending bytes fell under the cap after a PAUSED (engine = true) or
     * after the forwarder stopped reading (fwd = true). */
    void (*drain_edge)(struct wpump *p, bool engine, bool fwd);
    /* A write completed: n bytes reached the socket. */
    void (*written)(struct wpump *p, size_t n);
    /* A write failed (not after cancel): err is a uv/-errno code. */
    void (*error)(struct wpump *p, int err);
};

typedef void (*wpump_drained_cb)(struct wpump *p);

struct wpump {
    pthread_mutex_t lock;
    /* guarded by lock */
    bool closed;
    size_t pending; /* accepted but not yet handed to the socket */
    bool paused_signaled;
    bool fwd_waiting;
    struct wchunk *head, *tail;
    /* fixed after init */
    size_t cap;
    void *owner;
    const struct wpump_ops *ops;
    void (*post_flush)(void *owner); /* ask the loop to run wpump_flush */
    atomic_uint_fast64_t *paused_count; /* optional: PAUSED returns */
    atomic_uint_fast64_t *activity;     /* optional: ms of the last write */
    /* guarded by lock: the direct-write fast path (see wpump_enqueue) */
    int direct_fd;      /* >= 0 while open and not draining */
    bool busy;          /* a loop-side write is in flight */
    uint64_t direct_written;
    /* loop thread only */
    enum wpump_lifecycle lifecycle;
    bool writing;
    uv_stream_t *stream;
    struct wbatch *inflight; /* the one write in flight (heap: an idle
                                pump carries no write request) */
    uint64_t written;
    wpump_drained_cb drained;
};

void wpump_init(struct wpump *p, size_t cap, void *owner,
                const struct wpump_ops *ops, void (*post_flush)(void *));
void wpump_destroy(struct wpump *p);

/* Engine side: ACCEPTED (copied or written), PAUSED (not taken; a drain
 * edge will follow) or CLOSED.  The first chunk is always accepted.
 * Fast path: when the pump is open, its queue empty and no write in
 * flight, the bytes are sent right here with a non-blocking send() (under
 * the pump mutex, so FIFO order holds); only what the socket does not take
 * is queued for the loop.  This saves the hop to the flow's loop, which is
 * most of the relay's added latency. */
RamaTcpDeliverStatus wpump_enqueue(struct wpump *p, const uint8_t *buf,
                                   size_t len);

/* Forwarder side (loop): always takes c.  Returns true when the pump is
 * now over its budget: the caller should stop reading until drain_edge
 * with fwd = true.  Frees c and returns false when the pump is closed. */
bool wpump_push(struct wpump *p, struct wchunk *c);

/* Loop side. */
void wpump_open(struct wpump *p, uv_stream_t *stream);
void wpump_flush(struct wpump *p);
/* Call cb once the queue drained (immediately when already closed). */
void wpump_close_when_drained(struct wpump *p, wpump_drained_cb cb);
/* Synchronously closed; queued bytes dropped.  The drained callback (if
 * stored) fires so a waiting teardown chain always resolves. */
void wpump_cancel(struct wpump *p);
bool wpump_is_closed(struct wpump *p);
/* Bytes that reached the socket (loop writes and direct writes). */
uint64_t wpump_written(struct wpump *p);

#endif
