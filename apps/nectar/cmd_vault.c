/*
 * cmd_vault.c - `nectar vault`: the hardware key vault from the command
 * line, plus the option and I/O helpers the secrets commands share
 * (secrets_cli.h).
 *
 *   nectar vault status
 *   nectar vault create BLOB     new key; BLOB is written (0600, never
 *                                overwritten)
 *   nectar vault pubkey BLOB     the public point, uncompressed, in hex
 *   nectar vault encrypt BLOB    stdin -> ECIES v1 envelope on stdout
 *   nectar vault decrypt BLOB    envelope on stdin -> plaintext on stdout
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#if __has_include(<sys/prctl.h>)
#include <sys/prctl.h>
#endif

#include "commands.h"
#include "secrets_cli.h"

/* ---- shared helpers (secrets_cli.h) ---------------------------------- */

static int option_value(const char *arg, const char *name, int *i, int argc,
                        char **argv, const char **out)
{
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '=') {
        *out = arg + n + 1;
        return 1;
    }
    if (arg[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *out = argv[++*i];
    return 1;
}

int secrets_cli_parse(struct secrets_cli *c, int argc, char **argv)
{
    static const char *const names[] = {"--store", "--vault", "--tcti"};
    memset(c, 0, sizeof(*c));
    const char **slots[] = {&c->store, &c->vault, &c->tcti};
    int out = 0;
    for (int i = 0; i < argc; i++) {
        int matched = 0;
        for (int k = 0; k < 3 && !matched; k++) {
            matched = option_value(argv[i], names[k], &i, argc, argv, slots[k]);
            if (matched < 0) {
                fprintf(stderr, "nectar: %s needs a value\n", names[k]);
                return 2;
            }
        }
        if (!matched)
            argv[out++] = argv[i];
    }
    c->argc = out;
    c->argv = argv;
    if (c->store != NULL &&
        snprintf(c->host_key, sizeof(c->host_key), "%s/host.key", c->store) >=
            (int)sizeof(c->host_key)) {
        fprintf(stderr, "nectar: --store path too long\n");
        return 2;
    }
    return 0;
}

void secrets_cli_protect(void)
{
    struct rlimit none = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &none);
#ifdef PR_SET_DUMPABLE
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
}

int secrets_cli_fail(const char *cmd, const nectar_error_t *err)
{
    fprintf(stderr, "nectar %s: %s\n", cmd,
            err->message[0] != '\0' ? err->message
                                    : nectar_strerror(err->code));
    return 1;
}

int secrets_cli_vault(struct secrets_cli *c, nectar_vault_t **out)
{
    nectar_vault_options_t o = {
        .backend = c->vault,
        .tpm_tcti = c->tcti,
        .host_key_path = c->store != NULL ? c->host_key : NULL,
    };
    nectar_error_t err = {0};
    if (nectar_vault_open(&o, out, &err) != 0)
        return secrets_cli_fail("vault", &err);
    return 0;
}

int secrets_cli_keychain(struct secrets_cli *c, nectar_vault_t *vault,
                         nectar_keychain_t **out)
{
    nectar_keychain_options_t o = {.dir = c->store, .vault = vault};
    nectar_error_t err = {0};
    if (nectar_keychain_open(&o, out, &err) != 0)
        return secrets_cli_fail("keychain", &err);
    return 0;
}

/* Reads fd to EOF into secret memory, doubling as it goes. */
static int read_all(int fd, const char *what, uint8_t **data, size_t *len)
{
    size_t cap = 4096, n = 0;
    uint8_t *buf = nectar_secret_alloc(cap);
    while (buf != NULL) {
        if (n == cap) {
            uint8_t *bigger = nectar_secret_alloc(cap * 2);
            if (bigger != NULL)
                memcpy(bigger, buf, n);
            nectar_secret_free(buf);
            buf = bigger;
            cap *= 2;
            continue;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            fprintf(stderr, "nectar: read %s: %s\n", what, strerror(errno));
            nectar_secret_free(buf);
            return 1;
        }
        if (got == 0) {
            *data = buf;
            *len = n;
            return 0;
        }
        n += (size_t)got;
    }
    fprintf(stderr, "nectar: out of memory reading %s\n", what);
    return 1;
}

int secrets_cli_read_stdin(uint8_t **data, size_t *len)
{
    return read_all(STDIN_FILENO, "stdin", data, len);
}

int secrets_cli_read_file(const char *path, uint8_t **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "nectar: %s: %s\n", path, strerror(errno));
        return 1;
    }
    int rc = read_all(fd, path, data, len);
    close(fd);
    return rc;
}

int secrets_cli_write_stdout(const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "nectar: write stdout: %s\n", strerror(errno));
            return 1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- nectar vault ---------------------------------------------------- */

