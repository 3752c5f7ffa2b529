/*
 * test_vault.c - the key vault: envelope layout and tamper resistance,
 * the software backend and its host key, backend selection, secret
 * memory, the TPM backend against a private swtpm, and interop with an
 * independent ECIES v1 implementation (python3-cryptography).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "harness/test.h"
#include "nectar/vault.h"
#include "secrets/secrets_test.h"
#include "secrets/swtpm_helper.h"

/* A test vault plus one key; dir holds the software host key. */
struct fixture {
    char dir[64];
    char hostkey[128];
    nectar_vault_t *vault;
    uint8_t *blob;
    size_t blob_len;
};

static void open_soft(struct fixture *f)
{
    st_tempdir(f->dir, sizeof(f->dir));
    snprintf(f->hostkey, sizeof(f->hostkey), "%s/host.key", f->dir);
    nectar_vault_options_t o = {.backend = "software",
                                .host_key_path = f->hostkey};
    nectar_error_t err = {0};
    int rc = nectar_vault_open(&o, &f->vault, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("vault_open: %s", err.message);
    CHECK_EQ(nectar_vault_kind(f->vault), NECTAR_VAULT_SOFTWARE);
    CHECK_EQ(nectar_vault_is_hardware(f->vault), 0);
    CHECK_EQ(nectar_vault_create_key(f->vault, &f->blob, &f->blob_len, &err),
             0);
}

static void open_tpm(struct fixture *f, const char *tcti)
{
    memset(f, 0, sizeof(*f));
    nectar_vault_options_t o = {.backend = "tpm2", .tpm_tcti = tcti};
    nectar_error_t err = {0};
    int rc = nectar_vault_open(&o, &f->vault, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("vault_open(tpm2): %s", err.message);
    CHECK_EQ(nectar_vault_kind(f->vault), NECTAR_VAULT_TPM2);
    CHECK_EQ(nectar_vault_is_hardware(f->vault), 1);
    rc = nectar_vault_create_key(f->vault, &f->blob, &f->blob_len, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("create_key(tpm2): %s", err.message);
}

static void close_fixture(struct fixture *f)
{
    nectar_secret_free(f->blob);
    nectar_vault_close(f->vault);
    if (f->dir[0] != '\0')
        st_rmrf(f->dir);
}

static void roundtrip(struct fixture *f, size_t n)
{
    uint8_t *pt = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        pt[i] = (uint8_t)(i * 7 + 3);
    uint8_t *env = NULL, *out = NULL;
    size_t env_len = 0, out_len = 99;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_vault_encrypt(f->vault, f->blob, f->blob_len, pt, n, &env,
                                  &env_len, &err),
             0);
    CHECK_EQ(env_len, NECTAR_ENVELOPE_OVERHEAD + n);
    CHECK_EQ(env[0], 0x01);
    CHECK_EQ(env[1], 0x04); /* E is an uncompressed point */
    int rc = nectar_vault_decrypt(f->vault, f->blob, f->blob_len, env, env_len,
                                  &out, &out_len, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("decrypt(%zu): %s", n, err.message);
    CHECK_EQ(out_len, n);
    if (n > 0)
        CHECK_MEM_EQ(out, pt, n);
    nectar_secret_free(out);
    nectar_secret_free(env);
    free(pt);
}

static void test_soft_roundtrip(void)
{
    struct fixture f = {0};
    open_soft(&f);
    size_t sizes[] = {0, 1, 15, 16, 17, 1000, 70000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        roundtrip(&f, sizes[i]);
    /* Fresh randomness: two envelopes of the same plaintext differ. */
    uint8_t *a, *b;
    size_t al, bl;
    CHECK_EQ(nectar_vault_encrypt(f.vault, f.blob, f.blob_len,
                                  (const uint8_t *)"x", 1, &a, &al, NULL),
             0);
    CHECK_EQ(nectar_vault_encrypt(f.vault, f.blob, f.blob_len,
                                  (const uint8_t *)"x", 1, &b, &bl, NULL),
             0);
    CHECK(memcmp(a, b, al) != 0);
    nectar_secret_free(a);
    nectar_secret_free(b);
    close_fixture(&f);
}

/* Every single-byte flip and every truncation must fail, never yield
 * plaintext. */
static void tamper_envelope(struct fixture *f)
{
    const char *msg = "the quick brown fox jumps over the lazy dog";
    uint8_t *env;
    size_t env_len;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_vault_encrypt(f->vault, f->blob, f->blob_len,
                                  (const uint8_t *)msg, strlen(msg), &env,
                                  &env_len, &err),
             0);
    uint8_t *copy = malloc(env_len);
    for (size_t i = 0; i < env_len; i++) {
        memcpy(copy, env, env_len);
        copy[i] ^= 0x01;
        uint8_t *out = (uint8_t *)"sentinel";
        size_t out_len = 77;
        int rc = nectar_vault_decrypt(f->vault, f->blob, f->blob_len, copy,
                                      env_len, &out, &out_len, &err);
        if (rc == 0)
            NECTAR_FAIL_AT("flip at byte %zu decrypted", i);
        CHECK(out == NULL);
        CHECK_EQ(out_len, 0);
        if (i == 0)
            CHECK_EQ(rc, NECTAR_EVERSION);
        else if (i >= 66)
            CHECK_EQ(rc, NECTAR_EAUTH); /* nonce, ciphertext, tag */
        else
            CHECK(rc == NECTAR_EPARSE || rc == NECTAR_EAUTH); /* E */
    }
    for (size_t n = 0; n < env_len; n++) {
        uint8_t *out;
        size_t out_len;
        int rc = nectar_vault_decrypt(f->vault, f->blob, f->blob_len, env, n,
                                      &out, &out_len, &err);
        CHECK(rc == NECTAR_EPARSE || rc == NECTAR_EAUTH);
        if (n < NECTAR_ENVELOPE_OVERHEAD)
            CHECK_EQ(rc, NECTAR_EPARSE);
    }
    free(copy);
    nectar_secret_free(env);
}

static void test_soft_tamper(void)
{
    struct fixture f = {0};
    open_soft(&f);
    tamper_envelope(&f);
    close_fixture(&f);
}

static void test_soft_wrong_key(void)
{
    struct fixture f = {0};
    open_soft(&f);
    uint8_t *other, *env, *out;
    size_t other_len, env_len, out_len;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_vault_create_key(f.vault, &other, &other_len, &err), 0);
    CHECK_EQ(nectar_vault_encrypt(f.vault, f.blob, f.blob_len,
                                  (const uint8_t *)"secret", 6, &env, &env_len,
                                  &err),
             0);
    CHECK_EQ(nectar_vault_decrypt(f.vault, other, other_len, env, env_len, &out,
                                  &out_len, &err),
             NECTAR_EAUTH);
    nectar_secret_free(other);
    nectar_secret_free(env);
    close_fixture(&f);
}

static void test_soft_blob_errors(void)
{
    struct fixture f = {0};
    open_soft(&f);
    uint8_t pub[65];
    nectar_error_t err = {0};
    uint8_t *blob = malloc(f.blob_len);
    /* Header: magic, version, kind. */
    memcpy(blob, f.blob, f.blob_len);
    blob[0] ^= 0xff;
    CHECK_EQ(nectar_vault_public_key(f.vault, blob, f.blob_len, pub, &err),
             NECTAR_EPARSE);
    memcpy(blob, f.blob, f.blob_len);
    blob[4] = 9;
    CHECK_EQ(nectar_vault_public_key(f.vault, blob, f.blob_len, pub, &err),
             NECTAR_EVERSION);
    memcpy(blob, f.blob, f.blob_len);
    blob[5] = NECTAR_VAULT_TPM2;
    CHECK_EQ(nectar_vault_public_key(f.vault, blob, f.blob_len, pub, &err),
             NECTAR_ETYPE);
    CHECK(strstr(err.message, "tpm2") != NULL);
    CHECK_EQ(nectar_vault_public_key(f.vault, f.blob, 3, pub, &err),
             NECTAR_EPARSE);
    CHECK_EQ(
        nectar_vault_public_key(f.vault, f.blob, f.blob_len - 1, pub, &err),
        NECTAR_EPARSE);
    /* Payload: any flipped byte of public point, nonce, sealed scalar or
     * tag makes the blob unusable (AAD binds the public point). */
    uint8_t *env;
    size_t env_len;
    CHECK_EQ(nectar_vault_encrypt(f.vault, f.blob, f.blob_len,
                                  (const uint8_t *)"abc", 3, &env, &env_len,
                                  &err),
             0);
    for (size_t i = 7; i < f.blob_len; i++) {
        memcpy(blob, f.blob, f.blob_len);
        blob[i] ^= 0x80;
        uint8_t *out;
        size_t out_len;
        int rc = nectar_vault_decrypt(f.vault, blob, f.blob_len, env, env_len,
                                      &out, &out_len, &err);
        if (rc == 0)
            NECTAR_FAIL_AT("blob flip at %zu still decrypts", i);
    }
    nectar_secret_free(env);
    free(blob);
    close_fixture(&f);
}

static void test_soft_other_host_key(void)
{
    struct fixture a = {0}, b = {0};
    open_soft(&a);
    open_soft(&b);
    uint8_t *env, *out;
    size_t env_len, out_len;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_vault_encrypt(a.vault, a.blob, a.blob_len,
                                  (const uint8_t *)"k", 1, &env, &env_len,
                                  &err),
             0);
    /* Machine B cannot use machine A's key blob. */
    CHECK_EQ(nectar_vault_decrypt(b.vault, a.blob, a.blob_len, env, env_len,
                                  &out, &out_len, &err),
             NECTAR_EAUTH);
    CHECK(strstr(err.message, "host key") != NULL);
    nectar_secret_free(env);
    close_fixture(&a);
    close_fixture(&b);
}

static void test_host_key_file(void)
{
    char dir[64], path[128];
    st_tempdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/sub/host.key", dir);
    nectar_vault_options_t o = {.backend = "software", .host_key_path = path};
    nectar_vault_t *v = NULL;
    nectar_error_t err = {0};
    /* Created on first open, with its directory, private. */
    CHECK_EQ(nectar_vault_open(&o, &v, &err), 0);
    nectar_vault_close(v);
    struct stat st;
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0600);
    CHECK_EQ(st.st_size, 32);
    /* Readable by others: refused, not used. */
    CHECK_EQ(chmod(path, 0644), 0);
    CHECK_EQ(nectar_vault_open(&o, &v, &err), NECTAR_EACCES);
    CHECK(v == NULL);
    CHECK(strstr(err.message, "0600") != NULL);
    /* Wrong size: refused. */
    CHECK_EQ(chmod(path, 0600), 0);
    CHECK_EQ(truncate(path, 31), 0);
    CHECK_EQ(nectar_vault_open(&o, &v, &err), NECTAR_EPARSE);
    /* A symlink is not followed. */
    CHECK_EQ(unlink(path), 0);
    CHECK_EQ(symlink("/etc/hostname", path), 0);
    CHECK(nectar_vault_open(&o, &v, &err) < 0);
    st_rmrf(dir);
}

