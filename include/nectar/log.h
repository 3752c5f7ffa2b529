/*
 * log.h - nectar's logging front.
 *
 * Default sink: one line per event on stderr, "LEVEL tag: message".  The
 * level comes from NECTAR_LOG (error|warn|info|debug|trace, default info)
 * when the first message is logged, or from nectar_log_set_level.
 * Thread-safety: callable from any thread; the sink runs on the logging
 * thread and must be thread-safe itself.  Set the sink once, at start-up.
 */
#ifndef NECTAR_LOG_H
#define NECTAR_LOG_H

#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nectar_log_level {
    NECTAR_LOG_ERROR = 0,
    NECTAR_LOG_WARN = 1,
    NECTAR_LOG_INFO = 2,
    NECTAR_LOG_DEBUG = 3,
    NECTAR_LOG_TRACE = 4,
} nectar_log_level_t;

/* Receives each formatted line (no trailing newline), borrowed for the call. */
typedef void (*nectar_log_sink_cb)(void *ctx, nectar_log_level_t level,
                                   const char *tag, const char *line);

NECTAR_API void nectar_log_set_level(nectar_log_level_t level);
NECTAR_API nectar_log_level_t nectar_log_get_level(void);
/* sink == NULL restores the stderr sink. */
NECTAR_API void nectar_log_set_sink(nectar_log_sink_cb sink, void *ctx);
NECTAR_API void nectar_log(nectar_log_level_t level, const char *tag,
                           const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
