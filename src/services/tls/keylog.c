/*
 * keylog.c - NSS key log sink (see keylog.h).
 */
#include "services/tls/keylog.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "nectar/log.h"

struct tls_keylog {
    atomic_bool enabled;
    pthread_mutex_t mu; /* guards fd, hour */
    int fd;
    char *path; /* the file, or the directory when rotating */
    bool rotating;
    unsigned keep_hours;
    long long hour; /* of the open file (rotating), -1 none */
    long long (*now)(void);
};

static int ctx_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void make_index(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

tls_keylog_t *tls_keylog_new(const char *path, bool enabled)
{
    tls_keylog_t *k = nectar_calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    if (path != NULL && (k->path = nectar_strdup(path)) == NULL) {
        nectar_free(k);
        return NULL;
    }
    atomic_init(&k->enabled, enabled);
    pthread_mutex_init(&k->mu, NULL);
    k->fd = -1;
    pthread_once(&index_once, make_index);
    return k;
}

static long long wall_now(void)
{
    return (long long)time(NULL);
}

tls_keylog_t *tls_keylog_new_rotating(const char *dir, unsigned keep_hours,
                                      bool enabled)
{
    tls_keylog_t *k = tls_keylog_new(dir, enabled);
    if (k == NULL)
        return NULL;
    k->rotating = true;
    k->keep_hours = keep_hours ? keep_hours : 8;
    k->hour = -1;
    mkdir(dir, 0700);
    return k;
}

void tls_keylog_set_clock(tls_keylog_t *k, long long (*now)(void))
{
    pthread_mutex_lock(&k->mu);
    k->now = now;
    pthread_mutex_unlock(&k->mu);
}

/* sslkeylog-YYYYMMDDHH.txt for an hour number (hours since the epoch). */
static void hour_name(long long hour, char *out, size_t cap)
{
    time_t t = (time_t)(hour * 3600);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "sslkeylog-%Y%m%d%H.txt", &tm);
}

/* Deletes this sink's files of hours before `oldest`. */
static void prune(tls_keylog_t *k, long long oldest)
{
    DIR *d = opendir(k->path);
    if (d == NULL)
        return;
    char keep[64];
    hour_name(oldest, keep, sizeof(keep));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        /* Same fixed-width format: name order is time order. */
        if (strncmp(e->d_name, "sslkeylog-", 10) == 0 &&
            strlen(e->d_name) == strlen(keep) && strcmp(e->d_name, keep) < 0)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/* Opens the file for the current hour when it changed (mu held). */
static void rotate(tls_keylog_t *k)
{
    long long hour = (k->now ? k->now() : wall_now()) / 3600;
    if (hour == k->hour && k->fd >= 0)
        return;
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    char name[64], path[4096];
    hour_name(hour, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", k->path, name);
    k->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    k->hour = hour;
    prune(k, hour - (long long)k->keep_hours + 1);
}

void tls_keylog_free(tls_keylog_t *k)
{
    if (k == NULL)
        return;
    if (k->fd >= 0)
        close(k->fd);
    pthread_mutex_destroy(&k->mu);
    nectar_free(k->path);
    nectar_free(k);
}

void tls_keylog_set_enabled(tls_keylog_t *k, bool on)
{
    atomic_store(&k->enabled, on);
}

bool tls_keylog_enabled(const tls_keylog_t *k)
{
    return atomic_load(&((tls_keylog_t *)k)->enabled);
}

const char *tls_keylog_path(const tls_keylog_t *k)
{
    return k->path;
}

static void write_line(tls_keylog_t *k, const char *line)
{
    pthread_mutex_lock(&k->mu);
    if (k->rotating)
        rotate(k);
    if (k->fd < 0 && !k->rotating) {
        k->fd = open(k->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (k->fd < 0)
            nectar_log(NECTAR_LOG_WARN, "tls", "cannot open key log %s",
                       k->path);
    }
    if (k->fd >= 0) {
        /* One write per line so concurrent processes appending to the
         * same file never interleave inside a line. */
        size_t n = strlen(line);
        char *buf = nectar_malloc(n + 1);
        if (buf != NULL) {
            memcpy(buf, line, n);
            buf[n] = '\n';
            ssize_t w = write(k->fd, buf, n + 1);
            (void)w;
            nectar_free(buf);
        }
    }
    pthread_mutex_unlock(&k->mu);
}

static void keylog_cb(const SSL *ssl, const char *line)
{
    SSL_CTX *ctx = SSL_get_SSL_CTX(ssl);
    tls_keylog_t *k = SSL_CTX_get_ex_data(ctx, ctx_index);
    if (k == NULL || k->path == NULL || !atomic_load(&k->enabled))
        return;
    write_line(k, line);
}

void tls_keylog_attach(tls_keylog_t *k, SSL_CTX *ctx)
{
    SSL_CTX_set_ex_data(ctx, ctx_index, k);
    SSL_CTX_set_keylog_callback(ctx, keylog_cb);
}
