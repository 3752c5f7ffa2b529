/*
 * test_keychain.c - the file keychain: every operation and error path,
 * tampered / truncated / moved / foreign items, directory and key file
 * permissions, injected I/O faults, racing writer processes, a writer
 * killed with SIGKILL mid-update, certificates, PKCS#12 identities made by
 * the openssl command, and a master key sealed by a TPM (swtpm).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "common/alloc.h"
#include "harness/test.h"
#include "keychain/keychain_int.h"
#include "nectar/ca.h"
#include "nectar/keychain.h"
#include "secrets/secrets_test.h"
#include "secrets/swtpm_helper.h"

struct kfix {
    char dir[64];
    char store[96];
    nectar_keychain_t *kc;
};

static nectar_keychain_t *open_store(const char *store, nectar_vault_t *v)
{
    nectar_keychain_options_t o = {.backend = "file", .dir = store, .vault = v};
    nectar_keychain_t *kc = NULL;
    nectar_error_t err = {0};
    int rc = nectar_keychain_open(&o, &kc, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("keychain_open(%s): %s", store, err.message);
    return kc;
}

static void kfix_open(struct kfix *f)
{
    st_tempdir(f->dir, sizeof(f->dir));
    snprintf(f->store, sizeof(f->store), "%s/store", f->dir);
    f->kc = open_store(f->store, NULL);
}

static void kfix_close(struct kfix *f)
{
    nectar_keychain_close(f->kc);
    st_rmrf(f->dir);
}

static void put(nectar_keychain_t *kc, const char *s, const char *a,
                const char *v)
{
    nectar_error_t err = {0};
    int rc = nectar_keychain_store(kc, s, a, v, strlen(v), &err);
    if (rc != 0)
        NECTAR_FAIL_AT("store(%s,%s): %s", s, a, err.message);
}

/* Loads (s, a) and compares with want (NULL: must be absent). */
static void expect(nectar_keychain_t *kc, const char *s, const char *a,
                   const char *want)
{
    uint8_t *data = NULL;
    size_t len = 0;
    nectar_error_t err = {0};
    int rc = nectar_keychain_load(kc, s, a, &data, &len, &err);
    if (want == NULL) {
        CHECK_EQ(rc, NECTAR_ENOENT);
        CHECK_STR_EQ(err.message, "not found");
        CHECK(data == NULL);
        return;
    }
    if (rc != 0)
        NECTAR_FAIL_AT("load(%s,%s): %s", s, a, err.message);
    CHECK_EQ(len, strlen(want));
    CHECK_MEM_EQ(data, want, len);
    nectar_secret_free(data);
}

static void item_path(const struct kfix *f, int kind, const char *s,
                      const char *a, char *out, size_t cap)
{
    char name[70];
    nectar__keychain_item_name(kind, s, a, name);
    CHECK_LT(strlen(f->store) + 1 + strlen(name), cap);
    memcpy(out, f->store, strlen(f->store));
    out[strlen(f->store)] = '/';
    memcpy(out + strlen(f->store) + 1, name, strlen(name) + 1);
}

static void test_roundtrip(void)
{
    struct kfix f;
    kfix_open(&f);
    CHECK_STR_EQ(nectar_keychain_backend(f.kc), "file");
    CHECK_STR_EQ(nectar_keychain_protection(f.kc), "plain-key-file");
    expect(f.kc, "svc", "acct", NULL);
    put(f.kc, "svc", "acct", "v1");
    expect(f.kc, "svc", "acct", "v1");
    put(f.kc, "svc", "acct", "second value"); /* upsert */
    expect(f.kc, "svc", "acct", "second value");
    expect(f.kc, "svc", "other", NULL);
    expect(f.kc, "svc2", "acct", NULL);
    /* Binary data with NULs, an empty secret, a large one. */
    uint8_t bin[5] = {0, 1, 0, 255, 0};
    nectar_error_t err = {0};
    CHECK_EQ(nectar_keychain_store(f.kc, "b", "a", bin, 5, &err), 0);
    uint8_t *d;
    size_t n;
    CHECK_EQ(nectar_keychain_load(f.kc, "b", "a", &d, &n, &err), 0);
    CHECK_EQ(n, 5);
    CHECK_MEM_EQ(d, bin, 5);
    nectar_secret_free(d);
    CHECK_EQ(nectar_keychain_store(f.kc, "b", "empty", NULL, 0, &err), 0);
    CHECK_EQ(nectar_keychain_load(f.kc, "b", "empty", &d, &n, &err), 0);
    CHECK(d != NULL);
    CHECK_EQ(n, 0);
    nectar_secret_free(d);
    size_t big = 1u << 20;
    uint8_t *large = malloc(big);
    for (size_t i = 0; i < big; i++)
        large[i] = (uint8_t)(i * 131);
    CHECK_EQ(nectar_keychain_store(f.kc, "b", "large", large, big, &err), 0);
    CHECK_EQ(nectar_keychain_load(f.kc, "b", "large", &d, &n, &err), 0);
    CHECK_EQ(n, big);
    CHECK_MEM_EQ(d, large, big);
    nectar_secret_free(d);
    free(large);
    /* Delete is idempotent. */
    CHECK_EQ(nectar_keychain_delete(f.kc, "svc", "acct", &err), 0);
    expect(f.kc, "svc", "acct", NULL);
    CHECK_EQ(nectar_keychain_delete(f.kc, "svc", "acct", &err), 0);
    /* A second handle on the same store sees the same data. */
    nectar_keychain_t *again = open_store(f.store, NULL);
    expect(again, "b", "empty", "");
    nectar_keychain_close(again);
    kfix_close(&f);
}

