/*
 * splice.h - the Linux host's zero-copy forwarder (splice.c): joins two
 * connected TCP sockets without user-space copies, for flows the engine
 * does not look at.  One splicer = one thread serving any number of flows.
 *
 * Threads: _start may be called from any thread; the done callback runs on
 * the splicer thread (or in _free for flows still live then) and must not
 * call back into the splicer.  Ownership: _start takes both fds in every
 * case (closed on error).
 */
#ifndef NECTAR_HOST_LINUX_SPLICE_H
#define NECTAR_HOST_LINUX_SPLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/error.h"

typedef struct nectar_linux_splicer nectar_linux_splicer_t;

/* A flow ended: bytes moved client->egress and egress->client, and 0 or
 * the negative code that reset it (NECTAR_ECANCELED at _free). */
typedef void (*nectar_linux_splice_done_cb)(void *arg, uint64_t c2s,
                                            uint64_t s2c, int error);

/* Start the splicer thread.  0 or a negative code (message in *err). */
int nectar__linux_splicer_new(nectar_linux_splicer_t **out,
                              nectar_error_t *err);

/*
 * Forward between two connected, non-blocking stream sockets until both
 * directions saw EOF (each EOF is passed on as a half-close once its bytes
 * are delivered) or one fails (both sockets are then reset).  cb runs
 * exactly once when 0 is returned, never when an error is returned.
 * Errors: NECTAR_ENOMEM, -errno from pipe2/epoll_ctl.
 */
int nectar__linux_splice_start(nectar_linux_splicer_t *s, int client_fd,
                               int egress_fd, nectar_linux_splice_done_cb cb,
                               void *arg);

/* The state one direction starts in (a promoted flow's cutover). */
typedef struct nectar_linux_splice_carry {
    const uint8_t *buf; /* written to the destination before any spliced
                           byte; copied, borrowed for the call */
    size_t len;
    bool eof;   /* the source already ended: FIN after buf, no reads */
    int error;  /* with eof: reset both sockets after buf instead */
    bool done;  /* nothing to move: only shut the destination's write */
} nectar_linux_splice_carry_t;

/*
 * As _start, with carry[0] (client -> egress) and carry[1] (egress ->
 * client) describing where each direction starts; carry == NULL is _start.
 * The carryover counts in the bytes reported to cb.  Same errors, plus
 * NECTAR_EINVAL when a carry has error without eof.
 */
int nectar__linux_splice_start_carry(nectar_linux_splicer_t *s,
                                     int client_fd, int egress_fd,
                                     const nectar_linux_splice_carry_t *carry,
                                     nectar_linux_splice_done_cb cb,
                                     void *arg);

/* Flows currently forwarded (any thread; a snapshot). */
size_t nectar__linux_splicer_live(nectar_linux_splicer_t *s);

/* Stop the thread, reset and report every live flow, free.  Not from the
 * callback.  NULL is a no-op. */
void nectar__linux_splicer_free(nectar_linux_splicer_t *s);

#endif