static void test_backend_selection(void)
{
    nectar_vault_t *v = NULL;
    nectar_error_t err = {0};
    nectar_vault_options_t o = {.backend = "no-such-vault"};
    CHECK_EQ(nectar_vault_open(&o, &v, &err), NECTAR_ENOTSUP);
    CHECK(v == NULL);
    nectar_vault_kind_t kind = NECTAR_VAULT_TPM2;
    CHECK_EQ(nectar_vault_is_available(&o, &kind, &err), 0);
    CHECK_EQ(kind, NECTAR_VAULT_NONE);
    /* "auto" with a TCTI that points nowhere must fail, not fall back to
     * software. */
    nectar_vault_options_t dead = {.backend = "auto",
                                   .tpm_tcti = "swtpm:host=127.0.0.1,port=1"};
    int rc = nectar_vault_open(&dead, &v, &err);
    CHECK_EQ(rc, NECTAR_ETPM);
    CHECK(v == NULL);
    CHECK_EQ(nectar_vault_is_available(&dead, &kind, &err), 0);
    /* The same through the environment. */
    setenv("NECTAR_TPM_TCTI", "swtpm:host=127.0.0.1,port=1", 1);
    nectar_vault_options_t dflt = {0};
    CHECK_EQ(nectar_vault_open(&dflt, &v, &err), NECTAR_ETPM);
    unsetenv("NECTAR_TPM_TCTI");
    /* NECTAR_VAULT chooses by name when the options do not. */
    char dir[64], path[128];
    st_tempdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/host.key", dir);
    setenv("NECTAR_VAULT", "software", 1);
    nectar_vault_options_t soft = {.host_key_path = path};
    CHECK_EQ(nectar_vault_is_available(&soft, &kind, &err), 1);
    CHECK_EQ(kind, NECTAR_VAULT_SOFTWARE);
    CHECK_EQ(nectar_vault_open(&soft, &v, &err), 0);
    CHECK_STR_EQ(nectar_vault_kind_name(nectar_vault_kind(v)), "software");
    nectar_vault_close(v);
    unsetenv("NECTAR_VAULT");
    st_rmrf(dir);
}

