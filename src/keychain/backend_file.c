/*
 * backend_file.c - the file keychain: a root-only directory of encrypted
 * items, the default everywhere but Apple.
 *
 * Contents of this file, in order:
 *   1. system calls (overridable for fault injection)
 *   2. files: whole-file read, atomic write, the cross-process lock
 *   3. the item format (seal / open)
 *   4. the master key (plain key file, or sealed by a hardware vault)
 *   5. open / close
 *   6. operations
 *
 * Directory layout (mode 0700, owned by the running user):
 *   .lock           flock(2) target; every writer holds it exclusively
 *   master.key      the master key record (0600)
 *   <sha256>.item   one item; the name is SHA-256 over kind, service and
 *                   account, so lookups need no index
 *   .tmp-*          a write in progress (or a crash's leftovers, removed
 *                   at the next open while holding the lock)
 *
 * Item file (all integers big-endian):
 *   "NKI1" | 0x01 | kind | svc_len (2) | acct_len (2) | service | account |
 *   nonce (12) | ct_len (4) | ciphertext | tag (16)
 *   AES-256-GCM under the master key, AAD = every byte before the
 *   ciphertext, so kind, service and account are bound to the secret.
 *
 * Why every write is temp file + fsync + rename + fsync(dir): rename is
 * atomic, so a reader (or a crash) sees the old or the new file, never a
 * mix; the first fsync makes the new contents durable before they become
 * visible, the directory fsync makes the rename itself durable.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/alloc.h"
#include "keychain/keychain_int.h"
#include "nectar/log.h"
#include "vault/crypto.h"
#include "vault/vault_int.h"

#define DEFAULT_DIR    "/var/lib/nectar/keychain"
#define ITEM_MAGIC     "NKI1"
#define ITEM_VERSION   0x01
#define ITEM_SECRET    1
#define ITEM_CERT      2
#define ITEM_FIXED_HDR 26 /* header bytes besides the two names */
#define MASTER_MAGIC   "NKM1"
#define MASTER_PLAIN   1
#define MASTER_SEALED  2
#define CERT_SERVICE   "nectar-certificate"
#define FILE_MAX       (NECTAR_KEYCHAIN_DATA_MAX + 4096u)

/* ---- 1. system calls ------------------------------------------------ */

static int real_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

static const struct nectar__keychain_sysio real_io = {
    .open = real_open,
    .write = write,
    .fsync = fsync,
    .rename = rename,
};
static const struct nectar__keychain_sysio *io = &real_io;

void nectar__keychain_file_set_sysio(const struct nectar__keychain_sysio *ovr)
{
    io = ovr != NULL ? ovr : &real_io;
}

/* ---- 2. files ------------------------------------------------------- */

struct file_state {
    char dir[PATH_MAX];
    int dirfd;
    int lockfd;
    uint8_t *master; /* 32 bytes, nectar_secret_alloc */
    char protection[40];
};

static int sys_error(nectar_error_t *err, const char *what, const char *path)
{
    int e = errno;
    int rc = nectar_error_set(err, -e, "keychain: %s %s: %s", what, path,
                              strerror(e));
    if (err != NULL)
        err->native = e;
    return rc;
}

static int join(char *out, const struct file_state *s, const char *name)
{
    return snprintf(out, PATH_MAX, "%s/%s", s->dir, name) < PATH_MAX ? 0 : -1;
}