static void test_validation(void)
{
    struct kfix f;
    kfix_open(&f);
    nectar_error_t err = {0};
    char longname[300];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CHECK_EQ(nectar_keychain_store(f.kc, "", "a", "v", 1, &err), NECTAR_EINVAL);
    CHECK(strstr(err.message, "service") != NULL);
    CHECK_EQ(nectar_keychain_store(f.kc, "s", NULL, "v", 1, &err),
             NECTAR_EINVAL);
    CHECK_EQ(nectar_keychain_store(f.kc, "s", longname, "v", 1, &err),
             NECTAR_EINVAL);
    CHECK_EQ(nectar_keychain_store(f.kc, "s", "a", NULL, 3, &err),
             NECTAR_EINVAL);
    CHECK_EQ(nectar_keychain_store(f.kc, "s", "a", "v",
                                   NECTAR_KEYCHAIN_DATA_MAX + 1u, &err),
             NECTAR_ELIMIT);
    uint8_t *d;
    size_t n;
    CHECK_EQ(nectar_keychain_load(f.kc, "s", "", &d, &n, &err), NECTAR_EINVAL);
    CHECK_EQ(nectar_keychain_delete(NULL, "s", "a", &err), NECTAR_EINVAL);
    char **accts;
    CHECK_EQ(nectar_keychain_list(f.kc, "", &accts, &n, &err), NECTAR_EINVAL);
    nectar_keychain_options_t bad = {.backend = "nope", .dir = f.store};
    nectar_keychain_t *kc = NULL;
    CHECK_EQ(nectar_keychain_open(&bad, &kc, &err), NECTAR_ENOTSUP);
    CHECK(kc == NULL);
    kfix_close(&f);
}

static void test_list(void)
{
    struct kfix f;
    kfix_open(&f);
    put(f.kc, "web", "carol", "1");
    put(f.kc, "web", "alice", "2");
    put(f.kc, "web", "bob", "3");
    put(f.kc, "mail", "alice", "4");
    put(f.kc, "web2", "zed", "5");
    char **a;
    size_t n;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_keychain_list(f.kc, "web", &a, &n, &err), 0);
    CHECK_EQ(n, 3);
    CHECK_STR_EQ(a[0], "alice");
    CHECK_STR_EQ(a[1], "bob");
    CHECK_STR_EQ(a[2], "carol");
    nectar_keychain_list_free(a, n);
    CHECK_EQ(nectar_keychain_delete(f.kc, "web", "bob", &err), 0);
    CHECK_EQ(nectar_keychain_list(f.kc, "web", &a, &n, &err), 0);
    CHECK_EQ(n, 2);
    nectar_keychain_list_free(a, n);
    CHECK_EQ(nectar_keychain_list(f.kc, "nothing", &a, &n, &err), 0);
    CHECK_EQ(n, 0);
    nectar_keychain_list_free(a, n);
    kfix_close(&f);
}

