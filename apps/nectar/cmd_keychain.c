/*
 * cmd_keychain.c - `nectar keychain`: secrets by (service, account).
 *
 *   nectar keychain set SERVICE ACCOUNT      secret from stdin
 *   nectar keychain get SERVICE ACCOUNT      secret to stdout
 *   nectar keychain delete SERVICE ACCOUNT
 *   nectar keychain list SERVICE
 *   nectar keychain import-p12 FILE [--service S] [--account A]
 *       password from $NECTAR_P12_PASSWORD, else the first line of stdin
 *   nectar keychain info
 *
 * Secrets never travel in arguments (they would show in ps and shell
 * history); the process turns core dumps off before touching one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "secrets_cli.h"

#define P12_SERVICE "nectar-identity"
#define P12_ACCOUNT "default"

static int usage(FILE *out)
{
    fprintf(out,
            "usage: nectar keychain [--store DIR] [--vault NAME] COMMAND\n"
            "\n"
            "  set SERVICE ACCOUNT     store stdin as the secret (upsert)\n"
            "  get SERVICE ACCOUNT     write the secret to stdout\n"
            "  delete SERVICE ACCOUNT  remove it (absent is fine)\n"
            "  list SERVICE            accounts stored under SERVICE\n"
            "  import-p12 FILE [--service S] [--account A]\n"
            "                          import a PKCS#12 identity (default\n"
            "                          " P12_SERVICE "/" P12_ACCOUNT "); "
            "password from\n"
            "                          $NECTAR_P12_PASSWORD or stdin's "
            "first line\n"
            "  info                    backend, directory protection, vault\n"
            "\n"
            "  --store DIR   keychain directory (default\n"
            "                /var/lib/nectar/keychain, or "
            "$NECTAR_KEYCHAIN_DIR)\n"
            "  --vault NAME  vault that seals the store's master key: auto,\n"
            "                tpm2, software (see `nectar vault --help`)\n"
            "\n"
            "Exit status: 0 ok, 1 failure (\"not found\" for a missing item),\n"
            "2 usage.\n");
    return out == stdout ? 0 : 2;
}

static int kc_set(nectar_keychain_t *kc, char **argv)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (secrets_cli_read_stdin(&data, &len) != 0)
        return 1;
    nectar_error_t err = {0};
    int rc = nectar_keychain_store(kc, argv[0], argv[1], data, len, &err);
    nectar_secret_free(data);
    return rc != 0 ? secrets_cli_fail("keychain set", &err) : 0;
}

static int kc_get(nectar_keychain_t *kc, char **argv)
{
    uint8_t *data = NULL;
    size_t len = 0;
    nectar_error_t err = {0};
    if (nectar_keychain_load(kc, argv[0], argv[1], &data, &len, &err) != 0)
        return secrets_cli_fail("keychain get", &err);
    int rc = secrets_cli_write_stdout(data, len);
    nectar_secret_free(data);
    return rc;
}

static int kc_delete(nectar_keychain_t *kc, char **argv)
{
    nectar_error_t err = {0};
    if (nectar_keychain_delete(kc, argv[0], argv[1], &err) != 0)
        return secrets_cli_fail("keychain delete", &err);
    return 0;
}

static int kc_list(nectar_keychain_t *kc, char **argv)
{
    char **accounts = NULL;
    size_t n = 0;
    nectar_error_t err = {0};
    if (nectar_keychain_list(kc, argv[0], &accounts, &n, &err) != 0)
        return secrets_cli_fail("keychain list", &err);
    for (size_t i = 0; i < n; i++)
        printf("%s\n", accounts[i]);
    nectar_keychain_list_free(accounts, n);
    return 0;
}

/* The PKCS#12 password: environment, else stdin's first line (without
 * its newline), in secret memory. */
