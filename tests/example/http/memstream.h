/*
 * memstream.h - an in-memory svc_stream_t pair (test double): what one end
 * writes, the other end reads, on one uv loop, with the stream.h contract
 * (FIFO all-or-nothing writes completing on the loop, borrowed buffers,
 * read_stop as back-pressure, shutdown as EOF after queued bytes).
 *
 * Threading: one loop thread.  Helpers below collect what an end reads
 * and send copies of test data.
 */
#ifndef NECTAR_TEST_MEMSTREAM_H
#define NECTAR_TEST_MEMSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/stream.h"

/* Create a connected pair on loop.  Both ends are closed with svc_close. */
void mem_pair(uv_loop_t *loop, svc_stream_t **a, svc_stream_t **b);

/* Deliver reads to s in pieces of at most n bytes (0: whole writes). */
void mem_set_slice(svc_stream_t *s, size_t n);

/* Everything an end has read. */
typedef struct mem_sink {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool eof;
    int err;
    unsigned reads;
} mem_sink_t;

/* Start reading s into sink (sink must outlive the reading). */
void mem_collect(svc_stream_t *s, mem_sink_t *sink);
void mem_sink_free(mem_sink_t *sink);
/* NUL-terminated copy view: sink data as a string (appends a NUL). */
const char *mem_sink_str(mem_sink_t *sink);

/* Write a copy of p (freed when the write completes). */
int mem_send(svc_stream_t *s, const void *p, size_t n);
int mem_send_str(svc_stream_t *s, const char *str);

/* Run loop until cond(arg) is nonzero or timeout_ms passes; returns the
 * last cond value. */
int mem_run_until(uv_loop_t *loop, int (*cond)(void *), void *arg,
                  int timeout_ms);
/* Run the loop for a few turns (lets pending callbacks settle). */
void mem_run_turns(uv_loop_t *loop, int turns);
/* Close every handle left on the loop and run it dry; returns the number
 * of handles that were still open (0 = clean). */
int mem_loop_close(uv_loop_t *loop);

#endif