/* Is [p, p+len) in a mapping whose VmFlags include "dd" (no dump)? */
static int is_dontdump(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    CHECK(f != NULL);
    char line[512];
    int inside = 0, found = 0;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') &&
            line[0] != 'V') {
            inside = a >= lo && a < hi;
            continue;
        }
        if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            found = strstr(line, " dd") != NULL;
            break;
        }
    }
    fclose(f);
    return found;
}

static void test_secret_memory(void)
{
    uint8_t *p = nectar_secret_alloc(100);
    CHECK(p != NULL);
    CHECK_EQ((uintptr_t)p % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
    memset(p, 0xAA, 100);
    CHECK(is_dontdump(p));
    nectar_secret_free(p);
    nectar_secret_free(NULL);
    nectar__alloc_fail_after(0);
    CHECK(nectar_secret_alloc(10) == NULL);
    nectar__alloc_fail_after(-1);
}

/* Allocation failure anywhere in the vault gives ENOMEM or another clean
 * error, never a crash or a leak (ASan checks the latter). */
static void test_vault_alloc_failures(void)
{
    struct fixture f = {0};
    open_soft(&f);
    for (long n = 0; n < 12; n++) {
        uint8_t *env = NULL, *out = NULL, *blob = NULL;
        size_t env_len, out_len, blob_len;
        nectar__alloc_fail_after(n);
        int rc1 = nectar_vault_encrypt(f.vault, f.blob, f.blob_len,
                                       (const uint8_t *)"data", 4, &env,
                                       &env_len, NULL);
        int rc2 = rc1 == 0
                      ? nectar_vault_decrypt(f.vault, f.blob, f.blob_len, env,
                                             env_len, &out, &out_len, NULL)
                      : 0;
        int rc3 = nectar_vault_create_key(f.vault, &blob, &blob_len, NULL);
        nectar__alloc_fail_after(-1);
        CHECK(rc1 == 0 || rc1 == NECTAR_ENOMEM);
        CHECK(rc2 == 0 || rc2 == NECTAR_ENOMEM);
        CHECK(rc3 == 0 || rc3 == NECTAR_ENOMEM);
        nectar_secret_free(env);
        nectar_secret_free(out);
        nectar_secret_free(blob);
    }
    close_fixture(&f);
}

/* Python seals for the vault's public key; nectar opens it. */
static void interop_python_to_vault(struct fixture *f, const char *dir)
{
    NECTAR_REQUIRE_TOOL("python3");
    uint8_t pub[65];
    char pubhex[131], in[160], envp[160];
    nectar_error_t err = {0};
    CHECK_EQ(nectar_vault_public_key(f->vault, f->blob, f->blob_len, pub, &err),
             0);
    st_hex(pub, 65, pubhex);
    snprintf(in, sizeof(in), "%s/py.in", dir);
    snprintf(envp, sizeof(envp), "%s/py.env", dir);
    const char *msg = "sealed by python3-cryptography";
    st_write(in, msg, strlen(msg));
    CHECK_EQ(st_sh("python3 '%s' seal %s < '%s' > '%s'", st_src("ecies_ref.py"),
                   pubhex, in, envp),
             0);
    size_t env_len;
    uint8_t *env = st_read(envp, &env_len);
    CHECK_EQ(env_len, 94 + strlen(msg));
    uint8_t *out;
    size_t out_len;
    int rc = nectar_vault_decrypt(f->vault, f->blob, f->blob_len, env, env_len,
                                  &out, &out_len, &err);
    if (rc != 0)
        NECTAR_FAIL_AT("python envelope: %s", err.message);
    CHECK_EQ(out_len, strlen(msg));
    CHECK_MEM_EQ(out, msg, out_len);
    nectar_secret_free(out);
    free(env);
}

/* nectar seals (vault and bare public-key path) for a key python holds;
 * python opens both. */
static void interop_vault_to_python(struct fixture *f, const char *dir)
{
    char keys[300], keyp[160], in[160], outp[160];
    snprintf(keyp, sizeof(keyp), "%s/py.key", dir);
    snprintf(outp, sizeof(outp), "%s/py.out", dir);
    CHECK_EQ(st_sh("python3 '%s' keygen > '%s'", st_src("ecies_ref.py"), keyp),
             0);
    size_t klen;
    uint8_t *k = st_read(keyp, &klen);
    CHECK_GT(klen, 64 + 1 + 130);
    memcpy(keys, k, klen < sizeof(keys) ? klen : sizeof(keys) - 1);
    keys[klen < sizeof(keys) ? klen : sizeof(keys) - 1] = '\0';
    free(k);
    char privhex[65];
    memcpy(privhex, keys, 64);
    privhex[64] = '\0';
    uint8_t pub[65];
    for (int i = 0; i < 65; i++) {
        unsigned byte;
        CHECK_EQ(sscanf(keys + 65 + 2 * i, "%2x", &byte), 1);
        pub[i] = (uint8_t)byte;
    }
    const char *msg = "sealed by nectar";
    uint8_t *env;
    size_t env_len;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_envelope_seal(pub, (const uint8_t *)msg, strlen(msg), &env,
                                  &env_len, &err),
             0);
    snprintf(in, sizeof(in), "%s/nectar.env", dir);
    st_write(in, env, env_len);
    nectar_secret_free(env);
    CHECK_EQ(st_sh("python3 '%s' open %s < '%s' > '%s'", st_src("ecies_ref.py"),
                   privhex, in, outp),
             0);
    size_t out_len;
    uint8_t *out = st_read(outp, &out_len);
    CHECK_EQ(out_len, strlen(msg));
    CHECK_MEM_EQ(out, msg, out_len);
    free(out);
    (void)f;
}