/* Reads a whole file.  NECTAR_ENOENT when it does not exist. */
static int read_file(const char *path, uint8_t **out, size_t *len,
                     nectar_error_t *err)
{
    *out = NULL;
    *len = 0;
    int fd = io->open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
    if (fd < 0) {
        if (errno == ENOENT)
            return nectar_error_set(err, NECTAR_ENOENT, "not found");
        return sys_error(err, "open", path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (size_t)st.st_size > FILE_MAX) {
        close(fd);
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: %s is not a keychain file", path);
    }
    size_t cap = (size_t)st.st_size, got = 0;
    uint8_t *buf = nectar_malloc(cap + 1);
    if (buf == NULL) {
        close(fd);
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    }
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int rc = sys_error(err, "read", path);
            close(fd);
            nectar_free(buf);
            return rc;
        }
        if (n == 0)
            break; /* shrank under us: the parser reports the short file */
        got += (size_t)n;
    }
    close(fd);
    *out = buf;
    *len = got;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = io->write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Replaces dir/name with data, atomically and durably.  Caller holds the
 * lock.  On failure the old file (if any) is untouched. */
static int atomic_write(struct file_state *s, const char *name,
                        const uint8_t *data, size_t len, nectar_error_t *err)
{
    char tmp[PATH_MAX], final[PATH_MAX], tname[96];
    uint8_t rnd[8];
    int rc = nectar__random(rnd, sizeof(rnd), err);
    if (rc != 0)
        return rc;
    snprintf(tname, sizeof(tname), ".tmp-%ld-%02x%02x%02x%02x%02x%02x%02x%02x",
             (long)getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
             rnd[6], rnd[7]);
    if (join(tmp, s, tname) != 0 || join(final, s, name) != 0)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: path too long");
    int fd = io->open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                      0600);
    if (fd < 0)
        return sys_error(err, "create", tmp);
    if (write_all(fd, data, len) != 0) {
        rc = sys_error(err, "write", tmp);
    } else if (io->fsync(fd) != 0) {
        rc = sys_error(err, "fsync", tmp);
    }
    close(fd);
    if (rc == 0 && io->rename(tmp, final) != 0)
        rc = sys_error(err, "rename to", final);
    if (rc != 0) {
        (void)unlink(tmp);
        return rc;
    }
    if (io->fsync(s->dirfd) != 0)
        return sys_error(err, "fsync directory", s->dir);
    return 0;
}

static int lock_store(struct file_state *s, nectar_error_t *err)
{
    while (flock(s->lockfd, LOCK_EX) != 0) {
        if (errno != EINTR)
            return sys_error(err, "lock", s->dir);
    }
    return 0;
}

static void unlock_store(struct file_state *s)
{
    (void)flock(s->lockfd, LOCK_UN);
}

/* ---- 3. items ------------------------------------------------------- */

static void put16(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t get16(const uint8_t *p)
{
    return (size_t)p[0] << 8 | p[1];
}

static size_t get32(const uint8_t *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    uint8_t md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1)
        memset(md, 0, sizeof(md)); /* cannot happen with the default lib */
    hex(md, 32, out);
}

void nectar__keychain_item_name(int kind, const char *service,
                                const char *account, char out[70])
{
    /* Length-prefixed fields, so ("ab","c") and ("a","bc") differ. */
    size_t sl = strlen(service), al = strlen(account);
    uint8_t buf[32 + 2 * NECTAR_KEYCHAIN_NAME_MAX];
    size_t n = 0;
    memcpy(buf, "nectar-keychain-item", 20);
    n = 20;
    buf[n++] = (uint8_t)kind;
    put16(buf + n, sl);
    n += 2;
    memcpy(buf + n, service, sl);
    n += sl;
    put16(buf + n, al);
    n += 2;
    memcpy(buf + n, account, al);
    n += al;
    sha256_hex(buf, n, out);
    memcpy(out + 64, ".item", 6);
}