static void test_permissions(void)
{
    char dir[64], store[128], path[192];
    st_tempdir(dir, sizeof(dir));
    snprintf(store, sizeof(store), "%s/a/b/store", dir);
    nectar_keychain_t *kc = open_store(store, NULL);
    nectar_keychain_close(kc);
    struct stat st;
    CHECK_EQ(stat(store, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/master.key", store);
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0600);
    CHECK_EQ(st.st_size, 37);
    nectar_keychain_options_t o = {.backend = "file", .dir = store};
    nectar_error_t err = {0};
    /* A directory others can enter is refused. */
    CHECK_EQ(chmod(store, 0755), 0);
    CHECK_EQ(nectar_keychain_open(&o, &kc, &err), NECTAR_EACCES);
    CHECK(strstr(err.message, "0700") != NULL);
    CHECK_EQ(chmod(store, 0700), 0);
    /* So is a readable master key, and a damaged one. */
    CHECK_EQ(chmod(path, 0640), 0);
    CHECK_EQ(nectar_keychain_open(&o, &kc, &err), NECTAR_EACCES);
    CHECK_EQ(chmod(path, 0600), 0);
    CHECK_EQ(truncate(path, 20), 0);
    CHECK_EQ(nectar_keychain_open(&o, &kc, &err), NECTAR_EPARSE);
    /* A file where the directory should be. */
    snprintf(path, sizeof(path), "%s/file", dir);
    st_write(path, "x", 1);
    o.dir = path;
    CHECK(nectar_keychain_open(&o, &kc, &err) < 0);
    /* NECTAR_KEYCHAIN_DIR supplies the directory. */
    snprintf(path, sizeof(path), "%s/envstore", dir);
    setenv("NECTAR_KEYCHAIN_DIR", path, 1);
    nectar_keychain_options_t dflt = {0};
    CHECK_EQ(nectar_keychain_open(&dflt, &kc, &err), 0);
    put(kc, "s", "a", "v");
    nectar_keychain_close(kc);
    unsetenv("NECTAR_KEYCHAIN_DIR");
    CHECK_EQ(access(path, F_OK), 0);
    st_rmrf(dir);
}

/* Every single-byte flip, truncation and extension of an item fails with
 * a clear code and never returns (wrong) plaintext. */
static void test_tamper(void)
{
    struct kfix f;
    kfix_open(&f);
    put(f.kc, "svc", "acct", "top secret value");
    char path[192];
    item_path(&f, 1, "svc", "acct", path, sizeof(path));
    size_t n;
    uint8_t *orig = st_read(path, &n);
    uint8_t *copy = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, orig, n);
        copy[i] ^= 0x04;
        st_write(path, copy, n);
        uint8_t *d = NULL;
        size_t len = 0;
        nectar_error_t err = {0};
        int rc = nectar_keychain_load(f.kc, "svc", "acct", &d, &len, &err);
        if (rc == 0)
            NECTAR_FAIL_AT("flip at byte %zu loaded", i);
        CHECK(d == NULL);
        CHECK(rc == NECTAR_EAUTH || rc == NECTAR_EPARSE ||
              rc == NECTAR_EVERSION);
        CHECK(err.message[0] != '\0');
    }
    for (size_t len = 0; len < n; len++) {
        st_write(path, orig, len);
        uint8_t *d = NULL;
        size_t dl = 0;
        int rc = nectar_keychain_load(f.kc, "svc", "acct", &d, &dl, NULL);
        CHECK(rc == NECTAR_EPARSE || rc == NECTAR_EAUTH);
    }
    memcpy(copy, orig, n);
    copy[n] = 'x';
    st_write(path, copy, n + 1);
    uint8_t *d;
    size_t dl;
    CHECK_EQ(nectar_keychain_load(f.kc, "svc", "acct", &d, &dl, NULL),
             NECTAR_EPARSE);
    /* Restored, it loads again. */
    st_write(path, orig, n);
    expect(f.kc, "svc", "acct", "top secret value");
    free(orig);
    free(copy);
    kfix_close(&f);
}

/* An item copied over another item's file, or from another store, does
 * not load (and is not listed). */
static void test_moved_and_foreign(void)
{
    struct kfix a, b;
    kfix_open(&a);
    kfix_open(&b);
    put(a.kc, "svc", "alice", "alice's");
    put(a.kc, "svc", "bob", "bob's");
    char pa[192], pb[192];
    item_path(&a, 1, "svc", "alice", pa, sizeof(pa));
    item_path(&a, 1, "svc", "bob", pb, sizeof(pb));
    size_t n;
    uint8_t *alice = st_read(pa, &n);
    st_write(pb, alice, n); /* bob's file now holds alice's item */
    uint8_t *d;
    size_t dl;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_keychain_load(a.kc, "svc", "bob", &d, &dl, &err),
             NECTAR_EAUTH);
    CHECK(strstr(err.message, "another") != NULL);
    char **accts;
    size_t count;
    CHECK_EQ(nectar_keychain_list(a.kc, "svc", &accts, &count, &err), 0);
    CHECK_EQ(count, 1);
    CHECK_STR_EQ(accts[0], "alice");
    nectar_keychain_list_free(accts, count);
    /* Store B has its own master key: A's item is foreign there. */
    char pb2[192];
    item_path(&b, 1, "svc", "alice", pb2, sizeof(pb2));
    st_write(pb2, alice, n);
    CHECK_EQ(nectar_keychain_load(b.kc, "svc", "alice", &d, &dl, &err),
             NECTAR_EAUTH);
    CHECK(strstr(err.message, "authentication") != NULL);
    free(alice);
    kfix_close(&a);
    kfix_close(&b);
}