static void test_interop_python_soft(void)
{
    struct fixture f = {0};
    open_soft(&f);
    interop_python_to_vault(&f, f.dir);
    interop_vault_to_python(&f, f.dir);
    close_fixture(&f);
}

static void test_tpm_roundtrip(void)
{
    struct test_swtpm t;
    test_swtpm_start(&t);
    struct fixture f;
    open_tpm(&f, t.tcti);
    roundtrip(&f, 0);
    roundtrip(&f, 33);
    roundtrip(&f, 5000);
    /* The public point the TPM reports is what the blob carries, and a
     * bare-key seal to it opens in the TPM. */
    uint8_t pub[65];
    CHECK_EQ(nectar_vault_public_key(f.vault, f.blob, f.blob_len, pub, NULL),
             0);
    CHECK_EQ(pub[0], 0x04);
    uint8_t *env, *out;
    size_t env_len, out_len;
    CHECK_EQ(nectar_envelope_seal(pub, (const uint8_t *)"tpm", 3, &env,
                                  &env_len, NULL),
             0);
    CHECK_EQ(nectar_vault_decrypt(f.vault, f.blob, f.blob_len, env, env_len,
                                  &out, &out_len, NULL),
             0);
    CHECK_EQ(out_len, 3);
    CHECK_MEM_EQ(out, "tpm", 3);
    nectar_secret_free(out);
    nectar_secret_free(env);
    /* swtpm holds 3 transient objects; leaking one per call would fail
     * well before 12 decrypts. */
    for (int i = 0; i < 12; i++)
        roundtrip(&f, 8);
    close_fixture(&f);
    test_swtpm_stop(&t);
}