/* Builds the sealed item file for (kind, service, account, data). */
static int item_seal(const struct file_state *s, int kind, const char *svc,
                     const char *acct, const uint8_t *data, size_t len,
                     uint8_t **out, size_t *out_len, nectar_error_t *err)
{
    size_t sl = strlen(svc), al = strlen(acct);
    size_t hdr = ITEM_FIXED_HDR + sl + al;
    uint8_t *buf = nectar_malloc(hdr + len + 16);
    if (buf == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    memcpy(buf, ITEM_MAGIC, 4);
    buf[4] = ITEM_VERSION;
    buf[5] = (uint8_t)kind;
    put16(buf + 6, sl);
    put16(buf + 8, al);
    memcpy(buf + 10, svc, sl);
    memcpy(buf + 10 + sl, acct, al);
    uint8_t *nonce = buf + 10 + sl + al;
    put32(nonce + 12, len);
    int rc = nectar__random(nonce, 12, err);
    if (rc == 0)
        rc = nectar__gcm_seal(s->master, nonce, buf, hdr, data, len, buf + hdr,
                              buf + hdr + len, err);
    if (rc != 0) {
        nectar_free(buf);
        return rc;
    }
    *out = buf;
    *out_len = hdr + len + 16;
    return 0;
}

/* Where the parts of an item file are, after the structural checks. */
struct item_view {
    int kind;
    const char *svc, *acct; /* not NUL-terminated */
    size_t sl, al, hdr, ct_len;
};

static int item_parse(const uint8_t *buf, size_t n, struct item_view *v,
                      nectar_error_t *err)
{
    if (n < ITEM_FIXED_HDR || memcmp(buf, ITEM_MAGIC, 4) != 0)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: not an item file (truncated or "
                                "overwritten)");
    if (buf[4] != ITEM_VERSION)
        return nectar_error_set(err, NECTAR_EVERSION,
                                "keychain: item format %u, expected %u", buf[4],
                                ITEM_VERSION);
    v->kind = buf[5];
    v->sl = get16(buf + 6);
    v->al = get16(buf + 8);
    v->hdr = ITEM_FIXED_HDR + v->sl + v->al;
    if (v->hdr > n)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: item header truncated");
    v->svc = (const char *)buf + 10;
    v->acct = v->svc + v->sl;
    v->ct_len = get32(buf + v->hdr - 4);
    if (n - v->hdr < 16 || n - v->hdr - 16 != v->ct_len)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: item is %zu bytes, its header "
                                "says %zu (truncated or extended)",
                                n, v->hdr + v->ct_len + 16);
    return 0;
}

static int same_name(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && memcmp(a, b, alen) == 0;
}

/* Verifies and decrypts an item; *pt from nectar_secret_alloc.  Checks
 * that the item is the one asked for, so a file copied or renamed over
 * another item's name is refused even though its tag is valid. */
