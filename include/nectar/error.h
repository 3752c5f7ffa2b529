/*
 * error.h - nectar error codes.
 *
 * Every fallible nectar function returns 0 on success or a negative code
 * from this table.  Where an errno matches, the code is -errno, so
 * strerror-style reporting of OS failures keeps working.  One table
 * (NECTAR_ERRNO_MAP) drives the enum, nectar_strerror and nectar_err_name.
 *
 * Thread-safety: all functions here are pure and callable from any thread.
 */
#ifndef NECTAR_ERROR_H
#define NECTAR_ERROR_H

#include <errno.h>
#include <stddef.h>

#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message).  Values below -4000 are nectar's own. */
#define NECTAR_ERRNO_MAP(X)                                                 \
    X(EINVAL, -EINVAL, "invalid argument")                                  \
    X(ENOMEM, -ENOMEM, "out of memory")                                     \
    X(ENOENT, -ENOENT, "not found")                                         \
    X(EEXIST, -EEXIST, "already exists")                                    \
    X(EACCES, -EACCES, "permission denied")                                 \
    X(EPERM, -EPERM, "operation not permitted")                             \
    X(EIO, -EIO, "i/o error")                                               \
    X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                  \
    X(EBUSY, -EBUSY, "resource busy")                                       \
    X(ETIMEDOUT, -ETIMEDOUT, "timed out")                                   \
    X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                    \
    X(ECONNRESET, -ECONNRESET, "connection reset")                          \
    X(EPIPE, -EPIPE, "broken pipe")                                         \
    X(ECANCELED, -ECANCELED, "operation canceled")                          \
    X(EMSGSIZE, -EMSGSIZE, "message too long")                              \
    X(ENOTCONN, -ENOTCONN, "not connected")                                 \
    X(EADDRINUSE, -EADDRINUSE, "address already in use")                    \
    X(ENOSYS, -ENOSYS, "function not implemented")                          \
    X(ENOTSUP, -4001, "operation not supported by this backend")            \
    X(EPARSE, -4002, "malformed input")                                     \
    X(ETYPE, -4003, "wrong type")                                           \
    X(ELIMIT, -4004, "limit exceeded")                                      \
    X(EAUTH, -4005, "authentication failed (data tampered or wrong key)")   \
    X(ECRYPTO, -4006, "cryptographic library failure")                      \
    X(ETPM, -4007, "TPM failure")                                           \
    X(EPEER, -4008, "peer requirement failed")                              \
    X(ECLOSED, -4009, "closed")                                             \
    X(ESTATE, -4010, "invalid state for this operation")                    \
    X(ECONFIG, -4011, "invalid configuration")                              \
    X(EVERSION, -4012, "unsupported version")                               \
    X(EREMOTE, -4100, "remote peer reported an error")                     \
    X(EOF, -4095, "end of file")

typedef enum nectar_errno {
#define NECTAR_ERR_ENUM(name, value, msg) NECTAR_##name = (value),
    NECTAR_ERRNO_MAP(NECTAR_ERR_ENUM)
#undef NECTAR_ERR_ENUM
} nectar_errno_t;

/* Human-readable message for a code; never NULL.  Unknown negative codes
 * are treated as -errno and described with strerror. */
NECTAR_API const char *nectar_strerror(int code);

/* Symbolic name ("NECTAR_EINVAL"); "NECTAR_UNKNOWN" for codes not in the
 * table.  Never NULL. */
NECTAR_API const char *nectar_err_name(int code);

/*
 * nectar_error_t - a code plus a message, filled by functions that take an
 * optional `nectar_error_t *err` out-parameter.  `native` keeps the cause
 * from below (errno, OSStatus, TSS2_RC, OpenSSL error) for logs.
 */
typedef struct nectar_error {
    int code;
    long native;
    char message[256];
} nectar_error_t;

/* Set *err (if err != NULL) from a printf-style message; returns code so a
 * caller can `return nectar_error_set(err, NECTAR_EINVAL, "...")`. */
NECTAR_API int nectar_error_set(nectar_error_t *err, int code,
                                const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif /* NECTAR_ERROR_H */