/* A damaged master key file never yields plaintext: the store refuses to
 * open, or every item fails authentication. */
static void test_master_key_tamper(void)
{
    struct kfix f;
    kfix_open(&f);
    put(f.kc, "svc", "acct", "guarded");
    nectar_keychain_close(f.kc);
    f.kc = NULL;
    char path[160];
    snprintf(path, sizeof(path), "%s/master.key", f.store);
    size_t n;
    uint8_t *orig = st_read(path, &n);
    CHECK_EQ(n, 37);
    nectar_keychain_options_t o = {.backend = "file", .dir = f.store};
    for (size_t i = 0; i < n; i++) {
        uint8_t copy[37];
        memcpy(copy, orig, n);
        copy[i] ^= 0x20;
        st_write(path, copy, n);
        nectar_keychain_t *kc = NULL;
        nectar_error_t err = {0};
        int rc = nectar_keychain_open(&o, &kc, &err);
        if (rc != 0) {
            CHECK(rc == NECTAR_EPARSE || rc == NECTAR_EVERSION);
            continue;
        }
        uint8_t *d = NULL;
        size_t dl = 0;
        CHECK_EQ(nectar_keychain_load(kc, "svc", "acct", &d, &dl, &err),
                 NECTAR_EAUTH);
        CHECK(d == NULL);
        nectar_keychain_close(kc);
    }
    st_write(path, orig, n);
    f.kc = open_store(f.store, NULL);
    expect(f.kc, "svc", "acct", "guarded");
    free(orig);
    kfix_close(&f);
}

/* ---- fault injection ------------------------------------------------ */

static int fail_errno;
static int fail_fsync_calls, fail_rename_calls, fail_write_calls;
static int short_writes;

static int flt_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

static ssize_t flt_write(int fd, const void *buf, size_t len)
{
    if (fail_write_calls > 0 && --fail_write_calls == 0) {
        errno = fail_errno;
        return -1;
    }
    return write(fd, buf, short_writes && len > 3 ? 3 : len);
}

static int flt_fsync(int fd)
{
    if (fail_fsync_calls > 0 && --fail_fsync_calls == 0) {
        errno = fail_errno;
        return -1;
    }
    return fsync(fd);
}

static int flt_rename(const char *from, const char *to)
{
    if (fail_rename_calls > 0 && --fail_rename_calls == 0) {
        errno = fail_errno;
        return -1;
    }
    return rename(from, to);
}

static const struct nectar__keychain_sysio faulty = {flt_open, flt_write,
                                                     flt_fsync, flt_rename};

static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, ".tmp-", 5) == 0;
    closedir(d);
    return n;
}

static void test_fault_injection(void)
{
    struct kfix f;
    kfix_open(&f);
    put(f.kc, "s", "a", "old");
    nectar__keychain_file_set_sysio(&faulty);
    nectar_error_t err = {0};
    /* fsync of the new file fails: the old value stays, no temp file. */
    fail_errno = EIO;
    fail_fsync_calls = 1;
    CHECK_EQ(nectar_keychain_store(f.kc, "s", "a", "new", 3, &err), NECTAR_EIO);
    CHECK(strstr(err.message, "fsync") != NULL);
    expect(f.kc, "s", "a", "old");
    CHECK_EQ(count_temps(f.store), 0);
    /* Disk full part-way through the write. */
    fail_errno = ENOSPC;
    fail_write_calls = 1;
    CHECK_EQ(nectar_keychain_store(f.kc, "s", "a", "new", 3, &err), -ENOSPC);
    expect(f.kc, "s", "a", "old");
    CHECK_EQ(count_temps(f.store), 0);
    /* rename fails. */
    fail_errno = EPERM;
    fail_rename_calls = 1;
    CHECK_EQ(nectar_keychain_store(f.kc, "s", "a", "new", 3, &err),
             NECTAR_EPERM);
    expect(f.kc, "s", "a", "old");
    CHECK_EQ(count_temps(f.store), 0);
    /* The directory fsync (second fsync) fails after the rename: the
     * error is reported, and the value is the new one. */
    fail_errno = EIO;
    fail_fsync_calls = 2;
    CHECK_EQ(nectar_keychain_store(f.kc, "s", "a", "new", 3, &err), NECTAR_EIO);
    CHECK(strstr(err.message, "directory") != NULL);
    expect(f.kc, "s", "a", "new");
    /* Short writes are completed. */
    short_writes = 1;
    put(f.kc, "s", "a", "a value longer than three bytes");
    short_writes = 0;
    expect(f.kc, "s", "a", "a value longer than three bytes");
    nectar__keychain_file_set_sysio(NULL);
    kfix_close(&f);
}