static int item_open(const struct file_state *s, const uint8_t *buf, size_t n,
                     int kind, const char *svc, const char *acct, uint8_t **pt,
                     size_t *pt_len, nectar_error_t *err)
{
    struct item_view v;
    int rc = item_parse(buf, n, &v, err);
    if (rc != 0)
        return rc;
    if (v.kind != kind || !same_name(v.svc, v.sl, svc) ||
        !same_name(v.acct, v.al, acct))
        return nectar_error_set(err, NECTAR_EAUTH,
                                "keychain: item file belongs to another "
                                "(service, account): moved or replaced");
    uint8_t *out = nectar_secret_alloc(v.ct_len);
    if (out == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    rc = nectar__gcm_open(s->master, buf + v.hdr - 16, buf, v.hdr, buf + v.hdr,
                          v.ct_len, buf + v.hdr + v.ct_len, out, err);
    if (rc == NECTAR_EAUTH)
        nectar_error_set(err, NECTAR_EAUTH,
                         "keychain: item fails authentication (tampered, or "
                         "from another store)");
    if (rc != 0) {
        nectar_secret_free(out);
        return rc;
    }
    *pt = out;
    *pt_len = v.ct_len;
    return 0;
}

/* ---- 4. master key -------------------------------------------------- */

static void set_protection(struct file_state *s, nectar_vault_kind_t sealer)
{
    if (sealer == NECTAR_VAULT_NONE)
        snprintf(s->protection, sizeof(s->protection), "plain-key-file");
    else
        snprintf(s->protection, sizeof(s->protection), "vault-sealed:%s",
                 nectar_vault_kind_name(sealer));
}

/* Record: "NKM1" | MASTER_PLAIN | key (32)
 *     or  "NKM1" | MASTER_SEALED | vault kind | blob_len (4) | blob |
 *         env_len (4) | envelope of the key */
static int master_create(struct file_state *s, nectar_vault_t *vault,
                         nectar_error_t *err)
{
    int rc = nectar__random(s->master, 32, err);
    if (rc != 0)
        return rc;
    set_protection(s, vault == NULL || !nectar_vault_is_hardware(vault)
                          ? NECTAR_VAULT_NONE
                          : nectar_vault_kind(vault));
    if (vault == NULL || !nectar_vault_is_hardware(vault)) {
        uint8_t rec[37];
        memcpy(rec, MASTER_MAGIC, 4);
        rec[4] = MASTER_PLAIN;
        memcpy(rec + 5, s->master, 32);
        rc = atomic_write(s, "master.key", rec, sizeof(rec), err);
        nectar_wipe(rec, sizeof(rec));
        return rc;
    }
    uint8_t *blob = NULL, *env = NULL, *rec = NULL;
    size_t blob_len = 0, env_len = 0;
    rc = nectar_vault_create_key(vault, &blob, &blob_len, err);
    if (rc == 0)
        rc = nectar_vault_encrypt(vault, blob, blob_len, s->master, 32, &env,
                                  &env_len, err);
    size_t n = 6 + 4 + blob_len + 4 + env_len;
    if (rc == 0 && (rec = nectar_malloc(n)) == NULL)
        rc = nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    if (rc == 0) {
        memcpy(rec, MASTER_MAGIC, 4);
        rec[4] = MASTER_SEALED;
        rec[5] = (uint8_t)nectar_vault_kind(vault);
        put32(rec + 6, blob_len);
        memcpy(rec + 10, blob, blob_len);
        put32(rec + 10 + blob_len, env_len);
        memcpy(rec + 14 + blob_len, env, env_len);
        rc = atomic_write(s, "master.key", rec, n, err);
    }
    nectar_free(rec);
    nectar_secret_free(blob);
    nectar_secret_free(env);
    return rc;
}

static int master_unseal(struct file_state *s, nectar_vault_t *vault,
                         const uint8_t *rec, size_t n, nectar_error_t *err)
{
    if (n < 14)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: master key record truncated");
    nectar_vault_kind_t kind = rec[5];
    if (vault == NULL || nectar_vault_kind(vault) != kind)
        return nectar_error_set(err, NECTAR_ETYPE,
                                "keychain: the master key is sealed by the "
                                "%s vault; open the keychain with it",
                                nectar_vault_kind_name(kind));
    size_t blob_len = get32(rec + 6);
    if (blob_len > n - 14)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: master key record truncated");
    const uint8_t *blob = rec + 10;
    size_t env_len = get32(rec + 10 + blob_len);
    if (env_len != n - 14 - blob_len)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "keychain: master key record truncated");
    uint8_t *key = NULL;
    size_t key_len = 0;
    int rc = nectar_vault_decrypt(vault, blob, blob_len, rec + 14 + blob_len,
                                  env_len, &key, &key_len, err);
    if (rc == 0 && key_len != 32)
        rc = nectar_error_set(err, NECTAR_EPARSE,
                              "keychain: sealed master key has %zu bytes",
                              key_len);
    if (rc == 0)
        memcpy(s->master, key, 32);
    nectar_secret_free(key);
    return rc;
}

/* The master key file must be as private as the host key file. */
static int master_check_file(const char *path, nectar_error_t *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return sys_error(err, "stat", path);
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        (st.st_mode & 077) != 0)
        return nectar_error_set(err, NECTAR_EACCES,
                                "keychain: %s must be a regular file owned "
                                "by uid %u with mode 0600",
                                path, (unsigned)geteuid());
    return 0;
}