static int p12_password(char **out)
{
    const char *env = getenv("NECTAR_P12_PASSWORD");
    uint8_t *data = NULL;
    size_t len = 0;
    if (env != NULL) {
        len = strlen(env);
    } else if (secrets_cli_read_stdin(&data, &len) != 0) {
        return 1;
    }
    char *pw = nectar_secret_alloc(len + 1);
    if (pw == NULL) {
        nectar_secret_free(data);
        fprintf(stderr, "nectar keychain: out of memory\n");
        return 1;
    }
    memcpy(pw, env != NULL ? (const void *)env : (const void *)data, len);
    pw[len] = '\0';
    pw[strcspn(pw, "\r\n")] = '\0';
    nectar_secret_free(data);
    *out = pw;
    return 0;
}

/* import-p12 FILE [--service S] [--account A] */
static int kc_import(nectar_keychain_t *kc, int argc, char **argv)
{
    const char *file = NULL, *service = P12_SERVICE, *account = P12_ACCOUNT;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--service") == 0 && i + 1 < argc)
            service = argv[++i];
        else if (strcmp(argv[i], "--account") == 0 && i + 1 < argc)
            account = argv[++i];
        else if (file == NULL && argv[i][0] != '-')
            file = argv[i];
        else
            return usage(stderr);
    }
    if (file == NULL)
        return usage(stderr);
    uint8_t *p12 = NULL;
    size_t len = 0;
    char *pw = NULL;
    if (secrets_cli_read_file(file, &p12, &len) != 0)
        return 1;
    if (p12_password(&pw) != 0) {
        nectar_secret_free(p12);
        return 1;
    }
    nectar_error_t err = {0};
    int rc =
        nectar_keychain_import_p12(kc, service, account, p12, len, pw, &err);
    nectar_secret_free(p12);
    nectar_secret_free(pw);
    if (rc != 0)
        return secrets_cli_fail("keychain import-p12", &err);
    nectar_identity_t *id = NULL;
    if (nectar_keychain_load_identity(kc, service, account, &id, &err) != 0)
        return secrets_cli_fail("keychain import-p12", &err);
    printf("imported %s/%s: private key and %zu certificate(s)\n", service,
           account, id->chain_len);
    nectar_identity_free(id);
    return 0;
}

static int run(nectar_keychain_t *kc, nectar_vault_t *v, int argc, char **argv)
{
    const char *cmd = argv[0];
    if (strcmp(cmd, "set") == 0 && argc == 3)
        return kc_set(kc, argv + 1);
    if (strcmp(cmd, "get") == 0 && argc == 3)
        return kc_get(kc, argv + 1);
    if (strcmp(cmd, "delete") == 0 && argc == 3)
        return kc_delete(kc, argv + 1);
    if (strcmp(cmd, "list") == 0 && argc == 2)
        return kc_list(kc, argv + 1);
    if (strcmp(cmd, "import-p12") == 0)
        return kc_import(kc, argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0 && argc == 1) {
        printf("backend: %s\nprotection: %s\nvault: %s\n",
               nectar_keychain_backend(kc), nectar_keychain_protection(kc),
               nectar_vault_kind_name(nectar_vault_kind(v)));
        return 0;
    }
    return usage(stderr);
}

int nectar_cmd_keychain(int argc, char **argv)
{
    struct secrets_cli c;
    if (secrets_cli_parse(&c, argc, argv) != 0)
        return 2;
    if (c.argc < 2)
        return usage(stderr);
    if (strcmp(c.argv[1], "--help") == 0 || strcmp(c.argv[1], "-h") == 0)
        return usage(stdout);
    static const char *const known[] = {"set",  "get",        "delete",
                                        "list", "import-p12", "info"};
    int ok = 0;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        ok |= strcmp(c.argv[1], known[i]) == 0;
    if (!ok)
        return usage(stderr);
    secrets_cli_protect();
    nectar_vault_t *v = NULL;
    nectar_keychain_t *kc = NULL;
    if (secrets_cli_vault(&c, &v) != 0)
        return 1;
    if (secrets_cli_keychain(&c, v, &kc) != 0) {
        nectar_vault_close(v);
        return 1;
    }
    int rc = run(kc, v, c.argc - 1, c.argv + 1);
    nectar_keychain_close(kc);
    nectar_vault_close(v);
    return rc;
}