static void test_tpm_tamper(void)
{
    struct test_swtpm t;
    test_swtpm_start(&t);
    struct fixture f;
    open_tpm(&f, t.tcti);
    tamper_envelope(&f);
    /* A damaged key blob is refused by the TPM or the parser. */
    uint8_t *env, *out;
    size_t env_len, out_len;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_vault_encrypt(f.vault, f.blob, f.blob_len,
                                  (const uint8_t *)"x", 1, &env, &env_len,
                                  &err),
             0);
    uint8_t *blob = malloc(f.blob_len);
    size_t step = f.blob_len / 40 + 1;
    for (size_t i = 6; i < f.blob_len; i += step) {
        memcpy(blob, f.blob, f.blob_len);
        blob[i] ^= 0x10;
        int rc = nectar_vault_decrypt(f.vault, blob, f.blob_len, env, env_len,
                                      &out, &out_len, &err);
        if (rc == 0)
            NECTAR_FAIL_AT("TPM blob flip at %zu still decrypts", i);
    }
    free(blob);
    nectar_secret_free(env);
    close_fixture(&f);
    test_swtpm_stop(&t);
}

/* A blob wrapped by one TPM does not load into another. */
static void test_tpm_foreign_blob(void)
{
    struct test_swtpm t1, t2;
    test_swtpm_start(&t1);
    test_swtpm_start(&t2);
    struct fixture a, b;
    open_tpm(&a, t1.tcti);
    open_tpm(&b, t2.tcti);
    uint8_t *env, *out;
    size_t env_len, out_len;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_vault_encrypt(a.vault, a.blob, a.blob_len,
                                  (const uint8_t *)"x", 1, &env, &env_len,
                                  &err),
             0);
    CHECK_EQ(nectar_vault_decrypt(b.vault, a.blob, a.blob_len, env, env_len,
                                  &out, &out_len, &err),
             NECTAR_ETPM);
    CHECK(strstr(err.message, "TPM2_Load") != NULL);
    /* ...and a software vault refuses a TPM blob by its header. */
    struct fixture s = {0};
    open_soft(&s);
    CHECK_EQ(nectar_vault_decrypt(s.vault, a.blob, a.blob_len, env, env_len,
                                  &out, &out_len, &err),
             NECTAR_ETYPE);
    nectar_secret_free(env);
    close_fixture(&s);
    close_fixture(&a);
    close_fixture(&b);
    test_swtpm_stop(&t1);
    test_swtpm_stop(&t2);
}