static void test_alloc_failures(void)
{
    struct kfix f;
    kfix_open(&f);
    put(f.kc, "s", "a", "value");
    for (long n = 0; n < 10; n++) {
        uint8_t *d = NULL;
        size_t dl = 0;
        char **accts = NULL;
        size_t count = 0;
        nectar__alloc_fail_after(n);
        int r1 = nectar_keychain_store(f.kc, "s", "b", "v2", 2, NULL);
        int r2 = nectar_keychain_load(f.kc, "s", "a", &d, &dl, NULL);
        int r3 = nectar_keychain_list(f.kc, "s", &accts, &count, NULL);
        nectar__alloc_fail_after(-1);
        CHECK(r1 == 0 || r1 == NECTAR_ENOMEM);
        CHECK(r2 == 0 || r2 == NECTAR_ENOMEM);
        CHECK(r3 == 0 || r3 == NECTAR_ENOMEM);
        nectar_secret_free(d);
        nectar_keychain_list_free(accts, count);
    }
    expect(f.kc, "s", "a", "value");
    kfix_close(&f);
}

/* ---- concurrency and crashes ---------------------------------------- */

#define RACE_PROCS  4
#define RACE_ROUNDS 40

/* Several processes upsert the same items at once; afterwards every item
 * holds one complete value some writer wrote. */
static void test_racing_writers(void)
{
    struct kfix f;
    kfix_open(&f);
    pid_t pids[RACE_PROCS];
    for (int p = 0; p < RACE_PROCS; p++) {
        pids[p] = fork();
        CHECK_GE(pids[p], 0);
        if (pids[p] == 0) {
            nectar_keychain_t *kc = open_store(f.store, NULL);
            for (int r = 0; r < RACE_ROUNDS; r++) {
                char v[64];
                snprintf(v, sizeof(v), "writer %d round %d", p, r);
                if (nectar_keychain_store(kc, "race", r % 2 ? "x" : "y", v,
                                          strlen(v), NULL) != 0)
                    _exit(1);
            }
            nectar_keychain_close(kc);
            _exit(0);
        }
    }
    for (int p = 0; p < RACE_PROCS; p++) {
        int st;
        CHECK_EQ(waitpid(pids[p], &st, 0), pids[p]);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    const char *accts[] = {"x", "y"};
    for (int i = 0; i < 2; i++) {
        uint8_t *d;
        size_t n;
        CHECK_EQ(nectar_keychain_load(f.kc, "race", accts[i], &d, &n, NULL), 0);
        int p, r;
        char buf[64];
        CHECK_LT(n, sizeof(buf));
        memcpy(buf, d, n);
        buf[n] = '\0';
        CHECK_EQ(sscanf(buf, "writer %d round %d", &p, &r), 2);
        CHECK_EQ(r % 2, i == 0 ? 1 : 0);
        nectar_secret_free(d);
    }
    CHECK_EQ(count_temps(f.store), 0);
    kfix_close(&f);
}

/* Threads, each with its own handle on one store, upsert the same items;
 * flock locks belong to the open file description, so the handles
 * serialise against each other as separate processes do. */
#define THREADS 4

struct thread_arg {
    const char *store;
    int id;
    int failed;
};

static void *thread_writer(void *p)
{
    struct thread_arg *a = p;
    nectar_keychain_t *kc = open_store(a->store, NULL);
    for (int r = 0; r < 15; r++) {
        char v[64];
        uint8_t *d = NULL;
        size_t n = 0;
        snprintf(v, sizeof(v), "thread %d round %d", a->id, r);
        a->failed |=
            nectar_keychain_store(kc, "mt", "shared", v, strlen(v), NULL) != 0;
        a->failed |=
            nectar_keychain_load(kc, "mt", "shared", &d, &n, NULL) != 0;
        a->failed |= n < 10 || memcmp(d, "thread ", 7) != 0;
        nectar_secret_free(d);
    }
    nectar_keychain_close(kc);
    return NULL;
}

static void test_threaded_writers(void)
{
    struct kfix f;
    kfix_open(&f);
    pthread_t th[THREADS];
    struct thread_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct thread_arg){f.store, i, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, thread_writer, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK_EQ(pthread_join(th[i], NULL), 0);
        CHECK_EQ(args[i].failed, 0);
    }
    uint8_t *d;
    size_t n;
    CHECK_EQ(nectar_keychain_load(f.kc, "mt", "shared", &d, &n, NULL), 0);
    CHECK(n > 7 && memcmp(d, "thread ", 7) == 0);
    nectar_secret_free(d);
    CHECK_EQ(count_temps(f.store), 0);
    kfix_close(&f);
}

#define CRASH_ITEMS  4
#define CRASH_ROUNDS 15

/* Shared with the writer: the generation it started and finished per
 * item.  After SIGKILL each item must hold one of the two. */
