/*
 * test_cli.c - `nectar keychain|ca|vault` end to end, as a user runs
 * them: against a --store directory in /tmp (no root needed), secrets on
 * stdin and stdout only, a PKCS#12 from the openssl command, envelopes
 * checked against python3-cryptography, and the TPM through swtpm.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness/test.h"
#include "secrets/secrets_test.h"
#include "secrets/swtpm_helper.h"

struct clifix {
    char dir[64];
    char opts[160]; /* --store DIR --vault software */
};

static void cli_open(struct clifix *f)
{
    st_tempdir(f->dir, sizeof(f->dir));
    snprintf(f->opts, sizeof(f->opts), "--store %s/store --vault software",
             f->dir);
}

/* Runs `nectar ARGS` with the fixture's options, stdin from in_file (or
 * /dev/null), stdout to DIR/out, stderr to DIR/err; returns the exit
 * status. */
static int nectar(struct clifix *f, const char *in_file, const char *args)
{
    return st_sh("'%s' %s %s < '%s' > '%s/out' 2> '%s/err'", NECTAR_BIN, args,
                 f->opts, in_file != NULL ? in_file : "/dev/null", f->dir,
                 f->dir);
}

/* DIR/<name> contents as a string (static buffer). */
static const char *slurp(struct clifix *f, const char *name)
{
    static char buf[8192];
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    size_t n;
    uint8_t *d = st_read(path, &n);
    n = n < sizeof(buf) - 1 ? n : sizeof(buf) - 1;
    memcpy(buf, d, n);
    buf[n] = '\0';
    free(d);
    return buf;
}

static void write_in(struct clifix *f, const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    st_write(path, text, strlen(text));
}

static void test_cli_keychain(void)
{
    struct clifix f;
    cli_open(&f);
    char in[128];
    snprintf(in, sizeof(in), "%s/secret", f.dir);
    write_in(&f, "secret", "correct horse battery staple");
    CHECK_EQ(nectar(&f, in, "keychain set web alice"), 0);
    CHECK_EQ(nectar(&f, NULL, "keychain get web alice"), 0);
    CHECK_STR_EQ(slurp(&f, "out"), "correct horse battery staple");
    CHECK_EQ(nectar(&f, in, "keychain set web bob"), 0);
    CHECK_EQ(nectar(&f, NULL, "keychain list web"), 0);
    CHECK_STR_EQ(slurp(&f, "out"), "alice\nbob\n");
    CHECK_EQ(nectar(&f, NULL, "keychain delete web alice"), 0);
    CHECK_EQ(nectar(&f, NULL, "keychain delete web alice"), 0);
    CHECK_EQ(nectar(&f, NULL, "keychain get web alice"), 1);
    CHECK(strstr(slurp(&f, "err"), "not found") != NULL);
    /* No secret in argv: an extra argument is a usage error. */
    CHECK_EQ(nectar(&f, NULL, "keychain set web carol hunter2"), 2);
    CHECK_EQ(nectar(&f, NULL, "keychain frobnicate"), 2);
    CHECK_EQ(nectar(&f, NULL, "keychain info"), 0);
    CHECK(strstr(slurp(&f, "out"), "backend: file") != NULL);
    /* The secret is nowhere in the store in clear. */
    CHECK_EQ(st_sh("grep -rq 'battery staple' '%s/store'", f.dir), 1);
    st_rmrf(f.dir);
}

static void test_cli_import_p12(void)
{
    NECTAR_REQUIRE_TOOL("openssl");
    struct clifix f;
    cli_open(&f);
    CHECK_EQ(st_sh("cd '%s' && openssl req -x509 -newkey ec -pkeyopt "
                   "ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem "
                   "-subj /CN=cli-test -days 2 2>/dev/null && "
                   "openssl pkcs12 -export -inkey k.pem -in c.pem -out id.p12 "
                   "-passout pass:pw123",
                   f.dir),
             0);
    char cmd[256], in[128];
    snprintf(cmd, sizeof(cmd),
             "keychain import-p12 %s/id.p12 --service tls "
             "--account site",
             f.dir);
    /* Password on stdin. */
    write_in(&f, "pw", "pw123\n");
    snprintf(in, sizeof(in), "%s/pw", f.dir);
    CHECK_EQ(nectar(&f, in, cmd), 0);
    CHECK(strstr(slurp(&f, "out"), "1 certificate") != NULL);
    /* Wrong password, through the environment. */
    setenv("NECTAR_P12_PASSWORD", "nope", 1);
    CHECK_EQ(nectar(&f, NULL, cmd), 1);
    CHECK(strstr(slurp(&f, "err"), "wrong PKCS#12 password") != NULL);
    setenv("NECTAR_P12_PASSWORD", "pw123", 1);
    CHECK_EQ(nectar(&f, NULL, cmd), 0);
    unsetenv("NECTAR_P12_PASSWORD");
    /* The stored identity is the key and certificate openssl made. */
    CHECK_EQ(nectar(&f, NULL, "keychain get tls site"), 0);
    CHECK_EQ(st_sh("cd '%s' && openssl pkey -in out -pubout > a.pub && "
                   "openssl pkey -in k.pem -pubout > b.pub && cmp -s a.pub "
                   "b.pub && openssl x509 -in out -noout -subject | "
                   "grep -q cli-test",
                   f.dir),
             0);
    st_rmrf(f.dir);
}

