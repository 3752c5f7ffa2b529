/*
 * hostkey.c - the host key file: 32 random bytes readable only by the
 * user nectar runs as (root in production).  It protects the software
 * vault's private keys, and the file keychain's master key when no TPM
 * seals it.  Creation is atomic (write a temp file, then link(2), which
 * fails if a racing process got there first), so two daemons starting at
 * once agree on one key.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "vault/crypto.h"
#include "vault/vault_int.h"

/* Reads exactly 32 bytes from an already-open, already-checked file. */
static int read_key(int fd, const char *path, uint8_t key[32],
                    nectar_error_t *err)
{
    size_t got = 0;
    while (got < 32) {
        ssize_t n = read(fd, key + got, 32 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            nectar_wipe(key, 32);
            return nectar_error_set(err, NECTAR_EIO, "host key %s: short read",
                                    path);
        }
        got += (size_t)n;
    }
    return 0;
}

/* The file must be a regular file of 32 bytes, owned by us, mode 0600 or
 * stricter: anything else means someone else could have read the key. */
static int check_file(int fd, const char *path, nectar_error_t *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return nectar_error_set(err, -errno, "host key %s: fstat: %s", path,
                                strerror(errno));
    if (!S_ISREG(st.st_mode))
        return nectar_error_set(err, NECTAR_EACCES,
                                "host key %s is not a regular file", path);
    if (st.st_uid != geteuid() || (st.st_mode & 077) != 0)
        return nectar_error_set(err, NECTAR_EACCES,
                                "host key %s must be owned by uid %u with "
                                "mode 0600 (it is uid %u, mode %03o)",
                                path, (unsigned)geteuid(), (unsigned)st.st_uid,
                                (unsigned)(st.st_mode & 0777));
    if (st.st_size != 32)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "host key %s is %lld bytes, expected 32", path,
                                (long long)st.st_size);
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Creates the key file if absent.  Losing the link race is success: the
 * winner's key is then read by the caller. */
static int create_key(const char *path, nectar_error_t *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof(tmp))
        return nectar_error_set(err, NECTAR_EINVAL, "host key path too long");
    uint8_t key[32];
    int rc = nectar__random(key, sizeof(key), err);
    if (rc != 0)
        return rc;
    (void)unlink(tmp);
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
    int fd = open(tmp, flags, 0600);
    if (fd < 0 && errno == ENOENT) {
        /* First start: the state directory (/var/lib/nectar) is ours to
         * create, private like the key. */
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash != NULL && slash != dir) {
            *slash = '\0';
            rc = nectar__mkdirs(dir, err);
            if (rc != 0) {
                nectar_wipe(key, sizeof(key));
                return rc;
            }
        }
        fd = open(tmp, flags, 0600);
    }
    if (fd < 0) {
        nectar_wipe(key, sizeof(key));
        return nectar_error_set(err, -errno, "host key: create %s: %s", tmp,
                                strerror(errno));
    }
    int ok = write_all(fd, key, sizeof(key)) == 0 && fsync(fd) == 0;
    int saved = errno;
    nectar_wipe(key, sizeof(key));
    close(fd);
    if (ok && link(tmp, path) != 0 && errno != EEXIST) {
        saved = errno;
        ok = 0;
    }
    (void)unlink(tmp);
    if (!ok)
        return nectar_error_set(err, -saved, "host key: write %s: %s", path,
                                strerror(saved));
    return 0;
}

int nectar__mkdirs(const char *dir, nectar_error_t *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
        return nectar_error_set(err, NECTAR_EINVAL, "path too long: %s", dir);
    /* Each missing component is created 0700; existing ones are left as
     * they are (the caller checks the last one). */
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return nectar_error_set(err, -errno, "mkdir %s: %s", path,
                                    strerror(errno));
        *p = saved;
        if (saved == '\0')
            return 0;
    }
}

int nectar__host_key_load(const char *path, uint8_t key[32],
                          nectar_error_t *err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            int rc = check_file(fd, path, err);
            if (rc == 0)
                rc = read_key(fd, path, key, err);
            close(fd);
            return rc;
        }
        if (errno != ENOENT || attempt > 0)
            return nectar_error_set(err, -errno, "host key %s: %s", path,
                                    strerror(errno));
        int rc = create_key(path, err);
        if (rc != 0)
            return rc;
    }
    return nectar_error_set(err, NECTAR_EIO, "host key %s: vanished", path);
}