struct progress {
    volatile int started[CRASH_ITEMS];
    volatile int done[CRASH_ITEMS];
};

static void crash_value(int item, int gen, char *out, size_t cap)
{
    /* Vary the size so a torn write could not pass as a whole one. */
    snprintf(
        out, cap, "item %d generation %d %.*s", item, gen, gen % 50,
        "................................................................");
}

static void crash_writer(const char *store, struct progress *pr)
{
    nectar_keychain_t *kc = open_store(store, NULL);
    for (int gen = pr->done[0] + 1;; gen++) { /* until SIGKILL */
        for (int i = 0; i < CRASH_ITEMS; i++) {
            char acct[16], v[128];
            snprintf(acct, sizeof(acct), "item%d", i);
            crash_value(i, gen, v, sizeof(v));
            pr->started[i] = gen;
            if (nectar_keychain_store(kc, "crash", acct, v, strlen(v), NULL) !=
                0)
                _exit(1);
            pr->done[i] = gen;
        }
    }
}

static void check_after_crash(const char *store, const struct progress *pr)
{
    nectar_keychain_t *kc = open_store(store, NULL);
    for (int i = 0; i < CRASH_ITEMS; i++) {
        char acct[16], old_v[128], new_v[128];
        snprintf(acct, sizeof(acct), "item%d", i);
        crash_value(i, pr->done[i], old_v, sizeof(old_v));
        crash_value(i, pr->started[i], new_v, sizeof(new_v));
        uint8_t *d;
        size_t n;
        nectar_error_t err = {0};
        int rc = nectar_keychain_load(kc, "crash", acct, &d, &n, &err);
        if (rc != 0)
            NECTAR_FAIL_AT("item %d unreadable after kill: %s", i, err.message);
        int is_old = n == strlen(old_v) && memcmp(d, old_v, n) == 0;
        int is_new = n == strlen(new_v) && memcmp(d, new_v, n) == 0;
        if (!is_old && !is_new)
            NECTAR_FAIL_AT("item %d holds neither generation %d nor %d", i,
                           pr->done[i], pr->started[i]);
        nectar_secret_free(d);
    }
    nectar_keychain_close(kc);
}

static void test_crash_kill9(void)
{
    struct kfix f;
    kfix_open(&f);
    struct progress *pr = mmap(NULL, sizeof(*pr), PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(pr != MAP_FAILED);
    memset((void *)pr, 0, sizeof(*pr));
    for (int i = 0; i < CRASH_ITEMS; i++) {
        char acct[16], v[128];
        snprintf(acct, sizeof(acct), "item%d", i);
        crash_value(i, 0, v, sizeof(v));
        put(f.kc, "crash", acct, v);
    }
    srand((unsigned)time(NULL));
    int total_kills_midwrite = 0, total_writes = 0, round_base = 0;
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        pid_t pid = fork();
        CHECK_GE(pid, 0);
        if (pid == 0)
            crash_writer(f.store, pr);
        /* Let it run 20-120 ms (a durable write takes ~10 ms on a VM
         * disk), then kill it at a random point, most likely mid-write. */
        struct timespec ts = {0, (20 + rand() % 100) * 1000000L};
        nanosleep(&ts, NULL);
        CHECK_EQ(kill(pid, SIGKILL), 0);
        int st;
        CHECK_EQ(waitpid(pid, &st, 0), pid);
        CHECK(WIFSIGNALED(st));
        for (int i = 0; i < CRASH_ITEMS; i++)
            total_kills_midwrite += pr->started[i] != pr->done[i];
        check_after_crash(f.store, pr);
        /* The next writer continues above every generation seen so far. */
        int base = 0;
        for (int i = 0; i < CRASH_ITEMS; i++) {
            if (pr->started[i] > base)
                base = pr->started[i];
            total_writes += pr->done[i] - round_base;
        }
        round_base = base + 1;
        for (int i = 0; i < CRASH_ITEMS; i++) {
            char acct[16], v[128];
            snprintf(acct, sizeof(acct), "item%d", i);
            crash_value(i, round_base, v, sizeof(v));
            put(f.kc, "crash", acct, v);
            pr->started[i] = pr->done[i] = round_base;
        }
    }
    fprintf(stderr,
            "crash test: %d item updates completed, %d of %d kills "
            "landed inside a write\n",
            total_writes, total_kills_midwrite, CRASH_ROUNDS);
    CHECK_GT(total_writes, CRASH_ROUNDS);
    /* Opening cleaned the temp files the killed writers left. */
    nectar_keychain_t *kc = open_store(f.store, NULL);
    CHECK_EQ(count_temps(f.store), 0);
    nectar_keychain_close(kc);
    munmap((void *)pr, sizeof(*pr));
    kfix_close(&f);
}

/* ---- certificates and identities ------------------------------------ */