/* Loads the master key, creating it on first use.  Caller holds the lock
 * so two processes creating a store agree on one key. */
static int master_load(struct file_state *s, nectar_vault_t *vault,
                       nectar_error_t *err)
{
    char path[PATH_MAX];
    if (join(path, s, "master.key") != 0)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: path too long");
    uint8_t *rec = NULL;
    size_t n = 0;
    int rc = read_file(path, &rec, &n, err);
    if (rc == NECTAR_ENOENT) {
        rc = master_create(s, vault, err);
        if (rc == 0)
            nectar_log(NECTAR_LOG_INFO, "keychain",
                       "created store %s (master key %s)", s->dir,
                       vault != NULL && nectar_vault_is_hardware(vault)
                           ? "sealed by the vault"
                           : "in a root-only key file");
        return rc;
    }
    if (rc == 0)
        rc = master_check_file(path, err);
    if (rc == 0 && (n < 5 || memcmp(rec, MASTER_MAGIC, 4) != 0))
        rc = nectar_error_set(err, NECTAR_EPARSE,
                              "keychain: %s is not a master key record", path);
    if (rc == 0 && rec[4] == MASTER_PLAIN) {
        if (n != 37)
            rc = nectar_error_set(err, NECTAR_EPARSE,
                                  "keychain: master key record truncated");
        else
            memcpy(s->master, rec + 5, 32);
        set_protection(s, NECTAR_VAULT_NONE);
    } else if (rc == 0 && rec[4] == MASTER_SEALED) {
        rc = master_unseal(s, vault, rec, n, err);
        set_protection(s, rec[5]);
    } else if (rc == 0) {
        rc = nectar_error_set(err, NECTAR_EVERSION,
                              "keychain: unknown master key mode %u", rec[4]);
    }
    if (rec != NULL)
        nectar_wipe(rec, n);
    nectar_free(rec);
    return rc;
}

/* ---- 5. open / close ------------------------------------------------ */

static int check_dir(const char *dir, nectar_error_t *err)
{
    struct stat st;
    if (lstat(dir, &st) != 0)
        return sys_error(err, "stat", dir);
    if (!S_ISDIR(st.st_mode))
        return nectar_error_set(err, NECTAR_EACCES,
                                "keychain: %s is not a directory", dir);
    if (st.st_uid != geteuid() || (st.st_mode & 077) != 0)
        return nectar_error_set(err, NECTAR_EACCES,
                                "keychain: %s must be owned by uid %u with "
                                "mode 0700 (it is uid %u, mode %03o)",
                                dir, (unsigned)geteuid(), (unsigned)st.st_uid,
                                (unsigned)(st.st_mode & 0777));
    return 0;
}

/* Removes temp files a crashed writer left.  Caller holds the lock, so no
 * live writer owns one. */
static void remove_stale_temps(struct file_state *s)
{
    DIR *d = opendir(s->dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".tmp-", 5) == 0 &&
            join(path, s, e->d_name) == 0)
            (void)unlink(path);
    }
    closedir(d);
}

static void file_close(void *state)
{
    struct file_state *s = state;
    if (s->lockfd >= 0)
        close(s->lockfd);
    if (s->dirfd >= 0)
        close(s->dirfd);
    s->lockfd = s->dirfd = -1;
    nectar_secret_free(s->master);
    s->master = NULL;
}

