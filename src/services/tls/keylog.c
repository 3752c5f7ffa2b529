/*
 * keylog.c - NSS key log sink (see keylog.h).
 */
#include "services/tls/keylog.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "nectar/log.h"

struct tls_keylog {
    atomic_bool enabled;
    pthread_mutex_t mu; /* guards fd */
    int fd;
    char *path;
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
    if (k->fd < 0) {
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