static void test_certificates(void)
{
    struct kfix f;
    kfix_open(&f);
    char *c1, *k1, *c2, *k2;
    uint8_t *d1, *d2;
    size_t l1, l2;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ca_generate(&c1, &k1, &err), 0);
    CHECK_EQ(nectar_ca_generate(&c2, &k2, &err), 0);
    CHECK_EQ(nectar_ca_cert_der(c1, &d1, &l1, &err), 0);
    CHECK_EQ(nectar_ca_cert_der(c2, &d2, &l2, &err), 0);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, d1, l1, &err), 0);
    CHECK_EQ(nectar_keychain_cert_install(f.kc, d1, l1, &err), 0);
    CHECK_EQ(nectar_keychain_cert_install(f.kc, d1, l1, &err), 0);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, d1, l1, &err), 1);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, d2, l2, &err), 0);
    /* Uninstall matches exact DER only. */
    CHECK_EQ(nectar_keychain_cert_uninstall(f.kc, d2, l2, &err), 0);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, d1, l1, &err), 1);
    CHECK_EQ(nectar_keychain_cert_uninstall(f.kc, d1, l1, &err), 0);
    CHECK_EQ(nectar_keychain_cert_installed(f.kc, d1, l1, &err), 0);
    CHECK_EQ(nectar_keychain_cert_uninstall(f.kc, d1, l1, &err), 0);
    /* Bad input. */
    CHECK_EQ(nectar_keychain_cert_install(f.kc, d1, 0, &err), NECTAR_EINVAL);
    CHECK_STR_EQ(err.message, "empty certificate DER");
    CHECK_EQ(
        nectar_keychain_cert_install(f.kc, (const uint8_t *)"junk", 4, &err),
        NECTAR_EPARSE);
    CHECK(strstr(err.message, "invalid DER") != NULL);
    CHECK_EQ(nectar_keychain_cert_install(f.kc, d1, l1 - 1, &err),
             NECTAR_EPARSE);
    /* Certificates do not show up as secrets. */
    char **accts;
    size_t n;
    CHECK_EQ(nectar_keychain_list(f.kc, "nectar-certificate", &accts, &n, &err),
             0);
    CHECK_EQ(n, 0);
    nectar_keychain_list_free(accts, n);
    nectar_secret_free(c1);
    nectar_secret_free(k1);
    nectar_secret_free(c2);
    nectar_secret_free(k2);
    nectar_secret_free(d1);
    nectar_secret_free(d2);
    kfix_close(&f);
}

/* Makes a CA, a leaf signed by it, and a PKCS#12 of the leaf + chain,
 * all with the openssl command; returns the .p12 path in out. */
static void make_p12(const char *dir, const char *pass, char *out, size_t cap)
{
    NECTAR_REQUIRE_TOOL("openssl");
    CHECK_EQ(st_sh("cd '%s' && "
                   "openssl req -x509 -newkey ec -pkeyopt "
                   "ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem "
                   "-subj /CN=test-ca -days 2 2>/dev/null && "
                   "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
                   "-nodes -keyout leaf.key -out leaf.csr -subj /CN=leaf "
                   "2>/dev/null && "
                   "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key "
                   "-CAcreateserial -out leaf.pem -days 2 2>/dev/null && "
                   "openssl pkcs12 -export -inkey leaf.key -in leaf.pem "
                   "-certfile ca.pem -out id.p12 -passout pass:%s",
                   dir, pass),
             0);
    snprintf(out, cap, "%s/id.p12", dir);
}