static void test_cli_ca(void)
{
    NECTAR_REQUIRE_TOOL("openssl");
    struct clifix f;
    cli_open(&f);
    CHECK_EQ(nectar(&f, NULL, "ca show"), 0);
    const char *show = slurp(&f, "out");
    CHECK(strstr(show, "O=Nectar Transparent Proxy Root CA") != NULL);
    CHECK(strstr(show, "CN=nectar-mitm-ca.localhost") != NULL);
    CHECK(strstr(show, "sha256:") != NULL);
    CHECK_EQ(nectar(&f, NULL, "ca export"), 0);
    CHECK_EQ(st_sh("cd '%s' && cp out first.pem && openssl x509 -in "
                   "first.pem -noout -ext basicConstraints | grep -q "
                   "'CA:TRUE'",
                   f.dir),
             0);
    /* Export is stable; rotate changes it. */
    CHECK_EQ(nectar(&f, NULL, "ca export"), 0);
    CHECK_EQ(st_sh("cmp -s '%s/out' '%s/first.pem'", f.dir, f.dir), 0);
    CHECK_EQ(nectar(&f, NULL, "ca rotate"), 0);
    CHECK(strstr(slurp(&f, "out"), "previous sha256:") != NULL);
    CHECK_EQ(nectar(&f, NULL, "ca export"), 0);
    CHECK_EQ(st_sh("cmp -s '%s/out' '%s/first.pem'", f.dir, f.dir), 1);
    /* The private key is never printed. */
    CHECK_EQ(st_sh("grep -q PRIVATE '%s/out'", f.dir), 1);
    CHECK_EQ(nectar(&f, NULL, "ca"), 2);
    st_rmrf(f.dir);
}

static void vault_roundtrip(struct clifix *f)
{
    char cmd[256], in[128];
    snprintf(cmd, sizeof(cmd), "vault create %s/key.blob", f->dir);
    CHECK_EQ(nectar(f, NULL, cmd), 0);
    CHECK_EQ(nectar(f, NULL, cmd), 1); /* never overwrites a key */
    snprintf(cmd, sizeof(cmd), "vault pubkey %s/key.blob", f->dir);
    CHECK_EQ(nectar(f, NULL, cmd), 0);
    const char *hex = slurp(f, "out");
    CHECK_EQ(strlen(hex), 131);
    CHECK(strncmp(hex, "04", 2) == 0);
    char pubhex[131];
    memcpy(pubhex, hex, 130);
    pubhex[130] = '\0';
    write_in(f, "plain", "vault data \001\002 end");
    snprintf(in, sizeof(in), "%s/plain", f->dir);
    snprintf(cmd, sizeof(cmd), "vault encrypt %s/key.blob", f->dir);
    CHECK_EQ(nectar(f, in, cmd), 0);
    CHECK_EQ(st_sh("cp '%s/out' '%s/env'", f->dir, f->dir), 0);
    snprintf(in, sizeof(in), "%s/env", f->dir);
    snprintf(cmd, sizeof(cmd), "vault decrypt %s/key.blob", f->dir);
    CHECK_EQ(nectar(f, in, cmd), 0);
    CHECK_STR_EQ(slurp(f, "out"), "vault data \001\002 end");
    /* A damaged envelope is refused. */
    CHECK_EQ(st_sh("printf 'X' | dd of='%s/env' bs=1 seek=90 conv=notrunc "
                   "2>/dev/null",
                   f->dir),
             0);
    CHECK_EQ(nectar(f, in, cmd), 1);
    CHECK(strstr(slurp(f, "err"), "tag") != NULL);
    /* python3-cryptography seals to the printed public key. */
    NECTAR_REQUIRE_TOOL("python3");
    CHECK_EQ(st_sh("printf 'from python' | python3 '%s' seal %s > "
                   "'%s/pyenv'",
                   st_src("ecies_ref.py"), pubhex, f->dir),
             0);
    snprintf(in, sizeof(in), "%s/pyenv", f->dir);
    CHECK_EQ(nectar(f, in, cmd), 0);
    CHECK_STR_EQ(slurp(f, "out"), "from python");
}