static void test_tpm_auto_and_env(void)
{
    struct test_swtpm t;
    test_swtpm_start(&t);
    setenv("NECTAR_TPM_TCTI", t.tcti, 1);
    nectar_vault_t *v = NULL;
    nectar_error_t err = {0};
    nectar_vault_kind_t kind;
    CHECK_EQ(nectar_vault_is_available(NULL, &kind, &err), 1);
    CHECK_EQ(kind, NECTAR_VAULT_TPM2);
    CHECK_EQ(nectar_vault_open(NULL, &v, &err), 0);
    CHECK_EQ(nectar_vault_kind(v), NECTAR_VAULT_TPM2);
    nectar_vault_close(v);
    unsetenv("NECTAR_TPM_TCTI");
    test_swtpm_stop(&t);
}

static void test_interop_python_tpm(void)
{
    struct test_swtpm t;
    test_swtpm_start(&t);
    struct fixture f;
    open_tpm(&f, t.tcti);
    interop_python_to_vault(&f, t.dir);
    close_fixture(&f);
    test_swtpm_stop(&t);
}

int main(int argc, char **argv)
{
    static const nectar_test_t tests[] = {
        {"soft_roundtrip", test_soft_roundtrip},
        {"soft_tamper", test_soft_tamper},
        {"soft_wrong_key", test_soft_wrong_key},
        {"soft_blob_errors", test_soft_blob_errors},
        {"soft_other_host_key", test_soft_other_host_key},
        {"host_key_file", test_host_key_file},
        {"backend_selection", test_backend_selection},
        {"secret_memory", test_secret_memory},
        {"vault_alloc_failures", test_vault_alloc_failures},
        {"interop_python_soft", test_interop_python_soft},
        {"tpm_roundtrip", test_tpm_roundtrip},
        {"tpm_tamper", test_tpm_tamper},
        {"tpm_foreign_blob", test_tpm_foreign_blob},
        {"tpm_auto_and_env", test_tpm_auto_and_env},
        {"interop_python_tpm", test_interop_python_tpm},
        {NULL, NULL},
    };
    return nectar_test_main(argc, argv, tests);
}