static void test_pkcs12_openssl(void)
{
    struct kfix f;
    kfix_open(&f);
    char p12path[192];
    make_p12(f.dir, "s3cret", p12path, sizeof(p12path));
    size_t n;
    uint8_t *p12 = st_read(p12path, &n);
    nectar_error_t err = {0};
    CHECK_EQ(
        nectar_keychain_import_p12(f.kc, "tls", "leaf", p12, n, "wrong", &err),
        NECTAR_EAUTH);
    CHECK(strstr(err.message, "password") != NULL);
    CHECK_EQ(nectar_keychain_import_p12(f.kc, "tls", "leaf",
                                        (const uint8_t *)"not p12", 7, "s3cret",
                                        &err),
             NECTAR_EPARSE);
    CHECK_EQ(
        nectar_keychain_import_p12(f.kc, "tls", "leaf", p12, 0, "s3cret", &err),
        NECTAR_EINVAL);
    int rc =
        nectar_keychain_import_p12(f.kc, "tls", "leaf", p12, n, "s3cret", &err);
    if (rc != 0)
        NECTAR_FAIL_AT("import_p12: %s", err.message);
    nectar_identity_t *id = NULL;
    CHECK_EQ(nectar_keychain_load_identity(f.kc, "tls", "leaf", &id, &err), 0);
    CHECK_EQ(id->chain_len, 2);
    CHECK(strstr(id->key_pem, "BEGIN PRIVATE KEY") != NULL);
    /* The key and leaf are the ones openssl put in: compare with the
     * openssl command's view of the original files. */
    char kp[192], cp[192];
    snprintf(kp, sizeof(kp), "%s/out.key", f.dir);
    snprintf(cp, sizeof(cp), "%s/out.chain", f.dir);
    st_write(kp, id->key_pem, strlen(id->key_pem));
    st_write(cp, id->chain_pem, strlen(id->chain_pem));
    CHECK_EQ(st_sh("cd '%s' && openssl pkey -in out.key -pubout > a.pub && "
                   "openssl pkey -in leaf.key -pubout > b.pub && "
                   "cmp -s a.pub b.pub && "
                   "openssl x509 -in out.chain -noout -subject | grep -q leaf "
                   "&& openssl verify -CAfile ca.pem out.chain >/dev/null",
                   f.dir),
             0);
    nectar_identity_free(id);
    /* A plain secret is not an identity. */
    put(f.kc, "tls", "plain", "just bytes");
    CHECK_EQ(nectar_keychain_load_identity(f.kc, "tls", "plain", &id, &err),
             NECTAR_EPARSE);
    CHECK(id == NULL);
    CHECK_EQ(nectar_keychain_load_identity(f.kc, "tls", "none", &id, &err),
             NECTAR_ENOENT);
    free(p12);
    kfix_close(&f);
}

/* With a TPM vault the master key is sealed; the store then opens only
 * with that TPM. */
static void test_tpm_sealed_master(void)
{
    struct test_swtpm t, t2;
    test_swtpm_start(&t);
    test_swtpm_start(&t2);
    char dir[64], store[128], hk[160];
    st_tempdir(dir, sizeof(dir));
    snprintf(store, sizeof(store), "%s/store", dir);
    snprintf(hk, sizeof(hk), "%s/host.key", dir);
    nectar_vault_options_t vo = {.backend = "tpm2", .tpm_tcti = t.tcti};
    nectar_vault_t *tpm = NULL, *soft = NULL, *other = NULL;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_vault_open(&vo, &tpm, &err), 0);
    nectar_keychain_t *kc = open_store(store, tpm);
    CHECK_STR_EQ(nectar_keychain_protection(kc), "vault-sealed:tpm2");
    put(kc, "s", "a", "sealed by the tpm");
    nectar_keychain_close(kc);
    /* Without the TPM, or with a software vault: refused, clearly. */
    nectar_keychain_options_t o = {.backend = "file", .dir = store};
    CHECK_EQ(nectar_keychain_open(&o, &kc, &err), NECTAR_ETYPE);
    CHECK(strstr(err.message, "tpm2") != NULL);
    nectar_vault_options_t so = {.backend = "software", .host_key_path = hk};
    CHECK_EQ(nectar_vault_open(&so, &soft, &err), 0);
    o.vault = soft;
    CHECK_EQ(nectar_keychain_open(&o, &kc, &err), NECTAR_ETYPE);
    /* Another TPM cannot unseal it. */
    nectar_vault_options_t vo2 = {.backend = "tpm2", .tpm_tcti = t2.tcti};
    CHECK_EQ(nectar_vault_open(&vo2, &other, &err), 0);
    o.vault = other;
    CHECK_EQ(nectar_keychain_open(&o, &kc, &err), NECTAR_ETPM);
    /* The right TPM opens it. */
    kc = open_store(store, tpm);
    expect(kc, "s", "a", "sealed by the tpm");
    nectar_keychain_close(kc);
    nectar_vault_close(tpm);
    nectar_vault_close(soft);
    nectar_vault_close(other);
    st_rmrf(dir);
    test_swtpm_stop(&t);
    test_swtpm_stop(&t2);
}

int main(int argc, char **argv)
{
    static const nectar_test_t tests[] = {
        {"roundtrip", test_roundtrip},
        {"validation", test_validation},
        {"list", test_list},
        {"permissions", test_permissions},
        {"tamper", test_tamper},
        {"moved_and_foreign", test_moved_and_foreign},
        {"master_key_tamper", test_master_key_tamper},
        {"fault_injection", test_fault_injection},
        {"alloc_failures", test_alloc_failures},
        {"racing_writers", test_racing_writers},
        {"threaded_writers", test_threaded_writers},
        {"crash_kill9", test_crash_kill9},
        {"certificates", test_certificates},
        {"pkcs12_openssl", test_pkcs12_openssl},
        {"tpm_sealed_master", test_tpm_sealed_master},
        {NULL, NULL},
    };
    return nectar_test_main(argc, argv, tests);
}