static int file_open(void *state, const nectar_keychain_options_t *opts,
                     nectar_error_t *err)
{
    struct file_state *s = state;
    s->dirfd = s->lockfd = -1;
    const char *dir = opts->dir;
    if (dir == NULL || dir[0] == '\0')
        dir = getenv("NECTAR_KEYCHAIN_DIR");
    if (dir == NULL || dir[0] == '\0')
        dir = DEFAULT_DIR;
    if (snprintf(s->dir, sizeof(s->dir), "%s", dir) >= (int)sizeof(s->dir))
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: path too long");
    s->master = nectar_secret_alloc(32);
    if (s->master == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    int rc = nectar__mkdirs(s->dir, err);
    if (rc == 0)
        rc = check_dir(s->dir, err);
    if (rc != 0)
        return rc;
    s->dirfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0)
        return sys_error(err, "open", s->dir);
    char lock[PATH_MAX];
    if (join(lock, s, ".lock") != 0)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: path too long");
    s->lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lockfd < 0)
        return sys_error(err, "open", lock);
    rc = lock_store(s, err);
    if (rc != 0)
        return rc;
    remove_stale_temps(s);
    rc = master_load(s, opts->vault, err);
    unlock_store(s);
    return rc;
}

static const char *file_protection(void *state)
{
    return ((struct file_state *)state)->protection;
}

/* ---- 6. operations -------------------------------------------------- */

static int put_item(struct file_state *s, int kind, const char *svc,
                    const char *acct, const uint8_t *data, size_t len,
                    nectar_error_t *err)
{
    char name[70];
    nectar__keychain_item_name(kind, svc, acct, name);
    uint8_t *rec = NULL;
    size_t n = 0;
    int rc = item_seal(s, kind, svc, acct, data, len, &rec, &n, err);
    if (rc != 0)
        return rc;
    rc = lock_store(s, err);
    if (rc == 0) {
        rc = atomic_write(s, name, rec, n, err);
        unlock_store(s);
    }
    nectar_free(rec);
    return rc;
}

static int get_item(struct file_state *s, int kind, const char *svc,
                    const char *acct, uint8_t **data, size_t *len,
                    nectar_error_t *err)
{
    char name[70], path[PATH_MAX];
    nectar__keychain_item_name(kind, svc, acct, name);
    if (join(path, s, name) != 0)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: path too long");
    uint8_t *rec = NULL;
    size_t n = 0;
    int rc = read_file(path, &rec, &n, err);
    if (rc != 0)
        return rc;
    rc = item_open(s, rec, n, kind, svc, acct, data, len, err);
    nectar_free(rec);
    return rc;
}

static int del_item(struct file_state *s, int kind, const char *svc,
                    const char *acct, nectar_error_t *err)
{
    char name[70], path[PATH_MAX];
    nectar__keychain_item_name(kind, svc, acct, name);
    if (join(path, s, name) != 0)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: path too long");
    int rc = lock_store(s, err);
    if (rc != 0)
        return rc;
    if (unlink(path) != 0) {
        rc = errno == ENOENT ? nectar_error_set(err, NECTAR_ENOENT, "not found")
                             : sys_error(err, "unlink", path);
    } else if (io->fsync(s->dirfd) != 0) {
        rc = sys_error(err, "fsync directory", s->dir);
    }
    unlock_store(s);
    return rc;
}

static int file_store(void *state, const char *service, const char *account,
                      const void *data, size_t len, nectar_error_t *err)
{
    return put_item(state, ITEM_SECRET, service, account, data, len, err);
}

static int file_load(void *state, const char *service, const char *account,
                     uint8_t **data, size_t *len, nectar_error_t *err)
{
    return get_item(state, ITEM_SECRET, service, account, data, len, err);
}

static int file_remove(void *state, const char *service, const char *account,
                       nectar_error_t *err)
{
    return del_item(state, ITEM_SECRET, service, account, err);
}

/* Accepts an item file for listing if it is a secret of service, sits
 * under its own name, and authenticates.  Returns its account or NULL. */