static void test_cli_vault(void)
{
    struct clifix f;
    cli_open(&f);
    CHECK_EQ(nectar(&f, NULL, "vault status"), 0);
    CHECK_STR_EQ(slurp(&f, "out"), "vault: software\nhardware: no\n");
    vault_roundtrip(&f);
    CHECK_EQ(nectar(&f, NULL, "vault pubkey /nonexistent/blob"), 1);
    CHECK_EQ(nectar(&f, NULL, "vault encrypt"), 2);
    st_rmrf(f.dir);
}

static void test_cli_vault_tpm(void)
{
    struct test_swtpm t;
    test_swtpm_start(&t);
    struct clifix f;
    cli_open(&f);
    snprintf(f.opts, sizeof(f.opts), "--vault tpm2 --tcti %s", t.tcti);
    CHECK_EQ(nectar(&f, NULL, "vault status"), 0);
    CHECK_STR_EQ(slurp(&f, "out"), "vault: tpm2\nhardware: yes\n");
    vault_roundtrip(&f);
    /* A TPM that does not answer is an error, never a silent fallback. */
    snprintf(f.opts, sizeof(f.opts), "--tcti swtpm:host=127.0.0.1,port=1");
    CHECK_EQ(nectar(&f, NULL, "vault status"), 1);
    CHECK(strstr(slurp(&f, "out"), "unavailable") != NULL);
    st_rmrf(f.dir);
    test_swtpm_stop(&t);
}

/* Is the process's core size limit 0 (read from /proc/PID/limits)? */
static int core_limit_zero(void *arg)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/limits", *(pid_t *)arg);
    FILE *fp = fopen(path, "r");
    int zero = 0;
    while (fp != NULL && fgets(line, sizeof(line), fp) != NULL) {
        unsigned long soft, hard;
        if (sscanf(line, "Max core file size %lu %lu", &soft, &hard) == 2)
            zero = soft == 0 && hard == 0;
    }
    if (fp != NULL)
        fclose(fp);
    return zero;
}

/* While `keychain set` waits for its secret on stdin, it has already
 * turned core dumps off. */
static void test_cli_no_core_dumps(void)
{
    struct clifix f;
    cli_open(&f);
    char fifo[128], store[128];
    snprintf(fifo, sizeof(fifo), "%s/stdin", f.dir);
    snprintf(store, sizeof(store), "%s/store", f.dir);
    CHECK_EQ(mkfifo(fifo, 0600), 0);
    pid_t pid = fork();
    CHECK_GE(pid, 0);
    if (pid == 0) {
        int in = open(fifo, O_RDONLY);
        if (in < 0 || dup2(in, 0) < 0)
            _exit(126);
        execl(NECTAR_BIN, "nectar", "keychain", "--store", store, "--vault",
              "software", "set", "svc", "acct", (char *)NULL);
        _exit(127);
    }
    int out = open(fifo, O_WRONLY);
    CHECK_GE(out, 0);
    CHECK(nectar_test_poll(core_limit_zero, &pid, 5000));
    CHECK_EQ(write(out, "s3cr3t", 6), 6);
    close(out);
    int st;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(nectar(&f, NULL, "keychain get svc acct"), 0);
    CHECK_STR_EQ(slurp(&f, "out"), "s3cr3t");
    st_rmrf(f.dir);
}

int main(int argc, char **argv)
{
    static const nectar_test_t tests[] = {
        {"cli_keychain", test_cli_keychain},
        {"cli_import_p12", test_cli_import_p12},
        {"cli_ca", test_cli_ca},
        {"cli_vault", test_cli_vault},
        {"cli_vault_tpm", test_cli_vault_tpm},
        {"cli_no_core_dumps", test_cli_no_core_dumps},
        {NULL, NULL},
    };
    return nectar_test_main(argc, argv, tests);
}