static int usage(FILE *out)
{
    fprintf(out,
            "usage: nectar vault [--vault NAME] [--tcti CONF] [--store DIR] "
            "COMMAND\n"
            "\n"
            "  status          which vault this machine gets, and whether it\n"
            "                  is hardware-backed\n"
            "  create BLOB     create a P-256 key; write its wrapped blob to\n"
            "                  BLOB (mode 0600; an existing file is kept)\n"
            "  pubkey BLOB     print the public key (uncompressed, hex)\n"
            "  encrypt BLOB    seal stdin to stdout (ECIES v1 envelope)\n"
            "  decrypt BLOB    open the envelope on stdin to stdout\n"
            "\n"
            "  --vault NAME    auto (default, or $NECTAR_VAULT), tpm2,\n"
            "                  software, secure-enclave\n"
            "  --tcti CONF     TPM access, e.g. device:/dev/tpmrm0 or\n"
            "                  swtpm:host=127.0.0.1,port=2321\n"
            "                  (default $NECTAR_TPM_TCTI, then tss2's)\n"
            "  --store DIR     use DIR/host.key as the software vault key\n");
    return out == stdout ? 0 : 2;
}

static int vault_status(struct secrets_cli *c)
{
    nectar_vault_options_t o = {
        .backend = c->vault,
        .tpm_tcti = c->tcti,
        .host_key_path = c->store != NULL ? c->host_key : NULL,
    };
    nectar_vault_kind_t kind = NECTAR_VAULT_NONE;
    nectar_error_t err = {0};
    if (!nectar_vault_is_available(&o, &kind, &err)) {
        printf("vault: unavailable\n");
        return secrets_cli_fail("vault status", &err);
    }
    nectar_vault_t *v = NULL;
    if (secrets_cli_vault(c, &v) != 0)
        return 1;
    printf("vault: %s\nhardware: %s\n", nectar_vault_kind_name(kind),
           nectar_vault_is_hardware(v) ? "yes" : "no");
    nectar_vault_close(v);
    return 0;
}

static int vault_create(nectar_vault_t *v, const char *path)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    nectar_error_t err = {0};
    if (nectar_vault_create_key(v, &blob, &len, &err) != 0)
        return secrets_cli_fail("vault create", &err);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int rc = 1;
    if (fd < 0) {
        fprintf(stderr, "nectar vault create: %s: %s\n", path, strerror(errno));
    } else {
        size_t off = 0;
        while (off < len) {
            ssize_t n = write(fd, blob + off, len - off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        rc = off == len && fsync(fd) == 0 ? 0 : 1;
        close(fd);
        if (rc != 0) {
            fprintf(stderr, "nectar vault create: write %s failed\n", path);
            unlink(path);
        }
    }
    nectar_secret_free(blob);
    return rc;
}

static int vault_pubkey(nectar_vault_t *v, const uint8_t *blob, size_t len)
{
    uint8_t pub[NECTAR_P256_POINT_LEN];
    nectar_error_t err = {0};
    if (nectar_vault_public_key(v, blob, len, pub, &err) != 0)
        return secrets_cli_fail("vault pubkey", &err);
    for (size_t i = 0; i < sizeof(pub); i++)
        printf("%02x", pub[i]);
    printf("\n");
    return 0;
}

/* encrypt or decrypt: stdin through the vault to stdout. */
static int vault_crypt(nectar_vault_t *v, const uint8_t *blob, size_t len,
                       int decrypt)
{
    uint8_t *in = NULL, *out = NULL;
    size_t in_len = 0, out_len = 0;
    if (secrets_cli_read_stdin(&in, &in_len) != 0)
        return 1;
    nectar_error_t err = {0};
    int rc = decrypt ? nectar_vault_decrypt(v, blob, len, in, in_len, &out,
                                            &out_len, &err)
                     : nectar_vault_encrypt(v, blob, len, in, in_len, &out,
                                            &out_len, &err);
    nectar_secret_free(in);
    if (rc != 0)
        return secrets_cli_fail(decrypt ? "vault decrypt" : "vault encrypt",
                                &err);
    rc = secrets_cli_write_stdout(out, out_len);
    nectar_secret_free(out);
    return rc;
}

static int with_blob(nectar_vault_t *v, const char *cmd, const char *path)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    if (secrets_cli_read_file(path, &blob, &len) != 0)
        return 1;
    int rc;
    if (strcmp(cmd, "pubkey") == 0)
        rc = vault_pubkey(v, blob, len);
    else
        rc = vault_crypt(v, blob, len, strcmp(cmd, "decrypt") == 0);
    nectar_secret_free(blob);
    return rc;
}

int nectar_cmd_vault(int argc, char **argv)
{
    struct secrets_cli c;
    if (secrets_cli_parse(&c, argc, argv) != 0)
        return 2;
    if (c.argc < 2)
        return usage(stderr);
    const char *cmd = c.argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return usage(stdout);
    secrets_cli_protect();
    if (strcmp(cmd, "status") == 0 && c.argc == 2)
        return vault_status(&c);
    int needs_blob = strcmp(cmd, "create") == 0 || strcmp(cmd, "pubkey") == 0 ||
                     strcmp(cmd, "encrypt") == 0 || strcmp(cmd, "decrypt") == 0;
    if (!needs_blob || c.argc != 3)
        return usage(stderr);
    nectar_vault_t *v = NULL;
    if (secrets_cli_vault(&c, &v) != 0)
        return 1;
    int rc = strcmp(cmd, "create") == 0 ? vault_create(v, c.argv[2])
                                        : with_blob(v, cmd, c.argv[2]);
    nectar_vault_close(v);
    return rc;
}