static char *list_candidate(struct file_state *s, const char *fname,
                            const char *service)
{
    char path[PATH_MAX];
    uint8_t *rec = NULL, *pt = NULL;
    size_t n = 0, pt_len = 0;
    char *account = NULL;
    if (join(path, s, fname) != 0 || read_file(path, &rec, &n, NULL) != 0)
        return NULL;
    struct item_view v;
    if (item_parse(rec, n, &v, NULL) == 0 && v.kind == ITEM_SECRET &&
        same_name(v.svc, v.sl, service))
        account = nectar_strndup(v.acct, v.al);
    char expect[70];
    if (account != NULL) {
        nectar__keychain_item_name(ITEM_SECRET, service, account, expect);
        if (strcmp(expect, fname) != 0 ||
            item_open(s, rec, n, ITEM_SECRET, service, account, &pt, &pt_len,
                      NULL) != 0) {
            nectar_log(NECTAR_LOG_WARN, "keychain",
                       "skipping %s: moved, tampered or foreign item", path);
            nectar_free(account);
            account = NULL;
        }
    }
    nectar_secret_free(pt);
    nectar_free(rec);
    return account;
}

static int is_item_name(const char *name)
{
    size_t n = strlen(name);
    return n == 69 && strcmp(name + 64, ".item") == 0;
}

static int file_list(void *state, const char *service, char ***accounts,
                     size_t *count, nectar_error_t *err)
{
    struct file_state *s = state;
    DIR *d = opendir(s->dir);
    if (d == NULL)
        return sys_error(err, "opendir", s->dir);
    char **out = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!is_item_name(e->d_name))
            continue;
        char *acct = list_candidate(s, e->d_name, service);
        if (acct == NULL)
            continue;
        if (n == cap) {
            size_t ncap = cap == 0 ? 8 : cap * 2;
            char **grown = nectar_realloc(out, ncap * sizeof(*out));
            if (grown == NULL) {
                nectar_free(acct);
                rc = nectar_error_set(err, NECTAR_ENOMEM,
                                      "keychain: out of memory");
                break;
            }
            out = grown;
            cap = ncap;
        }
        out[n++] = acct;
    }
    closedir(d);
    if (rc != 0) {
        nectar_keychain_list_free(out, n);
        return rc;
    }
    *accounts = out;
    *count = n;
    return 0;
}

/* Certificates are items of their own kind, named by the SHA-256 of the
 * DER, holding the DER itself (compared byte for byte on removal). */
static int file_cert_install(void *state, const uint8_t *der, size_t len,
                             nectar_error_t *err)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    int whole = x != NULL && p == der + len;
    X509_free(x);
    if (!whole)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "certificate parse failed (invalid DER?)");
    char id[65];
    sha256_hex(der, len, id);
    return put_item(state, ITEM_CERT, CERT_SERVICE, id, der, len, err);
}

static int file_cert_installed(void *state, const uint8_t *der, size_t len,
                               nectar_error_t *err)
{
    char id[65];
    sha256_hex(der, len, id);
    uint8_t *stored = NULL;
    size_t n = 0;
    int rc = get_item(state, ITEM_CERT, CERT_SERVICE, id, &stored, &n, err);
    if (rc == NECTAR_ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    int same = n == len && memcmp(stored, der, len) == 0;
    nectar_secret_free(stored);
    return same;
}

static int file_cert_uninstall(void *state, const uint8_t *der, size_t len,
                               nectar_error_t *err)
{
    int rc = file_cert_installed(state, der, len, err);
    if (rc <= 0)
        return rc;
    char id[65];
    sha256_hex(der, len, id);
    rc = del_item(state, ITEM_CERT, CERT_SERVICE, id, err);
    return rc == NECTAR_ENOENT ? 0 : rc;
}

const struct nectar__keychain_backend nectar__keychain_backend_file = {
    .name = "file",
    .state_size = sizeof(struct file_state),
    .open = file_open,
    .close = file_close,
    .protection = file_protection,
    .store = file_store,
    .load = file_load,
    .remove = file_remove,
    .list = file_list,
    .cert_install = file_cert_install,
    .cert_uninstall = file_cert_uninstall,
    .cert_installed = file_cert_installed,
};
