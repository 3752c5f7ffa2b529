/* log.c - level filter and sink for nectar_log. */
#include "nectar/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int current_level = -1; /* -1: not read from NECTAR_LOG yet */
static nectar_log_sink_cb sink_fn;
static void *sink_ctx;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG",
                                          "TRACE"};

static int level_from_env(void)
{
    const char *v = getenv("NECTAR_LOG");
    if (v == NULL)
        return NECTAR_LOG_INFO;
    for (int i = 0; i < 5; i++) {
        if (strcasecmp(v, level_names[i]) == 0)
            return i;
    }
    return NECTAR_LOG_INFO;
}

nectar_log_level_t nectar_log_get_level(void)
{
    int lvl = atomic_load(&current_level);
    if (lvl < 0) {
        lvl = level_from_env();
        atomic_store(&current_level, lvl);
    }
    return (nectar_log_level_t)lvl;
}

void nectar_log_set_level(nectar_log_level_t level)
{
    atomic_store(&current_level, (int)level);
}

void nectar_log_set_sink(nectar_log_sink_cb sink, void *ctx)
{
    sink_ctx = ctx;
    sink_fn = sink;
}

void nectar_log(nectar_log_level_t level, const char *tag, const char *fmt,
                ...)
{
    if ((int)level > (int)nectar_log_get_level())
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (sink_fn != NULL) {
        sink_fn(sink_ctx, level, tag, line);
        return;
    }
    int idx = (level >= 0 && level <= 4) ? (int)level : 4;
    fprintf(stderr, "%s %s: %s\n", level_names[idx], tag ? tag : "-", line);
}
